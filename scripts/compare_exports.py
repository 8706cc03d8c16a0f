#!/usr/bin/env python3
"""One network, several exports: do they give nape one canonical graph and one prediction?

    python3 scripts/compare_exports.py [--nape BIN] [--model M] REFERENCE OTHER [OTHER ...]

Each argument is a folder of ONNX files; files are matched by name (as `nape export` and
scripts/export_torch_cells.py write them). For every file of REFERENCE found in the others it
compares the graph hash of `nape inspect --canonical --jsonl` and the prediction of
`nape predict --json`, and prints, per folder, how many hashes are equal, the largest
|prediction difference| and the parameter counts that differ. Exit 1 when a hash differs or a
prediction differs by 1e-6 or more. Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys


def onnx_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".onnx"))


def run_nape(nape, args):
    out = subprocess.run([nape, *args], capture_output=True, text=True)
    if out.returncode not in (0, 5):
        sys.exit(f"error: {nape} {' '.join(args[:2])} ... exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def inspect(nape, folder, names):
    rows = {}
    text = run_nape(nape, ["inspect", "--canonical", "--jsonl", "-q", *[os.path.join(folder, n) for n in names]])
    for line in text.splitlines():
        r = json.loads(line)
        rows[os.path.basename(r["file"])] = r
    return rows


def predict(nape, model, folder, names):
    text = run_nape(nape, ["predict", "--json", "-q", "--model", model,
                           *[os.path.join(folder, n) for n in names]])
    doc = json.loads(text)
    rows = doc if isinstance(doc, list) else doc.get("predictions", doc.get("files", []))
    return {os.path.basename(r["file"]): r for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("others", nargs="+")
    ap.add_argument("--nape", default="./target/release/nape")
    ap.add_argument("--model", default="nape-nb101")
    args = ap.parse_args()
    names = onnx_files(args.reference)
    ref_i = inspect(args.nape, args.reference, names)
    ref_p = predict(args.nape, args.model, args.reference, names)
    failed = False
    print(f"{'folder':<40} {'files':>5} {'same hash':>9} {'max |pred diff|':>16} {'params differ':>13}")
    print(f"{args.reference:<40} {len(names):>5} {'(reference)':>9}")
    for folder in args.others:
        common = [n for n in names if os.path.exists(os.path.join(folder, n))]
        oi = inspect(args.nape, folder, common)
        op = predict(args.nape, args.model, folder, common)
        same = sum(oi[n].get("graph_hash") == ref_i[n].get("graph_hash") for n in common)
        diffs = [abs(op[n]["prediction"] - ref_p[n]["prediction"]) for n in common
                 if n in op and n in ref_p and "prediction" in op[n] and "prediction" in ref_p[n]]
        worst = max(diffs) if diffs else float("nan")
        params = sum(oi[n].get("params") != ref_i[n].get("params") for n in common)
        print(f"{folder:<40} {len(common):>5} {same:>9} {worst:>16.3g} {params:>13}")
        for n in [n for n in common if oi[n].get("graph_hash") != ref_i[n].get("graph_hash")][:5]:
            print(f"  hash differs: {n}")
        failed |= same != len(common) or len(diffs) != len(common) or not worst < 1e-6
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
