# Every target sets up the virtual environment it needs (Python 3.10-3.13 on PATH as python3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all setup clean

# The environment is rebuilt when the pinned set or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(STAMP)

# Two workers: one per core; each test file's TensorFlow start-up runs in parallel.
test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) .pytest_cache
