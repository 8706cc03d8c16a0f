#!/usr/bin/env python3
"""Leave-one-family-out: for each family of a mix config, train on all the other parts, rank
every part of the left-out family zero-shot, beside #params, FLOPs, effective #params and an
NB-101-only model, over seeds (issue 15, docs/predictor.md "Universal zero-shot").

    python3 scripts/lofo.py --nape target/release/nape --config configs/mix.json \
        --seeds 0 1 2 3 4 --out runs/lofo --data ../shared/data [--families nb201 zoo] \
        [--also tnb-micro:jigsaw_val_accuracy]

Models go to OUT/models/lofo-<family>-s<seed>-m<members> (kept: a rerun reuses them), evaluations
to OUT/eval/<family>-<part>-s<seed>-m<members>.json, the table to stdout and OUT/table.md. Each model is a
deep ensemble of the config's `members` (5 in configs/mix.json), as the NB-101-only model beside
it is: one member's zero-shot Spearman varies by +-0.07 from seed to seed, and the ensemble of
five gains about 0.08 over its members' mean (docs/universal.md), so a one-member LOFO model
against a five-member baseline compares two different things. `--members 1` is the quick look.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

FAMILIES = ("nb101", "nb201", "tnb-micro")


def family_of(part):
    """`zoo=runs/zoo/labels.csv:top1` -> zoo, `nb201:cifar100_test_ep200` -> nb201."""
    name = part.split("=", 1)[0] if "=" in part.split(":", 1)[0] else None
    head = part.split(":", 1)[0]
    return name or head


def source_args(part):
    """`nape eval` arguments ranking one part's networks."""
    spec = part.split("=", 1)[1] if "=" in part.split(":", 1)[0] else part
    head, _, target = spec.partition(":")
    if head in FAMILIES:
        args = ["--family", head]
    else:
        path, _, target = spec.rpartition(":") if ":" in spec and not os.path.exists(spec) else (spec, "", "")
        args = ["--labels", path]
    return args + (["--target", target] if target else [])


def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode not in (0, 5):
        sys.exit(f"error: {' '.join(cmd)} exited {r.returncode}; see {log}")


def spearmans(path):
    m = json.load(open(path))["metrics"]
    return {k: m[k]["spearman"] for k in ("model", "params", "flops", "params_eff") if k in m}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nape", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--families", nargs="*", help="only these (default: every family of the mix)")
    ap.add_argument("--baseline", default="nape-nb101", help="the NB-101-only model beside")
    ap.add_argument("--limit", type=int, default=5000, help="networks evaluated per part at most")
    ap.add_argument("--members", type=int, help="members per model (default: the config's)")
    ap.add_argument("--also", nargs="*", default=[],
                    help="parts left out as families of their own but never trained on (their "
                         "fold trains on the whole mix)")
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    trained = cfg["mix"]["parts"]
    parts = trained + [p for p in a.also if p not in trained]
    # passed to every pretrain, so the model's name and its training agree whatever the
    # config says or leaves to nape's default (1)
    members = a.members or cfg.get("members", 1)
    fams = []
    for p in parts:
        if family_of(p) not in fams:
            fams.append(family_of(p))
    fams = [f for f in fams if not a.families or f in a.families]
    for d in ("models", "runs", "eval", "logs"):
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    common = ["--data", a.data, "--runs", os.path.join(a.out, "runs"), "-q"]
    rows = []
    for fam in fams:
        mine = [p for p in parts if family_of(p) == fam]
        rest = [p for p in trained if family_of(p) != fam]
        for seed in a.seeds:
            name = f"lofo-{fam}-s{seed}-m{members}"
            if not os.path.exists(os.path.join(a.out, "models", name)):
                cmd = [a.nape, "pretrain", "--config", a.config, "--seed", str(seed),
                       "--members", str(members), "--name", name,
                       "--models", os.path.join(a.out, "models")] + common
                for p in rest:
                    cmd += ["--mix", p]
                print(f"training {name} on {len(rest)} parts", file=sys.stderr)
                run(cmd, os.path.join(a.out, "logs", name + ".log"))
        for part in mine:
            tag = part.split("=", 1)[0].replace(":", "-").replace("/", "_")
            per = []
            for seed in a.seeds:
                out = os.path.join(a.out, "eval", f"{fam}-{tag}-s{seed}-m{members}.json")
                if not os.path.exists(out):
                    cmd = [a.nape, "eval", "--model", f"lofo-{fam}-s{seed}-m{members}", "--models",
                           os.path.join(a.out, "models"), "--json", "--limit", str(a.limit)]
                    with open(out + ".tmp", "w") as f:
                        r = subprocess.run(cmd + source_args(part) + common, stdout=f)
                    if r.returncode not in (0, 5):
                        sys.exit(f"error: evaluating {part} with seed {seed} exited {r.returncode}")
                    os.replace(out + ".tmp", out)
                per.append(spearmans(out))
            base = os.path.join(a.out, "eval", f"{fam}-{tag}-{a.baseline}.json")
            if fam != "nb101" and not os.path.exists(base):
                # a name of this process's own: runs for other seeds may share OUT and write it too
                tmp = f"{base}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    r = subprocess.run([a.nape, "eval", "--model", a.baseline, "--json", "--limit",
                                        str(a.limit)] + source_args(part) + common, stdout=f)
                if r.returncode in (0, 5):
                    os.replace(tmp, base)
            b = spearmans(base)["model"] if os.path.exists(base) else None
            rows.append((part, per, b))
    lines = ["| left out | model (mean ± std, seeds) | #params | FLOPs | eff. #params | NB-101-only |",
             "|---|---|---|---|---|---|"]
    for part, per, b in rows:
        ms = [p["model"] for p in per]
        sd = statistics.stdev(ms) if len(ms) > 1 else 0.0
        mean = lambda k: statistics.mean(p[k] for p in per if k in p)
        lines.append(f"| {part} | {statistics.mean(ms):.3f} ± {sd:.3f} ({len(ms)}) | {mean('params'):.3f} | "
                     f"{mean('flops'):.3f} | {mean('params_eff'):.3f} | {'-' if b is None else f'{b:.3f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
