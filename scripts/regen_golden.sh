#!/usr/bin/env bash
# Regenerates tests/golden/*.json from tests/corpus/ops/*.onnx with the current nape.
# Run after an intended change to the ONNX -> CG mapping, then review `git diff tests/golden`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${NAPE_BIN:-./target/debug/nape}
[ -x "$bin" ] || { echo "build nape first (cargo build)" >&2; exit 1; }
mkdir -p tests/golden
for f in tests/corpus/ops/*.onnx; do
  name=$(basename "$f" .onnx)
  "$bin" inspect --json "$f" > "tests/golden/$name.json.tmp"
  mv "tests/golden/$name.json.tmp" "tests/golden/$name.json"
done
echo "wrote $(ls tests/golden/*.json | wc -l) golden files"
# the ONNX-Net-style text of a few small files (tests/golden/text_*.txt)
NAPE_REGEN_GOLDEN=1 cargo test -q --no-default-features --test features golden_text >/dev/null
echo "wrote $(ls tests/golden/text_*.txt | wc -l) golden text files"
