"""Sweeps: a grid of config overrides x seeds, one run directory each.

Each run is a separate `python -m pipeline train` process, so a crash or a diverged
run cannot take the sweep down, and `--list` prints exactly those commands for a
cluster scheduler. Finished and diverged runs are skipped, unfinished ones resume.
"""

import itertools
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import load_config
from pipeline.runs import BrokenRunError, RunDirectory


@dataclass(frozen=True)
class PlannedRun:
    name: str
    overrides: tuple
    workdir: Path

    def command(self, config_path):
        """The train command, with absolute paths so that it works from any folder."""
        # The backend this sweep runs on, so a listed command reruns on the same one.
        backend = ["--backend", os.environ["KERAS_BACKEND"]] if os.environ.get("KERAS_BACKEND") else []
        args = [sys.executable, "-m", "pipeline", *backend, "train",
                str(Path(config_path).resolve())]
        for item in self.overrides:
            args += ["--set", item]
        return args + ["--workdir", str(self.workdir.resolve())]


def parse_grid(items):
    """["model.norm=none,batch", "optim.lr=0.1,0.5"] -> [("model.norm", ["none", "batch"]), ...]"""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r} must look like section.key=value1,value2")
        grid.append((key.strip(), [v.strip() for v in values.split(",")]))
    return grid


def _short(key, value):
    return f"{key.split('.')[-1]}-{value}"


def plan_sweep(config_path, grid_items=(), seeds=1, sweep_dir=None, overrides=()):
    """Every combination of the grid and seeds 0..seeds-1, validated before anything runs."""
    grid = parse_grid(grid_items)
    seed_values = [values for key, values in grid if key == "seed"]
    if seed_values:
        # Seeds given as a grid axis: those seeds, instead of 0..seeds-1.
        if seeds != 1:
            raise ValueError("give the seeds either as --seeds N (seeds 0..N-1) or as "
                             "--grid seed=A,B,..., not both")
        grid = [(key, values) for key, values in grid if key != "seed"]
    sweep_dir = Path(sweep_dir or Path("runs") / Path(config_path).stem)
    keys = [key for key, _ in grid]
    runs = []
    for values in itertools.product(*[v for _, v in grid]):
        for seed in (seed_values[-1] if seed_values else range(seeds)):
            items = tuple(overrides) + tuple(f"{k}={v}" for k, v in zip(keys, values)) + (
                f"seed={seed}",)
            load_config(config_path, items)  # fail now, not in the middle of the sweep
            name = "__".join([_short(k, v) for k, v in zip(keys, values)] + [f"seed-{seed}"])
            runs.append(PlannedRun(name, items, sweep_dir / name))
    return runs


def run_sweep(config_path, runs, echo=print):
    """Run the planned runs one after another; returns the summary rows."""
    for index, run in enumerate(runs, 1):
        try:
            status = RunDirectory(run.workdir).read_meta().get("status")
        except BrokenRunError as error:  # one broken run does not stop the others
            echo(f"[{index}/{len(runs)}] {run.name}: skipped: {error}")
            continue
        if status in ("finished", "diverged"):
            echo(f"[{index}/{len(runs)}] {run.name}: already {status}, skipped")
            continue
        echo(f"[{index}/{len(runs)}] {run.name}" + (" (resuming)" if status else ""))
        code = subprocess.call(run.command(config_path))
        if code != 0:
            echo(f"[{index}/{len(runs)}] {run.name}: exited with code {code}; continuing")
    return summarize(runs)


def summarize(runs):
    """One row per run: status, steps done, last train loss, last test metrics, wall time."""
    rows = []
    for run in runs:
        directory = RunDirectory(run.workdir)
        try:
            meta = directory.read_meta()
        except BrokenRunError as error:
            meta = {"status": "broken", "error": str(error)}
        train = directory.records("train")
        evals = directory.records("eval")
        rows.append({
            "run": run.name,
            "status": meta.get("status", "not started"),
            "step": meta.get("step", 0),
            "diverged_at": meta.get("diverged_step", ""),
            "train_loss": train[-1]["train/loss"] if train else float("nan"),
            "test_loss": evals[-1]["test/loss"] if evals else float("nan"),
            "test_accuracy": evals[-1].get("test/accuracy", float("nan")) if evals else float("nan"),
            "wall_s": round(meta.get("wall_time_s", 0.0), 1),
            "error": meta.get("error", "") if meta.get("status") in ("failed", "broken") else "",
        })
    return rows


def succeeded(rows):
    """True if every run ended as a result: finished or diverged (failed is not one)."""
    return all(row["status"] in ("finished", "diverged") for row in rows)


def format_table(rows):
    """A plain-text table of summary rows."""
    if not rows:
        return "(no runs)"
    columns = list(rows[0])

    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def list_commands(config_path, runs):
    return "\n".join(shlex.join(run.command(config_path)) for run in runs)
