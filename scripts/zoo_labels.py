#!/usr/bin/env python3
"""A labels file (docs/your-family.md) for a labelled family of the real-world corpus:
`file,TARGET,params,gflops`, one row per exported network, from the `truth.jsonl` that
scripts/export_corpus.py writes beside the files. For the torchvision zoo (`make corpus`) the
target is top1, the ImageNet-1K acc@1 torchvision publishes in each DEFAULT weight's `meta`;
for pytorchcv's families (`make pytorchcv-check`) it is top5 (ImageNet-1K) or top1 (CIFAR-10),
100 minus the error pytorchcv's model store lists for its weights. Both ship inside their
packages; neither is a results table of a search space. params and GFLOPS are the published
counts where the package gives them (empty where it does not).

    python3 scripts/zoo_labels.py CORPUS/torchvision_cls/truth.jsonl OUT.csv [--embedded]
    python3 scripts/zoo_labels.py CORPUS/pytorchcv_in1k/truth.jsonl OUT.csv --target top5

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
    ap.add_argument("--target", default="top1", help="the truth field that labels each network")
    a = ap.parse_args()
    folder = os.path.dirname(os.path.abspath(a.truth))
    rows = []
    for n, line in enumerate(open(a.truth), 1):
        r = json.loads(line)
        if r.get(a.target) is None:
            print(f"{a.truth}:{n}: {r.get('file')}: no published {a.target}, left out", file=sys.stderr)
            continue
        rel = r["embedded"] if a.embedded else r["file"]
        path = os.path.join(folder, rel)
        if not os.path.exists(path):
            print(f"{a.truth}:{n}: {path} not found, left out", file=sys.stderr)
            continue
        rows.append((path, r[a.target], r.get("num_params_published"), r.get("gflops_published")))
    if len(rows) < 3:
        sys.exit(f"error: {a.truth}: {len(rows)} labelled networks; at least 3 are needed")
    tmp = a.out + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", a.target, "params", "gflops"])
        w.writerows(rows)
    os.replace(tmp, a.out)
    print(f"{len(rows)} networks -> {a.out}")


if __name__ == "__main__":
    main()
