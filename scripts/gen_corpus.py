#!/usr/bin/env python3
"""Generate nape's ONNX test corpus under ``tests/corpus/``.

Run from anywhere::

       .venv-export/bin/python scripts/gen_corpus.py            # everything
       .venv-export/bin/python scripts/gen_corpus.py --only ops # just tests/corpus/ops
       .venv-export/bin/python scripts/gen_corpus.py --only zoo # just tests/corpus/zoo

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
    Per-file facts computed independently of nape (``file_params`` and
    ``count_macs`` in ``corpus_truth.py`` say the exact rules).

The modules it exports are in ``corpus_modules.py``, the graphs it builds with
``onnx.helper`` in ``corpus_helper_ops.py``.

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
import torchvision
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from corpus_helper_ops import HELPER_OPS, OPSET  # noqa: E402
from corpus_modules import TORCH_OPS  # noqa: E402
from corpus_truth import (  # noqa: E402
    FLOAT_TYPES,
    count_macs,
    file_params,
    framework_params,
    iter_nodes,
    op_types,
    prod,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
IR_DYNAMO = 9  # dynamo emits 10; we downgrade (opset 18 needs only IR 8)
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
