"""Two unlabelled search spaces for ``export_corpus.py``, of the kinds issue 15's held-back
families are (a DARTS-like cell space at 32 px, a ResNet-like macro space at 224 px), written
here from the papers' definitions so that what users export from such spaces is read, counted
and predicted before anyone ranks them.  No labels: these families test coverage, counts
(against torch's, as every corpus family) and the in-domain score, not accuracy.

- ``darts``: DARTS's CIFAR network (Liu et al., ICLR 2019, ``NetworkCIFAR``: 8 cells, 32 initial
  channels, reductions at 1/3 and 2/3, a cell of 4 nodes with two inputs each, concatenated)
  with genotypes drawn as NAS-Bench-301 draws them (each node picks 2 distinct earlier nodes and
  one of its 7 ops per input, for the normal and the reduction cell).
- ``resnet_macro``: the macro skeleton of TransNAS-Bench-101 (Duan et al., CVPR 2021): a stem,
  then 4 to 6 residual blocks, each coded 1 (plain), 2 (channels x2), 3 (stride 2) or 4 (both),
  with 1 to 4 downsamplings and 1 to 3 doublings, at 224 x 224 with 1,000 classes.
"""

from __future__ import annotations

import itertools
import random

import torch
import torch.nn as nn

DARTS_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")


def _relu_conv_bn(c_in, c_out, k, stride, pad, dilation=1, groups=1):
    return [nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, groups=groups, bias=False)]


class _FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _darts_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else _FactorizedReduce(c, c)
    k = int(name[-1])
    if name.startswith("sep_conv"):  # two depthwise-separable convolutions
        return nn.Sequential(
            *_relu_conv_bn(c, c, k, stride, k // 2, groups=c), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            *_relu_conv_bn(c, c, k, 1, k // 2, groups=c), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c))
    return nn.Sequential(  # dil_conv: one dilated depthwise-separable convolution
        *_relu_conv_bn(c, c, k, stride, k - 1, dilation=2, groups=c), nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c))


class _Cell(nn.Module):
    def __init__(self, genes, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.pre0 = _FactorizedReduce(c_pp, c) if reduction_prev else nn.Sequential(
            *_relu_conv_bn(c_pp, c, 1, 1, 0), nn.BatchNorm2d(c))
        self.pre1 = nn.Sequential(*_relu_conv_bn(c_p, c, 1, 1, 0), nn.BatchNorm2d(c))
        self.inputs = [src for src, _ in genes]
        self.ops = nn.ModuleList(
            _darts_op(op, c, 2 if reduction and src < 2 else 1) for src, op in genes)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(4):
            a, b = 2 * node, 2 * node + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], dim=1)


class DartsNetwork(nn.Module):
    """DARTS's ``NetworkCIFAR`` without the auxiliary head (eval mode never runs it)."""

    def __init__(self, genotype, c=32, layers=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        c_pp, c_p, c_cur, reduction_prev = 3 * c, 3 * c, c, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_cur = c_cur * 2 if reduction else c_cur
            genes = genotype["reduce" if reduction else "normal"]
            self.cells.append(_Cell(genes, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, 4 * c_cur
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.pool(s1), 1))


def darts_genotypes(count: int, seed: int = 301) -> list[dict]:
    """NAS-Bench-301's sampling: node i (2..5) takes two distinct inputs among 0..i-1, an op each."""
    rng = random.Random(seed)

    def cell():
        genes = []
        for node in range(2, 6):
            for src in sorted(rng.sample(range(node), 2)):
                genes.append((src, rng.choice(DARTS_OPS)))
        return genes

    return [{"normal": cell(), "reduce": cell()} for _ in range(count)]


class _Block(nn.Module):
    """A basic residual block (two 3x3 convolutions); a projection when the shape changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.short = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.short(x))


class MacroNetwork(nn.Module):
    def __init__(self, codes, base=64, classes=1000):
        super().__init__()
        layers = [nn.Conv2d(3, base, 3, 2, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU()]
        c = base
        for code in codes:
            c_out = c * 2 if code in (2, 4) else c
            layers.append(_Block(c, c_out, 2 if code in (3, 4) else 1))
            c = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))

    def forward(self, x):
        return self.head(self.body(x))


def macro_codes() -> list[tuple[int, ...]]:
    """Every code of the skeleton: 4-6 blocks, 1-4 downsamplings, 1-3 doublings."""
    out = []
    for n in (4, 5, 6):
        for codes in itertools.product((1, 2, 3, 4), repeat=n):
            down = sum(c in (3, 4) for c in codes)
            double = sum(c in (2, 4) for c in codes)
            if 1 <= down <= 4 and 1 <= double <= 3:
                out.append(codes)
    return out


def cases(family: str, count: int, case_type, image) -> list:
    """``count`` networks of ``family``, the same ones on every run, as ``case_type``s fed by
    ``image(size)`` (``corpus_families``' Case and input)."""
    if family == "darts":
        return [case_type(f"darts_{i:03d}", (lambda g=g: DartsNetwork(g)), image(32), ["input"],
                          {"genotype": g, "space": "DARTS (NB-301 sampling), C=32, 8 cells"})
                for i, g in enumerate(darts_genotypes(count))]
    codes = macro_codes()
    picked = sorted(random.Random(101).sample(range(len(codes)), count))
    return [case_type("macro_" + "".join(map(str, codes[i])), (lambda c=codes[i]: MacroNetwork(c)),
                      image(224), ["input"],
                      {"codes": list(codes[i]), "space": f"TNB-101 macro skeleton, {len(codes)} codes"})
            for i in picked]
