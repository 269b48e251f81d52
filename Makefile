# Two commands on a fresh machine: `make demo` and `make test`; both set up .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH ?= 2.13.0

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first (a file on this machine's disk); the extras' torch range is then met as is.
	$(BIN)/pip install --quiet torch==$(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,dsa,gpu]'
	touch $(STAMP)

demo: setup
	$(BIN)/dsacache demo --out demo-out --force

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -n 2 -q

lint: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_analyze.py
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_token_lru.py
	$(BIN)/python benchmarks/bench_mrc.py
	$(BIN)/python benchmarks/bench_llc.py
	$(BIN)/python benchmarks/bench_record.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
