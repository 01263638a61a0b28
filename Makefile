# The two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamp file: `make install` does its work once, then only when pyproject.toml changes.
STAMP := $(VENV)/.installed
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
# The demo runs on mimalloc where it is installed (x86_64 Linux; echoclip.allocator):
# as fast as glibc with MALLOC_MMAP_MAX_=0, without that heap's fragmentation. Elsewhere
# glibc maps tensors of 16 MB and more afresh, which keeps memory bounded at some cost in speed.
export MALLOC_MMAP_THRESHOLD_ ?= 16777216
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
	LD_PRELOAD="$$($(BIN)/python -m echoclip.allocator)" $(BIN)/echoclip demo

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
