#!/usr/bin/env bash
# The predictor experiments of docs/predictor.md, in order. Models go to $MODELS (not the
# bundled models/ folder), run folders to $RUNS, JSON reports to $OUT.
#   NAPE=./target/release/nape scripts/predictor_experiments.sh [zeroshot|finetune|ablation|all]
set -euo pipefail
NAPE=${NAPE:-./target/release/nape}
MODELS=${MODELS:-/tmp/nape-models}
RUNS=${RUNS:-/tmp/nape-runs}
OUT=${OUT:-/tmp/exp}
MODEL=${MODEL:-nape-nb101}
what=${1:-all}
mkdir -p "$OUT"
common=(--models "$MODELS" --runs "$RUNS")

if [[ $what == pretrain || $what == all ]]; then
  /usr/bin/time -v "$NAPE" pretrain --config configs/default.json --name "$MODEL" "${common[@]}" --json \
    > "$OUT/pretrain.json" 2> "$OUT/pretrain.log"
fi
if [[ $what == zeroshot || $what == all ]]; then
  for t in cifar10_test_ep200 cifar100_test_ep200 imagenet16_test_ep200; do
    "$NAPE" eval --model "$MODEL" --family nb201 --target $t "${common[@]}" --json > "$OUT/zeroshot_nb201_$t.json"
  done
  for t in class_scene_val_accuracy class_object_val_accuracy; do
    "$NAPE" eval --model "$MODEL" --family tnb-micro --target $t "${common[@]}" --json > "$OUT/zeroshot_tnb_$t.json"
  done
fi
if [[ $what == finetune || $what == all ]]; then
  "$NAPE" finetune --model "$MODEL" --family nb201 --samples 50 --seeds 5 "${common[@]}" --json \
    > "$OUT/finetune_nb201_50.json" 2> "$OUT/finetune_nb201_50.log"
fi
if [[ $what == ablation || $what == all ]]; then
  for v in gnn gnn_pre gnn_pre_fcm gnn_pre_fcm_glob gnn_pre_fcm_glob_text; do
    "$NAPE" pretrain --config configs/ablation_$v.json --name "abl-$v" "${common[@]}" --json \
      > "$OUT/ablation_$v.json" 2> "$OUT/ablation_$v.log"
    "$NAPE" eval --model "abl-$v" --family nb201 "${common[@]}" --json > "$OUT/ablation_${v}_nb201.json"
  done
fi
