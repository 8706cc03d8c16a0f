#!/usr/bin/env python3
"""A labels file (docs/your-family.md) for the torchvision classification zoo of the real-world
corpus: `file,top1,params,gflops`, one row per exported network, from the `truth.jsonl` that
`make corpus` (scripts/export_corpus.py) writes beside the files. top1 is the ImageNet-1K acc@1
that torchvision publishes in each DEFAULT weight's `meta` (shipped inside the package, not a
results table of a search space); params and GFLOPS are its published counts too.

    python3 scripts/zoo_labels.py CORPUS/torchvision_cls/truth.jsonl OUT.csv [--embedded]

Paths in the CSV are absolute (the stripped files, or the embedded ones with --embedded).
"""
import argparse
import csv
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("truth")
    ap.add_argument("out")
    ap.add_argument("--embedded", action="store_true", help="label the files with weights in")
    a = ap.parse_args()
    folder = os.path.dirname(os.path.abspath(a.truth))
    rows = []
    for n, line in enumerate(open(a.truth), 1):
        r = json.loads(line)
        if r.get("top1") is None:
            print(f"{a.truth}:{n}: {r.get('file')}: no published top-1, left out", file=sys.stderr)
            continue
        rel = r["embedded"] if a.embedded else r["file"]
        path = os.path.join(folder, rel)
        if not os.path.exists(path):
            print(f"{a.truth}:{n}: {path} not found, left out", file=sys.stderr)
            continue
        rows.append((path, r["top1"], r.get("num_params_published"), r.get("gflops_published")))
    if len(rows) < 3:
        sys.exit(f"error: {a.truth}: {len(rows)} labelled networks; at least 3 are needed")
    tmp = a.out + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "top1", "params", "gflops"])
        w.writerows(rows)
    os.replace(tmp, a.out)
    print(f"{len(rows)} networks -> {a.out}")


if __name__ == "__main__":
    main()
