# Two commands a user needs: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (metacpo needs Python 3.11; set PY=/path/to/python3.11)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install whenever a requirements file or pyproject.toml changes.
$(STAMP): $(BIN)/python requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	# Pinned real dependencies first (torch==2.13.0 CPU build, numpy 1.26, mujoco 2.3.7, gymnasium 0.28.1).
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	# safety-gymnasium / gymnasium-robotics with --no-deps: their own pins do not build on 3.11.
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/metacpo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
