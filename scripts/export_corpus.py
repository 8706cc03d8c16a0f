#!/usr/bin/env python3
"""Export nape's real-world ONNX corpus (outside git) with the truth beside every file.

Run it with the export venv (``make corpus`` creates ``.venv-export`` and runs this)::

    .venv-export/bin/python scripts/export_corpus.py --families torchvision_cls
    .venv-export/bin/python scripts/export_corpus.py --out /work/corpus --families all

Layout under ``--out`` (default ``$NAPE_CORPUS`` or ``/work/corpus``)::

    <family>/<name>.onnx           weights stripped into typed graph inputs (like tests/corpus/zoo)
    <family>/embedded/<name>.onnx  the same export with the weights embedded (``--no-embedded``
                                   skips it; over 1 GiB of weights they go to <name>.onnx.data)
    <family>/truth.jsonl           one JSON line per exported model, sorted by file
    <family>/failures.jsonl        one JSON line per model no exporter could write
    <family>/DONE                  written once every model of the family was tried

Truth fields: ``file``, ``family``, ``params`` (``sum(p.numel() for p in model.parameters() if
p.requires_grad)``; ``frozen_params`` the others, where there are any), ``bn_params`` (the
BatchNorms' affine parameters, which an eval-mode export folds away),
``macs`` (``torch.utils.flop_counter`` FLOPs / 2: conv, matmul, attention; ``null`` if it saw
nothing), ``file_params`` (the rule of ``scripts/corpus_truth.py::file_params``: what the eval-mode
file holds, BatchNorm folded), ``input_shape``, ``exporter``, ``opset``, and for torchvision
classifiers the published figures of the DEFAULT weights, read offline from the package:
``top1`` (ImageNet-1K acc@1), ``gflops_published`` and ``num_params_published``.

Models are built with random weights (``torch.manual_seed(0)``); nothing is downloaded.  As in
``gen_corpus.py``, BatchNorm statistics and every constant-valued parameter get seeded noise so
the exporters see weights like trained ones (no two initializers identical).  ``--keep-init``
exports the raw initialisation instead (exporters then share identical tensors through
``Identity``, the form the issue reports for timm).  The script resumes: a model whose files and
truth line exist is skipped.  Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

import corpus_families  # noqa: E402
from corpus_truth import file_params, op_types, recurrent_macs  # noqa: E402
from gen_corpus import (  # noqa: E402
    clean_model,
    randomize_bn,
    randomize_constant_params,
    strip_weights,
)

warnings.filterwarnings("ignore")
EXTERNAL_ABOVE = 1 << 30  # bytes of weights above which the embedded form uses external data


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def param_counts(module: nn.Module) -> tuple[int, int]:
    """Trainable parameters, as publishers count them (torchvision's and pytorchcv's counts),
    and frozen ones: an ``nn.Parameter`` without grad (pytorchcv's X-DenseNet masks), which the
    exporter folds into a product or keeps as a weight of the file."""
    params = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
    return params, int(sum(p.numel() for p in module.parameters() if not p.requires_grad))


def bn_params(module: nn.Module) -> int:
    """The BatchNorms' affine parameters: what an eval-mode export's folding into the
    convolutions can take from the file's count (2 per channel at most)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return int(sum(p.numel() for m in bns for p in m.parameters(recurse=False) if p.requires_grad))


def count_macs(module: nn.Module, inputs: tuple) -> dict:
    """MACs per sample of the work that depends on the input, at batch 1.

    A forward can do work that does not depend on the input: Swin V2's continuous-position-bias
    MLP over a fixed coordinate table, EdgeNeXt's positional encoding of a grid built from the
    input's shape. An exporter folds some of it into constants, and nape folds the rest (what is
    computed from constants and shapes alone), so neither the file's work nor nape's count holds
    it. ``macs`` is torch's flop counter (FLOPs / 2, the counter's own formulas) over the ops
    whose operands derive from the input; ``macs_batch1`` the counter over every op, and
    ``macs_constant`` the difference, 0 for most networks."""
    counted = flop_count(module, inputs)
    if counted is None:
        return {"macs": None}
    on_input, every = counted
    return {"macs": on_input, "macs_batch1": every, "macs_constant": every - on_input}


class InputWork(TorchDispatchMode):
    """Counts the flop counter's FLOPs of every op, and of the ops whose operands derive from a
    marked input (the mark follows every op's outputs, and an in-place op's target)."""

    def __init__(self):
        super().__init__()
        self.every = 0
        self.on_input = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        marked = any(getattr(t, "_nape_input", False) for t in tensors)
        packet = func._overloadpacket
        if packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            self.every += flops
            self.on_input += flops if marked else 0
        if marked:
            for o in tree_flatten(out)[0]:
                if isinstance(o, torch.Tensor):
                    o._nape_input = True
            if packet.__name__.endswith("_") and tensors:
                tensors[0]._nape_input = True
        return out


def flop_count(module: nn.Module, inputs: tuple):
    """(MACs on the input, MACs of every op) as torch's flop counter counts them (conv, mm, bmm,
    addmm, attention): FLOPs / 2.

    The counter does not see CPU's fused attention kernels (``nn.MultiheadAttention``'s fast
    path, ``scaled_dot_product_attention``'s flash kernel): both are switched to their plain
    matmul form while counting, so attention's QK^T and AV are in the count."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    mode = InputWork()
    hooks, unseen = recurrent_hooks(module, mode)
    inputs = tuple(t.clone() for t in inputs)
    for t in inputs:
        t._nape_input = True
    try:
        with mode, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            module(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in hooks:
            h.remove()
    # a recurrent layer's work is on its input sequence
    extra = 2 * sum(unseen)
    every, on_input = mode.every + extra, mode.on_input + extra
    return (on_input // 2, every // 2) if every > 0 else None


def recurrent_hooks(module: nn.Module, mode: InputWork) -> tuple[list, list[int]]:
    """The counter sees nothing of CPU's fused LSTM kernel (GRU and RNN it sees as matmuls).
    Each recurrent layer the counter saw no FLOPs in adds its matmul work: every step of every
    layer and direction multiplies its input by W_ih and its state by W_hh
    (``corpus_truth.recurrent_macs``)."""
    unseen, hooks = [], []
    for m in module.modules():
        if not isinstance(m, nn.RNNBase):
            continue

        def before(mod, args):
            mod._nape_flops_before = mode.every

        def after(mod, args, out):
            if mode.every > mod._nape_flops_before:
                return
            unseen.append(recurrent_macs(mod, args[0]))

        hooks += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
    return hooks, unseen


def export_onnx(module: nn.Module, inputs: tuple, exporter: str, opset: int, input_names: list[str],
                dynamic: dict | None) -> onnx.ModelProto:
    """One eval-mode export; TorchScript with constant folding (the common form) or dynamo."""
    with contextlib.redirect_stdout(io.StringIO()):
        if exporter == "torchscript":
            # through a file: over 2 GiB of weights the exporter needs a folder for external data
            with tempfile.TemporaryDirectory(prefix="nape-export-") as tmp:
                path = Path(tmp) / "model.onnx"
                torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=opset,
                                  input_names=input_names, do_constant_folding=True,
                                  dynamic_axes=dynamic)
                model = onnx.load(str(path), load_external_data=True)
            ir = model.ir_version
        elif exporter == "dynamo":
            prog = torch.onnx.export(module, inputs, dynamo=True, opset_version=opset, optimize=True,
                                     input_names=input_names, external_data=False)
            model = prog.model_proto
            ir = 9 if opset <= 20 else 10
        else:
            raise ValueError(exporter)
    return clean_model(model, ir)


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_embedded(model: onnx.ModelProto, path: Path) -> None:
    """The weights-embedded form; over EXTERNAL_ABOVE the weights go to a side file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if weight_bytes(model) <= EXTERNAL_ABOVE:
        atomic_write_bytes(path, model.SerializeToString(deterministic=True))
        return
    data_name = f"{path.name}.data"
    tmp_dir = path.parent / f".tmp-{path.stem}"
    tmp_dir.mkdir(exist_ok=True)
    onnx.save_model(model, tmp_dir / path.name, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    os.replace(tmp_dir / data_name, path.parent / data_name)
    os.replace(tmp_dir / path.name, path)
    tmp_dir.rmdir()
    # the model proto now points at the side file: reload the data so stripping sees the values
    onnx.load_external_data_for_model(model, str(path.parent))


def build_case(case: corpus_families.Case, keep_init: bool):
    torch.manual_seed(0)
    module = case.build()
    if not keep_init:
        randomize_bn(module)
        randomize_constant_params(module)
    module.eval()
    torch.manual_seed(1)
    return module, case.inputs()


def export_case(case, fam_dir: Path, args) -> dict:
    module, inputs = build_case(case, args.keep_init)
    t0 = time.time()
    errors, model, exporter = {}, None, None
    for exporter in args.exporters:
        try:
            model = export_onnx(module, inputs, exporter, args.opset, case.input_names, case.dynamic)
            break
        except Exception as e:  # noqa: BLE001 - record, try the next exporter
            errors[exporter] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    if model is None:
        raise RuntimeError(f"no exporter worked: {errors}")
    export_s = time.time() - t0
    params, frozen = param_counts(module)
    embed = not args.no_embedded and (args.embedded_max_params is None or params <= args.embedded_max_params)
    if embed:
        save_embedded(model, fam_dir / "embedded" / f"{case.name}.onnx")
    stripped, _values = strip_weights(model)
    weights = set(next(p.value for p in stripped.metadata_props if p.key == "nape.weight_inputs").split(","))
    out = fam_dir / f"{case.name}.onnx"
    atomic_write_bytes(out, stripped.SerializeToString(deterministic=True))
    truth = {
        "file": out.name,
        "family": fam_dir.name,
        "params": params,
        **count_macs(module, inputs),
        "bn_params": bn_params(module),
        "file_params": file_params(stripped, weights),
        "input_shape": [list(t.shape) for t in inputs] if len(inputs) > 1 else list(inputs[0].shape),
        "input_dtype": str(inputs[0].dtype).removeprefix("torch."),
        "exporter": exporter,
        "opset": next(o.version for o in stripped.opset_import if o.domain in ("", "ai.onnx")),
        "ops": op_types(stripped),
        "stripped_weights": len(weights - {""}),
        "embedded": f"embedded/{case.name}.onnx" if embed else None,
        "export_s": round(export_s, 2),
        **case.meta,
    }
    if frozen:
        truth["frozen_params"] = frozen
    if errors:
        truth["exporter_failures"] = errors
    if args.keep_init:
        truth["init"] = "raw"
    return truth


def read_jsonl(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["file"]: r for r in rows}


def write_jsonl(path: Path, rows: dict[str, dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(rows[k], sort_keys=True) + "\n" for k in sorted(rows)))


def recount_family(family: str, args) -> None:
    """Recomputes ``macs`` (and ``macs_batch1``, ``macs_constant``) and the parameter counts
    (``params``, ``frozen_params``, ``bn_params``) in an existing truth.jsonl."""
    fam_dir = args.out / (family + args.suffix)
    truth_path = fam_dir / "truth.jsonl"
    truth = read_jsonl(truth_path)
    for case in corpus_families.cases(family, args):
        key = f"{case.name}.onnx"
        if key not in truth or (args.only and case.name not in args.only):
            continue
        module, inputs = build_case(case, args.keep_init)
        old = truth[key]["macs"]
        truth[key].update(count_macs(module, inputs))
        params, frozen = param_counts(module)
        truth[key].update(params=params, bn_params=bn_params(module))
        truth[key].pop("frozen_params", None)
        if frozen:
            truth[key]["frozen_params"] = frozen
        write_jsonl(truth_path, truth)
        if old != truth[key]["macs"]:
            print(f"  {family}/{case.name}: macs {old} -> {truth[key]['macs']}", flush=True)
        del module
        gc.collect()


def run_family(family: str, args) -> None:
    fam_name = family + args.suffix
    fam_dir = args.out / fam_name
    fam_dir.mkdir(parents=True, exist_ok=True)
    truth_path, fail_path = fam_dir / "truth.jsonl", fam_dir / "failures.jsonl"
    truth, failures = read_jsonl(truth_path), read_jsonl(fail_path)
    cases = corpus_families.cases(family, args)
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    if args.limit:
        cases = cases[: args.limit]
    print(f"== {fam_name}: {len(cases)} models -> {fam_dir}", flush=True)
    for i, case in enumerate(cases, 1):
        key = f"{case.name}.onnx"
        done = key in truth and (fam_dir / key).exists()
        if done or (key in failures and not args.retry_failed):
            continue
        t0 = time.time()
        try:
            row = export_case(case, fam_dir, args)
            row["family"] = fam_name
            truth[key] = row
            failures.pop(key, None)
            write_jsonl(truth_path, truth)
            print(f"  [{i}/{len(cases)}] {case.name}: {row['exporter']}, params {row['params']:,}, "
                  f"macs {row['macs']}, {time.time() - t0:.1f}s", flush=True)
        except Exception as e:  # noqa: BLE001 - one model's failure is recorded, not fatal
            failures[key] = {"file": key, "family": fam_name, "error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"  [{i}/{len(cases)}] {case.name}: FAILED {failures[key]['error'][:300]}", flush=True)
            if args.verbose:
                traceback.print_exc()
        write_jsonl(fail_path, failures)
        gc.collect()
    if not args.only and not args.limit:
        atomic_write_text(fam_dir / "DONE", f"{len(truth)} exported, {len(failures)} failed\n")
    print(f"== {fam_name}: {len(truth)} exported, {len(failures)} failed", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("NAPE_CORPUS", "/work/corpus")))
    ap.add_argument("--families", default="torchvision_cls",
                    help=f"comma-separated, or 'all': {','.join(corpus_families.FAMILIES)}")
    ap.add_argument("--exporters", default="torchscript,dynamo",
                    help="tried in this order per model (default: torchscript, then dynamo)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--suffix", default="", help="appended to the family folder name (e.g. _dynamo18)")
    ap.add_argument("--only", nargs="*", help="model names to export (no DONE marker)")
    ap.add_argument("--limit", type=int, default=0, help="first N models only (no DONE marker)")
    ap.add_argument("--timm-count", type=int, default=320, help="how many timm architectures")
    ap.add_argument("--no-embedded", action="store_true", help="write the stripped form only")
    ap.add_argument("--embedded-max-params", type=int, default=None,
                    help="write the embedded form only for models with at most this many parameters (disk)")
    ap.add_argument("--keep-init", action="store_true", help="no noise on BN stats / constant params")
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--recount-macs", action="store_true", help="only recompute macs and parameter counts in existing truth files")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    args.exporters = args.exporters.split(",")
    torch.set_num_threads(args.threads)
    families = corpus_families.FAMILIES if args.families == "all" else args.families.split(",")
    for fam in families:
        if fam not in corpus_families.FAMILIES:
            ap.error(f"unknown family {fam!r}; known: {', '.join(corpus_families.FAMILIES)}")
    for fam in families:
        (recount_family if args.recount_macs else run_family)(fam, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
