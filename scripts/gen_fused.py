#!/usr/bin/env python3
"""Writes tests/corpus/fused: networks with fused ops and what ONNX Runtime computes from them.

    .venv-export/bin/python scripts/gen_fused.py [--out tests/corpus/fused]

- ``block18.onnx`` / ``block23.onnx``: one pre-norm decoder block (RMSNorm, causal scaled
  dot-product attention, a GELU MLP), seeded, exported by PyTorch's dynamo exporter at opset 18
  (primitive ops; ``block18_ext`` with its weights in a side file, as PyTorch writes by
  default) and 23 (``RMSNormalization``, ``Attention``); ``gqa23.onnx``: causal
  grouped-query attention (8 query heads, 2 key/value heads) at opset 23.
- ``bert.onnx`` / ``bert14.onnx`` / ``bert_ort.onnx``: a two-layer BERT encoder read from
  ``inputs_embeds``, exported at opset 17, at opset 14 (its LayerNorms written out), and the
  opset-17 file after ONNX Runtime's transformer optimizer (``SkipLayerNormalization``, ...).
- one small graph per fused op, written with ``onnx.helper``: ONNX's ``RMSNormalization`` and
  ``Attention`` (3-D, a boolean mask; 3-D grouped-query) and ONNX Runtime's ``SimplifiedLayerNormalization``,
  ``SkipLayerNormalization`` (its sum output read), ``SkipSimplifiedLayerNormalization``,
  ``BiasGelu``, ``FastGelu`` and ``QuickGelu``, and its attentions: ``MultiHeadAttention``
  (a key padding mask) and ``Attention`` (packed QKV weights; a raw 2-D mask, and causal).

- ``masked.onnx`` / ``masked_f16.onnx`` / ``masked_bf16.onnx``: the block with a Hugging
  Face-style additive causal mask of ``[1, 1, 16, 16]`` (0 and ``finfo.min``), in float32,
  float16 and bfloat16 (weights in a side file, as language models are written). ONNX Runtime
  does not run bfloat16 on the CPU, so the lower precisions' reference is PyTorch's float32
  output of the rounded weights (``torch_output``).
- ``nbits_float.onnx`` / ``nbits.onnx`` / ``nbits_sym.onnx``: a two-layer MLP and ONNX Runtime's
  4-bit ``MatMulNBits`` forms of it (with zero points, and symmetric).

``truth.json`` holds, for each file, its op types and ONNX Runtime's output on the input
``x[i] = sin(0.37 i)`` (float32, ``i`` the flat index), and torch's parameter count where torch
built it.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

B, S, H = 1, 8, 16  # batch, sequence, hidden of the small graphs
RNG = np.random.default_rng(0)


def sin_input(shape) -> np.ndarray:
    n = int(np.prod(shape))
    return np.sin(0.37 * np.arange(n, dtype=np.float64)).astype(np.float32).reshape(shape)


def weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.3, name)


def model(nodes, inits, opsets, x_shape=(B, S, H), y_shape=None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape or x_shape))
    graph = helper.make_graph(nodes, "fused", [x], [y], initializer=inits)
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


MS = {"": 17, "com.microsoft": 1}


def small_graphs() -> dict[str, onnx.ModelProto]:
    ms = "com.microsoft"
    out = {}
    out["rms23"] = model(
        [helper.make_node("RMSNormalization", ["x", "g"], ["y"], epsilon=1e-5, axis=-1)],
        [weight("g", H)], {"": 23})
    out["simplified_ln"] = model(
        [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], epsilon=1e-5,
                          axis=-1)], [weight("g", H)], MS)
    # x @ W, then the fused residual norm with the MatMul's bias moved in; its sum output (the
    # residual stream) is read by the Add after it
    out["skip_ln"] = model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("SkipLayerNormalization", ["h", "x", "g", "b", "bias"],
                          ["n", "", "", "sum"], domain=ms, epsilon=1e-5),
         helper.make_node("Add", ["n", "sum"], ["y"])],
        [weight("w", H, H), weight("g", H), weight("b", H), weight("bias", H)], MS)
    out["skip_simplified"] = model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("SkipSimplifiedLayerNormalization", ["h", "x", "g", "bias"], ["y"],
                          domain=ms, epsilon=1e-5)],
        [weight("w", H, H), weight("g", H), weight("bias", H)], MS)
    for op in ("BiasGelu", "FastGelu"):
        out[op.lower()] = model(
            [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node(op, ["h", "bias"], ["y"], domain=ms)],
            [weight("w", H, H), weight("bias", H)], MS)
    out["quickgelu"] = model(
        [helper.make_node("QuickGelu", ["x"], ["y"], domain=ms, alpha=1.702)], [], MS)
    # 3-D attention, two heads, projections before it, a boolean mask (the last key left out)
    mask = np.ones((S, S), dtype=bool)
    mask[:, -1] = False
    out["attention3d"] = model(
        [helper.make_node("MatMul", ["x", f"w{c}"], [c]) for c in "qkv"]
        + [helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"], q_num_heads=2,
                            kv_num_heads=2)],
        [weight(f"w{c}", H, H) for c in "qkv"] + [numpy_helper.from_array(mask, "mask")],
        {"": 23})
    # ONNX Runtime's attentions: MultiHeadAttention on projected q, k, v with the projections'
    # bias and a key padding mask; Attention with packed QKV weights and a raw 2-D mask, and
    # causal (unidirectional) without one
    pad = np.ones((B, S), dtype=np.int32)
    pad[:, -1] = 0
    out["mha"] = model(
        [helper.make_node("MatMul", ["x", f"w{c}"], [c]) for c in "qkv"]
        + [helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias", "pad"], ["y"],
                            domain=ms, num_heads=2)],
        [weight(f"w{c}", H, H) for c in "qkv"] + [weight("bias", 3 * H),
                                                  numpy_helper.from_array(pad, "pad")], MS)
    out["ms_attention"] = model(
        [helper.make_node("Attention", ["x", "w", "bias", "pad"], ["y"], domain=ms,
                          num_heads=2)],
        [weight("w", H, 3 * H), weight("bias", 3 * H), numpy_helper.from_array(pad, "pad")], MS)
    out["ms_attention_causal"] = model(
        [helper.make_node("Attention", ["x", "w", "bias"], ["y"], domain=ms, num_heads=2,
                          unidirectional=1)],
        [weight("w", H, 3 * H), weight("bias", 3 * H)], MS)
    # grouped-query attention in the 3-D form: four query heads, two key/value heads
    out["gqa3d"] = model(
        [helper.make_node("MatMul", ["x", f"w{c}"], [c]) for c in "qkv"]
        + [helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=4, kv_num_heads=2)],
        [weight("wq", H, H), weight("wk", H, H // 2), weight("wv", H, H // 2)], {"": 23})
    return out


class Block(torch.nn.Module):
    """A pre-norm decoder block: RMSNorm, causal attention with 4 heads, a GELU MLP."""

    def __init__(self, d: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = torch.nn.RMSNorm(d), torch.nn.RMSNorm(d)
        self.qkv, self.o = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.n1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        return x + self.down(torch.nn.functional.gelu(self.up(self.n2(x))))


class MaskedBlock(Block):
    """The block with its causal mask written out as Hugging Face writes it: an additive
    ``[1, 1, S, S]`` tensor of 0 and the dtype's ``finfo.min``."""

    def forward(self, x):
        b, s, d = x.shape
        mask = torch.full((1, 1, s, s), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)
        q, k, v = self.qkv(self.n1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        return x + self.down(torch.nn.functional.gelu(self.up(self.n2(x))))


class Gqa(torch.nn.Module):
    """Causal grouped-query attention: 8 query heads, 2 key/value heads of width 8."""

    def __init__(self, d: int = 64):
        super().__init__()
        self.q, self.kv = torch.nn.Linear(d, d), torch.nn.Linear(d, 32)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, 8, 8).transpose(1, 2)
        k, v = (t.view(b, s, 2, 8).transpose(1, 2) for t in self.kv(x).split(16, dim=-1))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                             enable_gqa=True)
        return a.transpose(1, 2).reshape(b, s, 64)


class Bert(torch.nn.Module):
    """A two-layer BERT encoder on given embeddings."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                         intermediate_size=64, vocab_size=32)
        self.m = BertModel(cfg, add_pooling_layer=False).eval()

    def forward(self, x):
        return self.m(inputs_embeds=x).last_hidden_state


def torch_files(out: Path) -> dict[str, dict]:
    torch.manual_seed(0)
    meta = {}
    block = Block().eval()
    x = torch.from_numpy(sin_input((1, 16, 64)))
    for opset in (18, 23):
        f = out / f"block{opset}.onnx"
        torch.onnx.export(block, (x,), str(f), opset_version=opset, dynamo=True,
                          input_names=["x"], output_names=["y"], external_data=False)
        meta[f.stem] = {"torch_params": sum(p.numel() for p in block.parameters())}
    # PyTorch's default: the dynamo exporter at opset 18, weights in a side file
    f = out / "block18_ext.onnx"
    torch.onnx.export(block, (x,), str(f), opset_version=18, dynamo=True,
                      input_names=["x"], output_names=["y"], external_data=True)
    meta[f.stem] = meta["block18"]
    torch.manual_seed(0)
    masked = MaskedBlock().eval()
    n = sum(p.numel() for p in masked.parameters())
    for dtype, name in ((torch.float32, "masked"), (torch.float16, "masked_f16"),
                        (torch.bfloat16, "masked_bf16")):
        m = copy.deepcopy(masked).to(dtype)
        torch.onnx.export(m, (x.to(dtype),), str(out / f"{name}.onnx"), opset_version=18,
                          dynamo=True, input_names=["x"], output_names=["y"],
                          external_data=dtype == torch.bfloat16)
        with torch.no_grad():
            y = m.float()(x)  # the weights as the file holds them, computed in float32
        meta[name] = {"torch_params": n, "torch_output": [round(float(v), 7) for v in y.ravel()]}
    torch.manual_seed(0)
    gqa = Gqa().eval()
    torch.onnx.export(gqa, (x,), str(out / "gqa23.onnx"), opset_version=23, dynamo=True,
                      input_names=["x"], output_names=["y"], external_data=False)
    meta["gqa23"] = {"torch_params": sum(p.numel() for p in gqa.parameters())}
    torch.manual_seed(0)
    bert = Bert().eval()
    f = out / "bert.onnx"
    torch.onnx.export(bert, (torch.zeros(1, 8, 32),), str(f), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    # the same network at opset 14, where ONNX has no LayerNormalization: written out
    torch.onnx.export(bert, (torch.zeros(1, 8, 32),), str(out / "bert14.onnx"), opset_version=14,
                      dynamo=False, input_names=["x"], output_names=["y"])
    from onnxruntime.transformers.optimizer import optimize_model
    opt = optimize_model(str(f), model_type="bert", num_heads=2, hidden_size=32)
    opt.save_model_to_file(str(out / "bert_ort.onnx"))
    n = sum(p.numel() for p in bert.parameters())
    meta["bert"] = meta["bert14"] = meta["bert_ort"] = {"torch_params": n}
    return meta


def nbits_files(out: Path) -> dict[str, dict]:
    """A two-layer MLP and ONNX Runtime's 4-bit forms of it (``MatMulNBits``): zero points per
    block, and symmetric (none). The first layer's K (16) is below the block (32)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(H, 64), torch.nn.ReLU(), torch.nn.Linear(64, H))
    f = out / "nbits_float.onnx"
    torch.onnx.export(mlp.eval(), (torch.zeros(B, S, H),), str(f), opset_version=17,
                      dynamo=False, input_names=["x"], output_names=["y"])
    for name, symmetric in (("nbits", False), ("nbits_sym", True)):
        q = MatMulNBitsQuantizer(onnx.load(str(f)), block_size=32, is_symmetric=symmetric)
        q.process()
        q.model.save_model_to_file(str(out / f"{name}.onnx"))
    n = sum(p.numel() for p in mlp.parameters())
    return {k: {"torch_params": n} for k in ("nbits_float", "nbits", "nbits_sym")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/corpus/fused", type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    meta = torch_files(a.out) | nbits_files(a.out)
    for name, m in small_graphs().items():
        if name != "simplified_ln":  # ONNX Runtime's op in ONNX's domain, unknown to the checker
            onnx.checker.check_model(m)
        onnx.save(m, str(a.out / f"{name}.onnx"))
    files = {}
    for f in sorted(a.out.glob("*.onnx")):
        m = onnx.load(str(f))
        shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        files[f.stem] = {
            "file": f.name,
            "input_shape": shape,
            "ops": sorted({(n.domain + "." if n.domain else "") + n.op_type for n in m.graph.node}),
            **meta.get(f.stem, {}),
        }
        if m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT:
            sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
            y = sess.run(None, {m.graph.input[0].name: sin_input(shape)})[0]
            files[f.stem]["ort_output"] = [round(float(v), 7) for v in y.ravel()]
    truth = {"input": "x[i] = sin(0.37 i) in float32, i the flat index", "files": files}
    (a.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    for k, v in files.items():
        print(k, v["ops"])


if __name__ == "__main__":
    main()
