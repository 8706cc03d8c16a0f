#!/usr/bin/env python3
"""Where a model's ranking of labelled networks comes from: its base line (the prior, GENNAPE's
FLOPs transform at the members' slope) or what its heads add (docs/universal.md, "The zoo left
out"). Reads what `nape predict --json` printed, the members' meta.json and a labels file.

    nape predict --json --model M --models DIR FILES... > pred.json
    python3 scripts/prior_heads.py pred.json DIR/M LABELS.csv COLUMN [--calibrate cal.json]

A model predicts `mean(prior) + in_domain * mean(dev)` (src/train/domain.rs); this recovers
`mean(dev)` from the printed prediction and in_domain (the prior from the printed FLOPs, as
`features::log_flops` reads them up to its f32 rounding), and prints Spearman with COLUMN of: the
prediction, the prior alone, the heads' part alone, and prior + dev unshrunk. With --calibrate
(a second predict --json, on networks of the training families), also the prediction shrunk
again by each network's uncertainty against the 90th percentile of the calibration set's.
"""
import argparse
import csv
import glob
import json
import math
import os
import sys

from rankstats import spearman


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pred")
    ap.add_argument("model_dir")
    ap.add_argument("labels")
    ap.add_argument("column")
    ap.add_argument("--calibrate")
    a = ap.parse_args()
    metas = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(a.model_dir, "member-*", "meta.json")))]
    if not metas:
        sys.exit(f"error: no member-*/meta.json under {a.model_dir}")
    if any(m.get("params_slope", 0.0) != 0.0 or m.get("target_sign", 1.0) != 1.0 for m in metas):
        sys.exit("error: this reads the FLOPs base line only (params_slope 0, target_sign 1)")
    labels = {os.path.abspath(r["file"]): float(r[a.column]) for r in csv.DictReader(open(a.labels))}
    rows = [p for p in json.load(open(a.pred))["predictions"] if p.get("ok") and os.path.abspath(p["file"]) in labels]
    if len(rows) < 3:
        sys.exit(f"error: {len(rows)} predicted files of {a.pred} are in {a.labels}")
    if any(p.get("in_domain") is None for p in rows):
        sys.exit(f"error: {a.pred} has networks without an in_domain score: the model has no domain reference")
    y = [labels[os.path.abspath(p["file"])] for p in rows]
    prior = [sum(m["target_mean"] + m["flops_slope"] * math.log10(1 + p["flops"]) for m in metas) / len(metas) for p in rows]
    w = [p["in_domain"] for p in rows]
    dev = [(p["prediction"] - q) / wi for p, q, wi in zip(rows, prior, w)]
    out = {
        "prediction": spearman([p["prediction"] for p in rows], y),
        "prior alone": spearman(prior, y),
        "heads alone": spearman(dev, y),
        "unshrunk": spearman([q + d for q, d in zip(prior, dev)], y),
    }
    print(f"{len(rows)} networks; mean in_domain {sum(w) / len(w):.3f}")
    if a.calibrate:
        cal = sorted(p["uncertainty"] for p in json.load(open(a.calibrate))["predictions"] if p.get("ok"))
        ref = cal[int(0.9 * (len(cal) - 1))]
        wu = [min(1.0, ref / p["uncertainty"]) for p in rows]
        out["shrunk by uncertainty too"] = spearman([q + wi * v * d for q, wi, v, d in zip(prior, w, wu, dev)], y)
        print(f"uncertainty reference {ref:.3f}; mean factor {sum(wu) / len(wu):.3f}")
    for k, v in out.items():
        print(f"{k:>28}: {v:.3f}")


if __name__ == "__main__":
    main()
