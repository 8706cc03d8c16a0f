#!/usr/bin/env python3
"""Six zero-cost proxies written directly in PyTorch, timed side by side with `nape proxies` on
the same NB-201 cells, one thread each (issue 16's comparison; `make bench-proxies`).

PyTorch: per proxy and network, the network is built (NAS-Bench-201's own modules, from
scripts/export_torch_cells.py), initialised by PyTorch's defaults and scored, in one process.
nape: `nape proxies FILES --names P --threads 1`, one process per proxy over all the cells
(process start and ONNX reading included), then the six in one process, sharing what they share.
Both sides use Gaussian batches of each proxy's reference size. The definitions are nape's
(docs/proxies.md), as in zero-cost-nas / NASLib.

    python scripts/bench_proxies_torch.py --nape target/release/nape --data DIR [--cells 12] [--rounds 3]
"""
import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from export_torch_cells import TinyNetwork  # noqa: E402

SIX = ["synflow", "snip", "grad_norm", "jacov", "nwot", "zico"]


def scored_weights(net):
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synflow(spec):
    net = TinyNetwork(spec, 10).double()
    for name, m in list(net.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(m, child_name, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net(torch.ones(1, 3, 32, 32, dtype=torch.float64)).sum().backward()
    return sum((w * w.grad).abs().sum().item() for w in scored_weights(net))


def loss_grads(spec, x, y):
    net = TinyNetwork(spec, 10).train()
    nn.functional.cross_entropy(net(x), y).backward()
    return scored_weights(net)


def snip(spec, x, y):
    return sum((w * w.grad).abs().sum().item() for w in loss_grads(spec, x, y))


def grad_norm(spec, x, y):
    return sum(w.grad.norm().item() for w in loss_grads(spec, x, y))


def jacov(spec, x, _y):
    net = TinyNetwork(spec, 10).train()
    x = x.clone().requires_grad_(True)
    net(x).sum().backward()
    j = x.grad.reshape(x.shape[0], -1).double()
    v = torch.linalg.eigvalsh(torch.corrcoef(j))
    return -torch.sum(torch.log(v + 1e-5) + 1.0 / (v + 1e-5)).item()


def nwot(spec, x, _y):
    net = TinyNetwork(spec, 10).train()
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m, inp, _out):
        nonlocal k
        c = (inp[0].reshape(n, -1) > 0).float()
        k += (c @ c.t() + (1 - c) @ (1 - c).t()).double()

    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(x)
    return torch.linalg.slogdet(k)[1].item()


def zico(spec, x, y):
    net = TinyNetwork(spec, 10).train()
    grads = []
    for half in (slice(0, 64), slice(64, 128)):
        net.zero_grad()
        nn.functional.cross_entropy(net(x[half]), y[half]).backward()
        grads.append([w.grad.detach().flatten().double().clone() for w in scored_weights(net)])
    score = 0.0
    for a, b in zip(*grads):
        g = torch.stack([a, b])
        std, mean_abs = g.std(0, unbiased=False), g.abs().mean(0)
        s = (mean_abs[std > 0] / std[std > 0]).sum().item()
        score += torch.log(torch.tensor(s)).item() if s != 0 else 0.0
    return score


PROXIES = {"synflow": (synflow, 0), "snip": (snip, 64), "grad_norm": (grad_norm, 64),
           "jacov": (jacov, 64), "nwot": (nwot, 128), "zico": (zico, 128)}


def torch_seconds(specs):
    """Seconds per network of each proxy, network construction included."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    for name, (fn, batch) in PROXIES.items():
        x = torch.randn(max(batch, 1), 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (max(batch, 1),), generator=gen)
        t0 = time.perf_counter()
        for spec in specs:
            fn(spec) if batch == 0 else fn(spec, x, y)
        out[name] = (time.perf_counter() - t0) / len(specs)
    return out


def nape_seconds(nape, files, names):
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        subprocess.run([nape, "proxies", *files, "--names", names, "--threads", "1",
                        "--images", "gaussian", "--cache", cache, "-q", "--json"],
                       check=False, stdout=subprocess.DEVNULL)
        return (time.perf_counter() - t0) / len(files)


def one_round(nape, files, specs):
    """One measurement of both sides, back to back: nape's six apart and together, PyTorch's."""
    ours = {p: nape_seconds(nape, files, p) for p in SIX}
    together = nape_seconds(nape, files, ",".join(SIX))
    return ours, together, torch_seconds(specs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nape", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure both sides this many times, alternating; report medians "
                         "(the machine's speed drifts between minutes)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(a.data, "nasbench201", "nb201_all_15625.csv")) as f:
        rows = list(csv.DictReader(f))
    picked = random.Random(0).sample(rows, a.cells)
    specs = [r["arch_str"] for r in picked]
    with tempfile.TemporaryDirectory() as out:
        ids = ",".join(r["index"] for r in picked)
        subprocess.run([a.nape, "export", "nb201", "--out", out, "--ids", ids, "--data", a.data,
                        "-q"], check=True)
        files = [os.path.join(out, f"{r['index']}.onnx") for r in picked]
        rounds = [one_round(a.nape, files, specs) for _ in range(a.rounds)]
    med = statistics.median
    ours = {p: med(r[0][p] for r in rounds) for p in SIX}
    theirs = {p: med(r[2][p] for r in rounds) for p in SIX}
    together = med(r[1] for r in rounds)
    print(f"{a.cells} NB-201 cells, seconds per network, one thread each"
          + (f", medians of {a.rounds} rounds" if a.rounds > 1 else ""))
    print(f"{'proxy':<12} {'nape':>8} {'PyTorch':>8} {'ratio':>6}")
    for p in SIX:
        print(f"{p:<12} {ours[p]:>8.3f} {theirs[p]:>8.3f} {ours[p] / theirs[p]:>6.2f}")
    summed = sum(theirs.values())
    print(f"{'six, apart':<12} {sum(ours.values()):>8.3f} {summed:>8.3f} "
          f"{sum(ours.values()) / summed:>6.2f}")
    print(f"{'six together':<12} {together:>8.3f} {summed:>8.3f} {together / summed:>6.2f}")
    if a.rounds > 1:
        each = [r[1] / sum(r[2].values()) for r in rounds]
        print("six together / PyTorch's six, each round: " + " ".join(f"{x:.2f}" for x in each))


if __name__ == "__main__":
    main()
