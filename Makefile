# Every target sets up the virtual environment it needs (Python 3.11-3.13 on PATH as python3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test setup clean train sweep demo demo-confirm figures reproduce bench

# The environment is rebuilt when the pinned set or the package metadata change. uv
# installs the pinned set: it links the 3 GB of wheels from its cache (~/.cache/uv) and
# byte-compiles them in parallel, where pip would unpack every wheel again, serially.
# Byte-compiling here, not on first import, because processes may not write bytecode
# (PYTHONDONTWRITEBYTECODE) and the tests start many.
# pip and uv keep their scratch files (uv leaves a lock file per editable build) in a
# folder inside the environment, removed at the end: nothing is left in the system's.
UV_VERSION := 0.13.9
$(STAMP): export TMPDIR := $(abspath $(VENV))/setup-tmp
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	mkdir -p $(TMPDIR)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	rm -rf $(TMPDIR)
	touch $@

setup: $(STAMP)

# The TensorFlow pass on two workers, one per core, each handed its next test when it is
# done with one (load, one test at a time; the slow tests come first, tests/conftest.py):
# the long tests are dealt out in turn and the short ones fill in at the end, so both
# workers end within a short test of each other (worksteal split the tests in two halves
# up front, and one worker ended ~25 s after the other). Beside it, on one worker, the
# JAX pass: the tests marked both_backends again on JAX (Keras picks its backend per
# process), taking the CPU time the TensorFlow workers leave while they wait on the
# processes their tests start (they use ~1.7 of the 2 cores). At a lower priority (nice
# 5), so that when the two compete for a core the longer TensorFlow pass goes first: at
# equal priority the JAX pass ended ~200 s early and the TensorFlow pass left a core idle
# at times; at nice 10 it ended ~90 s late, alone on one core. It still ended ~85 s
# early, so it also runs, once, some tests that train nothing (marked backend_free: the
# ledger, plots, config...); with the claims and floor-plan tests too it ended ~30 s
# late. The JAX pass's report is printed after the TensorFlow pass's; either one failing
# fails the target.
JAX_TEST_LOG := $(VENV)/jax-tests.log
test: $(STAMP)
	@KERAS_BACKEND=jax nice -n 5 $(PY) -m pytest -m "both_backends or backend_free" tests \
	    > $(JAX_TEST_LOG) 2>&1 & jax=$$!; \
	$(PY) -m pytest -n 2 --dist load --maxschedchunk 1 -m "not backend_free" tests; \
	tensorflow=$$?; \
	wait $$jax; jax=$$?; \
	echo "--- the JAX pass: the tests marked both_backends again, and those marked backend_free:"; \
	cat $(JAX_TEST_LOG); rm -f $(JAX_TEST_LOG); \
	exit $$((tensorflow | jax))

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

# The README's first command: the runs every claim needs as one queue, one run per CPU
# core at a time (configs/demo_plan.yaml, PROTOCOL.md section 9), then the claims table,
# the notebooks and the HTML report.
demo: $(STAMP)
	$(PY) -m pipeline sweep --plan configs/demo_plan.yaml --sweep-dir runs/demo
	$(PY) -m pipeline claims runs/demo
	$(PY) -m pipeline figures runs/demo --output reports/demo

# The same runs on a disjoint seed set (seeds + 100): the headline verdicts must repeat
# there (PROTOCOL.md section 8).
demo-confirm: $(STAMP)
	$(PY) -m pipeline sweep --plan configs/demo_plan.yaml --sweep-dir runs/demo_confirm --seed-offset 100
	$(PY) -m pipeline claims runs/demo_confirm

# make figures RUNS="runs/demo runs/other" [OUTPUT=reports/x]
RUNS ?= runs/demo
OUTPUT ?= reports
figures: $(STAMP)
	$(PY) -m pipeline figures $(RUNS) --output $(OUTPUT)

# The paper-scale experiments (CIFAR-10, 15k steps; a GPU/TPU and network access), then
# the same notebooks. Hours on one GPU: every run is resumable, rerun to continue.
PAPER_PROBES := --set probes.landscape.enabled=true --set probes.ics.enabled=true \
    --set probes.distributions.enabled=true --set probes.curvature.enabled=true
reproduce: $(STAMP)
	$(PY) -m pipeline sweep configs/base.yaml --sweep-dir runs/paper/vgg $(PAPER_PROBES) \
	    --grid model.norm=none,batch,noisy_batch,l1,l2,linf --grid optim.lr=0.1,0.5
	$(PY) -m pipeline sweep configs/dln.yaml --sweep-dir runs/paper/dln $(PAPER_PROBES) \
	    --set probes.landscape.every=50 --grid model.norm=none,batch,l1,l2,linf --grid optim.lr=1e-6,1e-7
	$(PY) -m pipeline figures runs/paper --output reports/paper

# Speed of the whole training loop against its floor (the same step in a compiled loop)
# on each backend, the input pipeline, time to first step, probe costs in training
# steps, and sweeps' wall time, as ratios measured in one process (8.5 min on the project's
# second 2-core machine, 16 on the first, slower one; measured).
bench: $(STAMP)
	$(PY) -m pipeline bench configs/demo.yaml --norms none,batch,noisy_batch
	$(PY) -m pipeline --backend jax bench configs/demo_dln.yaml --norms none,batch,l1
	$(PY) -m pipeline bench configs/demo_dln.yaml --norms none,batch,l1
	$(PY) -m pipeline --backend jax bench configs/demo_dln.yaml --sweep-jobs 2
	$(PY) -m pipeline bench configs/cpu.yaml --sweep-jobs 1,2 --set train.steps=200

clean:
	rm -rf $(VENV) .pytest_cache
