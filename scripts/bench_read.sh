#!/usr/bin/env bash
# Reading ONNX files: `nape inspect --json` against the Python route ONNX-Net takes
# (onnx.load + onnx.shape_inference.infer_shapes), on the same files, one run after the other,
# each a fresh process (start-up included): CPU seconds (user + sys, from the child's rusage),
# wall seconds, peak RSS.
# The routes run in turn REPEAT times (default 5); each column is the median of its runs, and
# the last line is the ratio of the medians' CPU seconds.
#   scripts/bench_read.sh FOLDER_OR_FILES...   (N=100 files at most; NAPE, PYTHON to override)
set -euo pipefail
NAPE=${NAPE:-./target/release/nape}
PY=${PYTHON:-.venv-py/bin/python}
N=${N:-100}
REPEAT=${REPEAT:-5}
mapfile -t files < <(find "$@" -name '*.onnx' | sort | head -n "$N")
[ ${#files[@]} -gt 0 ] || { echo "error: no .onnx files under $*" >&2; exit 3; }
bytes=$(cat "${files[@]}" | wc -c)
# the child's rusage in microseconds (/usr/bin/time prints CPU in 10 ms steps, a tenth of
# nape's time on 100 files)
MEASURE='
import resource, subprocess, sys, time
before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the interpreter may have run some
t = time.perf_counter()
subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, check=True)
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = r.ru_utime + r.ru_stime - before.ru_utime - before.ru_stime
print(f"{sys.argv[1]}|{cpu:.4f}|{wall:.4f}|{r.ru_maxrss / 1024:.1f}")
'
run() { # label, command...: one line "label|cpu|wall|MiB" per run into $runs
  python3 -c "$MEASURE" "$@" >> "$runs"
}
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
echo "${#files[@]} files, $((bytes / 1048576)) MiB; $(nproc) cores; median of $REPEAT runs each"
PY_ROUTE='
import sys, onnx, onnx.shape_inference
for p in sys.argv[1:]:
    onnx.shape_inference.infer_shapes(onnx.load(p))
'
for _ in $(seq "$REPEAT"); do
  run "python onnx.load + infer_shapes" "$PY" -c "$PY_ROUTE" "${files[@]}"
  run "nape inspect --json" "$NAPE" inspect --json "${files[@]}"
  run "nape inspect --json (1 thread)" env RAYON_NUM_THREADS=1 "$NAPE" inspect --json "${files[@]}"
done
python3 - "$runs" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *vals = line.rstrip("\n").split("|")
    rows.setdefault(label, []).append([float(v) for v in vals])
print(f"{'route':<34} {'CPU s':>10} {'wall s':>8} {'peak MiB':>10}")
med = {}
for label, runs in rows.items():
    m = [statistics.median(col) for col in zip(*runs)]
    med[label] = m
    print(f"{label:<34} {m[0]:>10.4f} {m[1]:>8.4f} {m[2]:>10.1f}")
py = med["python onnx.load + infer_shapes"][0]
for label in list(med)[1:]:
    print(f"CPU ratio {label} / python: {med[label][0] / py:.3f}")
PY
