"""Benchmark of a sweep's wall time against `--jobs` (`make bench`): the same small sweep
(4 runs) started as a command with each `--jobs` value, timed end to end (start-up,
training, evaluation), and reported as ratios to `--jobs 1` from one measurement."""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS_GRID = ("--grid", "model.norm=none,batch", "--seeds", "2")  # 4 runs


def sweep_seconds(config_path, jobs, overrides=()):
    """Wall seconds of a 4-run sweep of `config_path` with `--jobs jobs`."""
    with tempfile.TemporaryDirectory() as folder:
        args = [sys.executable, "-m", "pipeline", "sweep", str(config_path), *RUNS_GRID,
                "--jobs", str(jobs), "--sweep-dir", str(Path(folder) / "sweep")]
        for item in overrides:
            args += ["--set", item]
        began = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        return time.perf_counter() - began


def format_sweep_speeds(config_path, jobs_values, overrides=()):
    """One line per `--jobs` value: wall time and its ratio to the first value."""
    seconds = {jobs: sweep_seconds(config_path, jobs, overrides) for jobs in jobs_values}
    first = seconds[jobs_values[0]]
    lines = [f"sweep of 4 runs ({config_path}, {' '.join(overrides) or 'as configured'}):"]
    lines += [f"  --jobs {jobs}: {value:.1f} s, {value / first:.2f}x the time of --jobs "
              f"{jobs_values[0]}" for jobs, value in seconds.items()]
    return "\n".join(lines)
