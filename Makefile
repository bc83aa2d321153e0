# Everything a fresh machine needs is installed by these targets; nothing by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# CI runs on 2 cores; pytest-xdist spreads the suite over both.
TEST_WORKERS ?= 2

.PHONY: demo test bench lint typecheck clean serve

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

# The browser tests drive Debian's chromium through Playwright (never a downloaded browser).
# Installed here when missing and apt can (root); without it those tests skip and say why.
$(VENV)/.browser: $(VENV)/.dev
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium >/dev/null; } || echo "test: chromium unavailable; browser tests will skip"
	touch $@

test: $(VENV)/.dev $(VENV)/.browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) -p no:cacheprovider

# The benchmark: readers at 2 GB, the full zoo and the calibration zoo (eighteen independent
# bases no test was tuned on; both built once, cached), every zoo pair scored by
# forebear's methods and by modelDNA (PyPI, in a venv of its own so its pins never meet ours;
# without a package index it is scored "unavailable"), the 7B-shaped scale pair, remote
# fingerprints through a loopback hub (the 7B pair, a virtual DeepSeek-V3), and the scan:
# attribution through an index of the zoo's bases and retrieval at 10 k / 100 k / 1 M entries,
# and the lineage tree of the whole full zoo with its merges decomposed.
ZOO_FULL  ?= benchmarks/.work/zoo-full
ZOO_CAL   ?= benchmarks/.work/zoo-calibration
DNA_VENV  := benchmarks/.work/modeldna-venv
BENCH_PATH = HF_HUB_OFFLINE=1 PATH="$$PATH:$(abspath $(DNA_VENV))/bin"
BENCH_METHODS ?= -m forebear -m forebear-fast -m forebear-fingerprint -m baseline-cosine -m modeldna

$(DNA_VENV)/.installed:
	$(PYTHON) -m venv $(DNA_VENV)
	$(DNA_VENV)/bin/pip install --quiet --disable-pip-version-check modeldna==0.1.0 \
		|| echo "bench: modeldna could not be installed; it will be reported unavailable"
	touch $@

bench: $(VENV)/.dev $(DNA_VENV)/.installed
	$(PY) benchmarks/bench_readers.py
	$(PY) -m forebear zoo build --profile full --out $(ZOO_FULL)
	$(BENCH_PATH) $(PY) -m forebear bench --zoo $(ZOO_FULL) $(BENCH_METHODS) --out benchmarks/results
	$(PY) -m forebear zoo build --profile calibration --out $(ZOO_CAL)
	$(BENCH_PATH) $(PY) -m forebear bench --zoo $(ZOO_CAL) $(BENCH_METHODS) --out benchmarks/results
	$(BENCH_PATH) $(PY) benchmarks/bench_scale.py $(BENCH_METHODS:-m=--method)
	$(PY) benchmarks/bench_remote.py
	$(PY) benchmarks/bench_scan.py --zoo $(ZOO_FULL)
	$(PY) benchmarks/bench_lineage.py --zoo $(ZOO_FULL)
	OMP_NUM_THREADS=1 $(PY) -m forebear zoo build --profile behaviour --out benchmarks/.work/zoo-behaviour
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_behaviour.py --zoo benchmarks/.work/zoo-behaviour
	$(PY) benchmarks/update_readme.py

$(VENV)/.web: $(VENV)/.core
	$(PIP) -e '.[web]'
	touch $@

# The web app on http://127.0.0.1:8000 (loopback only; see forebear serve --help).
serve: $(VENV)/.web
	$(PY) -m forebear serve

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-output benchmarks/.work
