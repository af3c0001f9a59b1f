# The README's two commands: `make demo` (the main job) and `make test` (CI runs this).
# Each creates or reuses .venv and installs the package with the CPU torch constraint.
# GPU users: `make demo CONSTRAINTS=` (no CPU pin) with a CUDA torch already installed.

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck install clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recsys demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/ruff check recsys pipelines serving app tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -p no:cacheprovider tests

# The edit-test loop: everything but the slow and integration tests (Ray, real data).
test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m "not slow and not integration" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check recsys pipelines serving app tests benchmarks
	$(VENV)/bin/ruff format --check recsys pipelines serving app tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf out runs .pytest_cache
