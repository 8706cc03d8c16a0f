#!/usr/bin/env bash
# The GPU checks of `--device cuda` (proxies and training), prepared to run in one call on a
# machine with a CUDA GPU and a CUDA build of PyTorch 2.11 but no Rust toolchain. It reads the
# kit `make device-kit` packs here (.device-kit: the stripped nape-torch, the benchmark data,
# and a reference model trained on this machine's CPU) and writes its log and results to OUT.
#
#   bash scripts/device_check.sh .device-kit "$OUT"
#
# DEVICE_CHECK_SECONDS (default 540) bounds the whole; DEVICE_CHECK_CELLS (20) the cells of step
# 2; DEVICE_CHECK_ALLOW_CPU=1 goes on when CUDA falls back to the CPU (a dry run of the script
# on a machine without a GPU, where every "cuda" below runs on the CPU; there TORCH_LIB names
# libtorch's lib folder if python3 has no torch).
#
# Steps, each under its own limit so that the whole ends inside one 10-minute call:
#   1. CUDA is there: nvidia-smi, and nape on the GPU without falling back to the CPU.
#   2. Proxies: all 14 on 20 NB-201 cells on the CPU and on the GPU; per proxy the largest and
#      the median relative difference and the Spearman between the two (device_compare.py).
#   3. Training: nape-nb101 (one member, seed 0) pretrained on the GPU; its time and held-out
#      metrics beside the CPU-trained reference's, and both models' NB-201 zero-shot Spearman.
#   4. The NB-201 proxy table on the GPU (docs/proxies.md's command, 1,000 cells, seed 0) for
#      the time left: networks per second, and the correlations when it finishes.
# A step that fails is reported and the next one runs; the exit status is the number failed.
set -uo pipefail

KIT=$(cd "${1:?usage: device_check.sh KIT OUT}" && pwd)
OUT=${2:?usage: device_check.sh KIT OUT}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
# everything into the log (under OUT, it comes back even when the call is stopped), which is
# printed at the end; fd 3 keeps the call's own output
exec 3>&1 > "$LOG" 2>&1
HERE=$(cd "$(dirname "$0")" && pwd)
LIMIT=${DEVICE_CHECK_SECONDS:-540}
T=$(mktemp -d /tmp/nape-device.XXXXXX)
trap 'rm -rf "$T"' EXIT
failed=0

step() { echo; echo "== $* ($(date -u +%H:%M:%S), ${SECONDS}s in) =="; }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }
# seconds a step may take: its own cap, or what is left of the whole less a reserve
left() { local l=$((LIMIT - SECONDS - ${2:-20})); [ "$1" -lt "$l" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }

step "setup"
# libtorch: the machine's PyTorch, or TORCH_LIB where python3 has none (the dry run here)
TORCH_LIB=${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')} ||
  { echo "FAILED: python3 cannot import torch (or set TORCH_LIB)"; cat "$LOG" >&3; exit 99; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gzip -dc "$KIT/nape-torch.gz" > "$T/nape" && chmod +x "$T/nape" || { echo "FAILED: unpacking nape"; cat "$LOG" >&3; exit 99; }
mkdir -p "$T/data" && tar -xzf "$KIT/data.tar.gz" -C "$T/data" || { echo "FAILED: unpacking the data"; cat "$LOG" >&3; exit 99; }
export NAPE_DATA="$T/data" OMP_NUM_THREADS=1
NAPE="$T/nape"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "sees", torch.cuda.device_count(), "GPU")' ||
  echo "(python3 has no torch here: libtorch from $TORCH_LIB)"
nvidia-smi -L || fail "nvidia-smi"
"$NAPE" --version || { echo "FAILED: nape does not start"; cat "$LOG" >&3; exit 99; }
nproc

step "1. nape on the GPU"
"$NAPE" export nb201 --limit "${DEVICE_CHECK_CELLS:-20}" --out "$T/cells" -q || fail "export"
first=$(find "$T/cells" -name '*.onnx' | sort | head -1)
"$NAPE" proxies "$first" --names synflow --device cuda --cache "$T/probe" 2> "$T/probe.err"
cat "$T/probe.err"
if grep -q "running on the CPU" "$T/probe.err" && [ -z "${DEVICE_CHECK_ALLOW_CPU:-}" ]; then
  echo "FAILED: CUDA fell back to the CPU; nothing below would run on the GPU"
  cat "$LOG" >&3
  exit 98
fi

step "2. the 14 proxies on ${DEVICE_CHECK_CELLS:-20} NB-201 cells, CPU then GPU"
for dev in cpu cuda; do
  /usr/bin/time -f "$dev: %e s wall, %M KB peak" timeout "$(left 150)" "$NAPE" proxies "$T/cells" \
    --names all --device "$dev" --cache "$T/cache-$dev" --json > "$OUT/proxies-$dev.json" ||
    fail "proxies on $dev"
done
python3 "$HERE/device_compare.py" "$OUT/proxies-cpu.json" "$OUT/proxies-cuda.json" \
  --json "$OUT/proxies-compare.json" || fail "compare"

step "3. nape-nb101 (1 member, seed 0) pretrained on the GPU, beside the CPU's"
/usr/bin/time -f "pretrain on cuda: %e s wall, %M KB peak" timeout "$(left 270 100)" "$NAPE" pretrain \
  --family nb101 --members 1 --seed 0 --device cuda --name gpu-nb101 --models "$T/models" \
  --cache "$T/fcache" --runs "$T/runs" --json > "$OUT/pretrain-cuda.json" || fail "pretrain on cuda"
# the Spearman (and Kendall) of the model and of the baselines in a metrics JSON, on one line
brief() {
  python3 - "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"  (no metrics: {e})")
m = d.get("metrics", d)
keys = [k for k in ("model", "flops", "params", "params_eff") if k in m]
print("  " + ", ".join(f"{k} {m[k]['spearman']:.4f}" for k in keys)
      + (f" (model kendall {m['model']['kendalltau']:.4f})" if "model" in m else "")
      + (f"; timing {m['timing']}" if "timing" in m else ""))
PY
}
echo "-- held-out NB-101 Spearman, the CPU reference (trained where the kit was packed):"
brief "$KIT/ref/pretrain-cpu.json"
echo "-- the same, this GPU run:"
brief "$OUT/pretrain-cuda.json"
for m in "$KIT/ref/models/ref-nb101" "$T/models/gpu-nb101"; do
  [ -d "$m" ] || continue
  echo "-- NB-201 zero-shot, $(basename "$m") (CPU inference):"
  timeout "$(left 60)" "$NAPE" eval --model "$m" --family nb201 --limit 2000 --cache "$T/fcache" \
    --runs "$T/runs" --json > "$OUT/eval-$(basename "$m").json" || fail "eval $(basename "$m")"
  brief "$OUT/eval-$(basename "$m").json"
done

step "4. the NB-201 proxy table on the GPU, for the time left"
budget=$(left 600 15)
/usr/bin/time -f "table on cuda: %e s wall, %M KB peak" timeout "$budget" "$NAPE" proxies --family nb201 \
  --sample 1000 --seed 0 --names all --device cuda --cache "$T/table" --correlate
rc=$?
n=$(find "$T/table" -name '*.jsonl.gz' -exec sh -c 'gzip -dc "$1" | tail -n +2 | wc -l' _ {} \; 2>/dev/null | awk '{s+=$1} END {print s+0}')
echo "table: $n networks cached in at most ${budget} s (rc $rc; 124: stopped at its limit, resumable)"
find "$T/table" -name '*.jsonl.gz' -exec cp {} "$OUT/" \;

step "done: $failed step(s) failed, ${SECONDS}s"
cat "$LOG" >&3
exit "$failed"
