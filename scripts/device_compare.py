#!/usr/bin/env python3
"""Two `nape proxies --json` documents of the same networks, side by side: per proxy, how many
networks both scored, the largest and the median relative difference, and the Spearman
correlation between the two runs' values (the CPU's and a GPU's, in scripts/device_check.sh).
Standard library only (with rankstats.py beside it), so that it runs on a machine that has
nothing else.

    python3 scripts/device_compare.py CPU.json GPU.json [--json OUT]
"""
import argparse
import json
import math
import statistics
import sys

from rankstats import spearman  # this folder's; doctest and a script run both find it


def rank_correlation(a, b):
    """Spearman's rho of two equal-length lists (rankstats'), NaN where it is undefined: fewer
    than three networks, or either list constant.

    >>> rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]), rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])
    (1.0, -1.0)
    >>> round(rank_correlation([1, 2, 3, 5, 4], [2, 1, 4, 3, 5]), 3), math.isnan(rank_correlation([1, 2], [1, 2]))
    (0.6, True)
    >>> math.isnan(rank_correlation([1, 2, 3], [5, 5, 5]))
    True
    """
    if len(a) < 3:
        return math.nan
    try:
        return spearman(a, b)
    except ZeroDivisionError:
        return math.nan


def values(doc):
    """{(network id, proxy): value} of one `nape proxies --json` document."""
    out = {}
    for net in doc["networks"]:
        for name, v in net.get("proxies", {}).items():
            if v is not None and math.isfinite(v):
                out[(net["id"], name)] = v
    return out


def compare(a, b):
    """One row per proxy both documents hold: n, max and median |a - b| / max(|a|, |b|), rho.
    A network one run failed to score (no value, or not finite) is left out of that proxy.

    >>> doc = lambda vs: {"networks": [{"id": str(i), "proxies": {"p": v}} for i, v in enumerate(vs)]}
    >>> row, = compare(doc([0.0, 1.0, 2.0, 4.0, 8.0]), doc([0.0, 1.0, 2.2, 4.0, float("nan")]))
    >>> row["n"], round(row["max_rel"], 4), row["median_rel"], row["spearman"]
    (4, 0.0909, 0.0, 1.0)
    """
    va, vb = values(a), values(b)
    names = sorted({p for _, p in va} & {p for _, p in vb})
    rows = []
    for name in names:
        ids = sorted(i for (i, p) in va if p == name and (i, p) in vb)
        xs = [va[(i, name)] for i in ids]
        ys = [vb[(i, name)] for i in ids]
        rel = [abs(x - y) / max(abs(x), abs(y)) if x != y else 0.0 for x, y in zip(xs, ys)]
        rows.append({
            "proxy": name,
            "n": len(ids),
            "max_rel": max(rel) if rel else math.nan,
            "median_rel": statistics.median(rel) if rel else math.nan,
            "spearman": rank_correlation(xs, ys),
        })
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the first run's JSON (the CPU's)")
    ap.add_argument("b", help="the second run's JSON (the GPU's)")
    ap.add_argument("--json", help="also write the rows here as JSON")
    args = ap.parse_args()
    with open(args.a) as fa, open(args.b) as fb:
        rows = compare(json.load(fa), json.load(fb))
    if not rows:
        sys.exit("no proxy was scored in both documents")
    print(f"{'proxy':<10} {'n':>4} {'max rel':>10} {'median rel':>11} {'spearman':>9}")
    for r in rows:
        print(f"{r['proxy']:<10} {r['n']:>4} {r['max_rel']:>10.2e} {r['median_rel']:>11.2e} "
              f"{r['spearman']:>9.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
