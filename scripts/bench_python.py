#!/usr/bin/env python3
"""The Python front against the CLI, side by side (issue 17; `make bench-python`):

1. `nape.predict` of the ONNX files in DIR in-process against `nape predict --json` on the same
   files: the numbers must be equal, and the times are printed (medians over REPEAT runs).
2. `nape.predict_torch` on torchvision's ResNet-18 (random weights): seconds per call, cold
   (model load included) and warm, and its number against the CLI on the same export.

Usage: bench_python.py DIR NAPE_BINARY [REPEAT]   (run with .venv-py's python, nape built
release by maturin; OMP_NUM_THREADS is passed through to both)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_predict(nape_bin, files):
    t0 = time.perf_counter()
    before = os.times()
    out = subprocess.run([nape_bin, "predict", "--json", *files], capture_output=True, text=True)
    after = os.times()
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"nape predict failed ({out.returncode}): {out.stderr}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return json.loads(out.stdout)["predictions"], wall, cpu


def py_predict(files, fresh):
    import nape

    if fresh:
        nape._api._PREDICTORS.clear()  # the model loaded again, as the CLI loads it
    t0 = time.perf_counter()
    c0 = time.process_time()
    got = nape.predict(files, progress=False)
    return got, time.perf_counter() - t0, time.process_time() - c0


def main():
    folder, nape_bin = Path(sys.argv[1]), sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    files = sorted(str(f) for f in folder.glob("*.onnx"))
    if not files:
        sys.exit(f"no .onnx files in {folder}")
    t0 = time.perf_counter()
    import nape  # noqa: F401  (import time reported once)

    print(f"import nape: {time.perf_counter() - t0:.3f} s")
    cli_runs, cold_runs, warm_runs = [], [], []
    for _ in range(repeat):  # interleaved, so load on the machine hits both alike
        want, w, c = cli_predict(nape_bin, files)
        cli_runs.append((w, c))
        got, w, c = py_predict(files, fresh=True)
        cold_runs.append((w, c))
        got2, w, c = py_predict(files, fresh=False)
        warm_runs.append((w, c))
        assert got == want and got2 == want, "nape.predict differs from nape predict"
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    n = len(files)
    print(f"{n} files, {repeat} runs each, medians; the numbers equal the CLI's exactly")
    print(f"{'route':<42} {'wall s':>8} {'CPU s':>8} {'nets/s':>8}")
    for name, runs in [
        ("nape predict --json (CLI process)", cli_runs),
        ("nape.predict, model loaded in the call", cold_runs),
        ("nape.predict, model already loaded", warm_runs),
    ]:
        print(f"{name:<42} {med(runs, 0):>8.3f} {med(runs, 1):>8.3f} {n / med(runs, 0):>8.1f}")
    bench_torch(nape_bin, repeat)


def bench_torch(nape_bin, repeat):
    import torch
    import torchvision

    import nape

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 224, 224)
    nape._api._PREDICTORS.clear()
    t0 = time.perf_counter()
    cold = nape.predict_torch(m, x)
    cold_s = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = nape.predict_torch(m, x)
        warm.append(time.perf_counter() - t0)
        assert r == cold
    t0 = time.perf_counter()
    data = nape.export_torch(m, x)
    export_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "resnet18.onnx"
        f.write_bytes(data)
        [want], _, _ = cli_predict(nape_bin, [str(f)])
    same = all(cold[k] == want[k] for k in ("prediction", "uncertainty", "in_domain", "params", "flops"))
    print(
        f"predict_torch(resnet18): {cold_s:.3f} s cold (model load included), "
        f"{statistics.median(warm):.3f} s warm (of which export {export_s:.3f} s); "
        f"prediction {cold['prediction']:.6f}, CLI on the same export {want['prediction']:.6f}, "
        f"{'equal' if same else 'DIFFERENT'}"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
