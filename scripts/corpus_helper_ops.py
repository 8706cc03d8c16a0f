#!/usr/bin/env python3
"""The graphs ``gen_corpus.py`` builds with ``onnx.helper`` for ``tests/corpus/ops``
(``HELPER_OPS``): the ops PyTorch never emits, and the opset-21 rare ops."""

from __future__ import annotations

import math
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
RARE_OPSET = 21  # rare_ops.onnx only: GroupNormalization-21 and Gelu-20 need opset >= 20/21
IR_HELPER = 8

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
