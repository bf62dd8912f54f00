# cadx: the two commands a new machine needs are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system demo test test-all lint clean

# Debian packages the reading-room tests drive: Orthanc + its DICOMweb plugin (PACS round trip), Chromium
# (Playwright browser tests), PostgreSQL (the department storage test). Installed when missing and apt-get is usable.
SYSPKGS := orthanc orthanc-dicomweb chromium postgresql
system:
	@missing=$$(for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: $$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	      (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null); \
	  else echo "missing Debian packages (tests that need them are skipped): $$missing"; fi; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch 2.13.0 (a CPU build on local disk here) goes in first, so that nothing pulls a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) system

demo: setup
	$(BIN)/cadx demo --out runs/demo

# CI runs the fast suite plus the marked real-data subset; `make test-all` runs every slow test.
test: setup
	$(BIN)/python -m pytest -q -m "not slow or ci" $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
