#!/usr/bin/env python3
"""Writes tests/corpus/keras: one small network written by Keras through tf2onnx and by PyTorch.

    python scripts/gen_keras.py [--out tests/corpus/keras]

Needs tensorflow-cpu (2.21), keras (3.15) and tf2onnx (1.17), in a virtualenv of their own
(they pin a protobuf that PyTorch's exporter does not take), and torch for the PyTorch twin
(run it with `--torch-only` from .venv-export). `make test` reads the committed files; it never
runs this script.

The network: Keras' input normalization (`Rescaling`, `Normalization`), a stride-2 stem
(`ZeroPadding2D` + convolution + BatchNorm + ReLU), `ZeroPadding2D` + max pool, a depthwise
convolution + BatchNorm (which tf2onnx leaves as `Mul` + `Add`), a pointwise one, two
DenseNet-style layers (each concatenating what came before, one feature at a time in Keras,
afresh from the list in PyTorch), global average pooling and a softmax classifier. PyTorch's
twin computes the same function on the logits, with its padding in the convolutions and the
pool and its input normalized by the data pipeline. `truth.json` holds each framework's
parameter count (PyTorch's: BatchNorm folded into the convolutions).

`keras_ln.onnx`: a Keras `LayerNormalization` between two dense layers, which tf2onnx writes
out in TensorFlow's form; `truth.json` holds ONNX Runtime's output of it (onnxruntime in the
Keras virtualenv too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MEAN, VAR = [0.485, 0.456, 0.406], [0.052, 0.050, 0.051]


def keras_file(out: Path) -> dict:
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import numpy as np
    from keras import layers as L
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((32, 32, 3))
    x = L.Rescaling(1 / 255)(x)
    x = L.Normalization(mean=MEAN, variance=VAR)(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, strides=2, use_bias=False)(x)))
    x = L.MaxPooling2D(3, strides=2)(L.ZeroPadding2D(1)(x))
    x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(24, 1, use_bias=False)(x)))
    for _ in range(2):
        new = L.Conv2D(8, 3, padding="same")(L.ReLU()(L.BatchNormalization()(x)))
        x = L.Concatenate()([x, new])
    x = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    m = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for layer in m.layers:  # trained-like statistics and biases: no zero for tf2onnx to drop
        if isinstance(layer, L.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([1 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c),
                               0.1 * rng.standard_normal(c), 1 + 0.1 * rng.random(c)])
        elif getattr(layer, "bias", None) is not None:
            w = layer.get_weights()
            w[1] = 0.01 * rng.standard_normal(w[1].shape)
            layer.set_weights(w)
    m(np.zeros((1, 32, 32, 3), dtype="float32"))
    m.export(str(out / "keras.onnx"), format="onnx", verbose=False)
    return {"keras_params": int(m.count_params()),
            "keras_trainable": int(sum(np.prod(v.shape) for v in m.trainable_weights))}


def keras_layer_norm_file(out: Path) -> dict:
    """Dense, LayerNormalization (random scale and shift), Dense + ReLU on [1, 16, 32]: the
    LayerNorm as tf2onnx writes it out; ONNX Runtime's output on x[i] = sin(0.37 i)."""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import numpy as np
    import onnxruntime as ort
    from keras import layers as L
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 32))
    x = L.Dense(8, activation="relu")(L.LayerNormalization(epsilon=1e-5)(L.Dense(32)(inp)))
    m = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for layer in m.layers:
        w = layer.get_weights()
        if w:
            layer.set_weights([a + 0.1 * rng.standard_normal(a.shape) for a in w])
    m(np.zeros((1, 16, 32), dtype="float32"))
    f = out / "keras_ln.onnx"
    m.export(str(f), format="onnx", verbose=False)
    x = np.sin(0.37 * np.arange(16 * 32)).astype(np.float32).reshape(1, 16, 32)
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return {"ln_params": int(m.count_params()),
            "ln_ort_output": [round(float(v), 7) for v in y.ravel()]}


def torch_file(out: Path) -> dict:
    import torch
    from torch import nn

    def cbr(cin, cout, k, stride=1, groups=1):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(
                nn.Sequential(nn.BatchNorm2d(24 + 8 * i), nn.ReLU(), nn.Conv2d(24 + 8 * i, 8, 3, 1, 1))
                for i in range(2))

        def forward(self, x):
            feats = [x]
            for layer in self.layers:
                feats.append(layer(torch.cat(feats, 1)))
            return torch.cat(feats, 1)

    torch.manual_seed(0)
    m = nn.Sequential(*cbr(3, 16, 3, 2), nn.MaxPool2d(3, 2, 1), *cbr(16, 16, 3, groups=16),
                      *cbr(16, 24, 1), Dense(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(40, 10)).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(1, 1.1)
                mod.bias.normal_(0, 0.1)
    torch.onnx.export(m, (torch.zeros(1, 3, 32, 32),), str(out / "torch.onnx"), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"])
    return {"torch_params": sum(p.numel() for p in m.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/corpus/keras", type=Path)
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--keras-only", action="store_true")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    truth_path = a.out / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    if not a.torch_only:
        truth |= keras_file(a.out) | keras_layer_norm_file(a.out)
    if not a.keras_only:
        truth |= torch_file(a.out)
    truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    print(truth)


if __name__ == "__main__":
    main()
