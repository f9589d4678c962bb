"""The paper's claims as verdicts over runs (`python -m pipeline claims RUNS... [--json]`).

One row per claim, in PROTOCOL.md's words: a statistic per run, its median over seeds
per variant, the effect size (ratio of the medians, `variant / reference`), a 95 %
bootstrap interval of that ratio over seeds, a verdict by a written rule, and the
paper's value (PROTOCOL.md section 6). Where the runs a claim needs are missing, the
row says which sweep would make them.

Statistics that the first steps could decide are avoided: probe statistics are medians
over the probe steps from `WINDOW_START` of the run on (at step 0 BN's loss band is
~5 against the standard network's ~0.02, after that it is 10-100x narrower); the
paper's own reading, the maximum over the plotted curve, is reported beside them.
Landscape statistics compare the variants at matched progress: only probe records whose
training loss lies in the range both variants pass through count, since a network that
has already reached zero loss is trivially smooth.
"""

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

WINDOW_START = 0.1        # probe statistics: steps >= 10 % of the run
BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95
ABOUT_EQUAL = 1.5         # "about equal": the ratio lies within [1/1.5, 1.5]
SMOOTHING = 5             # training-accuracy records averaged before a milestone is read

RULES = {
    "smaller": "reproduced if the whole interval of the ratio lies below 1, not reproduced "
               "if it lies at or above 1, else inconclusive",
    "larger": "reproduced if the whole interval lies above 1, not reproduced if it lies at "
              "or below 1, else inconclusive",
    "not smaller": "reproduced if the whole interval lies at or above 1/1.5 (not clearly "
                   "smaller), not reproduced if it lies below 1/1.5, else inconclusive",
    "about equal": "reproduced if the whole interval lies within [1/1.5, 1.5], not "
                   "reproduced if it lies outside, else inconclusive",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    text: str                       # the claim in PROTOCOL.md's words
    family: str                     # "vgg" or "dln"
    variant: str                    # norm of the numerator
    reference: str                  # norm of the denominator
    lr: str                         # "low" (the smallest LR of the runs) or "high" (largest)
    statistic: str                  # what is measured per run, with its window
    measure: Callable               # run -> float (NaN when it cannot be measured)
    expect: str                     # a key of RULES
    paper: str                      # the paper's values, PROTOCOL.md section 6
    paper_reading: Callable = None  # run -> float: the paper's way of reading the curve
    # Landscape statistics: compare the variants only at probe steps where their training
    # losses overlap (a network at zero loss is trivially smooth).
    matched: bool = False


def _frame(run, stream):
    return run["records"].get(stream, pd.DataFrame())


def _window(frame, run):
    if "step" not in frame:
        return frame
    return frame[frame["step"] >= WINDOW_START * run["config"]["train"]["steps"]]


def steps_to_accuracy(level):
    """First step at which the smoothed mini-batch training accuracy reaches `level`
    (the run's length if never: a censored, pessimistic value)."""
    def measure(run):
        train = _frame(run, "train")
        if "train/accuracy" not in train:
            return float("nan")
        smooth = train["train/accuracy"].rolling(SMOOTHING, min_periods=1).mean()
        reached = train["step"][smooth >= level]
        return float(reached.iloc[0]) if len(reached) else float(run["config"]["train"]["steps"])
    return measure


def final_value(stream, key, tail=0.1):
    """Median of `key` over the last `tail` of the run's records (NaN if it diverged)."""
    def measure(run):
        frame = _frame(run, stream)
        if key not in frame or frame.empty:
            return float("nan")
        last = frame[frame["step"] >= (1 - tail) * run["config"]["train"]["steps"]]
        values = last[key] if not last.empty else frame[key].iloc[-1:]
        return float(np.median(values))
    return measure


def probe_statistic(stream, column, reduce=np.median, window=True):
    """`reduce` of a probe quantity over the probe steps of the window (or, with
    `window=False`, of the whole curve: the paper's reading). `column` is a record key or
    a function of the records frame giving the values. With `loss_range` (low, high),
    only probe records whose own loss `landscape/loss` lies in it count."""
    def measure(run, loss_range=None):
        frame = _frame(run, stream)
        frame = _window(frame, run) if window else frame
        if loss_range is not None and "landscape/loss" in frame:
            loss = frame["landscape/loss"]
            frame = frame[(loss >= loss_range[0]) & (loss <= loss_range[1])]
        try:
            values = np.asarray(column(frame) if callable(column) else frame[column], float)
        except KeyError:
            return float("nan")
        return float(reduce(values)) if len(values) else float("nan")
    return measure


def loss_band(frame):
    return frame["landscape/loss_max"] - frame["landscape/loss_min"]


def activation_shift(run):
    """Mean over layers, channels and probe steps of the absolute change of the
    per-channel activation means between consecutive distribution records (Fig 8)."""
    frame = _frame(run, "distributions")
    columns = [c for c in frame if c.endswith("_channel_mean")]
    if not columns or len(frame) < 2:
        return float("nan")
    shifts = []
    for column in columns:
        means = np.stack(frame[column].to_numpy())
        shifts.append(np.abs(np.diff(means, axis=0)).mean())
    return float(np.mean(shifts))


def _ics_layer(run, suffix):
    frame = _frame(run, "ics")
    columns = sorted(c for c in frame if c.startswith("ics/layer") and c.endswith(suffix))
    return columns[-1] if columns else None  # the deepest probed layer


def ics_measure(suffix):
    def measure(run):
        column = _ics_layer(run, suffix)
        return probe_statistic("ics", column)(run) if column else float("nan")
    return measure


CLAIMS = [
    Claim("bn_trains_faster", "BN trains faster", "vgg", "batch", "none", "low",
          "steps to 90 % mini-batch training accuracy (smoothed over 5 records)",
          steps_to_accuracy(0.9), "smaller", "BN 1.6k vs standard 3.3k steps"),
    Claim("large_lr", "at the large LR the standard network fails while BN trains", "vgg",
          "batch", "none", "high", "final mini-batch training accuracy (median, last 10 %)",
          final_value("train", "train/accuracy"), "larger",
          "test accuracy BN 80.1 % vs standard 10 % (LR 0.5)"),
    Claim("noisy_bn_trains_like_bn", "noisy BN trains about as fast as BN", "vgg",
          "noisy_batch", "batch", "low", "steps to 90 % mini-batch training accuracy",
          steps_to_accuracy(0.9), "about equal", "noisy BN 2.4k vs BN 1.6k steps"),
    Claim("noisy_bn_shifts_more", "... although its activations shift more", "vgg",
          "noisy_batch", "batch", "low",
          "mean change of per-channel activation means between probe steps (Fig 8)",
          activation_shift, "larger", "larger shift for noisy BN (Fig 2, 7)"),
    Claim("ics_l2_not_smaller", "ICS (l2) is not smaller with BN", "vgg", "batch", "none",
          "low", "||G - G'|| of the deepest probed layer, median over the window",
          ics_measure("_l2"), "not smaller", "as large or larger with BN (Fig 3)"),
    Claim("ics_cosine_not_larger", "ICS (cosine) is not smaller with BN: cos(G, G') not "
          "closer to 1", "vgg", "batch", "none", "low",
          "1 - cos(G, G') of the deepest probed layer, median over the window",
          lambda run: 1.0 - ics_measure("_cosine")(run), "not smaller",
          "cosine as low or lower with BN (Fig 3)"),
    Claim("loss_band_narrower", "the loss band is narrower with BN", "vgg", "batch", "none",
          "low", "loss_max - loss_min along the gradient, median over the window",
          probe_statistic("landscape", loss_band), "smaller", "max ~9.7 vs <= 2.7",
          paper_reading=probe_statistic("landscape", loss_band, np.max, window=False),
          matched=True),
    Claim("gradient_change_smaller", "gradient change is smaller with BN", "vgg", "batch",
          "none", "low", "max over step sizes of ||grad(theta - eta g) - g||, median over "
          "the window", probe_statistic("landscape", "landscape/grad_change_max"), "smaller",
          "max ~255 vs ~38",
          paper_reading=probe_statistic("landscape", "landscape/grad_change_max", np.max, False),
          matched=True),
    Claim("beta_smaller", "the effective beta is smaller with BN", "vgg", "batch", "none", "low",
          "effective beta-smoothness, median over the window",
          probe_statistic("landscape", "landscape/beta_max"), "smaller", "max ~46 vs ~20",
          paper_reading=probe_statistic("landscape", "landscape/beta_max", np.max, False),
          matched=True),
    *[Claim(f"{p}_trains_like_bn", f"{p} normalization trains like BN", "vgg", p, "batch",
            "low", "steps to 90 % mini-batch training accuracy", steps_to_accuracy(0.9),
            "about equal", "l1, l2, linf ~ BN") for p in ("l1", "l2", "linf")],
    *[Claim(f"dln_{p}_lower_loss", f"on the DLN, {name} reaches lower loss than standard",
            "dln", p, "none", "low", "final training loss (median, last 10 %)",
            final_value("train", "train/loss"), "smaller", paper)
      for p, name, paper in (("batch", "BN", "4.75e2 vs 1.65e3 (LR 1e-6)"),
                             ("l1", "l1", "96 vs 1.65e3 (LR 1e-6)"))],
    Claim("curvature_smaller", "ours: the top Hessian eigenvalue is smaller with BN", "vgg",
          "batch", "none", "low", "|top Hessian eigenvalue|, median over the window",
          probe_statistic("curvature", lambda f: np.abs(f["curvature/top_eigenvalue"])), "smaller",
          "not measured by the paper"),
]


def bootstrap_ratio(variant, reference, rng, resamples=BOOTSTRAP_RESAMPLES, level=LEVEL):
    """Percentile interval of median(variant) / median(reference), seeds resampled with
    replacement within each group."""
    variant, reference = np.asarray(variant, float), np.asarray(reference, float)
    a = np.median(rng.choice(variant, (resamples, len(variant))), axis=1)
    b = np.median(rng.choice(reference, (resamples, len(reference))), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = a / b
    tail = (1 - level) / 2 * 100
    return tuple(np.nanpercentile(ratios, [tail, 100 - tail]))


def verdict(expect, interval):
    low, high = interval
    if expect == "smaller":
        return "reproduced" if high < 1 else "not reproduced" if low >= 1 else "inconclusive"
    if expect == "larger":
        return "reproduced" if low > 1 else "not reproduced" if high <= 1 else "inconclusive"
    if expect == "not smaller":
        bound = 1 / ABOUT_EQUAL
        return "reproduced" if low >= bound else "not reproduced" if high < bound else "inconclusive"
    inside = 1 / ABOUT_EQUAL <= low and high <= ABOUT_EQUAL
    outside = high < 1 / ABOUT_EQUAL or low > ABOUT_EQUAL
    return "reproduced" if inside else "not reproduced" if outside else "inconclusive"


def _groups(runs):
    """{(family, norm, lr): [run, ...]} and the low/high LR of each family."""
    groups, lrs = {}, {}
    for run in runs:
        config = run["config"]
        key = (config["model"]["family"], config["model"]["norm"], config["optim"]["lr"])
        groups.setdefault(key, []).append(run)
        lrs.setdefault(config["model"]["family"], set()).add(config["optim"]["lr"])
    return groups, {family: (min(v), max(v)) for family, v in lrs.items()}


def sweep_command(claim):
    """The demo-scale sweep that makes the runs `claim` needs (names as `make demo`'s)."""
    if claim.family == "dln":
        return ("python -m pipeline sweep configs/demo_dln.yaml --sweep-dir runs/demo/dln "
                f"--seeds 3 --grid model.norm={claim.reference},{claim.variant}")
    lrs = "0.1,0.5" if claim.lr == "high" else "0.1"
    return (f"python -m pipeline sweep configs/demo.yaml --sweep-dir runs/demo --seeds 3 "
            f"--grid optim.lr={lrs} --grid model.norm={claim.reference},{claim.variant}")


def matched_loss_range(runs_by_norm):
    """The training-loss range both variants pass through in the window: the overlap
    of [min, max] of the probe records' own loss (landscape/loss), or None."""
    ranges = []
    for runs in runs_by_norm.values():
        losses = [_window(_frame(r, "landscape"), r).get("landscape/loss", pd.Series(dtype=float))
                  for r in runs]
        losses = pd.concat(losses).dropna() if losses else pd.Series(dtype=float)
        if losses.empty:
            return None
        ranges.append((losses.min(), losses.max()))
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (float(low), float(high)) if low <= high else None


def evaluate_claim(claim, groups, lrs, rng):
    """The table row of `claim`."""
    row = {"claim": claim.text, "key": claim.key, "statistic": claim.statistic,
           "variant": claim.variant, "reference": claim.reference, "paper": claim.paper,
           "rule": RULES[claim.expect]}
    family_lrs = lrs.get(claim.family)
    needs_two_lrs = claim.lr == "high" and family_lrs and family_lrs[0] == family_lrs[1]
    lr = None if not family_lrs or needs_two_lrs else family_lrs[0 if claim.lr == "low" else 1]
    chosen = {norm: groups.get((claim.family, norm, lr), []) for norm in (claim.variant, claim.reference)}
    if lr is None or not all(chosen.values()):
        return {**row, "verdict": "missing runs", "command": sweep_command(claim)}
    def measured(**options):
        values = {norm: np.array([claim.measure(r, **options) for r in runs])
                  for norm, runs in chosen.items()}
        return {norm: v[np.isfinite(v)] for norm, v in values.items()}
    values = None
    if claim.matched:
        row["matched_loss_range"] = matched_loss_range(chosen)
        if row["matched_loss_range"] is not None:
            values = measured(loss_range=row["matched_loss_range"])
            if not all(len(v) for v in values.values()):  # no record of a variant in range
                row["matched_loss_range"], values = None, None
    values = values or measured()
    if not all(len(v) for v in values.values()):
        return {**row, "lr": lr, "verdict": "missing records",
                "command": sweep_command(claim) + " (with the probes the statistic needs)"}
    a, b = values[claim.variant], values[claim.reference]
    row.update(lr=lr, seeds=min(len(a), len(b)), variant_median=float(np.median(a)),
               reference_median=float(np.median(b)))
    row["ratio"] = row["variant_median"] / row["reference_median"] if row["reference_median"] else float("inf")
    if claim.paper_reading:
        row["paper_reading"] = {norm: float(np.median([claim.paper_reading(r) for r in runs]))
                                for norm, runs in chosen.items()}
    if row["seeds"] < 2:
        return {**row, "interval": None, "verdict": "inconclusive",
                "note": "one seed: no interval"}
    interval = bootstrap_ratio(a, b, rng)
    return {**row, "interval": [float(interval[0]), float(interval[1])],
            "verdict": verdict(claim.expect, interval)}


def claims_table(runs, claims=CLAIMS, seed=0):
    """One row (a dict) per claim, from runs as `pipeline.analysis.load_runs` gives them."""
    groups, lrs = _groups(runs)
    rng = np.random.default_rng(seed)
    return [evaluate_claim(claim, groups, lrs, rng) for claim in claims]


def format_claims(rows):
    """The table as text, one block per claim."""
    lines = []
    for row in rows:
        lines.append(f"{row['verdict'].upper():15s} {row['claim']}")
        if "ratio" in row:
            interval = (f"[{row['interval'][0]:.3g}, {row['interval'][1]:.3g}]"
                        if row.get("interval") else row.get("note", ""))
            lines.append(f"    {row['statistic']}, LR {row['lr']:g}, {row['seeds']} seed(s): "
                         f"{row['variant']} {row['variant_median']:.4g} vs {row['reference']} "
                         f"{row['reference_median']:.4g}, ratio {row['ratio']:.3g} {interval}")
        if row.get("matched_loss_range"):
            low, high = row["matched_loss_range"]
            lines.append(f"    at matched progress: probe steps with training loss in [{low:.3g}, {high:.3g}]")
        elif "matched_loss_range" in row:
            lines.append("    the training losses never overlap in the window: unmatched")
        if "paper_reading" in row:
            reading = ", ".join(f"{k} {v:.4g}" for k, v in row["paper_reading"].items())
            lines.append(f"    paper's reading (max over the curve): {reading}")
        lines.append(f"    paper: {row['paper']}")
        if "command" in row:
            lines.append(f"    to measure: {row['command']}")
    return "\n".join(lines)
