# guidedrl: set-up, tests, demo. `make demo` and `make test` each run `make setup` first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
WORLD   ?= worlds/default
STAMP   := $(VENV)/.installed

.PHONY: setup test test-matrix demo bench chromium clean

setup: $(STAMP)

# torch is installed first with an exact pin: that takes the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build. The package's own torch range stays loose.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/pytest

# the suite as another machine would run it: one torch thread, generic vector kernels, another world seed
test-matrix: setup
	GUIDEDRL_TEST_THREADS=1 $(BIN)/pytest
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest
	GUIDEDRL_TEST_WORLD_SEED=7 $(BIN)/pytest

demo: setup
	$(BIN)/guidedrl demo --world $(WORLD)

# Debian's chromium, for the report test's headless screenshot (CI runs this target)
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	PYTHONPATH=bench $(BIN)/python bench/grpo_step.py

clean:
	rm -rf $(VENV) .pytest_cache
