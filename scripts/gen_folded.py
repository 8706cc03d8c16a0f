#!/usr/bin/env python3
"""Writes tests/corpus/folded: one small network exported in training mode (its BatchNorms in
the file) and in eval mode, where PyTorch's exporters fold every BatchNorm into the
convolution before it (TorchScript and dynamo).

    .venv-export/bin/python scripts/gen_folded.py [--out tests/corpus/folded]

`make test` reads the committed files; it never runs this script.

The network has what `Cg::restore_batchnorms` must tell apart: convolutions followed by a
BatchNorm (a stem, a residual block with a projection, a depthwise convolution), a
squeeze-excitation whose two biased 1 x 1 convolutions work on a pooled 1 x 1 map (no BatchNorm
there), and a biased head convolution with no BatchNorm and no weighted layer after it.
`tests/proxies.rs` asks the eval-mode files, restored, for the training-mode file's proxies.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import onnx
import torch
from torch import nn


def conv_bn(c_in, c_out, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8), nn.ReLU())
        self.body = nn.Sequential(conv_bn(8, 16, stride=2), nn.ReLU(), conv_bn(16, 16))
        self.project = conv_bn(8, 16, k=1, stride=2)
        self.depthwise = nn.Sequential(conv_bn(16, 16, groups=16), nn.ReLU())
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                     nn.Conv2d(4, 16, 1), nn.Sigmoid())
        self.head = nn.Conv2d(16, 10, 1)  # biased, no BatchNorm, the last weighted layer

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.body(x) + self.project(x))
        x = self.depthwise(x)
        x = x * self.squeeze(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.head(x)), 1), 1)


def export(net: nn.Module, path: Path, **kw) -> None:
    x = torch.randn(2, 3, 16, 16)
    with redirect_stdout(io.StringIO()):
        if kw.pop("dynamo", False):
            prog = torch.onnx.export(net, (x,), dynamo=True, opset_version=18, input_names=["input"],
                                     external_data=False)
            model = prog.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["input"],
                              **kw)
            model = onnx.load_from_string(buf.getvalue())
    path.write_bytes(model.SerializeToString(deterministic=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/corpus/folded")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net()
    export(net.train(), args.out / "train.onnx", training=torch.onnx.TrainingMode.TRAINING,
           do_constant_folding=False)
    export(net.eval(), args.out / "eval.onnx")
    export(net.eval(), args.out / "eval_dynamo.onnx", dynamo=True)
    ops = {f.stem: sorted({n.op_type for n in onnx.load(str(f)).graph.node})
           for f in sorted(args.out.glob("*.onnx"))}
    truth = {"params": sum(p.numel() for p in net.parameters()), "batchnorms": 5, "ops": ops}
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
