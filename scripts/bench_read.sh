#!/usr/bin/env bash
# Reading ONNX files: `nape inspect --json` against the Python route ONNX-Net takes
# (onnx.load + onnx.shape_inference.infer_shapes), on the same files, one run after the other,
# each a fresh process (start-up included): CPU seconds (user + sys), wall seconds, peak RSS.
#   scripts/bench_read.sh FOLDER_OR_FILES...   (N=100 files at most; NAPE, PYTHON to override)
set -euo pipefail
NAPE=${NAPE:-./target/release/nape}
PY=${PYTHON:-.venv-py/bin/python}
N=${N:-100}
mapfile -t files < <(find "$@" -name '*.onnx' | sort | head -n "$N")
[ ${#files[@]} -gt 0 ] || { echo "error: no .onnx files under $*" >&2; exit 3; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
bytes=$(cat "${files[@]}" | wc -c)
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%U %S %e %M" -o "$tmp" "$@" > /dev/null
  read -r user sys wall kb < "$tmp"
  awk -v l="$label" -v u="$user" -v s="$sys" -v w="$wall" -v k="$kb" \
    'BEGIN { printf "%-34s %10.3f %8.3f %10.1f\n", l, u + s, w, k / 1024 }'
}
echo "${#files[@]} files, $((bytes / 1048576)) MiB; $(nproc) cores"
printf "%-34s %10s %8s %10s\n" "route" "CPU s" "wall s" "peak MiB"
measure "python onnx.load + infer_shapes" "$PY" -c '
import sys, onnx, onnx.shape_inference
for p in sys.argv[1:]:
    onnx.shape_inference.infer_shapes(onnx.load(p))
' "${files[@]}"
measure "nape inspect --json" "$NAPE" inspect --json "${files[@]}"
measure "nape inspect --json (1 thread)" env RAYON_NUM_THREADS=1 "$NAPE" inspect --json "${files[@]}"
