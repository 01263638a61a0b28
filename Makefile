# The two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamp file: `make install` does its work once, then only when pyproject.toml changes.
STAMP := $(VENV)/.installed
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
# glibc keeps a step's large tensors on its heap instead of mapping fresh pages for each
# (CLIP steps about 1.5x faster); the heap fragments, a training run grows by a GB or so.
# Less memory, slower: MALLOC_MMAP_MAX_=65536 MALLOC_MMAP_THRESHOLD_=16777216 make demo
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000

.PHONY: install demo test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PAIR)
	$(BIN)/python -m pip install -q -e ".[dev,serve]"
	touch $(STAMP)

demo: install
	$(BIN)/echoclip demo

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
