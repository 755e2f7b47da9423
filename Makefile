# Set-up and the two entry points of the README: `make demo` (the default model on the bundled example
# scans) and `make test` (the test suite). Each creates the virtual environment it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
# constraints.txt pins torch==2.13.0 (a CPU build on the development/CI machines) so pip never pulls
# a multi-GB CUDA build; the package itself accepts a range of torch versions.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-slow test-all venv clean

$(VENV)/.installed: training/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e 'training[test]' slicer-core
	touch $@

venv: $(VENV)/.installed

# `make demo DEMO_ARGS=--train` also runs the short training demo (see `versemi demo --help`).
DEMO_ARGS ?=

demo: $(VENV)/.installed
	$(VENV)/bin/versemi demo --data examples/data --output demo_output $(DEMO_ARGS)

# `make test` leaves out the tests marked slow (end-to-end runs of more than ~20 s each); CI runs both sets.
PYTEST := PYTHONUTF8=1 OMP_NUM_THREADS=2 $(VENV)/bin/python -m pytest -q

test: $(VENV)/.installed
	$(PYTEST) -m "not slow"

test-slow: $(VENV)/.installed
	$(PYTEST) -m slow

test-all: $(VENV)/.installed
	$(PYTEST)

clean:
	rm -rf demo_output .pytest_cache
