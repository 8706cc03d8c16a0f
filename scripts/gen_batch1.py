#!/usr/bin/env python3
"""Writes tests/corpus/batch1: a small attention network as PyTorch's TorchScript exporter
writes it at batch 1, the batch folded into its constants.

    .venv-export/bin/python scripts/gen_batch1.py [--out tests/corpus/batch1]

`make test` reads the committed files; it never runs this script.

The network is a ViT in miniature: a patch convolution, a class token, `nn.MultiheadAttention`
over the tokens laid out `[tokens, batch, dim]` (torchvision's ViT), a LayerNorm, a GELU MLP
and a linear head; no BatchNorm. Traced at batch 1 with constant folding, the attention's
head split is a Reshape to `[tokens, batch x heads, head dim]` written as `[17, 2, 8]`: a
runtime that puts a larger batch in the first dimension reads it as `[51, 2, 8]` at batch 3,
which does not fit the batch's 816 values. `truth.json` holds PyTorch's output on a batch
of 3 and the gradient of the outputs' sum with respect to that input, from the network as
built (any batch), so a runtime that runs the batch-1 file at batch 3 can be checked against
the network itself.
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


class TinyViT(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2, classes: int = 5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)  # 16 px -> 4 x 4 tokens
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # [B, 16, dim]
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)  # [B, 17, dim]
        t = t.transpose(0, 1)  # [17, B, dim], as nn.MultiheadAttention takes it
        a, _ = self.attn(t, t, t, need_weights=False)
        t = self.norm(t + a)
        t = t + self.mlp(t)
        return self.head(t[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/corpus/batch1")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = TinyViT().eval()
    buf = io.BytesIO()
    with redirect_stdout(io.StringIO()):
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    onnx.save(model, out / "attention.onnx")
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in model.graph.node if n.op_type == "Constant"}
    reshapes = [consts[n.input[1]].tolist() for n in model.graph.node
                if n.op_type == "Reshape" and n.input[1] in consts]
    x = torch.sin(0.37 * torch.arange(3 * 3 * 16 * 16, dtype=torch.float32)).reshape(3, 3, 16, 16)
    x.requires_grad_(True)
    y = net(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    truth = {
        "input_shape": list(x.shape),
        "input": "sin(0.37 * i), i = 0.. in row-major order",
        "output_shape": list(y.shape),
        "output": [round(float(v), 7) for v in y.detach().flatten()],
        "grad_input": [round(float(v), 8) for v in grad.flatten()],
        "params": sum(p.numel() for p in net.parameters()),
        "reshape_constants": reshapes,
    }
    (out / "truth.json").write_text(json.dumps(truth) + "\n")
    print(f"wrote {out}: {truth['params']} parameters, reshapes to {truth['reshape_constants']}")


if __name__ == "__main__":
    main()
