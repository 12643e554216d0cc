# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment .venv in the project and install the project into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
# The suite runs in two pytest-xdist workers (CI has 2 cores); tests sharing a session fixture stay together.
TEST_WORKERS ?= 2

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,export,ray]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py --output_dir $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25 tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
