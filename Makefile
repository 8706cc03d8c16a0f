# nape: two commands on a fresh machine.
#   make demo   installs what is missing, builds, and runs nape on the bundled networks
#   make test   installs what is missing, builds, and runs every test
# Everything installed lives in this folder: .venv-torch (the PyPI wheel torch==2.11.0 with
# the CUDA libraries it links: libtorch for tch 0.24.0, and Python's `import torch`) and
# .venv-py (onnx + onnxruntime for tests that check our ONNX files with the reference
# implementation, torchvision, pytest, maturin, and nape's Python front built into it; it sees
# .venv-torch's torch through a .pth file, so Python and the CLI load one libtorch).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
TORCH_VER   := 2.11.0
TORCH_VENV  := .venv-torch
PY_VENV     := .venv-py
TORCH_STAMP := $(TORCH_VENV)/.installed-$(TORCH_VER)-py
PY_STAMP    := $(PY_VENV)/.installed-3
# what torch 2.11.0's wheel links (its own pins), without triton (a compiler nape never calls);
# the CLI loads only libtorch_cpu, Python's `import torch` needs them all
TORCH_LIBS  := nvidia-cublas==13.1.0.3 nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cudnn-cu13==9.19.0.56 nvidia-cufft==12.0.0.61 \
    nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66 \
    nvidia-cusparse==12.6.3.3 nvidia-cusparselt-cu13==0.8.0 nvidia-nccl-cu13==2.28.9 \
    nvidia-nvjitlink==13.0.88 nvidia-nvshmem-cu13==3.4.5 nvidia-nvtx==13.0.85 \
    filelock==4.3.1 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 \
    jinja2==3.1.6 markupsafe==3.0.4 fsspec==2026.9.0
# disk the torch install needs free before it starts (measured: 4.0 GB installed, the wheels
# about as much again while pip unpacks them)
TORCH_DISK_GB := 9
# benchmark data: never committed; CI and the developers' machines have it beside the repo
NAPE_DATA   ?= $(abspath ../shared/data)
export NAPE_DATA

CARGO_ENV = LIBTORCH="$$(cat $(TORCH_VENV)/.libtorch)"

.PHONY: help setup demo test python bench-python bench-proxies device-kit check fmt clippy bench bench-read exporters-check quantized-check corpus corpus-check spaces-check zoo-check pytorchcv-check mix lofo golden fuzz clean notebooks

help:
	@echo "make demo   - install, build, run nape on the bundled networks"
	@echo "make test   - install, build, run all tests"
	@echo "make check  - fmt --check + clippy -D warnings"
	@echo "make bench  - release build, nape bench (stage throughput table)"
	@echo "make golden - regenerate golden CG files from tests/corpus"
	@echo "make corpus - export the real-world ONNX corpus to NAPE_CORPUS (about 5 GB of Python torch)"
	@echo "make corpus-check - nape against the corpus truth: the per-family table"
	@echo "make spaces-check - the unlabelled DARTS and ResNet-macro spaces of the corpus: read, counted, predicted, in domain"
	@echo "make exporters-check - 200 NB-201 + 200 NB-101 cells, three exporters: one graph hash, one prediction"
	@echo "make quantized-check - torchvision's classifiers quantized (QDQ, QOperator, dynamic) and in float16: read as the float network?"
	@echo "make bench-read - nape inspect against onnx.load + infer_shapes on the same files"
	@echo "make bench-python - nape.predict in-process against the CLI on the same files; predict_torch"
	@echo "make bench-proxies - nape's proxies alone and shared (nape bench --proxies), and six of them against PyTorch"
	@echo "make zoo-check - the bundled model zero-shot on torchvision's 80 ImageNet classifiers (published top-1)"
	@echo "make pytorchcv-check - both bundled models zero-shot on pytorchcv's CIFAR-10 and ImageNet classifiers (the errors its model store ships)"
	@echo "make mix   - train nape-mix, the 5-member default on NB-101, NB-201 and the zoo (configs/mix.json; needs the zoo labels)"
	@echo "make device-kit - pack .device-kit for scripts/device_check.sh, the --device cuda checks on a GPU machine (docs/predictor.md, On a GPU)"
	@echo "make lofo  - the leave-one-family-out table of configs/mix.json, TransNAS's tasks left out beside (LOFO_SEEDS, default 0 1 2; 5-member models, about 15 min each on one core; LOFO_MEMBERS=1 for the quick look)"

$(TORCH_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3 (python3-venv)" >&2; exit 1; }
	@command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup)" >&2; exit 1; }
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  test "$$free" -ge $(TORCH_DISK_GB) || { echo "error: $$free GB free on this disk: the torch wheel and its CUDA libraries need $(TORCH_DISK_GB) GB to download and unpack (4 GB kept in $(TORCH_VENV)), and the build about 12 GB more" >&2; exit 1; }
	rm -rf $(TORCH_VENV)
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps \
	    torch==$(TORCH_VER) $(TORCH_LIBS)
	$(TORCH_VENV)/bin/python -c "import torch" || { echo "error: torch $(TORCH_VER) does not import in $(TORCH_VENV)" >&2; exit 1; }
	@lib=$$(ls -d $$PWD/$(TORCH_VENV)/lib/python3*/site-packages/torch); \
	  test -f $$lib/lib/libtorch_cpu.so || { echo "error: libtorch_cpu.so missing under $$lib/lib: the torch wheel did not install" >&2; exit 1; }; \
	  echo $$lib > $(TORCH_VENV)/.libtorch
	touch $@

$(PY_STAMP): $(TORCH_STAMP)
	rm -rf $(PY_VENV)
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check onnx==1.20.0 onnxruntime numpy \
	    matplotlib nbformat nbclient ipykernel pytest==9.2.0 maturin==1.16.0 tqdm pillow
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps torchvision==0.26.0
	ls -d $$PWD/$(TORCH_VENV)/lib/python3*/site-packages > $$(ls -d $(PY_VENV)/lib/python3*/site-packages)/nape-torch.pth
	$(PY_VENV)/bin/python -c "import onnx, onnxruntime, matplotlib, nbformat, nbclient, ipykernel, pytest, torch, torchvision" || { echo "error: onnx/onnxruntime/pytest/torch/torchvision/the notebook packages did not install in $(PY_VENV)" >&2; exit 1; }
	touch $@

# nape's Python front (python/, PyO3): built by maturin into .venv-py, in the dev profile, so
# it reuses the crate `cargo test` built
python: setup
	$(CARGO_ENV) VIRTUAL_ENV=$$PWD/$(PY_VENV) $(PY_VENV)/bin/maturin develop --quiet -m python/Cargo.toml \
	  || { echo "error: maturin could not build nape's Python front (python/)" >&2; exit 1; }

setup: $(TORCH_STAMP) $(PY_STAMP)

demo: setup
	# --workspace --all-targets: the same feature set as `make test`, so the two share one build
	$(CARGO_ENV) cargo build --workspace --all-targets
	@echo "== nape inspect: the bundled torchvision zoo (weights stripped) =="
	./target/debug/nape inspect tests/corpus/zoo
	@echo "== nape inspect: one network in detail =="
	./target/debug/nape inspect tests/corpus/zoo/resnet18.onnx
	@echo "== nape predict: the default model (models/nape-mix: NB-101, NB-201 and the zoo) on the zoo =="
	OMP_NUM_THREADS=1 ./target/debug/nape predict tests/corpus/zoo
	@echo "== the same with the NB-101-only model (models/nape-nb101: CIFAR-10 accuracy, NB-101's recipe) =="
	OMP_NUM_THREADS=1 ./target/debug/nape predict --model nape-nb101 tests/corpus/zoo
	$(MAKE) --no-print-directory python
	@echo "== nape from Python (python/examples/three_lines.py, in .venv-py) =="
	@cat python/examples/three_lines.py
	OMP_NUM_THREADS=1 $(PY_VENV)/bin/python python/examples/three_lines.py
	@if [ -f "$(NAPE_DATA)/nasbench201/nb201_all_15625.csv" ]; then \
	  echo "== nape export: 8 NAS-Bench-201 networks as ONNX, then inspect them =="; \
	  ./target/debug/nape export nb201 --data "$(NAPE_DATA)" --out runs/demo/nb201 --limit 8 && \
	  ./target/debug/nape inspect runs/demo/nb201 && \
	  OMP_NUM_THREADS=1 ./target/debug/nape predict runs/demo/nb201; \
	else echo "(benchmark data not found under $(NAPE_DATA): skipping the NAS-Bench export; set NAPE_DATA)"; fi

test: setup
	# --workspace: the Python front's crate is built with the same features as the tests', so
	# maturin (make python) reuses this build
	$(CARGO_ENV) NAPE_PYTHON=$$PWD/$(PY_VENV)/bin/python cargo test --workspace --all-targets 2>&1
	$(CARGO_ENV) cargo test --workspace --doc 2>&1
	$(MAKE) --no-print-directory python
	$(PY_VENV)/bin/python -m pytest python/tests -q -p no:cacheprovider
	$(PY_VENV)/bin/python -m doctest scripts/device_compare.py
	NAPE=./target/debug/nape PYTHON=$(PY_VENV)/bin/python notebooks/run_small.sh

# the notebooks executed on a small run (runs/notebook); also part of `make test`
notebooks: setup
	$(CARGO_ENV) cargo build --bins
	NAPE=./target/debug/nape PYTHON=$(PY_VENV)/bin/python notebooks/run_small.sh

check: setup
	cargo fmt --all -- --check
	$(CARGO_ENV) cargo clippy --workspace --all-targets -- -D warnings

bench: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	./target/release/nape bench

golden: setup
	$(CARGO_ENV) cargo build --bins
	scripts/regen_golden.sh

fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run load_onnx -- -max_total_time=600

# The real-world corpus (issue 13): timm, torchvision, Hugging Face models exported by PyTorch
# with the truth beside each file, outside git. Needs Python torch: PyPI has only the CUDA
# build, so .venv-export is about 5 GB. Nothing is downloaded at run time (random weights).
EXPORT_VENV  := .venv-export
EXPORT_STAMP := $(EXPORT_VENV)/.installed-1
NAPE_CORPUS  ?= /work/corpus
export NAPE_CORPUS

$(EXPORT_STAMP):
	rm -rf $(EXPORT_VENV)
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VER) \
	    torchvision==0.26.0 timm==1.0.31 transformers==5.24.0 onnx==1.23.2 onnxscript==0.7.2 \
	    onnx-ir==1.1.0 onnxruntime==1.32.0 numpy==2.4.6
	$(EXPORT_VENV)/bin/python -c "import torch, torchvision, timm, transformers, onnx, onnxscript" || { echo "error: the export packages did not install in $(EXPORT_VENV)" >&2; exit 1; }
	touch $@

# pytorchcv's model store: test families labelled by the package itself (scripts/corpus_families.py)
PYTORCHCV_STAMP := $(EXPORT_VENV)/.installed-pytorchcv-0.0.74
$(PYTORCHCV_STAMP): $(EXPORT_STAMP)
	$(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps pytorchcv==0.0.74
	$(EXPORT_VENV)/bin/python -c "import pytorchcv.model_provider" || { echo "error: pytorchcv did not install in $(EXPORT_VENV)" >&2; exit 1; }
	touch $@

# timm's embedded forms only up to 30 M parameters: all 320 embedded would take about 30 GB
corpus: $(EXPORT_STAMP) $(PYTORCHCV_STAMP)
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" \
	    --families torchvision_cls,hf,torchvision_seg,torchvision_det
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" \
	    --families timm --embedded-max-params 30000000
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" \
	    --families pytorchcv_cifar10,pytorchcv_in1k --no-embedded
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" --families darts
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" \
	    --families resnet_macro --no-embedded
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_corpus.py --out "$(NAPE_CORPUS)" \
	    --families darts,resnet_macro --exporters dynamo --suffix _dynamo --limit 30 --no-embedded

# the two unlabelled search spaces of the held-back kinds (DARTS cells at 32 px, TransNAS-Bench's
# ResNet-like macro skeleton at 224 px): read, counted, predicted, in domain? one graph per
# exporter? (docs/universal.md, "Two search spaces of the held-back kinds")
SPACES := darts resnet_macro
spaces-check: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	python3 scripts/spaces_check.py --nape ./target/release/nape --corpus "$(NAPE_CORPUS)"
	for s in $(SPACES); do OMP_NUM_THREADS=1 python3 scripts/compare_exports.py \
	  --nape ./target/release/nape "$(NAPE_CORPUS)/$$s" "$(NAPE_CORPUS)/$${s}_dynamo" || exit 1; done
	NAPE_CORPUS_FAMILIES=darts,darts_dynamo,resnet_macro,resnet_macro_dynamo $(MAKE) --no-print-directory corpus-check

# zero-shot on real ImageNet classifiers: the torchvision zoo of the corpus, labelled with the
# top-1 torchvision ships in its weights' meta, ranked by the NB-101-only model (docs/predictor.md;
# the default nape-mix trained on this zoo, so it is scored by make lofo instead)
zoo-check: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	@test -f "$(NAPE_CORPUS)/torchvision_cls/truth.jsonl" || { echo "error: $(NAPE_CORPUS)/torchvision_cls/truth.jsonl not found: run make corpus, or set NAPE_CORPUS" >&2; exit 3; }
	mkdir -p runs/zoo
	python3 scripts/zoo_labels.py "$(NAPE_CORPUS)/torchvision_cls/truth.jsonl" runs/zoo/labels.csv
	OMP_NUM_THREADS=1 ./target/release/nape eval --model nape-nb101 --labels runs/zoo/labels.csv --target top1 --runs runs/zoo

# zero-shot on families no bundled model trained on (docs/universal.md, "Families nape never
# saw"): pytorchcv's CIFAR-10 classifiers (top-1) and ImageNet-1K classifiers (top-5), labelled
# with the errors its model store ships; both bundled models beside #params and FLOPs
PYTORCHCV_SETS := pytorchcv_cifar10:top1 pytorchcv_in1k:top5
pytorchcv-check: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	for set in $(PYTORCHCV_SETS); do fam=$${set%%:*}; target=$${set##*:}; \
	  test -f "$(NAPE_CORPUS)/$$fam/truth.jsonl" || { echo "error: $(NAPE_CORPUS)/$$fam/truth.jsonl not found: run make corpus, or set NAPE_CORPUS" >&2; exit 3; }; \
	  mkdir -p runs/$$fam; \
	  python3 scripts/zoo_labels.py "$(NAPE_CORPUS)/$$fam/truth.jsonl" runs/$$fam/labels.csv --target $$target; \
	  for model in nape-mix nape-nb101; do \
	    OMP_NUM_THREADS=1 ./target/release/nape eval --model $$model --labels runs/$$fam/labels.csv --target $$target --runs runs/$$fam; \
	  done; \
	done

# the multi-family model (docs/universal.md): NB-101, NB-201's three datasets and the torchvision
# zoo, 5 members; then every family left out in turn, and TransNAS micro's three tasks, whose
# labels the mix does not train on (they rank NB-201's cells against CIFAR), left out beside
ZOO_LABELS := runs/zoo/labels.csv
$(ZOO_LABELS):
	@test -f "$(NAPE_CORPUS)/torchvision_cls/truth.jsonl" || { echo "error: $(NAPE_CORPUS)/torchvision_cls/truth.jsonl not found: run make corpus, or set NAPE_CORPUS" >&2; exit 3; }
	mkdir -p runs/zoo
	python3 scripts/zoo_labels.py "$(NAPE_CORPUS)/torchvision_cls/truth.jsonl" $@

mix: setup $(ZOO_LABELS)
	$(CARGO_ENV) cargo build --release --workspace --bins
	./target/release/nape pretrain --config configs/mix.json --name nape-mix

LOFO_SEEDS ?= 0 1 2
LOFO_MEMBERS ?=
LOFO_ALSO ?= tnb-micro:class_scene_val_accuracy tnb-micro:class_object_val_accuracy \
    tnb-micro:jigsaw_val_accuracy
lofo: setup $(ZOO_LABELS)
	$(CARGO_ENV) cargo build --release --workspace --bins
	python3 scripts/lofo.py --nape ./target/release/nape --config configs/mix.json \
	  --seeds $(LOFO_SEEDS) --out runs/lofo --data "$(NAPE_DATA)" $(if $(LOFO_MEMBERS),--members $(LOFO_MEMBERS)) \
	  $(if $(strip $(LOFO_ALSO)),--also $(LOFO_ALSO))

# the Python front against the CLI (issue 17): the same 200 NB-201 files in-process and
# through the CLI, both release builds, numbers compared; predict_torch on ResNet-18.
# --workspace above: the bins and maturin's release build share one feature set, one build.
BENCH_PY_FILES ?= runs/bench-python/nb201
bench-python: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	$(CARGO_ENV) VIRTUAL_ENV=$$PWD/$(PY_VENV) $(PY_VENV)/bin/maturin develop --release --quiet -m python/Cargo.toml
	test -d $(BENCH_PY_FILES) || ./target/release/nape export nb201 --data "$(NAPE_DATA)" \
	  --out $(BENCH_PY_FILES) --limit 200 -q
	OMP_NUM_THREADS=1 $(PY_VENV)/bin/python scripts/bench_python.py $(BENCH_PY_FILES) ./target/release/nape
	@echo "(.venv-py now holds the release build of nape's Python front; make python puts the dev build back)"

# the proxies table of nape bench, then six proxies side by side with the same definitions in PyTorch
bench-proxies: setup
	$(CARGO_ENV) cargo build --release --bins
	./target/release/nape bench --proxies --seconds 0.2 | sed -n '/zero-cost proxies/,$$p'
	OMP_NUM_THREADS=1 $(PY_VENV)/bin/python scripts/bench_proxies_torch.py --nape ./target/release/nape \
	  --data "$(NAPE_DATA)" --cells 12 --rounds 3

# the kit scripts/device_check.sh reads on a GPU machine without Rust (docs/predictor.md, "On a
# GPU"): the stripped release binary, the benchmark data and a CPU-trained reference model
device-kit: setup
	$(CARGO_ENV) cargo build --release --bins
	scripts/device_kit.sh

# parsing only (no libtorch): the ignored test reads every family under NAPE_CORPUS
corpus-check:
	cargo test --no-default-features --test corpus_real -- --ignored --nocapture

# torchvision's classifiers in the int8 and float16 forms ONNX Runtime's tools write, each read
# against its float file (docs/costs.md, Quantized and float16 files; resumable)
quantized-check: $(EXPORT_STAMP)
	$(CARGO_ENV) cargo build --release --workspace --bins
	nice -n 10 $(EXPORT_VENV)/bin/python scripts/quantized_check.py --nape ./target/release/nape \
	    --out "$(NAPE_CORPUS)/quantized"

# reading files side by side with Python's onnx.load + infer_shapes (default: the PyTorch
# exports of exporters-check; READ_FILES=DIR for others)
READ_FILES ?= $(NAPE_CORPUS)/exporters/nb201/torchscript
bench-read: setup
	$(CARGO_ENV) cargo build --release --workspace --bins
	@test -d "$(READ_FILES)" || { echo "error: $(READ_FILES) not found: run make exporters-check, or set READ_FILES" >&2; exit 3; }
	PYTHON=$(PY_VENV)/bin/python scripts/bench_read.sh "$(READ_FILES)"

# one network, three exporters (issue 13): nape's export, PyTorch's TorchScript exporter (eval,
# BatchNorm folded) and its dynamo exporter, of 200 NB-201 and 200 NB-101 cells: the graph hash
# and the prediction must be the same (scripts/compare_exports.py)
EXPORTERS := $(NAPE_CORPUS)/exporters
exporters-check: $(EXPORT_STAMP)
	$(CARGO_ENV) cargo build --release --workspace --bins
	for s in nb201 nb101; do \
	  ./target/release/nape export $$s --data "$(NAPE_DATA)" --out $(EXPORTERS)/$$s/nape --limit 200 -q && \
	  nice -n 10 $(EXPORT_VENV)/bin/python scripts/export_torch_cells.py \
	    --manifest $(EXPORTERS)/$$s/nape/manifest.jsonl --out $(EXPORTERS)/$$s && \
	  OMP_NUM_THREADS=1 python3 scripts/compare_exports.py $(EXPORTERS)/$$s/nape \
	    $(EXPORTERS)/$$s/torchscript $(EXPORTERS)/$$s/dynamo || exit 1; \
	done

clean:
	cargo clean
	rm -rf $(TORCH_VENV) $(PY_VENV)
