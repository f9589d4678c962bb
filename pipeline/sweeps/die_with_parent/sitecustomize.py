"""Imported by Python when it starts a process whose PYTHONPATH holds this folder (the
`site` module's sitecustomize hook): submitit's local controllers and tasks, which a
`--executor submitit_local` sweep starts through submitit, not itself. Each asks the
kernel for SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG), so that a sweep killed
with SIGKILL leaves no controller or task behind; the training each task started gets
SIGTERM from its own `interrupts.die_with_parent` and records itself interrupted.
Only where `BNLAB_DIE_WITH_PARENT` is set (pipeline.sweeps.slurm sets both), on Linux.
"""

import os
import signal
import sys

if os.environ.get("BNLAB_DIE_WITH_PARENT") and sys.platform.startswith("linux"):
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the parent ended before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
