#!/usr/bin/env python3
"""Generate ``tests/corpus/quantized/``: one small float network and the forms that tools write
of it when it is quantized or converted to float16, for ``tests/quantized.rs``.

    .venv-export/bin/python scripts/gen_quantized.py

The network (``float.onnx``, exported by ``torch.onnx.export``, TorchScript, opset 17) has the
ops quantizers handle: convolutions with BatchNorm, ReLU and ReLU6 (Clip), a depthwise
convolution, a residual Add, MaxPool, a Concat of two branches, a sigmoid gate (Mul), global
average pooling and a Linear layer. Its forms, each written by the tool a user would use:

``qdq.onnx``       ONNX Runtime's ``quantize_static``, QDQ format, int8 per-channel weights
``qoperator.onnx`` ``quantize_static`` in QOperator format (QLinearConv, QLinearAdd, QGemm, ...)
                   after ONNX Runtime's ``quant_pre_process``
``dynamic.onnx``   ``quantize_dynamic`` (DynamicQuantizeLinear, ConvInteger, MatMulInteger)
``fp16.onnx``      ``onnxruntime.transformers.float16.convert_float_to_float16``
``fp16_io32.onnx`` the same with ``keep_io_types=True``: its input and output Casts come after
                   the nodes that read them (the file is not in topological order)

``truth.json`` lists each file with its ops (as ONNX Runtime wrote them), and ONNX Runtime's
output of each form on the input ``x[i] = sin(0.37 i)`` (flat index ``i``), so the test can check that nape's float reading of a
quantized form computes what the quantized file computes (within quantization error).
Calibration uses 8 fixed random batches; everything is seeded, and ONNX Runtime's output is
deterministic on one thread.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quant_pre_process, quantize_dynamic, quantize_static)
from onnxruntime.transformers.float16 import convert_float_to_float16
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "quantized"
SHAPE = (1, 3, 32, 32)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        bn = nn.BatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), bn(16), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), bn(32), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), bn(32), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), bn(16))
        self.pool = nn.MaxPool2d(2)
        self.left = nn.Conv2d(16, 8, 3, 1, 1)
        self.right = nn.Conv2d(16, 8, 1)
        self.gate = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.project(self.dw(self.expand(x))))
        x = self.pool(x)
        x = torch.cat([self.left(x), self.right(x)], 1)
        x = x * torch.sigmoid(self.gate(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Batches(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.batches = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(8)]

    def get_next(self):
        return {"input": self.batches.pop()} if self.batches else None


def export_float(path: Path) -> int:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    torch.onnx.export(net, torch.zeros(SHAPE), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    return sum(p.numel() for p in net.parameters())


def run(path: Path, x: np.ndarray) -> list[float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [float(v) for v in s.run(None, {"input": x})[0].ravel()]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    f = OUT / "float.onnx"
    torch_params = export_float(f)
    pre = OUT / "pre.onnx"
    quant_pre_process(str(f), str(pre))
    quantize_static(str(f), str(OUT / "qdq.onnx"), Batches(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    quantize_static(str(pre), str(OUT / "qoperator.onnx"), Batches(),
                    quant_format=QuantFormat.QOperator)
    pre.unlink()
    quantize_dynamic(str(f), str(OUT / "dynamic.onnx"), weight_type=QuantType.QInt8)
    onnx.save(convert_float_to_float16(onnx.load(str(f))), str(OUT / "fp16.onnx"))
    onnx.save(convert_float_to_float16(onnx.load(str(f)), keep_io_types=True),
              str(OUT / "fp16_io32.onnx"))
    x = np.sin(0.37 * np.arange(np.prod(SHAPE), dtype=np.float32)).reshape(SHAPE)
    files = {}
    for name in ["float", "qdq", "qoperator", "dynamic", "fp16", "fp16_io32"]:
        path = OUT / f"{name}.onnx"
        model = onnx.load(str(path))
        feed = x.astype(np.float16) if name == "fp16" else x
        ops = sorted({n.op_type for n in model.graph.node})
        files[name] = {"file": path.name, "ops": ops, "ort_output": run(path, feed),
                       "bytes": os.path.getsize(path)}
    truth = {"torch_params": torch_params, "input_shape": list(SHAPE),
             "input": "x[i] = sin(0.37 i) in float32, i the flat index", "files": files}
    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    for name, t in files.items():
        print(f"{name:10s} {t['bytes']:7d} B  {', '.join(t['ops'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
