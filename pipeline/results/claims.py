"""The paper's claims as verdicts over runs (`python -m pipeline claims RUNS... [--json]`).

One row per claim (per probed layer, for ICS; per learning rate where a claim says so),
measured as PROTOCOL.md section 8 says, and decided by the claim's rule
(pipeline.results.rules):
- a run-level statistic (steps to an accuracy, a final value, a shift): its median over
  seeds per variant, the ratio of the medians `variant / reference`, a 95 % bootstrap
  interval of that ratio over seeds and a two-sided rank test (Mann-Whitney U, exact);
- a probe statistic (ICS, landscape, curvature): compared at matched training loss
  (pipeline.results.matched) in the training regime, with the coverage of each loss bin, and
  the paper's own reading (the maximum over the curve, without step 0) beside it; the
  initial transient has rows of its own;
- "trains like BN": the share of BN's speed-up kept and the test accuracy against BN's;
- the DLN: a statistic of the whole loss curve, paired by seed (signed-rank test);
- a statistic of one variant against a fixed value (beyond the paper: the edge of
  stability), with a bootstrap interval of its median over seeds.
A row whose runs or records are missing says which command makes them.
"""

import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.results import matched, rules
from pipeline.results.claim_row import ClaimRow
from pipeline.results.measures import (BETA, CURVATURE, GRAD_CHANGE, ICS_COSINE, ICS_L2, ICS_RELATIVE,
                               LOSS_BAND, RELATIVE_GRAD_CHANGE, ProbeMeasure, activation_shift,
                               beta_over_curvature, edge_of_stability, final_value,
                               levels_passed, mean_log_loss, paper_reading, steps_to_accuracy,
                               test_accuracies, training_regime, transient_median)
from pipeline.results.rules import RULES, verdict


@dataclasses.dataclass(frozen=True)
class TrainsLikeBN:
    """The measure of a "trains like BN" claim: the share of BN's speed-up over the
    standard network kept (steps to `level` accuracy) and the test accuracy against BN's."""
    level: float = 0.9


@dataclasses.dataclass(frozen=True)
class Paired:
    """A run-level statistic compared between runs of the same seed (the DLN: same data,
    same initial kernels); `shown` adds medians of other statistics beside it."""
    measure: object
    shown: tuple = ()


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
    measure: object              # run -> float, a ProbeMeasure, TrainsLikeBN or Paired
    expect: str                  # a key of RULES
    paper: str                   # the paper's values, PROTOCOL.md section 6
    headline: bool = False       # one of the paper's headline claims (the report's summary)


MILESTONE = "steps to 90 % mini-batch training accuracy (centred 9-step average)"
LIKE_BN = ("share of BN's speed-up kept (steps to 90 %) and test accuracy minus BN's")
DLN_CURVE = "geometric-mean training loss over the run, paired by seed (variant / standard)"
DLN_SHOWN = (("final loss", final_value("train", "train/loss")),
             ("rank-k levels passed", levels_passed))


# VGG: BN against the standard network at the smallest LR of the runs.
BN_VGG = dict(family="vgg", variant="batch", reference="none", lr="low")


def _landscape(key, text, statistic, measure, paper, headline=False):
    """A landscape claim (BN smoother than standard) and its initial-transient row."""
    return [Claim(key=key, text=text, **BN_VGG, statistic=statistic, measure=measure,
                  expect="smaller", paper=paper, headline=headline),
            Claim(key=f"{key}_transient",
                  text=f"beyond the paper: BN is rougher during its first 5 % of steps "
                       f"({statistic})",
                  **BN_VGG,
                  statistic=f"median of {statistic} over the initial transient (steps 1 to "
                            "5 % of the run)",
                  measure=transient_median(measure), expect="larger",
                  paper="not measured by the paper")]


CLAIMS = [
    Claim(key="bn_trains_faster", text="BN trains faster", **BN_VGG, statistic=MILESTONE,
          measure=steps_to_accuracy(0.9), expect="smaller",
          paper="BN 1.6k vs standard 3.3k steps", headline=True),
    Claim(key="large_lr", text="at the large LR the standard network fails while BN trains",
          **{**BN_VGG, "lr": "high"},
          statistic="final mini-batch training accuracy (median, last 10 %)",
          measure=final_value("train", "train/accuracy"), expect="larger",
          paper="test accuracy BN 80.1 % vs standard 10 % (LR 0.5)", headline=True),
    Claim(key="noisy_bn_trains_like_bn", text="noisy BN trains like BN", family="vgg",
          variant="noisy_batch", reference="batch", lr="low", statistic=LIKE_BN,
          measure=TrainsLikeBN(), expect="keeps speed-up",
          paper="noisy BN 2.4k, BN 1.6k, standard 3.3k steps to 90 % (keeps 44 %); test "
                "accuracy about BN's", headline=True),
    Claim(key="noisy_bn_shifts_more", text="... although its activations shift more",
          family="vgg", variant="noisy_batch", reference="batch", lr="low",
          statistic="mean change of per-channel activation means between probe steps (Fig 8)",
          measure=activation_shift, expect="larger",
          paper="larger shift for noisy BN (Fig 2, 7)", headline=True),
    Claim(key="ics_l2_not_smaller", text="ICS (l2) is not smaller with BN", **BN_VGG,
          statistic="||G - G'||", measure=ICS_L2, expect="not smaller",
          paper="as large or larger with BN (Fig 3)", headline=True),
    Claim(key="ics_cosine_not_larger",
          text="ICS (cosine) is not smaller with BN: cos(G, G') not closer to 1", **BN_VGG,
          statistic="1 - cos(G, G')", measure=ICS_COSINE, expect="not smaller",
          paper="cosine as low or lower with BN (Fig 3)", headline=True),
    Claim(key="ics_relative_not_smaller",
          text="ICS relative to the gradient is not smaller with BN", **BN_VGG,
          statistic="||G - G'|| / ||G||", measure=ICS_RELATIVE, expect="not smaller",
          paper="not measured by the paper (scale-free)"),
    *_landscape("loss_band_narrower", "the loss band is narrower with BN",
                "loss_max - loss_min along the gradient", LOSS_BAND, "max ~9.7 vs <= 2.7", True),
    *_landscape("gradient_change_smaller", "gradient change is smaller with BN",
                "max over step sizes of ||grad(theta - eta g) - g||", GRAD_CHANGE,
                "max ~255 vs ~38", True),
    Claim(key="gradient_change_relative_smaller",
          text="gradient change relative to the gradient is smaller with BN", **BN_VGG,
          statistic="max over step sizes of ||grad(theta - eta g) - g|| / ||g||",
          measure=RELATIVE_GRAD_CHANGE, expect="smaller",
          paper="not measured by the paper (scale-free)"),
    *_landscape("beta_smaller", "the effective beta is smaller with BN",
                "effective beta-smoothness (grid down to LR/16)", BETA, "max ~46 vs ~20", True),
    *[Claim(key=f"{p}_trains_like_bn", text=f"{p} normalization trains like BN", family="vgg",
            variant=p, reference="batch", lr="low", statistic=LIKE_BN, measure=TrainsLikeBN(),
            expect="keeps speed-up", paper="l1, l2, linf ~ BN")
      for p in ("l1", "l2", "linf")],
    *[Claim(key=f"dln_{p}_lower_loss", text=f"on the DLN, {name} trains to lower loss than "
            "standard", family="dln", variant=p, reference="none", lr=lr, statistic=DLN_CURVE,
            measure=Paired(mean_log_loss, DLN_SHOWN), expect="smaller", paper=paper,
            headline=True)
      for p, name, lr, paper in (
          ("batch", "BN", "each", "final loss 4.75e2 vs 1.65e3 (LR 1e-6)"),
          ("l1", "l1", 1e-6, "final loss 96 vs 1.65e3 (LR 1e-6)"))],
    Claim(key="dln_batch_ics_cosine",
          text="on the DLN, BN makes G and G' far less aligned (1 - cos larger)", family="dln",
          variant="batch", reference="none", lr="each", statistic="1 - cos(G, G')",
          measure=ICS_COSINE, expect="larger",
          paper="standard cos ~ 1, BN far from 1 (Fig 3, layers #9, #17)", headline=True),
    Claim(key="dln_batch_curvature_smaller",
          text="beyond the paper: on the DLN, the top Hessian eigenvalue is smaller with BN",
          family="dln", variant="batch", reference="none", lr=1e-6,
          statistic="|top Hessian eigenvalue|", measure=CURVATURE, expect="smaller",
          paper="not measured by the paper"),
    *[Claim(key=f"dln_edge_of_stability_{p}",
            text=f"beyond the paper: on the DLN, {name} trains at the edge of stability (top "
                 "eigenvalue ~ 2/LR)", family="dln", variant=p, reference=None, lr=1e-6,
            statistic="|top Hessian eigenvalue| in units of 2/LR, median over the second half "
                      "of the run",
            measure=edge_of_stability, expect="about equal",
            paper="not measured by the paper (Cohen et al. 2021: ~1 for full-batch GD)")
      for p, name in (("none", "the standard network"), ("batch", "BN"))],
    *[Claim(key=f"dln_beta_is_curvature_{p}",
            text=f"beyond the paper: on the DLN, {name}'s effective beta measures the "
                 "curvature (beta ~ |top eigenvalue|)", family="dln", variant=p,
            reference=None, lr=1e-6,
            statistic="effective beta / |top Hessian eigenvalue| at the same steps",
            measure=beta_over_curvature, expect="about equal",
            paper="the paper's VGG beta sits at 1/(smallest step) (PROTOCOL.md section 4)")
      for p, name in (("none", "the standard network"), ("batch", "BN"))],
]
HEADLINE = [claim.key for claim in CLAIMS if claim.headline]


def _groups(runs):
    """{(family, norm, lr): [run, ...]} and the sorted LRs of each family."""
    groups, lrs = {}, {}
    for run in runs:
        groups.setdefault((run.family, run.norm, run.lr), []).append(run)
        lrs.setdefault(run.family, set()).add(run.lr)
    return groups, {family: sorted(v) for family, v in lrs.items()}


def _claim_lrs(claim, lrs):
    """The LRs a claim is read at; [] if the runs do not have them."""
    family_lrs = lrs.get(claim.family, [])
    if isinstance(claim.lr, float):
        return [claim.lr] if claim.lr in family_lrs else []
    if not family_lrs or (claim.lr == "high" and len(family_lrs) < 2):
        return []  # "the large LR" needs a small one beside it
    return {"low": family_lrs[:1], "high": family_lrs[-1:], "each": family_lrs}[claim.lr]


def _finite(values):
    values = np.asarray(values, float)
    return values[np.isfinite(values)]


def _run_level_row(claim, chosen, rng):
    values = {norm: _finite([claim.measure(r) for r in runs]) for norm, runs in chosen.items()}
    if not all(len(v) for v in values.values()):
        return {"verdict": "missing records", "command": "make demo (the runs with the probes "
                "this statistic needs)"}
    a = values[claim.variant]
    row = {"seeds": len(a), "variant_median": float(np.median(a))}
    if claim.reference is not None:
        b = values[claim.reference]
        row.update(seeds=min(len(a), len(b)), reference_median=float(np.median(b)),
                   p_value=rules.rank_test(a, b))
        row["ratio"] = row["variant_median"] / row["reference_median"] if row[
            "reference_median"] else float("inf")
    else:
        row["ratio"] = row["variant_median"]
    if row["seeds"] < 2:
        return {**row, "interval": None, "verdict": "inconclusive", "note": "one seed: no interval"}
    interval = rules.bootstrap_ratio(a, None if claim.reference is None else values[claim.reference],
                                     rng)
    return {**row, "interval": list(interval), "verdict": verdict(claim.expect, interval)}


def speedup_kept(t_standard, t_variant, t_bn):
    """K = log(T_standard / T_variant) / log(T_standard / T_BN) (NaN where BN has no
    speed-up to keep); broadcasts over bootstrap draws."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log(np.divide(t_standard, t_bn))
        return np.where(gain > 0, np.log(np.divide(t_standard, t_variant)) / gain, np.nan)


def _accuracy_at_common_step(runs_by_norm):
    """{norm: [test accuracy of each run]} at the last step every run evaluated, and it."""
    accuracies = {norm: [test_accuracies(r) for r in runs] for norm, runs in runs_by_norm.items()}
    steps = set.intersection(*[set(a) for runs in accuracies.values() for a in runs])
    if not steps:
        return None, None
    step = max(steps)
    return {norm: np.array([a[step] for a in runs]) for norm, runs in accuracies.items()}, step


def _trains_like_bn_row(claim, chosen, standard, rng):
    if not standard:
        return {"verdict": "missing runs", "command": "make demo (the standard network's runs "
                "at this LR)"}
    measure = steps_to_accuracy(claim.measure.level)
    steps = {"variant": _finite([measure(r) for r in chosen[claim.variant]]),
             "batch": _finite([measure(r) for r in chosen["batch"]]),
             "none": _finite([measure(r) for r in standard])}
    medians = {k: float(np.median(v)) for k, v in steps.items()}
    kept = float(speedup_kept(medians["none"], medians["variant"], medians["batch"]))
    draws = {k: rules.resample_medians(v, rng) for k, v in steps.items()}
    kept_interval = rules.percentile_interval(speedup_kept(draws["none"], draws["variant"],
                                                           draws["batch"]))
    row = {"seeds": min(len(v) for v in steps.values()), "steps_medians": medians,
           "ratio": kept, "interval": list(kept_interval),
           "parts": {"keeps speed-up": verdict("keeps speed-up", kept_interval)}}
    accuracy, step = _accuracy_at_common_step({"variant": chosen[claim.variant],
                                               "batch": chosen["batch"]})
    if accuracy is None:
        row["parts"]["accuracy near BN"] = "inconclusive"
        row["note"] = "no evaluation step common to the runs: test accuracy not compared"
    else:
        difference = float(np.median(accuracy["variant"]) - np.median(accuracy["batch"]))
        draws = (rules.resample_medians(accuracy["variant"], rng)
                 - rules.resample_medians(accuracy["batch"], rng))
        interval = rules.percentile_interval(draws)
        row.update(accuracy_step=step, accuracy_difference=difference,
                   accuracy_interval=list(interval),
                   accuracy_medians={claim.variant: float(np.median(accuracy["variant"])),
                                     "batch": float(np.median(accuracy["batch"]))})
        row["parts"]["accuracy near BN"] = verdict("accuracy near BN", interval)
    return {**row, "verdict": rules.both(*row["parts"].values())}


def _paired_row(claim, chosen, rng):
    by_seed = {norm: {r.seed: r for r in runs} for norm, runs in chosen.items()}
    seeds = sorted(set(by_seed[claim.variant]) & set(by_seed[claim.reference]))
    log10 = {norm: np.array([claim.measure.measure(by_seed[norm][s]) for s in seeds])
             for norm in (claim.variant, claim.reference)}
    differences = log10[claim.variant] - log10[claim.reference]
    differences = differences[np.isfinite(differences)]
    shown = {name: {norm: float(np.median([measure(r) for r in runs]))
                    for norm, runs in chosen.items()} for name, measure in claim.measure.shown}
    row = {"seeds": len(differences), "pairs": len(differences), "shown": shown}
    if len(differences) < 2:
        return {**row, "verdict": "inconclusive", "note": f"{len(differences)} seed pair(s) "
                "with both variants: run the same seeds of both (make demo)"}
    draws = rng.choice(differences, (rules.BOOTSTRAP_RESAMPLES, len(differences))).mean(axis=1)
    interval = [float(10 ** v) for v in rules.percentile_interval(draws)]
    return {**row, "ratio": float(10 ** differences.mean()), "interval": interval,
            "p_value": rules.signed_rank_test(differences),
            "verdict": verdict(claim.expect, interval)}


def _probe_rows(claim, chosen, rng):
    """The rows of a probe claim at one LR: one per layer the variant's runs probed (one
    in all for a stream without layers), each compared at matched training loss."""
    frames = {norm: pd.concat([claim.measure.records(r) for r in runs], ignore_index=True)
              for norm, runs in chosen.items()}
    if any(frame.empty for frame in frames.values()):
        return [{"verdict": "missing records", "command": "make demo (the runs with the "
                 f"{claim.measure.stream} probe on)"}]
    paper = {norm: pd.concat([claim.measure.records(r, paper=True) for r in runs],
                             ignore_index=True) for norm, runs in chosen.items()}
    if not claim.measure.per_layer:
        return [_probe_row(claim, frames, paper, rng)]
    layers = sorted(frames[claim.variant]["layer"].dropna().astype(int).unique())

    def of_layer(frames, layer):
        return {norm: f[f["layer"] == layer] for norm, f in frames.items()}
    return [{"layer": int(layer), "claim": f"{claim.text}, layer #{layer}",
             **_probe_row(claim, of_layer(frames, layer), of_layer(paper, layer), rng)}
            for layer in layers]


def _probe_row(claim, frames, paper, rng):
    frames = {norm: training_regime(frame) for norm, frame in frames.items()}
    compared = matched.compare(frames[claim.variant], frames[claim.reference], rng,
                               rules.BOOTSTRAP_RESAMPLES, rules.LEVEL)
    names = {"variant": claim.variant, "reference": claim.reference}
    row = {"seeds": min(frame["seed"].nunique() for frame in frames.values()),
           "coverage": {f"{matched.bin_range(b)[0]:.3g}-{matched.bin_range(b)[1]:.3g}": dict(counts)
                        for b, counts in compared["coverage"].rename(columns=names).iterrows()},
           "matched_bins": [{"loss_range": list(b["loss_range"]), "ratio": b["ratio"],
                             "interval": list(b["interval"]),
                             "verdict": verdict(claim.expect, b["interval"])}
                            for b in compared["bins"]],
           "paper_reading": {norm: paper_reading(frame) for norm, frame in paper.items()}}
    if "reason" in compared:
        return {**row, "verdict": "inconclusive", "note": compared["reason"]}
    row.update(ratio=compared["ratio"], interval=list(compared["interval"]),
               verdict=verdict(claim.expect, compared["interval"]))
    against = [b for b in row["matched_bins"] if b["verdict"] not in (row["verdict"], "inconclusive")]
    if against and row["verdict"] != "inconclusive":
        row["note"] = "loss bin(s) where the interval says otherwise: " + ", ".join(
            f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g} ({b['verdict']})" for b in against)
    return row


def _of_one_length(claim, runs):
    """The runs of one variant at one LR that `claim` reads, all of one length (PROTOCOL.md
    section 8). A probe claim compares at matched training loss, which needs no equal
    lengths: it reads the longest runs that hold its probe's records (a longer run reaches
    losses the other variant passes). Every other claim reads the shortest runs, the length
    the plan gives every variant (the DLN's 10,000 steps), so that run-level statistics
    describe the same stretch of training."""
    if isinstance(claim.measure, ProbeMeasure):
        stream = claim.measure.stream
        runs = [r for r in runs if not r.records.get(stream, pd.DataFrame()).empty] or runs
        length = max((r.steps for r in runs), default=None)
    else:
        length = min((r.steps for r in runs), default=None)
    return [r for r in runs if r.steps == length]


def evaluate_claim(claim, groups, lrs, rng):
    """The table rows (`ClaimRow`) of `claim`: one per LR it is read at, and per probed
    layer."""
    base = {"claim": claim.text, "key": claim.key, "statistic": claim.statistic,
            "variant": claim.variant, "reference": claim.reference, "paper": claim.paper,
            "rule": RULES[claim.expect].text, "headline": claim.headline}
    norms = [n for n in (claim.variant, claim.reference) if n is not None]
    rows = []
    for lr in _claim_lrs(claim, lrs) or [None]:
        chosen = {norm: _of_one_length(claim, groups.get((claim.family, norm, lr), []))
                  for norm in norms}
        if lr is None or not all(chosen.values()):
            rows.append(ClaimRow.of("", {**base, "verdict": "missing runs",
                                         "command": "make demo"}))
            continue
        where = {**base, "lr": lr}
        if isinstance(claim.measure, ProbeMeasure):
            found = [("probe", row) for row in _probe_rows(claim, chosen, rng)]
        elif isinstance(claim.measure, TrainsLikeBN):
            standard = _of_one_length(claim, groups.get((claim.family, "none", lr), []))
            found = [("trains like BN", _trains_like_bn_row(claim, chosen, standard, rng))]
        elif isinstance(claim.measure, Paired):
            found = [("paired", _paired_row(claim, chosen, rng))]
        else:
            found = [("run level", _run_level_row(claim, chosen, rng))]
        rows += [ClaimRow.of(kind if "command" not in row else "", {**where, **row})
                 for kind, row in found]
    return rows


# An interval across its rule's boundary is thin evidence, not a finding either way.
UNDECIDED = ("the interval crosses the rule's boundary: more seeds (their number fixed "
             "before the runs, on both seed sets) would narrow it")


def _say_what_would_decide(row):
    if row.verdict == "inconclusive" and row.note is None:
        return dataclasses.replace(row, note=UNDECIDED)
    return row


def claims_table(runs, claims=CLAIMS, seed=0):
    """The table rows (`ClaimRow`s), from runs as `pipeline.results.analysis.load_runs`
    gives them."""
    groups, lrs = _groups(runs)
    rng = np.random.default_rng(seed)
    return [_say_what_would_decide(row)
            for claim in claims for row in evaluate_claim(claim, groups, lrs, rng)]
