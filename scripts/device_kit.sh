#!/usr/bin/env bash
# Packs .device-kit, what scripts/device_check.sh reads on a GPU machine that has PyTorch 2.11
# (CUDA build) but no Rust toolchain (`make device-kit`; docs/predictor.md, "On a GPU"):
#   nape-torch.gz  the release nape-torch, stripped (libtorch comes from the machine's PyTorch)
#   data.tar.gz    NAS-Bench-101 and -201, Fashion-MNIST, and NAS-Bench-Suite-Zero's NB-201 scores
#                  (the table's published column) from $NAPE_DATA
#   ref/           nape-nb101 with one member, seed 0, pretrained on this machine's CPU by the
#                  same build, with its metrics (pretrain-cpu.json): what the GPU's run is
#                  compared with. Trained again only when the build changed.
# About 33 MB, inside the 64 MiB a device call carries with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.device-kit
BIN=target/release/nape-torch
DATA=${NAPE_DATA:?set NAPE_DATA to the benchmark data folder}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release --bins)" >&2; exit 2; }
for d in nasbench101 nasbench201 fashion_mnist naslib_zc; do
  [ -d "$DATA/$d" ] || { echo "error: $DATA/$d not found (set NAPE_DATA)" >&2; exit 3; }
done
mkdir -p "$KIT/ref"

# the binary, stripped of its debug information (240 MB -> 30 MB, 11 MB compressed)
strip -o "$KIT/nape-torch.tmp" "$BIN"
gzip -9c "$KIT/nape-torch.tmp" > "$KIT/nape-torch.gz.tmp"
mv "$KIT/nape-torch.gz.tmp" "$KIT/nape-torch.gz"
rm "$KIT/nape-torch.tmp"
tar -czf "$KIT/data.tar.gz.tmp" -C "$DATA" nasbench101 nasbench201 fashion_mnist \
  naslib_zc/nasbench201.jsonl naslib_zc/SOURCE.md
mv "$KIT/data.tar.gz.tmp" "$KIT/data.tar.gz"

# the CPU reference, trained by this build (its checksum says which)
build=$(md5sum "$BIN" | cut -c1-12)
if [ "$(cat "$KIT/ref/build" 2>/dev/null)" != "$build" ]; then
  echo "training the CPU reference (nape-nb101, one member, seed 0; a few minutes)"
  rm -rf "$KIT/ref/models" "$KIT/ref/work"
  OMP_NUM_THREADS=1 "$BIN" pretrain --family nb101 --members 1 --seed 0 --device cpu \
    --name ref-nb101 --models "$KIT/ref/models" --cache "$KIT/ref/work/cache" \
    --runs "$KIT/ref/work/runs" --json > "$KIT/ref/pretrain-cpu.json.tmp"
  mv "$KIT/ref/pretrain-cpu.json.tmp" "$KIT/ref/pretrain-cpu.json"
  rm -rf "$KIT/ref/work"
  echo "$build" > "$KIT/ref/build"
fi
du -sh "$KIT"
