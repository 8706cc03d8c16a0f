"""The zero-cost-nas "vote" proxy, from a manifest written by `nape proxies --out`.

zero-cost-nas (SamsungLabs, notebooks/nasbench2_correlations.ipynb) ranks networks by sorting them
with a majority-vote comparator: network a goes before b when more than half of the voting proxies
score a higher. The comparator is not transitive, so the order is the one Python's sort produces
from the input order; this script sorts in the manifest's order, as the reference sorts in
benchmark index order. The vote score is minus the position, and the table gives its Spearman
correlation with each target. Networks with a missing vote proxy are left out.

usage: python notebooks/vote.py MANIFEST.jsonl [--proxies synflow,jacov,snip] [--targets a,b,c]
"""

import argparse
import json
import sys
from functools import cmp_to_key

import numpy as np


def ranks(a):
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    s = a[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def vote_scores(scores):
    """scores: (n_networks, n_proxies), bigger is better. Returns one score per network."""
    half = scores.shape[1] // 2

    def cmp(x, y):
        # the reference's vote_comparator: -1 (x first) when most proxies prefer x
        return -1 if ((x[0] - y[0]) > 0).sum() > half else 1

    items = [(row, i) for i, row in enumerate(scores)]
    order = [i for _, i in sorted(items, key=cmp_to_key(cmp))]
    out = np.zeros(len(order))
    out[np.array(order)] = -np.arange(len(order))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--proxies", default="synflow,jacov,snip")
    ap.add_argument("--targets", default="")
    a = ap.parse_args()
    names = a.proxies.split(",")
    recs = [json.loads(line) for line in open(a.manifest) if line.strip()]
    recs = [r for r in recs if all(isinstance(r.get("proxies", {}).get(p), (int, float)) for p in names)]
    if not recs:
        sys.exit(f"{a.manifest}: no record has all of {names}")
    targets = a.targets.split(",") if a.targets else sorted(recs[0].get("targets", {}))
    scores = np.array([[r["proxies"][p] for p in names] for r in recs], dtype=float)
    vote = vote_scores(scores)
    print(f"vote ({', '.join(names)}) over {len(recs)} networks")
    for t in targets:
        keep = [i for i, r in enumerate(recs) if isinstance(r["targets"].get(t), (int, float))]
        if len(keep) < 3:
            continue
        y = [recs[i]["targets"][t] for i in keep]
        print(f"  {t:<28} n {len(keep):>6}  spearman {spearman(vote[keep], y):.3f}")


if __name__ == "__main__":
    main()
