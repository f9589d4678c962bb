"""From run directories to tidy pandas frames for plotting: one row per record, with
the run's variant label, seed and settings attached."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.fingerprint import NOT_THE_EXPERIMENT, experiment_fingerprint
from pipeline.core.errors import InputError, UserError
from pipeline.core.run_meta import pick, summary_row
from pipeline.core.runs import find_runs, load_run

# The paper's names for the norms.
NORM_NAMES = {"none": "standard", "batch": "BN", "noisy_batch": "noisy BN", "noise_only": "noise only",
              "l1": "l1", "l2": "l2", "linf": "linf", "layer": "LayerNorm", "group": "GroupNorm"}
# One colour per norm in every figure (Matplotlib's default cycle): BN blue, the
# standard network brown, noisy BN orange.
NORM_COLORS = {"batch": "C0", "noisy_batch": "C1", "l1": "C2", "group": "C3", "noise_only": "C4",
               "none": "C5", "l2": "C6", "layer": "C7", "linf": "C8"}


class MissingRunsError(UserError, FileNotFoundError):
    """A path given as runs holds no run directory."""


class MissingRecordsError(InputError):
    """Runs lack the records a table or figure needs; the message says how to make them."""


def _once_each(runs, echo):
    """The runs with each experiment once: two run folders whose configs differ only in
    keys that do not change the numbers (`config.NOT_THE_EXPERIMENT`: description,
    progress, steps per call, threads) with the same seed are one experiment, and a copy
    counted again would pass for another seed. The first found is kept; `echo` says which
    were left out."""
    kept, seen = [], {}
    for run in runs:
        key = experiment_fingerprint(run.config)
        if key in seen:
            echo(f"note: {run.path} is the same experiment as {seen[key]} (seed "
                 f"{run.config.get('seed')}; configs equal up to "
                 f"{', '.join(NOT_THE_EXPERIMENT)}): counted once")
            continue
        seen[key] = run.path
        kept.append(run)
    return kept


def _to_stderr(message):
    import sys
    print(message, file=sys.stderr)


def load_runs(paths, echo=_to_stderr):
    """Runs found at or below each path (a run directory or a sweep folder), each
    experiment once (`_once_each`; `echo` names the copies left out)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs, loaded = [], set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise MissingRunsError(f"run directory {path} does not exist; train it first "
                                   "(python -m pipeline train/sweep ...) or fix the path")
        found = find_runs(path)
        if not found:
            raise MissingRunsError(f"{path} holds no run directory (no config.yaml below it)")
        for run_path in found:
            if run_path.resolve() not in loaded:  # a folder given twice is read once
                loaded.add(run_path.resolve())
                runs.append(load_run(run_path))
    return _labelled(_once_each(runs, echo))


def _labelled(runs):
    """The runs with their variant labels: the norm's name, with the LR when the runs
    use several LRs."""
    several_lrs = len({run.lr for run in runs}) > 1
    return [dataclasses.replace(run, variant=NORM_NAMES.get(run.norm, run.norm)
                                + (f", LR {run.lr:g}" if several_lrs else ""))
            for run in runs]


def records_frame(runs, stream):
    """All `stream` records of `runs` as one frame with columns variant, run, seed,
    norm, lr, status, run_steps (the run's length) plus the record's own columns. Empty
    if no run has the stream."""
    frames = []
    for run in runs:
        frame = run.records.get(stream)
        if frame is None or frame.empty:
            continue
        frames.append(frame.assign(variant=run.variant, run=run.path, seed=run.seed,
                                   norm=run.norm, lr=run.lr, status=run.status or "unknown",
                                   run_steps=run.steps))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def probe_frame(runs, stream, expand=True):
    """The tidy frame of a probe stream: one row per record, or, for a stream whose
    records list entries (`<stream>/per_layer`, `<stream>/per_eta`), one row per entry,
    with the entry's fields (its coordinate `layer` or `eta` among them) as columns
    `<stream>/<field>` beside the record's own values and the run's labels (see
    `records_frame`); `expand=False`: one row per record, without the entries. The one
    way claims, plots and notebooks read probe records."""
    frame = records_frame(runs, stream)
    nested = [c for c in frame if c.startswith(f"{stream}/per_")]
    if frame.empty or not nested:
        return frame
    if not expand:
        return frame.drop(columns=nested)
    column = nested[0]
    frame = frame.explode(column, ignore_index=True).dropna(subset=[column])
    entries = pd.DataFrame(frame[column].tolist(), index=frame.index)
    return frame.drop(columns=nested).join(entries.add_prefix(f"{stream}/"))


def chosen_layers(frame, stream, requested=None):
    """The weight layers (1-based) a notebook shows from a per-layer probe frame
    (`probe_frame`): `requested`, or every recorded layer when None. A requested layer
    the runs did not record stops with the layers they have."""
    recorded = sorted(int(layer) for layer in frame[f"{stream}/layer"].unique())
    wanted = list(requested) if requested else recorded
    missing = sorted(set(wanted) - set(recorded))
    if missing:
        raise MissingRecordsError(f"layer(s) {missing} were not recorded by the {stream} probe; the "
                         f"runs have layers {recorded} (choose among them, or retrain with "
                         f"probes.{stream}.layers)")
    return wanted


def common_eval_step(runs):
    """The last step at which every run that evaluated was evaluated (None if none)."""
    steps = [set(r.records["eval"]["step"].astype(int)) for r in runs
             if r.records.get("eval") is not None and not r.records["eval"].empty]
    common = set.intersection(*steps) if steps else set()
    return max(common) if common else None


def runs_summary(runs, step=None):
    """One row per loaded run (`run_meta.summary_row`): variant, norm, lr, seed, status, the
    step it diverged at, test accuracy and loss: the final ones, or at `step`."""
    rows = []
    for run in runs:
        evals = run.records.get("eval", pd.DataFrame())
        if step is not None and not evals.empty:
            evals = evals[evals["step"] == step]
        row = summary_row(run.meta, None, evals.iloc[-1].to_dict() if not evals.empty else None)
        rows.append({"variant": run.variant, "norm": run.norm, "lr": run.lr, "seed": run.seed,
                     **pick(row, ("status", "diverged_at", "test_accuracy", "test_loss"))})
    return pd.DataFrame(rows)


def require_stream(runs, stream, probe_hint=None):
    """Raise a clear error naming the runs that lack records of `stream`. A diverged run
    may have ended before its first record of a stream; it is not counted."""
    missing = [r.path for r in runs if r.records.get(stream) is None and r.status != "diverged"]
    if missing:
        if stream in ("train", "eval"):  # every run writes these; no probe adds them
            raise MissingRecordsError(
                f"{len(missing)} run(s) have no {stream} records: {missing[:3]}; train or "
                f"resume them (python -m pipeline train <config> --workdir <run>), or leave "
                "them out")
        hint = probe_hint or f"--set probes.{stream}.enabled=true"
        raise MissingRecordsError(f"{len(missing)} run(s) have no {stream} records: "
                                  f"{missing[:3]}; train them with {hint}")


def runs_with(runs, stream, probe_hint=None, echo=print):
    """The runs that have records of `stream`; the others (trained without that probe)
    are left out, and said so. If none has them, the error of `require_stream`."""
    having = [r for r in runs if r.records.get(stream) is not None]
    if not having:
        require_stream(runs, stream, probe_hint)
        raise NothingToPlot(f"none of the {len(runs)} run(s) has {stream} records")
    if len(having) < len(runs):
        echo(f"left out {len(runs) - len(having)} run(s) without {stream} records (trained "
             "without that probe)")
    return _labelled(having)


def describe_scale(runs):
    """'data set digits, VGG11 x0.25 width, batch 128; 400 steps; seeds per variant: BN:
    3; standard: 3 (1 diverged)' for figure captions, from the runs drawn: their steps
    (per variant where variants differ: 'BN at LR 0.5: 200 steps; ...'), their seeds,
    and how many diverged."""
    config = runs[0].config
    model = config["model"]
    if model["family"] == "vgg":
        arch = f"VGG{model['depth']}" + (f" x{model['width_multiplier']:g} width"
                                         if model["width_multiplier"] != 1 else "")
    else:
        arch = f"{model['depth']}-layer linear network"
    frame = pd.DataFrame({"variant": [r.variant for r in runs], "seed": [r.seed for r in runs],
                          "steps": [r.steps for r in runs],
                          "diverged": [r.status == "diverged" for r in runs]})
    by_steps = frame.groupby("steps", sort=True)["variant"].unique()
    steps = (f"{by_steps.index[0]} steps" if len(by_steps) == 1 else
             "; ".join(f"{' / '.join(variants)}: {count} steps" for count, variants in by_steps.items()))
    counts = "; ".join(  # a variant trained for two lengths has two runs per seed
        f"{variant}: {rows['seed'].nunique()}"
        + (f" ({len(rows)} runs)" if len(rows) > rows["seed"].nunique() else "")
        + (f" ({int(rows['diverged'].sum())} diverged)" if rows["diverged"].any() else "")
        for variant, rows in frame.groupby("variant", sort=False))
    return (f"data set {config['data']['name']}, {arch}, batch {config['data']['batch_size']}; "
            f"{steps}; seeds per variant: {counts}")


class NothingToPlot(LookupError):
    """The runs hold nothing a notebook can show (e.g. no DLN run for the DLN notebook)."""


def select(runs, family=None, norms=None, what="runs"):
    """The runs of a model family and/or norms; NothingToPlot if there are none."""
    chosen = [r for r in runs
              if (family is None or r.family == family)
              and (norms is None or r.norm in norms)]
    if not chosen:
        raise NothingToPlot(f"no {what} among the {len(runs)} run(s) given")
    return _labelled(chosen)


# PROTOCOL.md section 6, VGG on CIFAR-10 at LR 0.1 (read off the paper's figures, one seed).
PAPER_TRAINING = pd.DataFrame({
    "variant": ["standard", "BN", "noisy BN"],
    "test accuracy": [0.800, 0.828, float("nan")],
    "steps to 90 %": [3300, 1600, 2400], "steps to 95 %": [4800, 2400, 3600],
    "steps to 99 %": [6600, 4300, 4800],
    "mean train accuracy, steps 1k-2k": [0.60, 0.85, 0.80],
}).set_index("variant")


# Milestones (steps to x % accuracy) average the accuracy over a centred window of this
# many steps: wide enough to smooth a noisy mini-batch, narrow enough to resolve BN's
# first 10-20 steps; PROTOCOL.md section 8.
MILESTONE_WINDOW = 9


def first_crossing(steps, values, level, window=MILESTONE_WINDOW):
    """The first step at which the mean of `values` over the records within a centred
    window of `window` steps (step - window // 2 .. step + window // 2) reaches `level`;
    None if it never does. Centred, so an early chance-level record cannot hold a later
    crossing back (a trailing mean would), and a window narrower than the logging
    cadence reads the records themselves."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    order = np.argsort(steps)
    steps, values = steps[order], values[order]
    sums = np.concatenate([[0.0], np.cumsum(values)])
    low = np.searchsorted(steps, steps - window // 2, side="left")
    high = np.searchsorted(steps, steps + window // 2, side="right")
    means = (sums[high] - sums[low]) / (high - low)
    reached = np.flatnonzero(means >= level)
    return int(steps[reached[0]]) if len(reached) else None


def training_milestones(train, evals, window=MILESTONE_WINDOW):
    """Per variant, like PAPER_TRAINING: final test accuracy, first step at which the
    seed-averaged mini-batch accuracy (centred mean over `window` steps, as the claims
    read it) reaches 90/95/99 %, and the mean training accuracy over steps 1k-2k (NaN if
    not reached)."""
    rows = {}
    for variant, rows_of_variant in train.groupby("variant"):
        curve = rows_of_variant.groupby("step")["train/accuracy"].mean()
        row = {}
        final = evals[evals["variant"] == variant]
        row["test accuracy"] = (final[final["step"] == final["step"].max()]["test/accuracy"].mean()
                                if not final.empty else float("nan"))
        for level in (90, 95, 99):
            step = first_crossing(curve.index, curve.to_numpy(), level / 100, window)
            row[f"steps to {level} %"] = float("nan") if step is None else float(step)
        steps_1k_2k = curve[(curve.index >= 1000) & (curve.index <= 2000)]
        row["mean train accuracy, steps 1k-2k"] = (steps_1k_2k.mean() if len(steps_1k_2k)
                                                   else float("nan"))
        rows[variant] = row
    return pd.DataFrame(rows).T.rename_axis("variant")


def notebook_runs(paths, what, family=None, norms=None, required=(), probe=None, echo=print):
    """A notebook's first step: the runs at `paths` of `family` (and `norms`), each with
    records of every `required` stream, and, with `probe`, only those that recorded it
    (the others are named and left out); returns (runs, their scale for captions).
    Stops with one clear message for a missing run directory (MissingRunsError), no runs
    of this kind (NothingToPlot) or runs trained without what the notebook needs."""
    chosen = select(load_runs(paths), family=family, norms=norms, what=what)
    for stream in required:
        require_stream(chosen, stream)
    if probe:
        chosen = runs_with(chosen, probe, echo=echo)
    scale = describe_scale(chosen)
    echo(f"{len(chosen)} run(s): {scale}")
    return chosen, scale
