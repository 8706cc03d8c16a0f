#!/usr/bin/env python3
"""Export the cells of a `nape export nb201` folder again, from PyTorch modules, with PyTorch's
two ONNX exporters (issue 13, item 4: one canonical graph per network).

The modules follow NAS-Bench-201's own definitions (Dong & Yang, 2020; `TinyNetwork` with
`InferCell`): ReLU-Conv-BN edges, `x.mul(0.)` for `none`, average pooling without padding in
the count, `sum(...)` over a node's incoming edges, a ResNet basic block between stages. Each
network is exported in eval mode with weights embedded (PyTorch's default initialisation, BatchNorm
statistics drawn as a trained network has them: see `trained_like`):
- `torchscript/`: `torch.onnx.export(..., dynamo=False, do_constant_folding=True)`, opset 17,
  which folds BatchNorm into the convolution before it;
- `dynamo/`: `torch.onnx.export(..., dynamo=True)`, opset 18, BatchNorm kept as a node.

    python scripts/export_torch_cells.py --manifest DIR/manifest.jsonl --out OUT [--limit N]

The file names match the manifest's, so `nape inspect --json` of the three folders can be
compared file by file (scripts/compare_exports.py). Needs torch and onnx (and onnxscript for
dynamo); nothing is downloaded.
"""
import argparse
import io
import json
import os
import sys
import tempfile
import warnings

import torch
from torch import nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, pad):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def edge_op(name, c):
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


def parse_spec(spec):
    """`|op~0|+|op~0|op~1|+|...|` -> [[(op, src), ...] for nodes 1..3]."""
    nodes = []
    for part in spec.split("+"):
        edges = [e for e in part.split("|") if e]
        nodes.append([(e.split("~")[0], int(e.split("~")[1])) for e in edges])
    return nodes


class Cell(nn.Module):
    def __init__(self, spec, c):
        super().__init__()
        self.wiring = parse_spec(spec)
        self.ops = nn.ModuleList(edge_op(op, c) for node in self.wiring for op, _ in node)

    def forward(self, x):
        nodes, k = [x], 0
        for node in self.wiring:
            terms = []
            for _, src in node:
                terms.append(self.ops[k](nodes[src]))
                k += 1
            nodes.append(sum(terms))  # NAS-Bench-201's own sum, which starts from 0
        return nodes[-1]


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    def __init__(self, spec, classes, c=16, n=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells = []
        for stage in range(3):
            if stage > 0:
                cells.append(BasicBlock(c, 2 * c))
                c *= 2
            cells.extend(Cell(spec, c) for _ in range(n))
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        out = self.global_pooling(self.lastact(self.cells(self.stem(x))))
        return self.classifier(out.view(out.size(0), -1))


def trained_like(model, gen):
    """BatchNorm statistics and affine terms as a trained network has them. Left at their
    initial values (scale 1, shift 0, mean 0, variance 1), a BatchNorm folds into a zero bias,
    which the dynamo exporter's optimiser then drops from the file: no reader can count a bias
    the file does not hold, so the check would compare an untrained artefact."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model


# ---- NAS-Bench-101 (Ying et al., 2019): the network of `nasbench/lib/model_builder.py` ----

def conv_bn_relu(c_in, c_out, k):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.003),
        nn.ReLU(inplace=False),
    )


def vertex_channels(m, c_in, c_out):
    """NAS-Bench-101's `compute_vertex_channels`: the output's channels split over the vertices
    that feed it (the remainder to the first ones), other vertices as wide as their widest successor."""
    n = len(m)
    vc = [0] * n
    vc[0], vc[n - 1] = c_in, c_out
    if n == 2:
        return vc
    fan_in = max(1, sum(m[v][n - 1] for v in range(1, n - 1)))
    interior, correction = divmod(c_out, fan_in)
    for v in range(1, n - 1):
        if m[v][n - 1]:
            vc[v] = interior + (1 if correction > 0 else 0)
            correction -= 1 if correction > 0 else 0
    for v in range(n - 3, 0, -1):
        if not m[v][n - 1]:
            for dst in range(v + 1, n - 1):
                if m[v][dst]:
                    vc[v] = max(vc[v], vc[dst])
    return vc


class Nb101Cell(nn.Module):
    def __init__(self, m, ops, c_in, c_out):
        super().__init__()
        self.m, self.n = m, len(m)
        self.vc = vertex_channels(m, c_in, c_out)
        self.ops = nn.ModuleDict()
        self.proj = nn.ModuleDict()
        for t in range(1, self.n - 1):
            kind = ops[t]
            if kind.startswith("conv3x3"):
                self.ops[str(t)] = conv_bn_relu(self.vc[t], self.vc[t], 3)
            elif kind.startswith("conv1x1"):
                self.ops[str(t)] = conv_bn_relu(self.vc[t], self.vc[t], 1)
            else:
                self.ops[str(t)] = nn.MaxPool2d(3, stride=1, padding=1)
            if m[0][t]:
                self.proj[str(t)] = conv_bn_relu(c_in, self.vc[t], 1)
        if m[0][self.n - 1]:
            self.proj[str(self.n - 1)] = conv_bn_relu(c_in, c_out, 1)

    def forward(self, x):
        n, out, tensors, cat = self.n, self.n - 1, [x], []
        for t in range(1, out):
            terms = [tensors[s][:, : self.vc[t]] if self.vc[s] > self.vc[t] else tensors[s]
                     for s in range(1, t) if self.m[s][t]]
            if self.m[0][t]:
                terms.append(self.proj[str(t)](x))
            value = self.ops[str(t)](terms[0] if len(terms) == 1 else sum(terms))
            tensors.append(value)
            if self.m[t][out]:
                cat.append(value)
        if not cat:
            return self.proj[str(out)](x)
        y = cat[0] if len(cat) == 1 else torch.cat(cat, 1)
        return y + self.proj[str(out)](x) if self.m[0][out] else y


class Nb101Network(nn.Module):
    def __init__(self, spec, classes=10, stem=128, stacks=3, cells=3):
        super().__init__()
        rows, ops = spec.split(":")
        m = [[int(ch) for ch in r] for r in rows.split("/")]
        ops = ops.split(",")
        layers, c = [conv_bn_relu(3, stem, 3)], stem
        for stack in range(stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
                c *= 2
            for i in range(cells):
                layers.append(Nb101Cell(m, ops, c if i > 0 or stack == 0 else c // 2, c))
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(torch.mean(self.layers(x), dim=(2, 3)))


def export(model, x, path, dynamo):
    tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp", delete=False)
    tmp.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=18,
                                     external_data=False, verbose=False)
            prog.save(tmp.name)
        else:
            torch.onnx.export(model, (x,), tmp.name, dynamo=False, opset_version=17,
                              do_constant_folding=True, input_names=["input"],
                              output_names=["logits"])
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="manifest.jsonl of `nape export nb201`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--ids", default=None, help="only these manifest ids (comma-separated)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--exporters", default="torchscript,dynamo")
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.manifest) if l.strip()][: args.limit]
    if args.ids:
        rows = [r for r in rows if r["id"] in set(args.ids.split(","))]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for exporter in args.exporters.split(","):
        os.makedirs(os.path.join(args.out, exporter), exist_ok=True)
    for row in rows:
        # each network's weights from its own seed, so any subset exports the same files
        torch.manual_seed(int(row["id"], 16) % 2**31 if row["family"] == "nb101" else int(row["id"]))
        gen = torch.Generator().manual_seed(torch.initial_seed())
        net = Nb101Network if row["family"] == "nb101" else TinyNetwork
        model = trained_like(net(row["spec"], args.classes), gen).eval()
        for exporter in args.exporters.split(","):
            path = os.path.join(args.out, exporter, row["file"])
            if not os.path.exists(path):
                export(model, x, path, exporter == "dynamo")
        done = rows.index(row) + 1
        if done % 20 == 0:
            print(f"{done}/{len(rows)}", file=sys.stderr)


if __name__ == "__main__":
    main()
