# Every target sets up the virtual environment it needs (Python 3.10-3.13 on PATH as python3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all setup clean train sweep demo bench

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

# make train CONFIG=configs/cpu.yaml [SET="optim.lr=0.5 seed=1"] [WORKDIR=runs/x]
CONFIG ?= configs/cpu.yaml
SET ?=
GRID ?= model.norm=none,batch,noisy_batch
SEEDS ?= 1
SET_ARGS := $(foreach s,$(SET),--set $(s))
GRID_ARGS := $(foreach g,$(GRID),--grid $(g))

train: $(STAMP)
	$(PY) -m pipeline train $(CONFIG) $(SET_ARGS) $(if $(WORKDIR),--workdir $(WORKDIR))

# make sweep CONFIG=configs/cpu.yaml GRID="model.norm=none,batch optim.lr=0.1,0.5" SEEDS=3
sweep: $(STAMP)
	$(PY) -m pipeline sweep $(CONFIG) $(GRID_ARGS) --seeds $(SEEDS) $(SET_ARGS)

# The README's first command: standard vs BN vs noisy BN on the CPU profile, then a summary.
demo: $(STAMP)
	$(PY) -m pipeline sweep configs/cpu.yaml --grid model.norm=none,batch,noisy_batch

# Probe cost in training steps and the run slowdown at the default probe schedule.
bench: $(STAMP)
	$(PY) -m pipeline bench configs/cpu.yaml
	$(PY) -m pipeline bench configs/cpu_dln.yaml

clean:
	rm -rf $(VENV) .pytest_cache
