#!/usr/bin/env python3
"""Does nape read a quantized or float16 network as the float network it holds?

    .venv-export/bin/python scripts/quantized_check.py --nape target/release/nape \\
        --out /work/corpus/quantized [--models resnet18,vit_b_16]

For each of torchvision's classification models (``weights=None``, seeded, exported by
TorchScript at opset 17, 299 px for Inception v3 and 224 px for the rest), ONNX Runtime's tools
write the forms a user deploys:

``qdq``        ``quantize_static``, QDQ format, per-channel int8 weights
``qoperator``  ``quantize_static`` in QOperator format, after ``quant_pre_process``
``dynamic``    ``quantize_dynamic`` (int8 weights)
``fp16_io32``  ``convert_float_to_float16`` with ``keep_io_types`` (inputs and outputs float32)

Calibration is one seeded normal batch. ``nape inspect --jsonl`` reads the float file, the
pre-processed float file (``pre``, which ONNX Runtime's optimiser rewrites: QOperator's graph is
compared with it) and each form, and each form's params, MACs and canonical graph hash are
compared. One line per model goes to ``OUT/results.jsonl`` (a rerun skips the models already
there); the files are deleted after each model. The summary table goes to standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quant_pre_process, quantize_dynamic, quantize_static)
from onnxruntime.transformers.float16 import convert_float_to_float16

FORMS = ("qdq", "qoperator", "dynamic", "fp16_io32")
KEYS = ("params", "macs", "flops", "depth", "nodes", "graph_hash", "error", "by_kind")


class Batch(CalibrationDataReader):
    def __init__(self, shape):
        self.batches = [np.random.default_rng(0).standard_normal(shape).astype(np.float32)]

    def get_next(self):
        return {"input": self.batches.pop()} if self.batches else None


def write_forms(f: Path, d: Path, shape) -> dict[str, str]:
    pre = d / "pre.onnx"
    makers = {
        "qdq": lambda o: quantize_static(str(f), o, Batch(shape), quant_format=QuantFormat.QDQ,
                                         per_channel=True),
        "qoperator": lambda o: (quant_pre_process(str(f), str(pre)),
                                quantize_static(str(pre), o, Batch(shape),
                                                quant_format=QuantFormat.QOperator)),
        "dynamic": lambda o: quantize_dynamic(str(f), o, weight_type=QuantType.QInt8),
        "fp16_io32": lambda o: onnx.save(
            convert_float_to_float16(onnx.load(str(f)), keep_io_types=True), o),
    }
    made = {}
    for form, make in makers.items():
        try:
            make(str(d / f"{form}.onnx"))
            made[form] = "ok"
        except Exception as e:  # the tool's own failure: reported, not nape's
            made[form] = f"ONNX Runtime's tool failed: {e!r}"[:300]
    return made


def check(name: str, nape: str, out: Path) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    row: dict = {"name": name}
    t0 = time.time()
    try:
        torch.manual_seed(0)
        net = torchvision.models.get_model(name, weights=None).eval()
        shape = (1, 3, 299, 299) if "inception" in name else (1, 3, 224, 224)
        f = d / "float.onnx"
        torch.onnx.export(net, torch.zeros(shape), str(f), input_names=["input"],
                          opset_version=17, dynamo=False)
        row["made"] = write_forms(f, d, shape)
        files = [str(p) for p in sorted(d.glob("*.onnx"))]
        r = subprocess.run([nape, "inspect", "--jsonl", *files], capture_output=True, text=True,
                           timeout=1800)
        for line in r.stdout.splitlines():
            j = json.loads(line)
            row[Path(j["file"]).stem] = {k: j.get(k) for k in KEYS}
    except Exception:
        row["error"] = traceback.format_exc()[-1500:]
    row["seconds"] = round(time.time() - t0, 1)
    shutil.rmtree(d)
    return row


def compare(row: dict) -> list[tuple[str, str, str]]:
    """(model, form, what differs) for each form that is not read as the float network."""
    f, pre = row.get("float") or {}, row.get("pre") or {}
    if f.get("params") is None:
        return [(row["name"], "float", str(row.get("error") or f.get("error"))[-300:])]
    bad = []
    for form in FORMS:
        q = row.get(form)
        if q is None:
            continue
        if q.get("params") is None:
            bad.append((row["name"], form, f"not read: {q.get('error')}"[:300]))
            continue
        ref = pre if form == "qoperator" and pre.get("params") is not None else f
        diff = []
        if (q["params"], q["macs"]) != (f["params"], f["macs"]):
            diff.append(f"params {q['params']} vs {f['params']}, MACs {q['macs']} vs {f['macs']}")
        if q["graph_hash"] != ref["graph_hash"]:
            a, b = q.get("by_kind") or {}, ref.get("by_kind") or {}
            kinds = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k) != b.get(k)}
            diff.append(f"another graph (FLOPs {q['flops']} vs {ref['flops']}, kinds {kinds})")
        if diff:
            bad.append((row["name"], form, "; ".join(diff)))
    return bad


def summary(rows: list[dict]) -> None:
    print(f"{len(rows)} models; per form: written by ONNX Runtime / read by nape / params and "
          "MACs of the float file / its graph hash")
    for form in FORMS:
        made = [r for r in rows if (r.get("made") or {}).get(form) == "ok"]
        read = [r for r in made if (r.get(form) or {}).get("params") is not None]
        ok = [r for r in read if not any(b[1] == form and "params" in b[2] for b in compare(r))]
        same = [r for r in read if not any(b[1] == form for b in compare(r))]
        print(f"  {form:10s} {len(made):3d} / {len(read):3d} / {len(ok):3d} / {len(same):3d}")
    for r in rows:
        for form, why in (r.get("made") or {}).items():
            if why != "ok":
                print(f"  {r['name']} {form}: {why}")
        for b in compare(r):
            print("  " + " ".join(b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nape", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", help="comma-separated torchvision names (default: every "
                    "classifier of at most 400 M parameters)")
    args = ap.parse_args()
    nape = str(Path(args.nape).resolve())
    args.out = args.out.resolve()
    names = (args.models.split(",") if args.models else
             [n for n in torchvision.models.list_models(module=torchvision.models)
              if n not in ("vit_h_14", "regnet_y_128gf")])
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # ONNX Runtime's shape inference writes its temporary files here
    results = args.out / "results.jsonl"
    done = {json.loads(l)["name"] for l in results.open()} if results.exists() else set()
    for name in (n for n in names if n not in done):
        row = check(name, nape, args.out)
        with results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name}: {row['seconds']} s, {len(compare(row))} form(s) differ", flush=True)
    rows = [json.loads(l) for l in results.open()]
    summary([r for r in rows if r["name"] in names])
    return 0


if __name__ == "__main__":
    sys.exit(main())
