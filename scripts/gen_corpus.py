#!/usr/bin/env python3
"""Generate nape's ONNX test corpus under ``tests/corpus/``.

Run from anywhere::

    /work/devpy/bin/python scripts/gen_corpus.py            # everything
    /work/devpy/bin/python scripts/gen_corpus.py --only ops # just tests/corpus/ops
    /work/devpy/bin/python scripts/gen_corpus.py --only zoo # just tests/corpus/zoo

Outputs
-------
``tests/corpus/ops/*.onnx``
    Small models (real weights kept, each < 200 KB) that together cover the
    op kinds nape has to understand.  Most are built from ``torch.nn`` modules
    and exported by ``torch.onnx.export``; the few ops PyTorch never emits
    (Identity, Dropout, GlobalMaxPool, NAS-Bench-201's ``none`` op written as
    ``Mul(x, 0.0)``) are built directly with ``onnx.helper``.  So is
    ``rare_ops.onnx``, the only file at opset 21 (everything else is opset 18):
    GroupNormalization-21, the single-op Gelu-20, a standalone Erf, LogSoftmax,
    Exp/Log/Neg/Abs/Reciprocal, Max/Min of two activations, Cast, Expand, Tile,
    SpaceToDepth, ReduceSum/Max/Min/Prod (axes as input), ArgMax and
    GlobalMaxPool, all on the data path.
``tests/corpus/zoo/*.onnx``
    torchvision classification models (``weights=None``, eval mode, input
    [1,3,224,224]) with their weights *stripped*: every float initializer with
    more than 16 elements is removed from ``graph.initializer`` and becomes a
    typed graph input (FLOAT, full static dims) appended after the data input.
    The stripped names are listed, comma separated, in the model's
    ``metadata_props`` under ``nape.weight_inputs``.
``tests/corpus/manifest.json``
    Per-file facts computed independently of nape (see ``file_params`` and
    ``count_macs`` below for the exact rules).

``file_params`` rule (what is trainable in the file, not export-time constants)
----------------------------------------------------------------------------
A *source* is a float ``graph.initializer`` or a stripped weight input (listed
in ``nape.weight_inputs``) with more than one element.  A source counts, once,
with all its elements, if it reaches a *parameter slot* of a *compute node*
either directly or through layout/indexing ops only (Gather, Reshape,
Transpose, Unsqueeze, Squeeze, Slice, Expand, Concat, Cast, Identity, Flatten,
Tile, Split; through their data input: slot 0, or any slot of Concat).

* A compute node is any other node with at least one input that depends on the
  data input.  A node whose inputs are all constants (initializers, stripped
  weights, ``Constant`` outputs, or values computed from those) is export-time
  constant arithmetic (e.g. Swin's attention masks: ConstantOfShape, ScatterND,
  Sub, Equal, Where); its output is *not* a parameter, nor is anything derived
  from it, and its constant inputs are not counted through it.
* Parameter slots are all inputs of a compute node except: BatchNormalization
  inputs 3 and 4 (running stats); for Resize, Upsample, Clip, Pad, Reshape,
  Expand, Tile, Slice, Split, Squeeze, Unsqueeze, Reduce*, Range,
  ConstantOfShape, TopK, OneHot, Pow and Where only input 0 can be a parameter.
* ``Constant`` node values and integer tensors are never counted.

Folded constants that reach compute nodes through layout ops still count
(a folded Conv+BN bias, Swin's folded relative-position bias, the ones/zeros
scale/bias of dynamo's GroupNorm lowering), so ``file_params`` can still differ
from ``framework_params``.  The stripping rule does not depend on this: every
float initializer with more than 16 elements is stripped in zoo/, counted or not.

Everything is deterministic: every model is built right after
``torch.manual_seed(0)``, helper-built weights come from
``numpy.random.default_rng(0)``, shapes are fixed, and exporter metadata that
depends on the machine (stack traces with file paths) is removed.

Post-processing applied to every exported file
----------------------------------------------
* The dynamo exporter writes IR version 10 and attaches ``metadata_props`` to
  nodes / value infos / initializers (IR-10-only fields, including stack
  traces with absolute paths).  Those fields are cleared and ``ir_version``
  is set to 9 (valid for opset 18).  TorchScript-exported and helper-built
  files are IR version 8.
* Node ``doc_string`` fields are cleared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
OPSET = 18
RARE_OPSET = 21  # rare_ops.onnx only: GroupNormalization-21 and Gelu-20 need opset >= 20/21
IR_DYNAMO = 9  # dynamo emits 10; we downgrade (opset 18 needs only IR 8)
IR_HELPER = 8
STRIP_MIN_ELEMS = 17  # float initializers with > 16 elements are stripped in zoo/
OPS_MAX_BYTES = 200 * 1024
ZOO_MAX_BYTES = 1024 * 1024
TOTAL_MAX_BYTES = 8 * 1024 * 1024

PINNED = {
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "onnx": "1.23.2",
    "onnxscript": "0.7.2",
    "onnxruntime": "1.32.0",
    "numpy": "2.4.6",
}

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}

warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@contextlib.contextmanager
def quiet():
    """Silence the exporters' progress chatter (they print to stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def prod(xs) -> int:
    return int(math.prod(int(v) for v in xs))


def iter_nodes(graph: onnx.GraphProto):
    """All nodes of a graph, including nodes of subgraphs (If/Loop/Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_nodes(g)


def op_types(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in iter_nodes(model.graph)})


def randomize_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running stats / affine params (seeded)
    so that BN folding is visible and no two initializers are identical
    (the TorchScript exporter would otherwise dedupe them into Identity nodes)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c) * 0.1)
                m.running_var.copy_(torch.rand(c) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c) + 0.5)
                    m.bias.copy_(torch.randn(c) * 0.1)
    return model


def randomize_constant_params(model: nn.Module) -> nn.Module:
    """Add seeded N(0, 0.1) noise to every parameter whose elements are all equal
    (LayerNorm/GroupNorm ones & zeros, zero-initialised biases, ...).

    Exporters deduplicate bit-identical initializers (dynamo's optimizer rewires
    e.g. norm2 to use norm1's tensors, TorchScript inserts Identity nodes) and
    dynamo drops all-zero Gemm biases.  Trained weights are never identical, so
    this keeps the graph structure what users' files look like."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def framework_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


# Layout / indexing ops: a constant that passes through them (at a data slot) is still the
# same tensor, so where it finally ends up decides whether it is a parameter.
LAYOUT_OPS = frozenset({"Gather", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Slice", "Expand",
                        "Concat", "Cast", "Identity", "Flatten", "Tile", "Split"})
# ops whose only possible parameter slot is input 0 (the others are bounds, shapes, axes, ...);
# Reduce* ops are matched by prefix
SLOT0_ONLY_OPS = frozenset({"Resize", "Upsample", "Clip", "Pad", "Reshape", "Expand", "Tile", "Slice",
                            "Split", "Squeeze", "Unsqueeze", "Range", "ConstantOfShape", "TopK",
                            "OneHot", "Pow", "Where"})


def _param_slots(op_type: str, n_inputs: int):
    """Input slots of a compute node at which a weight counts as a parameter."""
    if op_type == "BatchNormalization":
        return (0, 1, 2)  # not 3, 4: running mean / running variance
    if op_type in SLOT0_ONLY_OPS or op_type.startswith("Reduce"):
        return (0,)
    if op_type in ("LSTM", "GRU", "RNN"):
        return (1, 2, 3, 7)  # W, R, B, peepholes: not sequence lengths or initial states
    return range(n_inputs)


def _layout_data_slots(op_type: str, n_inputs: int):
    """Input slots whose values a layout op passes on (the others are shapes / indices / axes)."""
    return range(n_inputs) if op_type == "Concat" else (0,)


def file_params(model: onnx.ModelProto, stripped: set[str] | frozenset = frozenset()) -> int:
    """Trainable-parameter count read from the ONNX file itself.

    Sources: every *float* ``graph.initializer`` and every stripped weight input
    (zoo files, listed in ``nape.weight_inputs``) with more than one element.
    A source counts (once, all its elements) if it reaches a parameter slot of a
    compute node directly or through layout/indexing ops only (``LAYOUT_OPS``:
    Gather, Reshape, Transpose, Unsqueeze, Squeeze, Slice, Expand, Concat, Cast,
    Identity, Flatten, Tile, Split, via their data input: slot 0, any slot of
    Concat).

    * Compute node: any non-layout node with at least one input that depends on
      the data input (subgraph-carrying nodes always count as compute nodes).
      A non-layout node whose inputs are all constant (initializers, stripped
      weights, ``Constant`` outputs, or values computed from those) is
      export-time constant arithmetic, e.g. Swin's shift masks (ConstantOfShape
      -> ScatterND -> Sub -> Equal/Where): its output is not a parameter, nothing
      derived from it is, and its constant inputs are not counted through it.
    * Parameter slots: all inputs of a compute node except BatchNormalization
      inputs 3 and 4 (running mean / variance), and for ``SLOT0_ONLY_OPS``
      (Resize, Upsample, Clip, Pad, Reshape, Expand, Tile, Slice, Split,
      Squeeze, Unsqueeze, Range, ConstantOfShape, TopK, OneHot, Pow, Where) and
      every Reduce* op only input 0 can be a parameter.

    ``Constant`` node values and integer tensors (shapes, axes, indices) are
    never counted.  Folded constants that reach compute nodes this way (a
    folded Conv+BN bias, Swin's folded relative-position bias, the ones/zeros of
    dynamo's GroupNorm lowering) are indistinguishable from weights and do
    count, which is why ``file_params`` can differ from ``framework_params``.
    """
    g = model.graph
    sizes: dict[str, int] = {}
    for t in g.initializer:
        if t.data_type in FLOAT_TYPES:
            sizes[t.name] = prod(t.dims)
    for vi in g.input:
        if vi.name in stripped:
            sizes[vi.name] = prod(d.dim_value for d in vi.type.tensor_type.shape.dim)
    # values that do not depend on the data input(s); names not known here (the data input,
    # subgraph inputs) are data-dependent
    const: set[str] = {t.name for t in g.initializer} | set(stripped)
    # carried[v]: the sources whose values reach v through layout ops only
    carried: dict[str, frozenset] = {name: frozenset({name}) for name, n in sizes.items() if n > 1}
    used: set[str] = set()
    for node in iter_nodes(g):
        ins = list(node.input)
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in node.attribute)
        dynamic = has_subgraph or any(i and i not in const for i in ins)
        if not dynamic:
            const.update(node.output)
        if node.op_type in LAYOUT_OPS and not has_subgraph:
            src = frozenset().union(*(carried.get(ins[k], frozenset())
                                      for k in _layout_data_slots(node.op_type, len(ins)) if k < len(ins)))
            if src:
                for out in node.output:
                    carried[out] = src
        elif dynamic:
            for k in _param_slots(node.op_type, len(ins)):
                if k < len(ins):
                    used |= carried.get(ins[k], frozenset())
        # else: computed from constants only -> neither it nor anything derived from it counts
    return int(sum(sizes[n] for n in used))


# --------------------------------------------------------------------------
# MAC counting (independent of ONNX): forward hooks on conv / linear modules
# --------------------------------------------------------------------------

HOOKED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear, nn.RNNBase)


def recurrent_macs(mod: nn.RNNBase, x) -> int:
    """Every step of every layer and direction multiplies its input by W_ih and its state by
    W_hh: ``steps x batch x (|W_ih| + |W_hh|)`` summed over layers and directions."""
    x = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
    steps_x_batch = x.numel() // mod.input_size
    return steps_x_batch * sum(p.numel() for n, p in mod.named_parameters() if n.startswith("weight_"))


def count_macs(model: nn.Module, x: torch.Tensor):
    """Multiply-accumulates of conv and linear layers, via forward hooks.

    conv:           output elements * (C_in / groups) * prod(kernel)
    conv-transpose: input elements  * (C_out / groups) * prod(kernel)
    linear:         output elements * in_features

    Returns (macs, missed) where ``missed`` lists hooked-type modules that
    never ran their ``forward`` (their weights were used functionally, e.g.
    ``nn.MultiheadAttention``'s projections or torchvision Swin's qkv/proj).
    """
    total = 0
    fired: set[int] = set()

    def hook(mod, inputs, output):
        nonlocal total
        fired.add(id(mod))
        if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            total += inputs[0].numel() * (mod.out_channels // mod.groups) * prod(mod.kernel_size)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            total += output.numel() * (mod.in_channels // mod.groups) * prod(mod.kernel_size)
        elif isinstance(mod, nn.Linear):
            total += output.numel() * mod.in_features
        elif isinstance(mod, nn.RNNBase):
            total += recurrent_macs(mod, inputs[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, HOOKED)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missed = [name for name, m in model.named_modules() if isinstance(m, HOOKED) and id(m) not in fired]
    return int(total), missed


# --------------------------------------------------------------------------
# export + post-processing
# --------------------------------------------------------------------------


def clean_model(model: onnx.ModelProto, ir_version: int) -> onnx.ModelProto:
    """Drop machine-dependent / IR-10-only metadata, pin the IR version."""

    def clean_graph(g: onnx.GraphProto):
        del g.metadata_props[:]
        for coll in (g.input, g.output, g.value_info):
            for vi in coll:
                del vi.metadata_props[:]
        for t in g.initializer:
            del t.metadata_props[:]
        for n in g.node:
            del n.metadata_props[:]
            n.doc_string = ""
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    clean_graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        clean_graph(sg)

    clean_graph(model.graph)
    model.ir_version = ir_version
    return model


def export_torch(module: nn.Module, x: torch.Tensor, exporter: str, *, optimize: bool = True,
                 dynamic_batch: bool = False) -> onnx.ModelProto:
    module.eval()
    with quiet():
        if exporter == "dynamo":
            kw = {}
            if dynamic_batch:
                kw["dynamic_shapes"] = ({0: torch.export.Dim("N")},)
            prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=OPSET,
                                     optimize=optimize, input_names=["input"],
                                     output_names=["output"], external_data=False, **kw)
            model = prog.model_proto
            ir = IR_DYNAMO
        elif exporter == "torchscript":
            buf = io.BytesIO()
            kw = {}
            if dynamic_batch:
                kw["dynamic_axes"] = {"input": {0: "N"}, "output": {0: "N"}}
            torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["output"],
                              do_constant_folding=optimize, **kw)
            model = onnx.load_from_string(buf.getvalue())
            ir = model.ir_version
        else:
            raise ValueError(exporter)
    return clean_model(model, ir)


def check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inits = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    return real[0]


def input_dims(model: onnx.ModelProto):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in data_input(model).type.tensor_type.shape.dim]


def save(model: onnx.ModelProto, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    return len(data)


# --------------------------------------------------------------------------
# ops/ : PyTorch-built blocks
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBlock(nn.Module):
    """Identity-shortcut basic block followed by a strided one with a 1x1 downsample."""

    def __init__(self):
        super().__init__()
        self.block1 = BasicBlock(8, 8, 1)
        self.block2 = BasicBlock(8, 16, 2)

    def forward(self, x):
        return self.block2(self.block1(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, c: int = 16, cout: int = 32):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = nn.ReLU6(inplace=True)
        self.pw = nn.Conv2d(c, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.act2(self.bn2(self.pw(self.act1(self.bn1(self.dw(x))))))


class SqueezeExcitation(nn.Module):
    """torchvision-style SE: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> Sigmoid -> Mul."""

    def __init__(self, c: int = 32, squeeze: int = 8):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


class SqueezeExcitationLinear(nn.Module):
    """MobileNetV3-style SE with Linear layers and a HardSigmoid gate."""

    def __init__(self, c: int = 32, squeeze: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(c, squeeze)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(squeeze, c)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3))
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.pool1 = nn.MaxPool1d(2)
        self.c2 = nn.Conv1d(8, 16, 3, padding=2, dilation=2)
        self.pool2 = nn.AvgPool1d(2)
        self.c3 = nn.Conv1d(16, 16, 3, stride=2, padding=1, groups=4)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.c1(x))))
        x = self.pool2(F.relu(self.c2(x)))
        return F.relu(self.c3(x))


class ConvTransposeDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.bn1(self.up1(x)))
        x = self.relu(self.bn2(self.up2(x)))
        return torch.tanh(self.head(self.resize(x)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.SiLU()
        self.norm = nn.LayerNorm(32)
        self.fc3 = nn.Linear(32, 16)
        self.act3 = nn.Tanh()
        self.fc4 = nn.Linear(16, 10)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        x = self.act2(self.fc2(self.act1(self.fc1(x))))
        x = self.act3(self.fc3(self.norm(x)))
        return self.softmax(self.fc4(x))


class ConvVariants(nn.Module):
    """strided+padded, grouped+dilated, non-square kernel w/o bias, reflect padding."""

    def __init__(self):
        super().__init__()
        self.strided = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.grouped_dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.nonsquare = nn.Conv2d(16, 16, (1, 5), padding=(0, 2), bias=False)
        self.reflect = nn.Conv2d(16, 8, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        x = F.relu(self.strided(x))
        x = F.relu(self.grouped_dilated(x))
        x = F.relu(self.nonsquare(x))
        return self.reflect(x)


class ConvBN(nn.Module):
    """Conv -> BN -> ReLU twice, plus a BN directly on the input (exported with
    do_constant_folding=False so the BatchNormalization nodes survive)."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn_in(x)
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class Normalization(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        x = self.gn(self.conv(x))
        x = self.inorm(F.relu(x))
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.acts = nn.ModuleList([
            nn.LeakyReLU(0.1), nn.ELU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(),
            nn.Hardsigmoid(), nn.Mish(), nn.Softplus(), nn.GELU(approximate="tanh"),
            nn.Hardtanh(-1.0, 2.0), nn.ReLU6(), nn.ReLU(),
        ])

    def forward(self, x):
        x = self.conv(x)
        return torch.cat([a(x) for a in self.acts], dim=1)


class TensorOps(nn.Module):
    """Elementwise arithmetic and shape manipulation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)                                   # [1,6,8,8]
        a, b, c = torch.split(x, [1, 2, 3], dim=1)
        y = torch.cat([a * 2.0 - b[:, :1], b / 3.0, c.pow(2.0)], dim=1)
        y = torch.sqrt(y * y + 1.0)                        # [1,6,8,8]
        y = y[:, :, 2:6, 1:7]                              # Slice -> [1,6,4,6]
        y = y.squeeze(0).unsqueeze(1)                      # [6,1,4,6]
        y = y.transpose(2, 3).reshape(1, 6, 24)            # [1,6,24]
        return y + x.mean()


class ClassifierHead(nn.Module):
    """Classic stem + GAP -> Flatten -> Dropout -> Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = F.relu(self.conv(x))
        return self.fc(self.drop(torch.flatten(self.gap(x), 1)))


class Pooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.avgpool2 = nn.AvgPool2d(2, 2)
        self.maxpool_ceil = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = F.relu(self.conv(x))                           # [1,8,16,16]
        y = self.maxpool(x) + self.avgpool(x)              # [1,8,8,8]
        z = self.avgpool2(y) + self.maxpool_ceil(y)        # [1,8,4,4]
        return torch.cat([self.gap(z), z.mean((2, 3), keepdim=True)], dim=1).flatten(1)


class ResizePixelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1))                         # Pad (constant 0)
        x = self.shuffle(self.conv(x))                     # DepthToSpace -> [1,4,16,16]
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=(24, 24), mode="nearest")


class AttentionMatmul(nn.Module):
    """Single-head attention written with explicit matmuls (activation x activation)."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d, bias=False)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x):                                  # [1,8,16]
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.o(torch.matmul(att, v))


class DynamicBatchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Recurrent(nn.Module):
    """A bidirectional LSTM, a GRU and an RNN over one sequence, then a ScatterElements."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(12, 5, batch_first=True)
        self.rnn = nn.RNN(5, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)
        self.register_buffer("order", torch.tensor([[[3], [2], [1], [0], [4], [5], [6]]]))

    def forward(self, x):                                  # [1,7,8]
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        y = y[:, :, :1].scatter(1, self.order, y[:, :, 1:2])
        return self.fc(y.expand(-1, -1, 4) + y)


class Fold(nn.Module):
    """VOLO's outlook attention in small: 3x3 neighbourhoods unfolded (stride 2, pad 1), weighted
    per position, folded back with overlapping blocks added (``F.fold``: ONNX ``Col2Im``)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Conv2d(4, 4, 1)
        self.a = nn.Conv2d(4, 9, 1)

    def forward(self, x):                                  # [1,4,8,8]
        b, c, h, w = x.shape
        v = F.unfold(self.v(x), 3, padding=1, stride=2)    # [1,36,16]
        a = torch.softmax(self.a(F.avg_pool2d(x, 2)).flatten(2), 1)
        v = v.view(b, c, 9, -1) * a.unsqueeze(1)
        return F.fold(v.reshape(b, c * 9, -1), (h, w), 3, padding=1, stride=2)


def transformer_encoder():
    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)


# name -> (factory, input shape, exporter, options)
# options: optimize (bool), dynamic_batch (bool), macs_note (str: force macs=null),
# expected (bool: the input and PyTorch's output go into the manifest, for ops tract cannot run)
TORCH_OPS = {
    "resnet_block": (ResNetBlock, (1, 8, 16, 16), "dynamo", {}),
    "depthwise_separable": (DepthwiseSeparable, (1, 16, 16, 16), "dynamo", {}),
    "squeeze_excitation": (SqueezeExcitation, (1, 32, 8, 8), "torchscript", {}),
    "squeeze_excitation_linear": (SqueezeExcitationLinear, (1, 32, 8, 8), "dynamo", {}),
    "recurrent": (Recurrent, (1, 7, 8), "torchscript", {}),
    # tract has no Col2Im: the executor is checked against PyTorch's output kept in the manifest
    "fold": (Fold, (1, 4, 8, 8), "dynamo", {"expected": True}),
    "transformer_encoder": (transformer_encoder, (1, 8, 32), "dynamo", {
        "macs_note": "nn.MultiheadAttention uses its in_proj/out_proj weights functionally "
                     "and the QK^T / AV matmuls are not modules, so hooks miss that work"}),
    "conv1d_net": (Conv1dNet, (1, 4, 64), "dynamo", {}),
    "convtranspose_decoder": (ConvTransposeDecoder, (1, 16, 4, 4), "torchscript", {}),
    "mlp": (MLP, (1, 16), "dynamo", {}),
    "conv_variants": (ConvVariants, (1, 8, 16, 16), "dynamo", {}),
    "batchnorm_unfolded": (ConvBN, (1, 3, 16, 16), "torchscript", {"optimize": False}),
    "normalization": (Normalization, (1, 4, 8, 8), "dynamo", {}),
    "activations": (Activations, (1, 4, 8, 8), "dynamo", {}),
    "tensor_ops": (TensorOps, (1, 4, 8, 8), "dynamo", {}),
    "classifier_head": (ClassifierHead, (1, 3, 32, 32), "torchscript", {}),
    "pooling": (Pooling, (1, 4, 16, 16), "torchscript", {}),
    "resize_pixelshuffle": (ResizePixelShuffle, (1, 8, 8, 8), "dynamo", {}),
    "attention_matmul": (AttentionMatmul, (1, 8, 16), "dynamo", {
        "macs_note": "the activation x activation matmuls (QK^T, AV) are torch.matmul calls, "
                     "not modules, so hooks miss that work"}),
    "dynamic_batch": (DynamicBatchNet, (1, 3, 16, 16), "dynamo", {"dynamic_batch": True}),
}


# --------------------------------------------------------------------------
# ops/ : onnx.helper-built graphs (ops PyTorch will not emit)
# --------------------------------------------------------------------------


def _f32(rng, *shape, scale=0.1):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _make_model(nodes, name, in_shape, out_name, out_shape, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=IR_HELPER, producer_name="nape-gen_corpus")
    return model


def passthrough_ops() -> tuple[onnx.ModelProto, tuple]:
    """Conv -> {Identity -> Dropout, Mul(., 0.0) via a Constant node} -> Add
    -> {GlobalMaxPool, GlobalAveragePool} -> Concat -> Flatten."""
    rng = np.random.default_rng(0)
    shape = (1, 8, 8, 8)
    inits = [
        numpy_helper.from_array(_f32(rng, 8, 8, 3, 3), "conv.weight"),
        numpy_helper.from_array(_f32(rng, 8), "conv.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c"], ["id"], name="identity"),
        helper.make_node("Dropout", ["id"], ["drop"], name="dropout"),
        helper.make_node("Constant", [], ["zero"], name="zero_const",
                         value=numpy_helper.from_array(np.array(0.0, dtype=np.float32))),
        helper.make_node("Mul", ["c", "zero"], ["z"], name="zero_op"),
        helper.make_node("Add", ["drop", "z"], ["s"], name="add"),
        helper.make_node("GlobalMaxPool", ["s"], ["gmp"], name="gmp"),
        helper.make_node("GlobalAveragePool", ["s"], ["gap"], name="gap"),
        helper.make_node("Concat", ["gmp", "gap"], ["cat"], name="concat", axis=1),
        helper.make_node("Flatten", ["cat"], ["output"], name="flatten", axis=1),
    ]
    return _make_model(nodes, "passthrough_ops", shape, "output", (1, 16), inits), shape


def recurrent_forms() -> tuple[onnx.ModelProto, tuple]:
    """The recurrent forms PyTorch does not write: a GRU that applies its reset gate before the
    state's product (``linear_before_reset=0``) from a given initial state, then an LSTM without
    biases. MACs steps x batch x (|W| + |R|): 10 x 84 + 10 x 84. (Both forward: tract, which the
    executor is checked against, returns a ``direction="reverse"`` layer's outputs in reversed
    time, where onnxruntime and the ONNX definition align them with the input; the executor's
    reverse direction is checked against its forward one in its unit tests.)"""
    rng = np.random.default_rng(0)
    shape = (5, 2, 3)
    inits = [
        numpy_helper.from_array(_f32(rng, 1, 12, 3, scale=0.5), "gru.W"),
        numpy_helper.from_array(_f32(rng, 1, 12, 4, scale=0.5), "gru.R"),
        numpy_helper.from_array(_f32(rng, 1, 24, scale=0.5), "gru.B"),
        numpy_helper.from_array(_f32(rng, 1, 2, 4, scale=0.5), "gru.h0"),
        numpy_helper.from_array(_f32(rng, 1, 12, 4, scale=0.5), "lstm.W"),
        numpy_helper.from_array(_f32(rng, 1, 12, 3, scale=0.5), "lstm.R"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("GRU", ["input", "gru.W", "gru.R", "gru.B", "", "gru.h0"], ["g"], name="gru",
                         hidden_size=4, linear_before_reset=0),
        helper.make_node("Squeeze", ["g", "axis1"], ["gs"], name="squeeze"),
        helper.make_node("LSTM", ["gs", "lstm.W", "lstm.R"], ["output"], name="lstm", hidden_size=3),
    ]
    return _make_model(nodes, "recurrent_forms", shape, "output", (5, 1, 2, 3), inits), shape


def nasbench201_cell() -> tuple[onnx.ModelProto, tuple]:
    """A NAS-Bench-201 cell as NAS-Bench-201's own PyTorch code would export it:
    |nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|
    none = Mul(x, 0.0) with a 0-d float initializer; skip_connect = Identity;
    nor_conv_kxk = ReLU -> Conv(no bias) -> BatchNormalization (unfolded);
    avg_pool_3x3 = AveragePool k3 s1 p1 count_include_pad=0."""
    rng = np.random.default_rng(0)
    C = 16
    shape = (1, C, 8, 8)
    inits = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    nodes = []

    def nor_conv(src, k, tag):
        w = f"{tag}.conv.weight"
        inits.append(numpy_helper.from_array(_f32(rng, C, C, k, k), w))
        bn = [f"{tag}.bn.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        inits.append(numpy_helper.from_array((rng.random(C) + 0.5).astype(np.float32), bn[0]))
        inits.append(numpy_helper.from_array(_f32(rng, C), bn[1]))
        inits.append(numpy_helper.from_array(_f32(rng, C), bn[2]))
        inits.append(numpy_helper.from_array((rng.random(C) + 0.5).astype(np.float32), bn[3]))
        p = k // 2
        nodes.append(helper.make_node("Relu", [src], [f"{tag}.relu"], name=f"{tag}.relu"))
        nodes.append(helper.make_node("Conv", [f"{tag}.relu", w], [f"{tag}.conv"], name=f"{tag}.conv",
                                      kernel_shape=[k, k], pads=[p, p, p, p]))
        nodes.append(helper.make_node("BatchNormalization", [f"{tag}.conv"] + bn, [tag],
                                      name=f"{tag}.bn", epsilon=1e-5, momentum=0.9))
        return tag

    def none_op(src, tag):
        nodes.append(helper.make_node("Mul", [src, "zero"], [tag], name=tag))
        return tag

    def skip(src, tag):
        nodes.append(helper.make_node("Identity", [src], [tag], name=tag))
        return tag

    def avg_pool(src, tag):
        nodes.append(helper.make_node("AveragePool", [src], [tag], name=tag, kernel_shape=[3, 3],
                                      strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0))
        return tag

    n0 = "input"
    n1 = nor_conv(n0, 3, "edge_1_0")
    e20, e21 = none_op(n0, "edge_2_0"), skip(n1, "edge_2_1")
    nodes.append(helper.make_node("Add", [e20, e21], ["node2"], name="node2"))
    e30 = avg_pool(n0, "edge_3_0")
    e31 = nor_conv(n1, 1, "edge_3_1")
    e32 = nor_conv("node2", 3, "edge_3_2")
    nodes.append(helper.make_node("Add", [e30, e31], ["node3_a"], name="node3_a"))
    nodes.append(helper.make_node("Add", ["node3_a", e32], ["output"], name="node3"))
    return _make_model(nodes, "nasbench201_cell", shape, "output", shape, inits), shape


def rare_ops() -> tuple[onnx.ModelProto, tuple]:
    """Opset-21 graph of ops the exporters never (or only in decomposed form) emit, all on the
    data path of one DAG, input [1,8,8,8] -> output [1,32,4,4]:

    GroupNormalization(num_groups=2, per-channel scale/bias [8]) -> Gelu (single op)
    -> a = Erf(g) + g (standalone Erf, no GELU pattern) -> LogSoftmax(axis 1) -> Exp,
    Log(Abs(a)+1) -> Neg, Reciprocal(Abs(a)+1), Max(softmax, reciprocal), Min(-log, g)
    -> Cast float16 -> Cast float, s = (max + min) * channel_scale;
    ReduceMax(s, hw) -> Expand, GlobalMaxPool(s) -> Tile, ReduceMin(s, c), ReduceSum(s, w),
    ReduceProd(reciprocal, c), ArgMax(s, c) -> Cast float -> Reshape [1,1,8,8], all added to s
    -> SpaceToDepth(2) -> Add out.bias."""
    rng = np.random.default_rng(0)
    shape = (1, 8, 8, 8)

    def i64(v, name):
        return numpy_helper.from_array(np.array(v, dtype=np.int64), name)

    inits = [
        numpy_helper.from_array(1.0 + _f32(rng, 8), "gn.scale"),
        numpy_helper.from_array(_f32(rng, 8), "gn.bias"),
        numpy_helper.from_array(1.0 + _f32(rng, 1, 8, 1, 1), "channel_scale"),
        numpy_helper.from_array(_f32(rng, 1, 32, 1, 1), "out.bias"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        i64([1, 8, 8, 8], "expand_shape"),
        i64([1, 1, 8, 8], "tile_repeats"),
        i64([1, 1, 8, 8], "argmax_shape"),
        i64([1], "axes_c"),
        i64([3], "axes_w"),
        i64([2, 3], "axes_hw"),
    ]
    N = helper.make_node
    nodes = [
        N("GroupNormalization", ["input", "gn.scale", "gn.bias"], ["gn"], name="group_norm",
          num_groups=2, epsilon=1e-5),
        N("Gelu", ["gn"], ["gelu"], name="gelu"),
        N("Erf", ["gelu"], ["erf"], name="erf"),
        N("Add", ["erf", "gelu"], ["a"], name="erf_residual"),
        N("LogSoftmax", ["a"], ["logsm"], name="log_softmax", axis=1),
        N("Exp", ["logsm"], ["sm"], name="exp"),
        N("Abs", ["a"], ["abs"], name="abs"),
        N("Add", ["abs", "one"], ["abs1"], name="abs_plus_one"),
        N("Log", ["abs1"], ["log"], name="log"),
        N("Reciprocal", ["abs1"], ["recip"], name="reciprocal"),
        N("Neg", ["log"], ["neg"], name="neg"),
        N("Max", ["sm", "recip"], ["max"], name="max"),
        N("Min", ["neg", "gelu"], ["min"], name="min"),
        N("Cast", ["min"], ["min_f16"], name="cast_to_f16", to=TensorProto.FLOAT16),
        N("Cast", ["min_f16"], ["min_f32"], name="cast_to_f32", to=TensorProto.FLOAT),
        N("Add", ["max", "min_f32"], ["s0"], name="combine"),
        N("Mul", ["s0", "channel_scale"], ["s"], name="channel_scale_mul"),            # [1,8,8,8]
        N("ReduceMax", ["s", "axes_hw"], ["rmax"], name="reduce_max", keepdims=1),     # [1,8,1,1]
        N("Expand", ["rmax", "expand_shape"], ["expanded"], name="expand"),          # [1,8,8,8]
        N("GlobalMaxPool", ["s"], ["gmp"], name="global_max_pool"),                  # [1,8,1,1]
        N("Tile", ["gmp", "tile_repeats"], ["tiled"], name="tile"),                  # [1,8,8,8]
        N("ReduceMin", ["s", "axes_c"], ["rmin"], name="reduce_min", keepdims=1),      # [1,1,8,8]
        N("ReduceSum", ["s", "axes_w"], ["rsum"], name="reduce_sum", keepdims=1),      # [1,8,8,1]
        N("ReduceProd", ["recip", "axes_c"], ["rprod"], name="reduce_prod", keepdims=1),  # [1,1,8,8]
        N("ArgMax", ["s"], ["amax"], name="argmax", axis=1, keepdims=0),              # [1,8,8] int64
        N("Cast", ["amax"], ["amax_f"], name="argmax_to_float", to=TensorProto.FLOAT),
        N("Reshape", ["amax_f", "argmax_shape"], ["amax_r"], name="argmax_reshape"),  # [1,1,8,8]
        N("Add", ["s", "expanded"], ["t1"], name="add_expand"),
        N("Add", ["t1", "tiled"], ["t2"], name="add_tile"),
        N("Add", ["t2", "rmin"], ["t3"], name="add_reduce_min"),
        N("Add", ["t3", "rsum"], ["t4"], name="add_reduce_sum"),
        N("Add", ["t4", "rprod"], ["t5"], name="add_reduce_prod"),
        N("Add", ["t5", "amax_r"], ["t6"], name="add_argmax"),
        N("SpaceToDepth", ["t6"], ["s2d"], name="space_to_depth", blocksize=2),     # [1,32,4,4]
        N("Add", ["s2d", "out.bias"], ["output"], name="out_bias"),
    ]
    model = _make_model(nodes, "rare_ops", shape, "output", (1, 32, 4, 4), inits, opset=RARE_OPSET)
    # onnx 1.23's shape inference gives GroupNormalization-21 (a function op) no output type,
    # which leaves everything downstream untyped; declare it, as exporters' value_info would
    model.graph.value_info.append(helper.make_tensor_value_info("gn", TensorProto.FLOAT, list(shape)))
    return model, shape


def rare_ops_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``rare_ops`` written out in float64 numpy (float16 round trip kept), to check ORT."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    erf = np.vectorize(math.erf, otypes=[np.float64])
    x = x.astype(np.float64)
    n, c, h, wd = x.shape
    xg = x.reshape(n, 2, -1)
    gn = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    gn = gn * w["gn.scale"].reshape(1, c, 1, 1) + w["gn.bias"].reshape(1, c, 1, 1)
    g = 0.5 * gn * (1.0 + erf(gn / math.sqrt(2.0)))
    a = erf(g) + g
    z = a - a.max(1, keepdims=True)
    logsm = z - np.log(np.exp(z).sum(1, keepdims=True))
    abs1 = np.abs(a) + 1.0
    mx = np.maximum(np.exp(logsm), 1.0 / abs1)
    mn = np.minimum(-np.log(abs1), g).astype(np.float32).astype(np.float16).astype(np.float64)
    s = (mx + mn) * w["channel_scale"]
    t = (s + 2.0 * s.max((2, 3), keepdims=True) + s.min(1, keepdims=True) + s.sum(3, keepdims=True)
         + np.prod(1.0 / abs1, axis=1, keepdims=True) + s.argmax(1)[:, None].astype(np.float64))
    s2d = t.reshape(n, c, h // 2, 2, wd // 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * 4, h // 2, wd // 2)
    return s2d + w["out.bias"]


HELPER_OPS = {
    "passthrough_ops": (passthrough_ops, {}),
    "nasbench201_cell": (nasbench201_cell, {}),
    "recurrent_forms": (recurrent_forms, {"macs": 1680}),
    # no Conv / ConvTranspose / Gemm / MatMul in the graph: 0 MACs by construction
    "rare_ops": (rare_ops, {"macs": 0, "reference": rare_ops_reference}),
}


# --------------------------------------------------------------------------
# zoo/
# --------------------------------------------------------------------------

ZOO = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(weights=None),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
    "densenet121": lambda: torchvision.models.densenet121(weights=None),
    "shufflenet_v2_x0_5": lambda: torchvision.models.shufflenet_v2_x0_5(weights=None),
    "squeezenet1_0": lambda: torchvision.models.squeezenet1_0(weights=None),
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
    "convnext_tiny": lambda: torchvision.models.convnext_tiny(weights=None),
    "vit_b_16": lambda: torchvision.models.vit_b_16(weights=None),
    "swin_t": lambda: torchvision.models.swin_t(weights=None),
}
ZOO_SHAPE = (1, 3, 224, 224)
ZOO_EXPORTERS = ("dynamo", "torchscript")  # tried in this order


def strip_weights(model: onnx.ModelProto):
    """Move float initializers with > 16 elements to typed graph inputs.

    Returns (stripped model, {name: ndarray} of the removed values)."""
    g = model.graph
    keep, removed = [], {}
    for t in g.initializer:
        if t.data_type in FLOAT_TYPES and prod(t.dims) >= STRIP_MIN_ELEMS:
            removed[t.name] = t
        else:
            keep.append(t)
    values = {name: numpy_helper.to_array(t) for name, t in removed.items()}
    del g.initializer[:]
    g.initializer.extend(keep)
    existing = {i.name for i in g.input}
    for name, t in removed.items():
        assert name not in existing, name
        g.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    # keep any pre-existing metadata, then record the weight inputs
    props = [p for p in model.metadata_props if p.key != "nape.weight_inputs"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    helper.set_model_props(model, {**{p.key: p.value for p in props},
                                   "nape.weight_inputs": ",".join(removed)})
    return model, values


# --------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------


def macs_entry(module, x, forced_note=None):
    macs, missed = count_macs(module, x)
    attention = sorted({type(m).__name__ for m in module.modules()
                        if isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__})
    if attention and not forced_note:
        forced_note = (f"attention ({', '.join(attention)}): the QK^T / AV activation x activation "
                       "matmuls are not modules, so hooks miss that work")
    if forced_note or missed:
        note = forced_note or ""
        if missed:
            extra = (f"{len(missed)} conv/linear module(s) never ran forward (weights used "
                     f"functionally), e.g. {', '.join(missed[:3])}")
            note = f"{note}; {extra}" if note else extra
        return {"macs": None, "macs_note": note, "macs_hooked_partial": macs}
    return {"macs": macs}


def gen_torch_op(name, factory, shape, exporter, opts, out_dir):
    seed()
    module = factory()
    randomize_bn(module)
    randomize_constant_params(module)
    module.eval()
    x = torch.randn(*shape)
    model = export_torch(module, x, exporter, optimize=opts.get("optimize", True),
                         dynamic_batch=opts.get("dynamic_batch", False))
    check(model)
    with torch.no_grad():
        ref = module(x).numpy()
    got = ort_run(model, {data_input(model).name: x.numpy()})[0]
    err = float(np.max(np.abs(got - ref)))
    assert got.shape == ref.shape and err < 1e-4, (name, got.shape, ref.shape, err)
    if opts.get("dynamic_batch"):
        x2 = torch.randn(3, *shape[1:])
        with torch.no_grad():
            ref2 = module(x2).numpy()
        got2 = ort_run(model, {data_input(model).name: x2.numpy()})[0]
        assert np.max(np.abs(got2 - ref2)) < 1e-4, name
    size = save(model, out_dir / f"{name}.onnx")
    assert size < OPS_MAX_BYTES, (name, size)
    entry = {
        "input_shape": list(shape),
        "framework_params": framework_params(module),
        "file_params": file_params(model),
        **macs_entry(module, x, opts.get("macs_note")),
        "exporter": exporter,
        "ops": op_types(model),
        "opset": OPSET,
        "ir_version": model.ir_version,
        "ort_max_abs_diff": err,
    }
    if opts.get("dynamic_batch"):
        entry["input_dims"] = input_dims(model)
    if opts.get("expected"):
        entry["expected"] = {"input": x.flatten().tolist(), "output_shape": list(ref.shape),
                             "output": ref.flatten().tolist()}
    if not opts.get("optimize", True):
        entry["export_options"] = "optimize=False" if exporter == "dynamo" else "do_constant_folding=False"
    return entry, size


def gen_helper_op(name, builder, opts, out_dir):
    model, shape = builder()
    check(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    got = ort_run(model, {"input": x})[0]
    assert np.all(np.isfinite(got))
    err = None
    if opts.get("reference"):
        ref = opts["reference"](model, x)
        err = float(np.max(np.abs(got - ref)))
        assert got.shape == ref.shape and err < 1e-4 * max(1.0, float(np.max(np.abs(ref)))), (name, err)
    size = save(model, out_dir / f"{name}.onnx")
    assert size < OPS_MAX_BYTES, (name, size)
    if "macs" in opts:
        macs = {"macs": opts["macs"]}
    else:
        macs = {"macs": None, "macs_note": "built with onnx.helper; no PyTorch module to hook"}
    entry = {
        "input_shape": list(shape),
        "framework_params": None,
        "file_params": file_params(model),
        **macs,
        "exporter": "onnx.helper",
        "ops": op_types(model),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
    }
    if err is not None:
        entry["ort_max_abs_diff"] = err
    return entry, size


def gen_zoo(name, factory, out_dir, verify: bool):
    seed()
    module = factory()
    randomize_bn(module)
    randomize_constant_params(module)
    module.eval()
    x = torch.randn(*ZOO_SHAPE)
    errors = {}
    model = None
    for exporter in ZOO_EXPORTERS:
        try:
            t0 = time.time()
            model = export_torch(module, x, exporter)
            export_s = time.time() - t0
            break
        except Exception as e:  # noqa: BLE001 - record and try the next exporter
            errors[exporter] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if model is None:
        raise RuntimeError(f"{name}: no exporter worked: {errors}")
    stripped, values = strip_weights(model)
    check(stripped)
    max_err = None
    if verify:
        with torch.no_grad():
            ref = module(x).numpy()
        feeds = {data_input(stripped).name: x.numpy(), **values}
        got = ort_run(stripped, feeds)[0]
        max_err = float(np.max(np.abs(got - ref)))
        assert got.shape == ref.shape and max_err < 1e-3 * max(1.0, float(np.max(np.abs(ref)))), (name, max_err)
    del model, values
    size = save(stripped, out_dir / f"{name}.onnx")
    assert size < ZOO_MAX_BYTES, (name, size)
    entry = {
        "input_shape": list(ZOO_SHAPE),
        "framework_params": framework_params(module),
        "file_params": file_params(stripped, set(
            next(p.value for p in stripped.metadata_props if p.key == "nape.weight_inputs").split(","))),
        **macs_entry(module, x),
        "exporter": exporter,
        "ops": op_types(stripped),
        "opset": OPSET,
        "ir_version": stripped.ir_version,
        "stripped_weights": len(stripped.graph.input) - 1,
    }
    if errors:
        entry["exporter_failures"] = errors
    if max_err is not None:
        entry["ort_max_abs_diff"] = max_err
    print(f"  zoo/{name}: {exporter} export {export_s:.1f}s, {size / 1024:.0f} KB", flush=True)
    return entry, size


# ops that must appear somewhere under ops/
REQUIRED_OPS = [
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization",
    "InstanceNormalization", "Relu", "Clip", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Erf",
    "HardSwish", "HardSigmoid", "Mish", "Softplus", "Softmax", "Add", "Sub", "Mul", "Div",
    "Pow", "Sqrt", "Concat", "Split", "Slice", "Reshape", "Flatten", "Transpose", "Squeeze",
    "Unsqueeze", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
    "Pad", "Resize", "DepthToSpace", "Identity", "Dropout",
    # rare_ops.onnx (opset 21)
    "GroupNormalization", "Gelu", "LogSoftmax", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Max",
    "Min", "Cast", "Expand", "Tile", "SpaceToDepth", "ReduceSum", "ReduceMax", "ReduceMin",
    "ReduceProd", "ArgMax",
]


def check_coverage(ops_dir: Path) -> list[str]:
    """Return a list of missing features (empty = full coverage)."""
    seen: set[str] = set()
    feats: set[str] = set()
    for path in sorted(ops_dir.glob("*.onnx")):
        m = onnx.load(path)
        g = m.graph
        consts = {}
        for t in g.initializer:
            consts[t.name] = numpy_helper.to_array(t)
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        consts[n.output[0]] = numpy_helper.to_array(a.t)
        inits = {t.name for t in g.initializer}
        for n in iter_nodes(g):
            seen.add(n.op_type)
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Conv":
                w = consts.get(n.input[1])
                grp = attrs.get("group", 1)
                if w is not None and grp > 1:
                    feats.add("conv_depthwise" if w.shape[1] == 1 and grp == w.shape[0] else "conv_grouped")
                if any(d > 1 for d in attrs.get("dilations", [])):
                    feats.add("conv_dilated")
                if any(s > 1 for s in attrs.get("strides", [])):
                    feats.add("conv_strided")
                if any(p > 0 for p in attrs.get("pads", [])):
                    feats.add("conv_padded")
            if n.op_type == "MatMul":
                feats.add("matmul_weight" if any(i in inits for i in n.input) else "matmul_act_act")
            if n.op_type == "Clip" and len(n.input) == 3:
                lo, hi = consts.get(n.input[1]), consts.get(n.input[2])
                if lo is not None and hi is not None:
                    feats.add("clip_relu6" if (float(lo), float(hi)) == (0.0, 6.0) else "clip_other")
            if n.op_type == "Mul":
                for i in n.input:
                    v = consts.get(i)
                    if v is not None and v.size == 1 and float(v.reshape(-1)[0]) == 0.0:
                        feats.add("zero_op_mul0")
    missing = [op for op in REQUIRED_OPS if op not in seen]
    missing += [f for f in ("conv_depthwise", "conv_grouped", "conv_dilated", "conv_strided",
                            "conv_padded", "matmul_weight", "matmul_act_act", "clip_relu6",
                            "clip_other", "zero_op_mul0") if f not in feats]
    return missing


def print_table(manifest: dict, sizes: dict) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:,}"

    rows = [("file", "KB", "fw params", "file params", "MACs", "#ops")]
    for key in sorted(manifest):
        e = manifest[key]
        macs = e.get("macs")
        rows.append((key, f"{sizes.get(key, 0) / 1024:.1f}", fmt(e["framework_params"]),
                     fmt(e["file_params"]),
                     fmt(macs) if macs is not None or "macs_hooked_partial" not in e
                     else f"({e['macs_hooked_partial']:,}+?)", str(len(e["ops"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["ops", "zoo"], help="regenerate only one folder (manifest is merged)")
    ap.add_argument("--no-verify-zoo", action="store_true",
                    help="skip running stripped zoo models in onnxruntime with their weights fed back")
    args = ap.parse_args()

    import importlib.metadata as md
    for pkg, want in PINNED.items():
        have = md.version(pkg).split("+")[0]
        if have != want:
            print(f"warning: {pkg} {have} != pinned {want}; output may differ", file=sys.stderr)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    manifest_path = CORPUS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if (args.only and manifest_path.exists()) else {}
    sizes = {k: (CORPUS / k).stat().st_size for k in manifest if (CORPUS / k).exists()}

    if args.only in (None, "ops"):
        out = CORPUS / "ops"
        out.mkdir(parents=True, exist_ok=True)
        for p in out.glob("*.onnx"):
            p.unlink()
        manifest = {k: v for k, v in manifest.items() if not k.startswith("ops/")}
        for name, (factory, shape, exporter, opts) in TORCH_OPS.items():
            entry, size = gen_torch_op(name, factory, shape, exporter, opts, out)
            manifest[f"ops/{name}.onnx"], sizes[f"ops/{name}.onnx"] = entry, size
            print(f"  ops/{name}: {exporter}, {size / 1024:.1f} KB", flush=True)
        for name, (builder, hopts) in HELPER_OPS.items():
            entry, size = gen_helper_op(name, builder, hopts, out)
            manifest[f"ops/{name}.onnx"], sizes[f"ops/{name}.onnx"] = entry, size
            print(f"  ops/{name}: onnx.helper, {size / 1024:.1f} KB", flush=True)
        missing = check_coverage(out)
        if missing:
            print(f"coverage: MISSING {missing}", file=sys.stderr)
        else:
            print("coverage: every required op / variant appears in ops/")

    if args.only in (None, "zoo"):
        out = CORPUS / "zoo"
        out.mkdir(parents=True, exist_ok=True)
        for p in out.glob("*.onnx"):
            p.unlink()
        manifest = {k: v for k, v in manifest.items() if not k.startswith("zoo/")}
        for name, factory in ZOO.items():
            entry, size = gen_zoo(name, factory, out, verify=not args.no_verify_zoo)
            manifest[f"zoo/{name}.onnx"], sizes[f"zoo/{name}.onnx"] = entry, size

    manifest = dict(sorted(manifest.items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    # what this script writes (tests/corpus/real is a copied sample with its own 10 MB budget)
    total = sum(p.stat().st_size for d in ("ops", "zoo") for p in (CORPUS / d).rglob("*") if p.is_file())
    print()
    print_table(manifest, sizes)
    print(f"\ntotal size of {CORPUS.relative_to(ROOT)}: {total / 1024:.0f} KB")
    assert total < TOTAL_MAX_BYTES, total
    return 0


if __name__ == "__main__":
    sys.exit(main())
