"""Running a sweep's runs as local processes, several at once (`sweep --jobs N`).

Each job slot trains its runs one after another in a warm worker process
(pipeline.sweeps.worker), which imports the frameworks once rather than once a run; a run
that does not end well ends its worker, so a crash stays isolated. A run's console output
goes to `train.log` in its run directory, and the sweep shows one progress line per
active run. How many run at once (`--jobs auto`): with GPUs, one run
per `gpus_per_run` GPUs, each process seeing only its own (CUDA_VISIBLE_DEVICES), so
runs never share a device by accident; on a CPU, as many as the cores hold at the runs'
`train.threads` (1 by default; README "Sweeps" gives the measured gain).

Ctrl-C or SIGTERM stops the children with the same signal (each records itself as
interrupted and resumes on the next sweep) and is raised again, so the command exits
with the signal's code.
"""

import dataclasses
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pipeline.core import interrupts
from pipeline.core.config import AUTO, ConfigError
from pipeline.core.run_meta import is_done
from pipeline.core.errors import UserError
from pipeline.core.runs import BrokenRunError, make_folder, open_no_follow
from pipeline.sweeps.sweep import (STOP_SECONDS, could_not_start, log_tail, run_environment,
                                   run_status, runs_to_do, summarize)
from pipeline.sweeps.worker import Worker

POLL_SECONDS = 0.5
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def available_cores():
    """Cores this process may run on (its affinity, which a container or taskset limits)."""
    return len(os.sched_getaffinity(0))


def local_gpus():
    """IDs of the NVIDIA GPUs processes started here may use: CUDA_VISIBLE_DEVICES if set,
    else every GPU the driver lists (none on a machine without the driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    count = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    return [str(i) for i in range(count)]


def default_jobs(runs, gpus_per_run=1):
    """`--jobs auto`: one run per `gpus_per_run` GPUs; on a CPU, the cores divided by the
    runs' threads (train.threads: auto is 1, 0 means all cores)."""
    gpus = local_gpus()
    if gpus:
        return max(1, len(gpus) // gpus_per_run)
    threads = [run.cpu_threads for run in runs] or [1]
    if 0 in threads:
        return 1
    return max(1, available_cores() // max(threads))


def device_slots(jobs, gpus_per_run=1):
    """Per job slot, the CUDA_VISIBLE_DEVICES of its runs (None on a CPU-only machine)."""
    gpus = local_gpus()
    if not gpus:
        return [None] * jobs
    if jobs * gpus_per_run > len(gpus):
        raise ConfigError(f"--jobs {jobs} with {gpus_per_run} GPU(s) per run needs "
                          f"{jobs * gpus_per_run} GPUs and this machine has {len(gpus)} "
                          f"({','.join(gpus)}); lower --jobs or --gpus-per-run")
    return [",".join(gpus[k * gpus_per_run:(k + 1) * gpus_per_run]) for k in range(jobs)]


def steps_done(run):
    """Steps a running run has logged (from the tail of its train records; 0 if none)."""
    path = run.workdir / "records" / "train.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = handle.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"] + 1
        except (ValueError, KeyError, TypeError):
            continue  # a line being written, or cut by the 4 KiB window
    return 0


@dataclasses.dataclass
class Active:
    """A run being trained by the worker process of job slot `slot`."""
    run: Any
    label: str
    slot: int
    worker: Worker
    bar: Any
    started: float = dataclasses.field(default_factory=time.monotonic)


def _worker_for(run, devices, verbose, workers, slot):
    """The slot's worker, sent `run`: the one that trained its last run if it was started
    with the settings `run` needs (backend, CPU threads) and is still there, else a new
    one."""
    make_folder(run.workdir)  # refused if it is a link
    with open_no_follow(run.log_path, "a"):  # refused here if it is a link
        pass
    key, worker = (run.backend_name, run.cpu_threads, verbose), workers.pop(slot, None)
    if worker is None or worker.key != key or not _sent(worker, run, verbose):
        if worker is not None:
            worker.close()
        worker = Worker(key, run_environment(run, devices), run.log_path)
        _sent(worker, run, verbose)  # if it ended as it started, its poll() gives the code
    workers[slot] = worker
    return worker


def _sent(worker, run, verbose):
    """Send `run` to `worker`; False if the worker has ended (its input is closed)."""
    try:
        worker.send(run.arguments(verbose), run.log_path)
        return True
    except BrokenPipeError:
        return False


def _start(run, label, slot, devices, verbose, tqdm, echo, workers):
    worker = _worker_for(run, devices, verbose, workers, slot)
    threads = run.cpu_threads
    where = f"GPU {devices}" if devices is not None else (
        f"CPU, {'1 thread' if threads == 1 else f'{threads} thread(s)'}")
    echo(f"{label}: started on {where}; log {run.log_path}")
    # disable=None: no bars when the console is not a terminal (a log, CI).
    bar = tqdm(total=run.steps, position=slot, desc=run.name, unit="step", leave=False,
               dynamic_ncols=True, disable=None)
    return Active(run, label, slot, worker, bar)


def _ended(active, code):
    """One line saying how the run ended."""
    seconds = time.monotonic() - active.started
    try:
        meta_status = run_status(active.run)
    except BrokenRunError:
        meta_status = "broken"
    if code == 0 and is_done(meta_status):
        return f"{active.label}: {meta_status} after {seconds:.0f} s"
    last = log_tail(active.run, lines=1)
    return (f"{active.label}: exited with code {code} ({meta_status or 'not started'}) after "
            f"{seconds:.0f} s" + (f": {last}" if last else "") + "; continuing")


def _stop(actives, signal_number):
    """Pass `signal_number` on to every child and wait for them to end (kill stragglers)."""
    for active in actives:
        try:
            os.killpg(active.worker.pid, signal_number)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_SECONDS
    for active in actives:
        try:
            active.worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(active.worker.pid, signal.SIGKILL)
            active.worker.wait()
        active.bar.close()


def run_local(runs, jobs=AUTO, gpus_per_run=1, verbose=False, echo=None):
    """Train the runs that are not done yet, up to `jobs` at once; returns the summary
    rows of all `runs`."""
    from tqdm.auto import tqdm
    echo = echo or tqdm.write
    todo = runs_to_do(runs, echo)
    jobs = default_jobs(todo, gpus_per_run) if jobs == AUTO else jobs
    slots = device_slots(min(jobs, max(1, len(todo))), gpus_per_run)
    free = list(range(len(slots)))
    number = {run.workdir: index for index, run in enumerate(runs, 1)}
    active, workers = [], {}  # workers: slot -> its worker, training or idle
    unstarted = {}  # run folder -> why it could not start
    try:
        while todo or active:
            while todo and free:
                run, slot = todo.pop(0), free.pop(0)
                label = f"[{number[run.workdir]}/{len(runs)}] {run.name}"
                try:
                    active.append(_start(run, label, slot, slots[slot], verbose,
                                         tqdm, echo, workers))
                except (OSError, UserError) as error:  # this run only: the others go on
                    free.append(slot)
                    unstarted[run.workdir] = could_not_start(run, error)
                    echo(f"{label}: {unstarted[run.workdir]}")
            # Until a run ends (its worker answers) or it is time to update the bars.
            select.select([child.worker for child in active], [], [], POLL_SECONDS)
            for child in list(active):
                code = child.worker.poll()
                if code is None:
                    child.bar.update(steps_done(child.run) - child.bar.n)
                    continue
                child.bar.close()
                echo(_ended(child, code))
                active.remove(child)
                free.append(child.slot)
                if code != 0:  # the worker ends with the run (worker.serve)
                    workers.pop(child.slot).close()
    except BaseException as error:
        _stop(active, interrupts.signal_of(error))
        raise
    finally:
        for worker in workers.values():
            worker.close()
    return summarize(runs, unstarted)
