"""Running a sweep on a Slurm cluster as one job array, through submitit.

Every array task runs the same `python -m pipeline train ...` command that `--list`
prints and the local sweep starts (one task per run, its output in the run's
`train.log` and submitit's own logs in `log_dir`), so a run behaves the same wherever it
was launched. Resubmitting the sweep skips finished and diverged runs and resumes the
others. The runs' folders and the log folder must be on storage the nodes share.

`executor="submitit_local"` runs the same code path with submitit's local executor
(processes on this machine, no Slurm), which is how the test suite covers it.
"""

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from pipeline.core import interrupts
from pipeline.core.config import ConfigError
from pipeline.core.runs import RunBusyError, open_no_follow, refuse_if_busy, refuse_if_link
from pipeline.sweeps.sweep import STOP_SECONDS, runs_to_do, start_logged, summarize

EXECUTORS = {"slurm": "slurm", "submitit_local": "local"}  # --executor -> submitit's cluster


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What a job array asks of Slurm (each option maps to one sbatch flag)."""
    partition: Optional[str] = None     # --partition
    time_minutes: int = 60              # --time, per run
    gpus_per_run: int = 0               # --gpus-per-node (one run per array task)
    cpus_per_run: Optional[int] = None  # --cpus-per-task (default: the runs' threads)
    array_parallelism: int = 64         # --array=...%N: runs of the array at once
    log_dir: Optional[str] = None       # submitit's folder (default: <sweep dir>/slurm)


def train_task(run, command):
    """One array task: the run's train command, its output appended to its log, as a
    local sweep starts it. Returns the command's exit code (a failed run is a result of
    the array, not an error of the task). A task that is stopped (a cancel, Slurm's
    SIGTERM) stops its run with the same signal and waits for it to record itself."""
    process = start_logged(run, command)
    try:
        return process.wait()
    except BaseException as error:
        process.send_signal(interrupts.signal_of(error))
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


def _stop_jobs(jobs, runs):
    """Cancel `jobs` (submitit's local executor: SIGINT to each) and wait, at most
    STOP_SECONDS, until they have ended and no run of `runs` is held by a process any
    more, so that the same command, rerun at once, resumes them."""
    for job in jobs:
        job.cancel(check=False)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        if all(job.done() for job in jobs) and not any(map(_busy, runs)):
            return
        time.sleep(0.2)


@contextlib.contextmanager
def _stderr_inherited_as(path):
    """Within: processes started here write their stderr to `path` (None: unchanged).
    submitit's local executor starts one controller process per job with this process's
    stderr, and a cancelled controller prints its KeyboardInterrupt traceback there: it
    belongs in the sweep's submitit folder, not among the command's messages."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_no_follow(path, "a") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _busy(run):
    try:
        refuse_if_busy(run.workdir)
    except RunBusyError:
        return True
    return False


def _parameters(executor, options, runs):
    threads = [r.cpu_threads for r in runs] or [1]
    if 0 in threads and not options.cpus_per_run:
        # train.threads=0 means every core of the machine the run lands on; a job array
        # must ask for a number (it was given 1 CPU, and its run fought over it).
        raise ConfigError("train.threads=0 (all cores) needs --cpus-per-run N on Slurm: the "
                          "cores each array task asks for; or set train.threads to a number")
    threads = max(threads)
    parameters = {"name": "bnlab", "timeout_min": options.time_minutes,
                  "cpus_per_task": options.cpus_per_run or threads}
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    if executor == "slurm":
        parameters["slurm_array_parallelism"] = options.array_parallelism
        if options.partition:
            parameters["slurm_partition"] = options.partition
    return parameters


# Put on the PYTHONPATH of the local executor's processes: its sitecustomize makes each
# die with its parent (`_dying_with_this_process`).
DIE_WITH_PARENT = Path(__file__).resolve().parent / "die_with_parent"


@contextlib.contextmanager
def _dying_with_this_process(local):
    """While submitit starts its local controllers (which start the tasks), make every
    process it starts die with its parent: the sweep killed with SIGKILL then leaves no
    controller, task or run behind. Not for Slurm: an array outlives the command that
    submitted it, by design."""
    if not local:
        yield
        return
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "BNLAB_DIE_WITH_PARENT")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(DIE_WITH_PARENT)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
    os.environ["BNLAB_DIE_WITH_PARENT"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def submit(runs, sweep_dir, executor="slurm", options=SlurmOptions(),
           verbose=False, echo=print):
    """Submit the runs that are not done as one job array, wait for it and return the
    summary rows of all `runs`."""
    import submitit
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not valid; choose one of: local, "
                          f"{', '.join(EXECUTORS)}")
    todo = runs_to_do(runs, echo)
    if not todo:
        return summarize(runs)
    folder = Path(options.log_dir or Path(sweep_dir) / "slurm")
    if not options.log_dir:  # submitit would write into a linked folder's target
        refuse_if_link(folder, "give --log-dir")
    try:
        cluster = submitit.AutoExecutor(folder=folder / "%j", cluster=EXECUTORS[executor])
    except RuntimeError as error:  # no sbatch on this machine
        raise ConfigError(f"--executor {executor}: {error}; run the sweep on the cluster's "
                          "login node, or use --list for another scheduler") from None
    cluster.update_parameters(**_parameters(executor, options, todo))
    with _stderr_inherited_as(folder / "controllers.log" if executor != "slurm" else None), \
            _dying_with_this_process(executor != "slurm"):
        with cluster.batch():
            jobs = [cluster.submit(train_task, run, run.command(verbose))
                    for run in todo]
    echo(f"submitted {len(jobs)} run(s) as job(s) {', '.join(sorted({j.job_id.split('_')[0] for j in jobs}))}"
         f" ({executor}); submitit's logs in {folder}")
    try:
        for run, job in zip(todo, jobs):
            try:
                code = job.result()
            except submitit.core.utils.UncompletedJobError as error:
                code = f"not completed ({' '.join(str(error).split())[:200]})"
            echo(f"{run.name}: " + ("done" if code == 0 else f"exited with code {code}"))
    except BaseException as error:
        if executor == "slurm" and interrupts.is_interrupt(error):
            # The array is the cluster's now: stopping the command that watches it must
            # not cancel hours of queued work (scancel does that).
            echo(f"the job array keeps running on the cluster ({jobs[0].job_id.split('_')[0]}); "
                 "rerun the same command to see the summary or resume what stopped, or "
                 "cancel it with scancel")
        elif executor != "slurm":
            _stop_jobs(jobs, todo)
        raise
    return summarize(runs)
