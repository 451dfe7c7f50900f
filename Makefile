# One entry for every routine task. `make test` and `make demo` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup cluster redis demo test test-all lint format bench perf soak results clean

CLUSTER := $(VENV)/.installed-cluster

# pip byte-compiles every module up front (half of a fresh install's two minutes). Worth it: with
# PYTHONDONTWRITEBYTECODE set, as on the CI machine, `--no-compile` left every process (each test's daemon) compiling
# torch again at import, and the suite took 1,016 s instead of 785.
PIP_INSTALL := $(BIN)/pip install -q -c constraints/ci.txt

$(STAMP): pyproject.toml constraints/ci.txt
	$(PY) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

# Ray Serve (the optional inference tier) only where it is used: the tests and `make cluster`, not the demo. One pip
# run for both extras on a fresh machine (two cost CI a second resolve of every dependency).
$(CLUSTER): pyproject.toml constraints/ci.txt
	test -x $(BIN)/pip || $(PY) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev,cluster]'
	touch $(STAMP) $(CLUSTER)

setup: $(STAMP)

demo: $(STAMP)  ## daemon + replay of bundled real recordings + live dashboard, until Ctrl-C
	$(BIN)/p2p-demo

cluster: $(CLUSTER)  ## install the [cluster] extra (Ray Serve) for model.backend = "ray"

# redis-server (Debian's package) for the cluster tests, which start their own on a free port; installed where this
# user may (root with apt-get, as CI is), else those tests skip and say how to install it.
redis:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; } || \
	  echo "note: no redis-server: the cluster failover tests will skip (apt-get install redis-server)"

test: $(CLUSTER) redis  ## every test not marked slow (a few minutes on 2 cores); what CI runs (.ci/run)
	$(BIN)/pytest -m "not slow"

# The slow ones: fault, fuzz and soak runs against a daemon process, 5-60 s each. Tests on the full datasets run
# where ../shared/data exists and skip elsewhere, in both targets.
test-all: $(CLUSTER) redis  ## every test, the slow ones too
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

perf: $(STAMP)  ## every current figure of docs/performance.md, in one run (about 25 min on 2 cores)
	BIN=$(BIN) bash benchmarks/perf.sh

soak: $(STAMP)  ## 500 devices for 10 minutes: memory and latency over time (docs/reliability.md)
	$(BIN)/python benchmarks/soak.py --devices 500 --minutes 10

results: $(STAMP)  ## re-measure docs/results.md (about 30 min on 2 cores)
	bash benchmarks/results.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
