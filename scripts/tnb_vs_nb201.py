#!/usr/bin/env python3
"""How TransNAS-Bench-101 micro's labels rank NB-201's cells, with no model in between.

The two spaces share a cell's shape (4 nodes, 6 edges, the same edge order) and four of
NB-201's five operations (none, skip, 1x1 conv, 3x3 conv; TransNAS codes 0-3), so the 4,096
TransNAS cells are NB-201 cells without an average pool. For each of the mix's three TransNAS
tasks, and for their consensus (the sum of each task's rank-based normal scores, the mix's
target scale), this prints the Spearman with NB-201's 200-epoch test accuracy on the cells both
have, and the tasks' Spearman with each other.

    python3 scripts/tnb_vs_nb201.py [DATA]      (DATA: default $NAPE_DATA or ../shared/data)

Standard library only.
"""
import csv
import json
import os
import re
import sys
from statistics import NormalDist

from rankstats import ranks, spearman

TASKS = ["class_scene", "class_object", "jigsaw"]
NB201 = ["cifar10_test_ep200", "cifar100_test_ep200", "imagenet16_test_ep200"]
CODES = {"none": 0, "skip_connect": 1, "nor_conv_1x1": 2, "nor_conv_3x3": 3}


def normal_scores(x):
    """probit((rank - 0.5) / n) with ranks from 1, as the mix scales each part's target."""
    n, probit = len(x), NormalDist().inv_cdf
    return [probit((r + 0.5) / n) for r in ranks(x)]


def load(data):
    path = os.path.join(data, "nasbench201", "nb201_all_15625.csv")
    nb = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            ops = re.findall(r"([a-z_0-9]+)~\d", row["arch_str"])
            if all(o in CODES for o in ops):
                nb[tuple(CODES[o] for o in ops)] = [float(row[c]) for c in NB201]
    tnb = {t: {} for t in TASKS}
    with open(os.path.join(data, "naslib_zc", "transbench101_micro.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            if e["dataset"] in tnb:
                arch = tuple(int(c) for c in e["arch"].strip("()").split(","))
                tnb[e["dataset"]][arch] = e["val_accuracy"]
    return nb, tnb


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NAPE_DATA", "../shared/data")
    nb, tnb = load(data)
    cells = sorted(set(nb).intersection(*[set(tnb[t]) for t in TASKS]))
    if not cells:
        sys.exit(f"no cell is in both NB-201 and TransNAS micro under {data}")
    scores = {t: normal_scores([tnb[t][c] for c in cells]) for t in TASKS}
    scores["consensus"] = [sum(s) for s in zip(*(scores[t] for t in TASKS))]
    print(f"{len(cells)} cells in both spaces (data: {data})")
    print("TransNAS label          " + "  ".join(f"{c.split('_')[0]:>10}" for c in NB201))
    for name, s in scores.items():
        rho = [spearman(s, [nb[c][j] for c in cells]) for j in range(len(NB201))]
        print(f"{name:<22}" + "  ".join(f"{r:>10.3f}" for r in rho))
    print("between tasks: " + ", ".join(
        f"{a}~{b} {spearman(scores[a], scores[b]):.3f}"
        for i, a in enumerate(TASKS) for b in TASKS[i + 1:]))


if __name__ == "__main__":
    main()
