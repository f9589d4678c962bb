"""The paper's claims as verdicts over runs (`python -m pipeline claims RUNS... [--json]`).

One row per claim (per probed layer, for ICS; per learning rate where a claim says so),
measured as PROTOCOL.md section 8 says:
- a run-level statistic (steps to an accuracy, a final value, a shift): its median over
  seeds per variant, the ratio of the medians `variant / reference`, a 95 % bootstrap
  interval of that ratio over seeds and a two-sided rank test (Mann-Whitney U, exact);
- a probe statistic (ICS, landscape, curvature): compared at matched training loss
  (pipeline.matched), with the coverage of each loss bin, and the paper's own reading
  (the maximum over the curve, without step 0) beside it;
- a statistic of one variant against a fixed value (beyond the paper: the edge of
  stability), with a bootstrap interval of its median over seeds.
A verdict follows from the interval by the claim's written rule; a row whose runs or
records are missing says which command makes them.
"""

import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

from pipeline import matched
from pipeline.measures import (ICS_COSINE, ICS_L2, LANDSCAPE_LOSS, ProbeMeasure,
                               activation_shift, beta_over_curvature, edge_of_stability,
                               final_value, levels_passed, loss_band, paper_reading,
                               steps_to_accuracy)

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95
ABOUT_EQUAL = 1.5          # "about equal": within [1/1.5, 1.5]

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
    text: str                    # the claim in PROTOCOL.md's words
    family: str                  # "vgg" or "dln"
    variant: str                 # norm of the numerator (or the one variant measured)
    reference: Optional[str]     # norm of the denominator; None: compared with 1
    lr: object                   # "low" / "high" (smallest / largest LR of the runs), "each",
                                 # or one LR (a float)
    statistic: str               # what is measured per run
    measure: object              # run -> float, or a ProbeMeasure
    expect: str                  # a key of RULES
    paper: str                   # the paper's values, PROTOCOL.md section 6


MILESTONE = "steps to 90 % mini-batch training accuracy (centred 9-step average)"
CLAIMS = [
    Claim("bn_trains_faster", "BN trains faster", "vgg", "batch", "none", "low", MILESTONE,
          steps_to_accuracy(0.9), "smaller", "BN 1.6k vs standard 3.3k steps"),
    Claim("large_lr", "at the large LR the standard network fails while BN trains", "vgg",
          "batch", "none", "high", "final mini-batch training accuracy (median, last 10 %)",
          final_value("train", "train/accuracy"), "larger",
          "test accuracy BN 80.1 % vs standard 10 % (LR 0.5)"),
    Claim("noisy_bn_trains_like_bn", "noisy BN trains about as fast as BN", "vgg",
          "noisy_batch", "batch", "low", MILESTONE, steps_to_accuracy(0.9), "about equal",
          "noisy BN 2.4k vs BN 1.6k steps"),
    Claim("noisy_bn_shifts_more", "... although its activations shift more", "vgg",
          "noisy_batch", "batch", "low",
          "mean change of per-channel activation means between probe steps (Fig 8)",
          activation_shift, "larger", "larger shift for noisy BN (Fig 2, 7)"),
    Claim("ics_l2_not_smaller", "ICS (l2) is not smaller with BN", "vgg", "batch", "none",
          "low", "||G - G'||", ICS_L2, "not smaller", "as large or larger with BN (Fig 3)"),
    Claim("ics_cosine_not_larger", "ICS (cosine) is not smaller with BN: cos(G, G') not "
          "closer to 1", "vgg", "batch", "none", "low", "1 - cos(G, G')", ICS_COSINE,
          "not smaller", "cosine as low or lower with BN (Fig 3)"),
    Claim("loss_band_narrower", "the loss band is narrower with BN", "vgg", "batch", "none",
          "low", "loss_max - loss_min along the gradient",
          ProbeMeasure("landscape", loss_band, LANDSCAPE_LOSS), "smaller", "max ~9.7 vs <= 2.7"),
    Claim("gradient_change_smaller", "gradient change is smaller with BN", "vgg", "batch",
          "none", "low", "max over step sizes of ||grad(theta - eta g) - g||",
          ProbeMeasure("landscape", lambda f: f["landscape/grad_change_max"], LANDSCAPE_LOSS),
          "smaller", "max ~255 vs ~38"),
    Claim("beta_smaller", "the effective beta is smaller with BN", "vgg", "batch", "none", "low",
          "effective beta-smoothness",
          ProbeMeasure("landscape", lambda f: f["landscape/beta_max"], LANDSCAPE_LOSS),
          "smaller", "max ~46 vs ~20"),
    *[Claim(f"{p}_trains_like_bn", f"{p} normalization trains like BN", "vgg", p, "batch",
            "low", MILESTONE, steps_to_accuracy(0.9), "about equal", "l1, l2, linf ~ BN")
      for p in ("l1", "l2", "linf")],
    *[Claim(f"dln_{p}_more_levels", f"on the DLN, {name} gets further down the loss plateaus "
            "than standard", "dln", p, "none", 1e-6,
            "rank-k fit levels passed by the end (plateau-aware)", levels_passed, "larger", paper)
      for p, name, paper in (("batch", "BN", "final loss 4.75e2 vs 1.65e3 (LR 1e-6)"),
                             ("l1", "l1", "final loss 96 vs 1.65e3 (LR 1e-6)"))],
    Claim("dln_ics_cosine", "on the DLN, BN makes G and G' far less aligned (cosine not "
          "closer to 1)", "dln", "batch", "none", "each", "1 - cos(G, G')", ICS_COSINE,
          "not smaller", "standard cos ~ 1, BN far from 1 (Fig 3, layers #9, #17)"),
    Claim("curvature_smaller", "ours: the top Hessian eigenvalue is smaller with BN", "vgg",
          "batch", "none", "low", "|top Hessian eigenvalue|",
          ProbeMeasure("curvature", lambda f: np.abs(f["curvature/top_eigenvalue"]),
                       "curvature/loss"), "smaller", "not measured by the paper"),
    *[Claim(f"edge_of_stability_{p}", f"ours: {name} trains at the edge of stability (top "
            "eigenvalue reaches 2/LR)", "vgg", p, None, "low",
            "|top Hessian eigenvalue| in units of 2/LR, median over the second half of the run",
            edge_of_stability,
            "about equal", "not measured by the paper (Cohen et al. 2021: ~1 for full-batch GD)")
      for p, name in (("none", "the standard network"), ("batch", "BN"))],
    *[Claim(f"beta_is_curvature_{p}", f"ours: {name}'s effective beta measures the curvature "
            "(beta ~ |top eigenvalue|)", "vgg", p, None, "low",
            "effective beta / |top Hessian eigenvalue| at the same steps", beta_over_curvature,
            "about equal", "BN's beta sits at 1/(smallest step) = 20 (PROTOCOL.md section 4)")
      for p, name in (("none", "the standard network"), ("batch", "BN"))],
]


def bootstrap_ratio(variant, reference, rng, resamples=BOOTSTRAP_RESAMPLES, level=LEVEL):
    """Percentile interval of median(variant) / median(reference), seeds resampled with
    replacement within each group (`reference` None: of median(variant) alone)."""
    variant = np.asarray(variant, float)
    a = np.median(rng.choice(variant, (resamples, len(variant))), axis=1)
    if reference is None:
        ratios = a
    else:
        reference = np.asarray(reference, float)
        b = np.median(rng.choice(reference, (resamples, len(reference))), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = a / b
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.nanpercentile(ratios, [tail, 100 - tail]))


def rank_test(a, b):
    """Two-sided Mann-Whitney U p-value (exact for small samples), or None."""
    from scipy.stats import mannwhitneyu
    if len(a) < 2 or len(b) < 2:
        return None
    return float(mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)


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
    """{(family, norm, lr): [run, ...]} and the sorted LRs of each family."""
    groups, lrs = {}, {}
    for run in runs:
        config = run["config"]
        key = (config["model"]["family"], config["model"]["norm"], config["optim"]["lr"])
        groups.setdefault(key, []).append(run)
        lrs.setdefault(config["model"]["family"], set()).add(config["optim"]["lr"])
    return groups, {family: sorted(v) for family, v in lrs.items()}


def _claim_lrs(claim, lrs):
    """The LRs a claim is read at; [] if the runs do not have them."""
    family_lrs = lrs.get(claim.family, [])
    if isinstance(claim.lr, float):
        return [claim.lr] if claim.lr in family_lrs else []
    if not family_lrs or (claim.lr == "high" and len(family_lrs) < 2):
        return []  # "the large LR" needs a small one beside it
    return {"low": family_lrs[:1], "high": family_lrs[-1:], "each": family_lrs}[claim.lr]


def _run_level_row(claim, chosen, rng):
    values = {norm: np.array([claim.measure(r) for r in runs]) for norm, runs in chosen.items()}
    values = {norm: v[np.isfinite(v)] for norm, v in values.items()}
    if not all(len(v) for v in values.values()):
        return {"verdict": "missing records", "command": "make demo (the runs with the probes "
                "this statistic needs)"}
    a = values[claim.variant]
    row = {"seeds": len(a), "variant_median": float(np.median(a))}
    if claim.reference is not None:
        b = values[claim.reference]
        row.update(seeds=min(len(a), len(b)), reference_median=float(np.median(b)),
                   p_value=rank_test(a, b))
        row["ratio"] = row["variant_median"] / row["reference_median"] if row[
            "reference_median"] else float("inf")
    else:
        row["ratio"] = row["variant_median"]
    if row["seeds"] < 2:
        return {**row, "interval": None, "verdict": "inconclusive", "note": "one seed: no interval"}
    interval = bootstrap_ratio(a, None if claim.reference is None else values[claim.reference], rng)
    return {**row, "interval": list(interval), "verdict": verdict(claim.expect, interval)}


def _probe_rows(claim, chosen, rng):
    """The rows of a probe claim at one LR: one per layer the variant's runs probed (one
    in all for a stream without layers), each compared at matched training loss."""
    frames = {norm: pd.concat([claim.measure.records(r) for r in runs], ignore_index=True)
              for norm, runs in chosen.items()}
    if any(frame.empty for frame in frames.values()):
        return [{"verdict": "missing records", "command": "make demo (the runs with the "
                 f"{claim.measure.stream} probe on)"}]
    if not claim.measure.per_layer:
        return [_probe_row(claim, frames, rng)]
    layers = sorted(frames[claim.variant]["layer"].dropna().astype(int).unique())
    return [{"layer": layer, "claim": f"{claim.text}, layer #{layer}",
             **_probe_row(claim, {norm: f[f["layer"] == layer] for norm, f in frames.items()},
                          rng)} for layer in layers]


def _probe_row(claim, frames, rng):
    compared = matched.compare(frames[claim.variant], frames[claim.reference], rng,
                               BOOTSTRAP_RESAMPLES, LEVEL)
    row = {"seeds": min(frame["seed"].nunique() for frame in frames.values()),
           "coverage": {f"{matched.bin_range(b)[0]:.3g}-{matched.bin_range(b)[1]:.3g}": dict(counts)
                        for b, counts in compared["coverage"].rename(
                            columns={"variant": claim.variant, "reference": claim.reference}
                        ).iterrows()},
           "matched_bins": [{"loss_range": list(b["loss_range"]), "ratio": b["ratio"],
                             "interval": list(b["interval"]),
                             "verdict": verdict(claim.expect, b["interval"])}
                            for b in compared["bins"]],
           "paper_reading": {norm: paper_reading(frame) for norm, frame in frames.items()}}
    if "reason" in compared:
        return {**row, "verdict": "inconclusive", "note": compared["reason"]}
    row.update(ratio=compared["ratio"], interval=list(compared["interval"]))
    return {**row, **combined_verdict(claim.expect, compared["interval"], row["matched_bins"])}


def combined_verdict(expect, interval, bins):
    """The verdict of a matched comparison: the whole's verdict by the rule, unless the
    bins' own ratios point opposite ways (the claim holding in one loss range and failing
    in another): then inconclusive, saying where each holds. A mean over bins that go
    opposite ways would be decided by the most extreme bin."""
    sides = {}
    for b in bins:
        where = f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g} ({b['verdict']})"
        sides.setdefault(verdict(expect, (b["ratio"], b["ratio"])), []).append(where)
    if len(sides) > 1:
        return {"verdict": "inconclusive", "note": (
            f"the loss bins disagree: the claim holds at training loss "
            f"{', '.join(sides['reproduced'])} and fails at {', '.join(sides['not reproduced'])}")}
    return {"verdict": verdict(expect, interval)}


def evaluate_claim(claim, groups, lrs, rng):
    """The table rows of `claim` (one per LR it is read at, and per probed layer)."""
    base = {"claim": claim.text, "key": claim.key, "statistic": claim.statistic,
            "variant": claim.variant, "reference": claim.reference, "paper": claim.paper,
            "rule": RULES[claim.expect]}
    norms = [n for n in (claim.variant, claim.reference) if n is not None]
    rows = []
    for lr in _claim_lrs(claim, lrs) or [None]:
        chosen = {norm: groups.get((claim.family, norm, lr), []) for norm in norms}
        if lr is None or not all(chosen.values()):
            rows.append({**base, "verdict": "missing runs", "command": "make demo"})
            continue
        if not isinstance(claim.measure, ProbeMeasure):
            rows.append({**base, "lr": lr, **_run_level_row(claim, chosen, rng)})
            continue
        rows += [{**base, "lr": lr, **row} for row in _probe_rows(claim, chosen, rng)]
    return rows


def claims_table(runs, claims=CLAIMS, seed=0):
    """The table rows (dicts), from runs as `pipeline.analysis.load_runs` gives them."""
    groups, lrs = _groups(runs)
    rng = np.random.default_rng(seed)
    return [row for claim in claims for row in evaluate_claim(claim, groups, lrs, rng)]


def _format_interval(row):
    if row.get("interval"):
        return f"[{row['interval'][0]:.3g}, {row['interval'][1]:.3g}]"
    return row.get("note", "")


def format_claims(rows):
    """The table as text, one block per row."""
    lines = []
    for row in rows:
        verdict_text = row["verdict"].upper() + (": " + row["note"] if "note" in row and
                                                 row["verdict"] == "inconclusive" else "")
        lines.append(f"{row['claim']}\n  -> {verdict_text}")
        where = f"LR {row['lr']:g}, {row.get('seeds', 0)} seed(s) per variant" if "lr" in row else ""
        if "coverage" in row:
            ratio = (f": ratio {row['ratio']:.3g} {_format_interval(row)}" if "ratio" in row else "")
            lines.append(f"    {row['statistic']} at matched training loss, {where}{ratio}")
            bins = ", ".join(f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g}: {b['ratio']:.3g} "
                             f"[{b['interval'][0]:.3g}, {b['interval'][1]:.3g}]"
                             for b in row["matched_bins"])
            lines.append(f"    per loss bin (variant / reference): {bins or 'no bin matched'}")
            cover = "; ".join(f"{k} {' | '.join(f'{n} {c}' for n, c in v.items())}"
                              for k, v in row["coverage"].items())
            lines.append(f"    coverage (seeds/records per loss bin): {cover}")
            reading = ", ".join(f"{k} {v:.4g}" for k, v in row["paper_reading"].items())
            lines.append(f"    paper's reading (max over the curve, after step 0): {reading}")
        elif "ratio" in row:
            if row["reference"] is None:
                lines.append(f"    {row['statistic']}, {where}: {row['variant']} median "
                             f"{row['variant_median']:.4g} {_format_interval(row)}")
            else:
                p = f", rank test p = {row['p_value']:.3g}" if row.get("p_value") is not None else ""
                lines.append(f"    {row['statistic']}, {where}: {row['variant']} "
                             f"{row['variant_median']:.4g} vs {row['reference']} "
                             f"{row['reference_median']:.4g}, ratio {row['ratio']:.3g} "
                             f"{_format_interval(row)}{p}")
        lines.append(f"    paper: {row['paper']}")
        if "command" in row:
            lines.append(f"    to measure: {row['command']}")
    return "\n".join(lines)
