# Everything a fresh machine needs is installed by these targets; nothing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# CI runs on 2 cores; pytest-xdist spreads the suite over both.
TEST_WORKERS ?= 2

.PHONY: demo test bench lint typecheck clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

# torch is pinned in the extra: an open range would pull a multi-GB CUDA build.
$(VENV)/.dev: $(VENV)/.core
	$(PIP) -e '.[dev,torch]'
	touch $@

demo: $(VENV)/.core
	$(PY) -m forebear demo demo-output

test: $(VENV)/.dev
	$(PY) -m pytest -q -n $(TEST_WORKERS) -p no:cacheprovider

bench: $(VENV)/.core
	$(PY) benchmarks/bench_readers.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-output benchmarks/.work
