# Two commands: `make test` and `make demo`; each sets up .venv with pinned dependencies first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "densemtl needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/densemtl demo

bench: setup
	$(PY) benchmarks/attention.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
