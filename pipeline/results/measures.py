"""What a claim measures in a run (PROTOCOL.md section 8): run-level statistics
(milestones, final values, shift, the DLN's plateaus, curvature against 2/LR and
against the effective beta) as `run -> float`, and probe quantities as `ProbeMeasure`s,
which the claims compare at matched training loss (pipeline.results.matched). A run is the dict
`pipeline.results.analysis.load_runs` gives; NaN means "cannot be measured in this run"."""

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.core.records import loss_key
from pipeline.results.analysis import MILESTONE_WINDOW, first_crossing, probe_frame, records_frame

# PROTOCOL.md section 8: a record at step t of a run of T steps is in the initial
# transient if 0 < t < TRANSIENT * T, in the training regime if t >= TRANSIENT * T.
TRANSIENT = 0.05
# The paper's VGG landscape grid starts at LR/2 (PROTOCOL.md section 4); ours goes lower
# (the DLN's, the paper's too, from LR/100: its rows read the whole grid).
PAPER_GRID_FROM = 0.5


def _frame(run, stream):
    return run.records.get(stream, pd.DataFrame())


# --- run-level statistics ------------------------------------------------------------

def steps_to_accuracy(level):
    """First step at which the mini-batch training accuracy, averaged over a centred
    window of MILESTONE_WINDOW steps, reaches `level` (the run's length if never: a
    censored, pessimistic value). Centred, so neither step 0's chance accuracy nor the
    logging cadence sets a floor."""
    def measure(run):
        train = _frame(run, "train")
        if "train/accuracy" not in train:
            return float("nan")
        step = first_crossing(train["step"], train["train/accuracy"], level, MILESTONE_WINDOW)
        return float(run.steps) if step is None else float(step)
    return measure


def final_value(stream, key, tail=0.1):
    """Median of `key` over the last `tail` of the run's records."""
    def measure(run):
        frame = _frame(run, stream)
        if key not in frame or frame.empty:
            return float("nan")
        last = frame[frame["step"] >= (1 - tail) * run.steps]
        return float(np.median(last[key] if not last.empty else frame[key].iloc[-1:]))
    return measure


def activation_shift(run):
    """Mean over layers, channels and probe steps of the absolute change of the
    per-channel activation means between consecutive distribution records (Fig 8)."""
    frame = probe_frame([run], "distributions")
    if frame.empty or "distributions/channel_mean" not in frame:
        return float("nan")
    shifts = []
    for _, rows in frame.groupby("distributions/layer"):
        means = np.stack(rows.sort_values("step")["distributions/channel_mean"].to_numpy())
        if len(means) > 1:
            shifts.append(np.abs(np.diff(means, axis=0)).mean())
    return float(np.mean(shifts)) if shifts else float("nan")


def levels_passed(run, margin=0.98):
    """DLN: how many of the best rank-k fit errors of the training data (meta.json
    `loss_levels`, rank 0 first) the final training loss lies below: the number of A's
    singular directions learned (shown beside the DLN rows; PROTOCOL.md section 8)."""
    levels = run.meta.loss_levels
    loss = final_value("train", "train/loss")(run)
    if not levels or not np.isfinite(loss):
        return float("nan")
    return float(sum(loss < margin * level for level in levels))


def mean_log_loss(run):
    """DLN: the mean of log10(training loss) over every train record of the run (the
    log of its geometric-mean loss): lower the sooner the run leaves each plateau and
    the lower it goes (PROTOCOL.md section 8). NaN for a run with a non-finite loss."""
    train = _frame(run, "train")
    if "train/loss" not in train or train.empty:
        return float("nan")
    loss = train["train/loss"].to_numpy(float)
    if not np.all(np.isfinite(loss) & (loss > 0)):
        return float("nan")
    return float(np.mean(np.log10(loss)))


def final_log_loss(run):
    """DLN: log10 of the final training loss (the paper's statistic, Fig 5)."""
    loss = _frame(run, "train")
    if "train/loss" not in loss or loss.empty:
        return float("nan")
    last = float(loss["train/loss"].iloc[-1])
    return float(np.log10(last)) if np.isfinite(last) and last > 0 else float("nan")


def test_accuracies(run):
    """{step: test accuracy} of the run's evaluations."""
    evals = _frame(run, "eval")
    if "test/accuracy" not in evals:
        return {}
    return {int(step): float(accuracy)
            for step, accuracy in zip(evals["step"], evals["test/accuracy"])}


# --- probe statistics (compared at matched training loss) ----------------------------

def oscillating(frame, stream):
    """Per record of `stream`, whether the optimizer's next step oscillates (1.0, else
    0.0; NaN where the record has no indicator), PROTOCOL.md section 8: the gradient after
    the step points back (`next_cosine` < 0: ICS, landscape), or the top Hessian
    eigenvalue exceeds 1/LR, where gradient descent flips sign along its eigenvector
    (curvature)."""
    if f"{stream}/next_cosine" in frame:
        cosine = frame[f"{stream}/next_cosine"].astype(float)
        return np.where(np.isfinite(cosine), (cosine < 0).astype(float), np.nan)
    if f"{stream}/top_eigenvalue" in frame:
        return (np.abs(frame[f"{stream}/top_eigenvalue"].astype(float)) * frame["lr"]
                > 1).astype(float).to_numpy()
    return np.full(len(frame), np.nan)


@dataclasses.dataclass(frozen=True)
class ProbeMeasure:
    """A probe quantity per record: `value(frame) -> values`, with the record's own
    training loss `loss`; `per_layer` makes one row per probed layer. A landscape
    quantity read over the step-size grid has `at_multiplier(m) -> value function`, the
    same quantity at one step size m x LR (the claims' `per_eta`)."""
    stream: str
    value: Callable
    loss: str
    per_layer: bool = False
    at_multiplier: Callable = None
    grid_from: float = None    # a maximum over the grid from this multiplier: its ends

    def _frame(self, run):
        if self.per_layer:
            return probe_frame([run], self.stream)
        return records_frame([run], self.stream)  # entries (per_eta) kept as lists

    def records(self, run):
        """Frame (seed, step, fraction, loss, value, layer, oscillating) of one run:
        `fraction` is the step / the run's steps; `layer` is NaN for a stream without
        layers. One row per record and layer, never one per step size."""
        frame = self._frame(run)
        try:
            return pd.DataFrame({
                "seed": frame["seed"], "step": frame["step"],
                "fraction": frame["step"] / run.steps, "loss": frame[self.loss],
                "value": np.asarray(self.value(frame), float),
                "layer": frame[f"{self.stream}/layer"] if self.per_layer else np.nan,
                "oscillating": oscillating(frame, self.stream)})
        except KeyError:  # no such records in this run
            return pd.DataFrame({c: pd.Series(dtype=float) for c in
                                 ("seed", "step", "fraction", "loss", "value", "layer",
                                  "oscillating")})

    def at(self, multiplier):
        """The same quantity at the one step size `multiplier` x LR."""
        return dataclasses.replace(self, value=self.at_multiplier(multiplier),
                                   at_multiplier=None, grid_from=None)


def training_regime(records):
    """The records at or after the first TRANSIENT of their run's steps."""
    return records[records["fraction"] >= TRANSIENT]


def transient(records):
    """The records of the initial transient (after step 0)."""
    return records[(records["step"] > 0) & (records["fraction"] < TRANSIENT)]


def transient_median(measure):
    """Run -> the median of a ProbeMeasure's values over the run's transient records."""
    def median(run):
        values = transient(measure.records(run))["value"]
        return float(np.median(values)) if len(values) else float("nan")
    return median


# --- the landscape over its step-size grid -------------------------------------------

def multiplier_of(entry, lr):
    """An entry's step size as a multiple of the LR: stored since 2026-12-07; derived
    (rounded to 6 digits) for records written before."""
    return entry["multiplier"] if "multiplier" in entry else round(entry["eta"] / lr, 6)


def grid_multipliers(frame):
    """The step-size multipliers the landscape records of `frame` hold, sorted."""
    if "landscape/per_eta" not in frame:
        return []
    return sorted({multiplier_of(e, lr) for entries, lr in
                   zip(frame["landscape/per_eta"], frame["lr"]) for e in entries})


def _grid(frame, low=PAPER_GRID_FROM, high=np.inf):
    """Per record: its entries with multiplier in [low, high], smallest step first."""
    if "landscape/per_eta" not in frame:
        raise KeyError("landscape/per_eta")
    return [sorted((e for e in entries if low <= multiplier_of(e, lr) <= high),
                   key=lambda e: multiplier_of(e, lr))
            for entries, lr in zip(frame["landscape/per_eta"], frame["lr"])]


def _reduce(frame, field, reduce, low=PAPER_GRID_FROM, high=np.inf):
    return np.array([reduce([e[field] for e in entries]) if entries else np.nan
                     for entries in _grid(frame, low, high)], float)


def loss_band(frame, low=PAPER_GRID_FROM):
    """loss_max - loss_min over the paper's grid (multipliers from `low`)."""
    return _reduce(frame, "loss_at_eta", lambda v: max(v) - min(v), low)


def loss_change_at(multiplier):
    """|L(theta - eta g) - L(theta)| at eta = multiplier x LR: the loss band of the one
    step (the band's value as a function of the step size)."""
    return lambda frame: np.abs(_reduce(frame, "loss_at_eta", max, multiplier, multiplier)
                                - frame["landscape/loss"].to_numpy(float))


def grad_change(frame, low=PAPER_GRID_FROM):
    """max over the paper's grid of ||grad L(theta - eta g) - g||."""
    return _reduce(frame, "grad_change", max, low)


def relative_grad_change(frame, low=PAPER_GRID_FROM):
    """max over the paper's grid of ||grad L(theta - eta g) - g|| / ||g||."""
    return grad_change(frame, low) / frame["landscape/grad_norm"].to_numpy(float)


def relative_change_at(multiplier):
    """||grad L(theta - eta g) - g|| / ||g|| at eta = multiplier x LR."""
    return lambda frame: (_reduce(frame, "grad_change", max, multiplier, multiplier)
                          / frame["landscape/grad_norm"].to_numpy(float))


def beta(frame, low=PAPER_GRID_FROM):
    """The effective beta-smoothness as the paper reads it: the maximum over its grid
    of ||grad L(theta - eta g) - g|| / ||eta g||."""
    return _reduce(frame, "beta", max, low)


def local_beta(frame):
    """The effective beta at the grid's smallest step: curvature along the gradient
    where the step is smallest (beyond the paper; our VGG grid reaches LR/16)."""
    return _reduce(frame, "beta", lambda v: v[0], low=0)


def entry_at(field):
    """Multiplier -> the entry `field` at that one step size."""
    return lambda multiplier: (lambda frame: _reduce(frame, field, max, multiplier, multiplier))


def grid_end_shares(frame, field="beta", low=PAPER_GRID_FROM):
    """{"smallest": share, "largest": share} of records whose maximum of `field` over the
    grid from `low` sits at its smallest / largest step (where a maximum over a grid
    measures the grid, PROTOCOL.md section 4)."""
    ends = {"smallest": [], "largest": []}
    for entries in _grid(frame, low):
        if len(entries) < 2:
            continue
        top = int(np.nanargmax([e[field] for e in entries]))
        ends["smallest"].append(top == 0)
        ends["largest"].append(top == len(entries) - 1)
    return {end: float(np.mean(flags)) if flags else float("nan") for end, flags in ends.items()}


LANDSCAPE_LOSS = loss_key("landscape")


def landscape_measures(low):
    """The landscape's measures on a grid from `low` x LR: {"band", "grad_change",
    "relative_grad_change", "beta"}; the first, second and fourth with their value at
    each step size (`at`)."""
    def on_grid(function):
        return lambda frame: function(frame, low)
    return {
        "band": ProbeMeasure("landscape", on_grid(loss_band), LANDSCAPE_LOSS,
                             at_multiplier=loss_change_at),
        "grad_change": ProbeMeasure("landscape", on_grid(grad_change), LANDSCAPE_LOSS,
                                    at_multiplier=entry_at("grad_change")),
        "relative_grad_change": ProbeMeasure("landscape", on_grid(relative_grad_change),
                                             LANDSCAPE_LOSS, at_multiplier=relative_change_at),
        "beta": ProbeMeasure("landscape", on_grid(beta), LANDSCAPE_LOSS,
                             at_multiplier=entry_at("beta"), grid_from=low)}


ICS_L2 = ProbeMeasure("ics", lambda f: f["ics/l2"], loss_key("ics"), per_layer=True)
ICS_RELATIVE = ProbeMeasure("ics", lambda f: f["ics/relative_l2"], loss_key("ics"),
                            per_layer=True)
ICS_COSINE = ProbeMeasure("ics", lambda f: 1.0 - f["ics/cosine"], loss_key("ics"),
                          per_layer=True)
# The VGG's measures on the paper's grid (from LR/2); the DLN's grid is the paper's whole.
VGG_LANDSCAPE = landscape_measures(PAPER_GRID_FROM)
DLN_LANDSCAPE = landscape_measures(0.0)
LOCAL_BETA = ProbeMeasure("landscape", local_beta, LANDSCAPE_LOSS)
CURVATURE = ProbeMeasure("curvature", lambda f: np.abs(f["curvature/top_eigenvalue"]),
                         loss_key("curvature"))


def edge_of_stability(run):
    """Median |top Hessian eigenvalue| over the second half of the run, in units of 2/LR
    (1 = the edge of stability of gradient descent, where Cohen et al. 2021 find the
    sharpness hovering once it has risen; the first steps' transient is left out)."""
    frame = _frame(run, "curvature")
    if "curvature/top_eigenvalue" not in frame or frame.empty:
        return float("nan")
    late = frame[frame["step"] >= run.steps / 2]["curvature/top_eigenvalue"]
    if late.empty:
        return float("nan")
    return float(np.median(np.abs(late)) * run.lr / 2)


def beta_over_curvature(run):
    """Median over the steps probed by both (after step 0) of the effective beta divided
    by |top Hessian eigenvalue|: 1 if the paper's statistic measures curvature."""
    landscape, curvature = _frame(run, "landscape"), _frame(run, "curvature")
    if "landscape/beta_max" not in landscape or "curvature/top_eigenvalue" not in curvature:
        return float("nan")
    both = landscape.merge(curvature, on="step")
    both = both[both["step"] > 0]
    ratio = both["landscape/beta_max"] / np.abs(both["curvature/top_eigenvalue"])
    return float(np.median(ratio)) if len(ratio) else float("nan")
