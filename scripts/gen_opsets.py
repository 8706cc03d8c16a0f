#!/usr/bin/env python3
"""Writes tests/corpus/opsets: one small network as PyTorch writes it at opsets 17 and 9, and
as ONNX's version converter writes the opset-9 file at opset 7.

    .venv-export/bin/python scripts/gen_opsets.py [--out tests/corpus/opsets]

`make test` reads the committed files; it never runs this script.

The network has each op PyTorch's exporter writes differently below opset 10: a max pool with
`ceil_mode=True` (opset 9: end pads instead), an average pool with padding that counts it
(opset 9: a `Pad`, then an unpadded pool), one without padding (opset 9: a `Pad` of nothing
before it), `chunk` (opset 9: one `Split`; 17: two `Slice`s) and nearest upsampling (opset 9:
`Upsample` with its scales as an input; 7: as an attribute; 17: `Resize`). `auto_pad.onnx`
is the opset-17 file with its padding written as older converters write it: each convolution
and pool that pads evenly, and the `ceil_mode` max pool, with `auto_pad="SAME_UPPER"` and no
pads. `truth.json` holds PyTorch's parameter count, the input, PyTorch's output and ONNX
Runtime's output of each file.

`legacy.onnx` is written as the Caffe-era files of the ONNX model zoo are (opset 7, IR 3, every
weight also a graph input): `LRN` after a convolution and after a BatchNorm (with its
`spatial` attribute), a grouped convolution, a `Sum` of three tensors, `Dropout`, `Flatten`,
`Gemm` with `transB` and a softmax; `truth.json` holds its parameter count (BatchNorm's scale
and shift, not its statistics) and ONNX Runtime's output of the same input.

`experimental.onnx` (opset 9) has the Caffe2-era ops ONNX dropped at opset 10 or defines by a
function: `ImageScaler`, `Crop` (by border, and by scale), `Scale`, `MeanVarianceNormalization`
and `LpNormalization` (p = 2 and 1); `truth.json` holds its count and ONNX Runtime's output.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)  # 32 -> 16 (15 without ceil_mode)
        self.avg = nn.AvgPool2d(3, 1, padding=1)  # count_include_pad=True, PyTorch's default
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 1)
        self.down = nn.AvgPool2d(2, 2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.avg(self.pool(self.stem(x)))
        a, b = x.chunk(2, dim=1)
        x = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], 1)
        x = self.down(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def export(net: nn.Module, x: torch.Tensor, opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with redirect_stdout(io.StringIO()):
        torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def same_upper(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with `auto_pad="SAME_UPPER"` for every convolution and pool whose output is
    its input's size over its stride (what SAME_UPPER pads to), pads and ceil_mode dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n in out.graph.node:
        if n.op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if any(s != 1 for s in attrs.get("strides", [1])) and n.op_type != "MaxPool":
            continue
        if not any(attrs.get("pads", [0])) and not attrs.get("ceil_mode", 0):
            continue
        kept = [a for a in n.attribute if a.name not in ("pads", "ceil_mode", "auto_pad")]
        del n.attribute[:]
        n.attribute.extend(kept + [onnx.helper.make_attribute("auto_pad", "SAME_UPPER")])
    return out


def legacy(rng: np.random.Generator) -> tuple[onnx.ModelProto, int]:
    """The Caffe-era file of the module docs, and its parameter count."""
    from onnx import TensorProto, helper as h, numpy_helper as nh

    def w(name, *shape, positive=False):
        v = rng.standard_normal(shape).astype(np.float32) * 0.1
        return nh.from_array(np.abs(v) + 0.5 if positive else v, name)
    inits = [w("c1w", 16, 3, 5, 5), w("c1b", 16), w("c2w", 32, 8, 3, 3), w("c2b", 32), w("bs", 32),
             w("bb", 32), w("bm", 32), w("bv", 32, positive=True), w("c3w", 32, 32, 3, 3),
             w("fw", 10, 32 * 8 * 8), w("fb", 10)]
    n = h.make_node
    nodes = [n("Conv", ["x", "c1w", "c1b"], ["c1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
             n("Relu", ["c1"], ["r1"]),
             n("LRN", ["r1"], ["n1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
             n("MaxPool", ["n1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Conv", ["p1", "c2w", "c2b"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
             n("BatchNormalization", ["c2", "bs", "bb", "bm", "bv"], ["b2"], epsilon=1e-5, spatial=1),
             n("Relu", ["b2"], ["r2"]),
             n("LRN", ["r2"], ["n2"], size=3, alpha=2e-2, beta=0.6, bias=2.0),
             n("Conv", ["n2", "c3w"], ["c3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n("Sum", ["c3", "n2", "r2"], ["s3"]),
             n("Dropout", ["s3"], ["d3"]),
             n("MaxPool", ["d3"], ["p3"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Flatten", ["p3"], ["f"], axis=1),
             n("Gemm", ["f", "fw", "fb"], ["y0"], transB=1),
             n("Softmax", ["y0"], ["y"])]
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    weights = [h.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    g = h.make_graph(nodes, "legacy", [x] + weights,
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 7)], ir_version=3)
    counted = sum(int(np.prod(t.dims)) for t in inits if t.name not in ("bm", "bv"))
    return model, counted


def experimental(rng: np.random.Generator) -> tuple[onnx.ModelProto, int]:
    """The opset-9 file of the Caffe2-era ops (experimental in ONNX until opset 10, or defined
    by a function): `ImageScaler`, `Crop` by border and by scale, `Scale`,
    `MeanVarianceNormalization`, `LpNormalization` with p = 2 and p = 1; its parameter count
    (the initializers; `ImageScaler`'s scale and bias are attributes)."""
    from onnx import TensorProto, helper as h, numpy_helper as nh

    def w(name, *shape):
        return nh.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)
    inits = [w("c1w", 8, 3, 3, 3), w("c1b", 8), w("c2w", 8, 8, 1, 1), w("c2b", 8), w("fw", 10, 8),
             w("fb", 10)]
    n = h.make_node
    nodes = [n("ImageScaler", ["x"], ["s"], scale=0.5, bias=[0.1, -0.2, 0.3]),
             n("Conv", ["s", "c1w", "c1b"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r1"]),
             n("MeanVarianceNormalization", ["r1"], ["m1"]),
             n("Crop", ["m1"], ["k1"], border=[1, 2, 3, 4]),
             n("Scale", ["k1"], ["s1"], scale=2.0),
             n("Conv", ["s1", "c2w", "c2b"], ["c2"], kernel_shape=[1, 1]),
             n("LpNormalization", ["c2"], ["l2"], axis=1, p=2),
             n("Crop", ["l2"], ["k2"], border=[2, 2, 0, 0], scale=[16, 16]),
             n("GlobalAveragePool", ["k2"], ["g"]),
             n("Flatten", ["g"], ["f"], axis=1),
             n("LpNormalization", ["f"], ["l1"], axis=1, p=1),
             n("Gemm", ["l1", "fw", "fb"], ["y"], transB=1)]
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    g = h.make_graph(nodes, "experimental", [x],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 9)], ir_version=4)
    return model, sum(int(np.prod(t.dims)) for t in inits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("tests/corpus/opsets"))
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # trained-like statistics
        bn = net.stem[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.8, 1.2)
        bn.weight.uniform_(0.8, 1.2)
        bn.bias.uniform_(-0.1, 0.1)
    x = torch.sin(0.37 * torch.arange(3 * 32 * 32, dtype=torch.float32)).reshape(1, 3, 32, 32)
    with torch.no_grad():
        y = net(x)
    files = {"op17": export(net, x, 17), "op9": export(net, x, 9)}
    files["op7"] = onnx.version_converter.convert_version(files["op9"], 7)
    files["auto_pad"] = same_upper(files["op17"])
    files["legacy"], truth_legacy = legacy(np.random.default_rng(0))
    files["experimental"], truth_experimental = experimental(np.random.default_rng(1))
    truth = {"params": sum(p.numel() for p in net.parameters()), "input_shape": [1, 3, 32, 32],
             "torch_output": [round(float(v), 7) for v in y.flatten()], "files": {}}
    for name, model in files.items():
        onnx.checker.check_model(model)
        path = out / f"{name}.onnx"
        path.write_bytes(model.SerializeToString(deterministic=True))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x.numpy()})[0]
        own = name in ("legacy", "experimental")  # not the PyTorch network
        err = 0.0 if own else float(np.max(np.abs(got - y.numpy())))
        assert err < 1e-4, (name, err)
        ops = sorted({n.op_type for n in model.graph.node})
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        truth["files"][name] = {"opset": opset, "ops": ops,
                                "ort_output": [round(float(v), 7) for v in got.flatten()]}
        against = "" if own else f", ONNX Runtime {err:.1e} from PyTorch"
        print(f"{path}: opset {opset}, {path.stat().st_size} bytes{against}, ops {ops}")
    truth["files"]["legacy"]["params"] = truth_legacy
    truth["files"]["experimental"]["params"] = truth_experimental
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main()
