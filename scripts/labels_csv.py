#!/usr/bin/env python3
"""Write a labels CSV for `nape finetune/eval/pretrain --labels` from a JSONL listing.

Reads `nape export`'s manifest.jsonl (targets under "targets") or a corpus truth.jsonl of
scripts/export_corpus.py (targets at the top level, e.g. torchvision's published "top1"),
and writes `file,<col>...` with each file's path relative to the CSV's folder. Rows missing
a column are left out (and counted on stderr). Standard library only.

    scripts/labels_csv.py runs/nb201/manifest.jsonl runs/nb201/labels.csv cifar10_test_ep200
    scripts/labels_csv.py /work/corpus/torchvision_cls/truth.jsonl tv.csv top1
"""
import csv
import json
import os
import sys


def main(src, dst, cols):
    base = os.path.dirname(os.path.abspath(src))
    out_dir = os.path.dirname(os.path.abspath(dst))
    kept, dropped = [], 0
    with open(src) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            t = r.get("targets", r)
            if any(not isinstance(t.get(c), (int, float)) for c in cols):
                dropped += 1
                continue
            path = os.path.relpath(os.path.join(base, r["file"]), out_dir)
            kept.append([path] + [repr(float(t[c])) for c in cols])
    tmp = dst + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file"] + cols)
        w.writerows(kept)
    os.replace(tmp, dst)
    print(f"{dst}: {len(kept)} rows ({dropped} without {', '.join(cols)})", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
