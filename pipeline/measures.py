"""What a claim measures in a run (PROTOCOL.md section 8): run-level statistics
(milestones, final values, shift, the DLN's plateaus, curvature against 2/LR and
against the effective beta) as `run -> float`, and probe quantities as `ProbeMeasure`s,
which the claims compare at matched training loss (pipeline.matched). A run is the dict
`pipeline.analysis.load_runs` gives; NaN means "cannot be measured in this run"."""

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.analysis import MILESTONE_WINDOW, first_crossing, probe_frame


def _frame(run, stream):
    return run["records"].get(stream, pd.DataFrame())


def _steps(run):
    return run["config"]["train"]["steps"]


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
        return float(_steps(run)) if step is None else float(step)
    return measure


def final_value(stream, key, tail=0.1):
    """Median of `key` over the last `tail` of the run's records."""
    def measure(run):
        frame = _frame(run, stream)
        if key not in frame or frame.empty:
            return float("nan")
        last = frame[frame["step"] >= (1 - tail) * _steps(run)]
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
    singular directions learned. Its loss falls in plateaus at these levels, so a median
    of final losses compares plateaus, not speed."""
    levels = run["meta"].get("loss_levels")
    loss = final_value("train", "train/loss")(run)
    if not levels or not np.isfinite(loss):
        return float("nan")
    return float(sum(loss < margin * level for level in levels))


# --- probe statistics (compared at matched training loss) ----------------------------

@dataclasses.dataclass(frozen=True)
class ProbeMeasure:
    """A probe quantity per record: `value(tidy frame) -> values`, with the record's own
    training loss `loss`; `per_layer` makes one row per probed layer."""
    stream: str
    value: Callable
    loss: str
    per_layer: bool = False

    def records(self, run):
        """Frame (seed, step, loss, value, layer) of one run; `layer` is NaN for a stream
        without layers. One row per record and layer, never one per step size."""
        frame = probe_frame([run], self.stream, expand=self.per_layer)
        try:
            return pd.DataFrame({
                "seed": frame["seed"], "step": frame["step"], "loss": frame[self.loss],
                "value": np.asarray(self.value(frame), float),
                "layer": frame[f"{self.stream}/layer"] if self.per_layer else np.nan})
        except KeyError:  # no such records in this run
            return pd.DataFrame({c: pd.Series(dtype=float)
                                 for c in ("seed", "step", "loss", "value", "layer")})


def paper_reading(records):
    """The paper's reading of `ProbeMeasure.records` of several runs: each run's maximum
    over the curve after step 0 (the paper's figures start later), median over runs."""
    late = records[records["step"] > 0]
    return float(late.groupby("seed")["value"].max().median()) if len(late) else float("nan")


def loss_band(frame):
    return frame["landscape/loss_max"] - frame["landscape/loss_min"]


ICS_L2 = ProbeMeasure("ics", lambda f: f["ics/l2"], "ics/loss", per_layer=True)
ICS_COSINE = ProbeMeasure("ics", lambda f: 1.0 - f["ics/cosine"], "ics/loss", per_layer=True)
LANDSCAPE_LOSS = "landscape/loss"


def edge_of_stability(run):
    """Median |top Hessian eigenvalue| over the second half of the run, in units of 2/LR
    (1 = the edge of stability of gradient descent, where Cohen et al. 2021 find the
    sharpness hovering once it has risen; the first steps' transient is left out)."""
    frame = _frame(run, "curvature")
    if "curvature/top_eigenvalue" not in frame or frame.empty:
        return float("nan")
    late = frame[frame["step"] >= _steps(run) / 2]["curvature/top_eigenvalue"]
    if late.empty:
        return float("nan")
    return float(np.median(np.abs(late)) * run["config"]["optim"]["lr"] / 2)


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
