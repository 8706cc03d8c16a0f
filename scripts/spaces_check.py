#!/usr/bin/env python3
"""nape on the unlabelled search-space families of the corpus (``darts``, ``resnet_macro``;
``corpus_spaces.py``): is every file read and predicted, how does the prediction relate to the
counts, and what is its in-domain score. (`make spaces-check` also runs the counts against
torch's, as `make corpus-check` does, and compares each ``<family>_dynamo`` twin with
``compare_exports.py``.)

    scripts/spaces_check.py --nape target/release/nape --corpus /work/corpus [--families F,G] [--model M]

No labels: these families test coverage and behaviour, not ranking (docs/universal.md)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rankstats import spearman  # noqa: E402


def read_truth(fam: Path) -> dict[str, dict]:
    path = fam / "truth.jsonl"
    if not path.exists():
        sys.exit(f"no {path}: export the family first (make corpus)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["file"]: r for r in rows}


def nape_json(nape: str, args: list[str]) -> tuple[str, float, int]:
    t0 = time.time()
    run = subprocess.run([nape, *args], capture_output=True, text=True)
    return run.stdout, time.time() - t0, run.returncode


def inspect(nape: str, files: list[str]) -> dict[str, dict]:
    out, _, _ = nape_json(nape, ["inspect", "--jsonl", *files])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {Path(r["file"]).name: r for r in rows}


MODEL: list[str] = []  # ["--model", NAME] when one is asked for


def predict(nape: str, files: list[str]) -> tuple[dict[str, dict], float, int]:
    out, secs, rc = nape_json(nape, ["predict", "--json", *MODEL, *files])
    preds = json.loads(out)["predictions"] if out.strip() else []
    return {Path(p["file"]).name: p for p in preds}, secs, rc


def check_family(nape: str, fam: Path) -> None:
    truth = read_truth(fam)
    files = sorted(str(fam / f) for f in truth)
    seen = inspect(nape, files)
    broken = sorted(f for f in truth if not seen.get(f, {}).get("ok"))
    unknown = sorted(f for f, r in seen.items() if r.get("unknown_ops"))
    ok = [f for f in truth if f not in broken]
    print(f"{fam.name}: {len(truth)} files; not read {len(broken)}, with unknown ops {len(unknown)}")
    for f in (broken + unknown)[:5]:
        print(f"  {f}: {seen.get(f, {}).get('error') or seen.get(f)}")
    preds, secs, rc = predict(nape, files)
    got = [f for f in ok if preds.get(f, {}).get("prediction") is not None]
    print(f"  predict: {len(got)} / {len(truth)} predicted in {secs:.1f} s (exit {rc})")
    if len(got) < 3:
        return
    pv = [preds[f]["prediction"] for f in got]
    dom = [preds[f]["in_domain"] for f in got if preds[f].get("in_domain") is not None]
    unc = [preds[f]["uncertainty"] for f in got if preds[f].get("uncertainty") is not None]
    col = {k: [seen[f][k] for f in got] for k in ("params", "flops", "depth")}
    print(f"  prediction median {statistics.median(pv):.4f} [{min(pv):.4f}, {max(pv):.4f}], "
          f"uncertainty median {statistics.median(unc):.4f}, in_domain mean {statistics.mean(dom):.3f} "
          f"(min {min(dom):.3f}, max {max(dom):.3f})")
    print("  Spearman of the prediction with " + ", ".join(
        f"{k} {spearman(pv, v):.3f}" for k, v in col.items())
          + f"; #params with FLOPs {spearman(col['params'], col['flops']):.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nape", default="target/release/nape")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--families", default="darts,resnet_macro")
    ap.add_argument("--model", help="a model other than the default (nape-mix)")
    args = ap.parse_args()
    if args.model:
        MODEL.extend(["--model", args.model])
    for name in args.families.split(","):
        check_family(args.nape, args.corpus / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
