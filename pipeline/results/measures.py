"""What a claim measures in a run (PROTOCOL.md section 8): run-level statistics
(milestones, final values, shift, the DLN's plateaus, curvature against 2/LR and
against the effective beta) as `run -> float`, and probe quantities as `ProbeMeasure`s,
which the claims compare at matched training loss (pipeline.results.matched). A run is the dict
`pipeline.results.analysis.load_runs` gives; NaN means "cannot be measured in this run"."""

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.results.analysis import MILESTONE_WINDOW, first_crossing, probe_frame, records_frame

# PROTOCOL.md section 8: a record at step t of a run of T steps is in the initial
# transient if 0 < t < TRANSIENT * T, in the training regime if t >= TRANSIENT * T.
TRANSIENT = 0.05
# The paper's VGG landscape grid starts at LR/2 (PROTOCOL.md section 4); ours goes lower.
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


def test_accuracies(run):
    """{step: test accuracy} of the run's evaluations."""
    evals = _frame(run, "eval")
    if "test/accuracy" not in evals:
        return {}
    return {int(step): float(accuracy)
            for step, accuracy in zip(evals["step"], evals["test/accuracy"])}


# --- probe statistics (compared at matched training loss) ----------------------------

@dataclasses.dataclass(frozen=True)
class ProbeMeasure:
    """A probe quantity per record: `value(frame) -> values`, with the record's own
    training loss `loss`; `per_layer` makes one row per probed layer. `paper` is the
    quantity as the paper reads it where ours differs (the landscape on its grid)."""
    stream: str
    value: Callable
    loss: str
    per_layer: bool = False
    paper: Callable = None

    def _frame(self, run):
        if self.per_layer:
            return probe_frame([run], self.stream)
        return records_frame([run], self.stream)  # entries (per_eta) kept as lists

    def records(self, run, paper=False):
        """Frame (seed, step, fraction, loss, value, layer) of one run: `fraction` is the
        step / the run's steps; `layer` is NaN for a stream without layers. One row per
        record and layer, never one per step size. `paper`: the paper's reading."""
        frame = self._frame(run)
        value = self.paper if paper and self.paper is not None else self.value
        try:
            return pd.DataFrame({
                "seed": frame["seed"], "step": frame["step"],
                "fraction": frame["step"] / run.steps, "loss": frame[self.loss],
                "value": np.asarray(value(frame), float),
                "layer": frame[f"{self.stream}/layer"] if self.per_layer else np.nan})
        except KeyError:  # no such records in this run
            return pd.DataFrame({c: pd.Series(dtype=float) for c in
                                 ("seed", "step", "fraction", "loss", "value", "layer")})


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


def paper_reading(records):
    """The paper's reading of `ProbeMeasure.records` of several runs: each run's maximum
    over the curve after step 0 (the paper's figures start later), median over runs."""
    late = records[records["step"] > 0]
    return float(late.groupby("seed")["value"].max().median()) if len(late) else float("nan")


def _over_grid(frame, field, reduce, from_multiplier):
    """Per landscape record: `reduce` of an entry field over the step sizes eta >=
    from_multiplier x LR (records without entries: NaN)."""
    if "landscape/per_eta" not in frame:
        return np.full(len(frame), np.nan)
    return [reduce([e[field] for e in entries if e["eta"] >= from_multiplier * lr * (1 - 1e-6)])
            for entries, lr in zip(frame["landscape/per_eta"], frame["lr"])]


def _with_fallback(on_grid, whole):
    """The statistic on the grid from the record's entries, else the record's own."""
    def value(frame):
        if "landscape/per_eta" in frame:
            return on_grid(frame)
        return whole(frame)
    return value


def _band(frame, from_multiplier):
    return np.subtract(_over_grid(frame, "loss_at_eta", max, from_multiplier),
                       _over_grid(frame, "loss_at_eta", min, from_multiplier))


def loss_band(frame):
    """loss_max - loss_min along the gradient, on the paper's grid (eta >= LR/2)."""
    return _with_fallback(lambda f: _band(f, PAPER_GRID_FROM),
                          lambda f: f["landscape/loss_max"] - f["landscape/loss_min"])(frame)


def grad_change(frame):
    """max over the paper's grid of ||grad L(theta - eta g) - g||."""
    return _with_fallback(lambda f: _over_grid(f, "grad_change", max, PAPER_GRID_FROM),
                          lambda f: f["landscape/grad_change_max"])(frame)


def relative_grad_change(frame):
    """max over the paper's grid of ||grad L(theta - eta g) - g|| / ||g||."""
    return np.asarray(grad_change(frame), float) / frame["landscape/grad_norm"]


def beta(frame):
    """The effective beta-smoothness over the whole grid (ours extends below LR/2)."""
    return frame["landscape/beta_max"]


def paper_beta(frame):
    """The effective beta on the paper's grid (eta >= LR/2)."""
    return _with_fallback(lambda f: _over_grid(f, "beta", max, PAPER_GRID_FROM), beta)(frame)


ICS_L2 = ProbeMeasure("ics", lambda f: f["ics/l2"], "ics/loss", per_layer=True)
ICS_RELATIVE = ProbeMeasure("ics", lambda f: f["ics/relative_l2"], "ics/loss", per_layer=True)
ICS_COSINE = ProbeMeasure("ics", lambda f: 1.0 - f["ics/cosine"], "ics/loss", per_layer=True)
LANDSCAPE_LOSS = "landscape/loss"
LOSS_BAND = ProbeMeasure("landscape", loss_band, LANDSCAPE_LOSS)
GRAD_CHANGE = ProbeMeasure("landscape", grad_change, LANDSCAPE_LOSS)
RELATIVE_GRAD_CHANGE = ProbeMeasure("landscape", relative_grad_change, LANDSCAPE_LOSS)
BETA = ProbeMeasure("landscape", beta, LANDSCAPE_LOSS, paper=paper_beta)
CURVATURE = ProbeMeasure("curvature", lambda f: np.abs(f["curvature/top_eigenvalue"]),
                         "curvature/loss")


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
