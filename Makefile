# The two commands of the README: `make demo` and `make test`. Each sets up .venv
# on a fresh machine (installing llrnet with its dev extras) and then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llrnet-installed

.PHONY: demo test lint typecheck pytest setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	@# Byte-compile in parallel, once: every process (each demo worker, each CLI test)
	@# would otherwise compile its imports from source, about 7 s of CPU apiece where
	@# PYTHONDONTWRITEBYTECODE is set. Only a speed-up, so failures are ignored: a few
	@# files are written for newer Pythons (torch's py312_intrinsics.py) and never imported.
	-$(PY) -m compileall -qq -j 0 $(VENV)/lib src
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llrnet demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -n 2 --durations=15

test: lint typecheck pytest

clean:
	rm -rf demo_out .pytest_cache .mypy_cache .ruff_cache
