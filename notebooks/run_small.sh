#!/usr/bin/env bash
# A small run of nape whose JSON/CSV the notebooks read, then the notebooks executed on it
# (`make notebooks`, and CI through `make test`). Everything goes to $OUT (default
# runs/notebook); the executed notebooks are written there too, with their figures.
#   NAPE=./target/debug/nape PYTHON=.venv-py/bin/python notebooks/run_small.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NAPE=${NAPE:-./target/debug/nape}
PYTHON=${PYTHON:-.venv-py/bin/python}
OUT=${OUT:-runs/notebook}
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the run folders named in the JSON are read from the notebook's folder
common=(--runs "$OUT/runs" -q)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# predicted vs true: the bundled model, zero-shot, on 300 cells of each family
"$NAPE" eval --model nape-nb101 --family nb201 --limit 300 "${common[@]}" --json > "$OUT/eval_nb201.json"
"$NAPE" eval --model nape-nb101 --family tnb-micro --limit 300 "${common[@]}" --json > "$OUT/eval_tnb-micro.json"
"$NAPE" eval --model nape-nb101 --family nb101 --limit 300 "${common[@]}" --json > "$OUT/eval_nb101.json"
# proxy correlations: data-free and cheap data proxies on 40 NB-201 cells
"$NAPE" proxies --family nb201 --sample 40 --names params,flops,synflow,l2_norm,jacov,nwot \
  --cache "$OUT/cache" --out "$OUT/proxies_nb201.jsonl" -q > /dev/null || {
  # exit 5: some proxies are undefined on some cells (jacov on a cell cut off from its input),
  # reported on stderr; the records are written with what was computed
  rc=$?; [ $rc -eq 5 ] || exit $rc; }
# fine-tuning curve: 10/20/50/100 labelled NB-201 cells, 2 seeds, evaluated on 300 others
for n in 10 20 50 100; do
  "$NAPE" finetune --model nape-nb101 --family nb201 --samples $n --seeds 2 --epochs 30 --folds 3 \
    --limit 300 "${common[@]}" --json > "$OUT/finetune_$n.json"
done

"$PYTHON" - "$OUT" <<'PY'
import sys, pathlib, nbformat
from nbclient import NotebookClient
out = pathlib.Path(sys.argv[1]).resolve()
for nb_path in sorted(pathlib.Path("notebooks").glob("*.ipynb")):
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(out)}}).execute()
    nbformat.write(nb, out / nb_path.name)
    print(f"executed {nb_path} -> {out / nb_path.name}")
PY
