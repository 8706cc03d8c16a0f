#!/usr/bin/env python3
"""NAS-Bench-Suite-Zero's CIFAR-10 NB-201 cells with published proxy scores (724; the other
cells of the file carry only `zen`) as a nape manifest, one record per cell, with
NASLib's published proxy scores in `proxies` and its validation accuracy in `targets`, so that
`nape proxies MANIFEST --json` scores the very cells NASLib published (docs/proxies.md,
"fisher's fan-in"). Standard library only.

usage: scripts/naslib_manifest.py [DATA_DIR] > cells.jsonl   (DATA_DIR: $NAPE_DATA or ../shared/data)
"""
import json
import math
import os
import sys

# NASLib's NB-201 op ids, and its edge order (0,1),(0,2),(0,3),(1,2),(1,3),(2,3)
OPS = {0: "skip_connect", 1: "none", 2: "nor_conv_3x3", 3: "nor_conv_1x1", 4: "avg_pool_3x3"}


def spec(arch):
    o = [OPS[int(t)] for t in arch.strip("()").split(",")]
    return f"|{o[0]}~0|+|{o[1]}~0|{o[3]}~1|+|{o[2]}~0|{o[4]}~1|{o[5]}~2|"


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NAPE_DATA", "../shared/data")
    path = os.path.join(data, "naslib_zc", "nasbench201.jsonl")
    if not os.path.exists(path):
        sys.exit(f"naslib_manifest: no {path} (give the data folder, or set NAPE_DATA)")
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["dataset"] != "cifar10" or "fisher" not in r["zc"]:
                continue
            zc = r["zc"].items()
            scores = {k: v for k, v in zc if isinstance(v, (int, float)) and math.isfinite(v)}
            rec = {
                "id": r["arch"].replace(" ", ""),
                "family": "nb201",
                "spec": spec(r["arch"]),
                "targets": {"cifar10_naslib_val_accuracy": r["val_accuracy"]},
                "proxies": scores,
            }
            print(json.dumps(rec))


if __name__ == "__main__":
    main()
