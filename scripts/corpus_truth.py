#!/usr/bin/env python3
"""What the corpus' truth counts, independently of nape: ``file_params`` (the parameters a file
holds) and ``count_macs`` (the MACs of a module's forward, by hooks); used by ``gen_corpus.py``
and ``export_corpus.py``.

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
"""

from __future__ import annotations

import math

import onnx
import torch
import torch.nn as nn
from onnx import TensorProto

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}

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
