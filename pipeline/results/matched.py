"""Comparing two variants' probe statistics at matched training progress (PROTOCOL.md
section 8).

A network that has converged is trivially smooth and shift-free, so a probe statistic
(ICS, landscape, curvature) is compared between variants only where both have the same
training loss: every probe record carries the loss of its own step, records are binned
by that loss (`BINS_PER_DECADE` log bins a decade), and a bin counts when each variant
has records from at least `MIN_SEEDS` seeds in it. Within such a bin each seed gives
the median of its records, each variant the median over its seeds, and the bin the
ratio variant / reference; the comparison is the geometric mean of the bins' ratios,
with a bootstrap interval over seeds (each variant's seeds resampled with replacement,
once per draw for every bin). Every draw keeps the same bins: a bin that a draw leaves
without a seed of one variant draws that bin's own seeds again, so the interval is not
a mixture of comparisons over different bins. Fewer than `MIN_BINS` matched bins is
"too few matched records", never a verdict. Step 0 is left out: at initialization no
network has trained, and BN's loss band there (~5 against ~0.02) would decide a bin on
its own. Which records enter (the training regime) is the caller's choice.
"""

import warnings

import numpy as np
import pandas as pd

BINS_PER_DECADE = 2
MIN_SEEDS = 3       # seeds of each variant with records in a bin, for it to count
MIN_BINS = 2        # matched bins, for a comparison to be made


def loss_bin(loss):
    """The log bin of a training loss: bin b holds [10^(b/B), 10^((b+1)/B)), B = BINS_PER_DECADE."""
    return np.floor(np.log10(np.asarray(loss, float)) * BINS_PER_DECADE).astype(int)


def bin_range(index):
    return 10 ** (index / BINS_PER_DECADE), 10 ** ((index + 1) / BINS_PER_DECADE)


def _clean(frame):
    """Records that can be binned: after step 0, finite positive loss, finite value."""
    frame = frame.astype({"step": float, "loss": float, "value": float})
    frame = frame[(frame["step"] > 0) & np.isfinite(frame["loss"]) & (frame["loss"] > 0)
                  & np.isfinite(frame["value"])]
    return frame.assign(bin=loss_bin(frame["loss"]))


def coverage(frames):
    """Per bin (rows, in decreasing loss) and variant: 'seeds/records' in that bin."""
    counts = {}
    for norm, frame in frames.items():
        grouped = frame.groupby("bin")
        counts[norm] = grouped["seed"].nunique().astype(str) + "/" + grouped.size().astype(str)
    table = pd.DataFrame(counts).fillna("0/0").sort_index(ascending=False)
    return table


def _per_seed_medians(frame):
    """{bin: {seed: median value}}."""
    medians = frame.groupby(["bin", "seed"])["value"].median()
    result = {}
    for (bin_index, seed), value in medians.items():
        result.setdefault(bin_index, {})[seed] = value
    return result


def _log_ratios(per_seed, bins, seeds, rng=None):
    """Per bin of `bins`: log(median over the variant's `seeds[0]`) - log(median over the
    reference's `seeds[1]`) of the per-seed medians. Where the given seeds leave a bin
    without a seed of one variant, that bin's own seeds are drawn again (with `rng`,
    a bootstrap draw), so every draw has a value for every bin."""
    logs = np.empty(len(bins))
    for k, index in enumerate(bins):
        medians = []
        for values, drawn in zip(per_seed, seeds):
            chosen = [values[index][s] for s in drawn if s in values[index]]
            if not chosen:  # only in a bootstrap draw: every matched bin has seeds
                own = list(values[index].values())
                chosen = list(rng.choice(own, len(own)))
            medians.append(np.median(chosen))
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[k] = np.log(medians[0]) - np.log(medians[1])
    return logs


def _geometric_mean(logs, axis=None):
    """exp(mean of the finite-or-infinite logs), ignoring NaN (NaN if all are)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: NaN
        return np.exp(np.nanmean(logs, axis=axis))


def compare(variant_frame, reference_frame, rng, resamples=2000, level=0.95):
    """Compare two variants' records (frames with columns seed, step, loss, value).

    Returns a dict: `coverage` (seeds/records per bin and variant, every bin), and either
    `bins` (the matched bins, highest loss first, each with its loss range, ratio and
    interval), `ratio` and `interval` (the geometric mean over the bins), or `reason`
    when too few bins match."""
    frames = {"variant": _clean(variant_frame), "reference": _clean(reference_frame)}
    table = coverage(frames)
    per_seed = [_per_seed_medians(frames["variant"]), _per_seed_medians(frames["reference"])]
    matched = [index for index in sorted(set(per_seed[0]) & set(per_seed[1]), reverse=True)
               if min(len(per_seed[0][index]), len(per_seed[1][index])) >= MIN_SEEDS]
    if len(matched) < MIN_BINS:
        return {"coverage": table, "bins": [],
                "reason": f"too few matched records ({len(matched)} loss bin(s) with >= "
                          f"{MIN_SEEDS} seeds of each variant; {MIN_BINS} needed): more "
                          "seeds, or probes where both variants pass the same losses"}
    seeds = [np.array(sorted(f["seed"].unique())) for f in frames.values()]
    point = _log_ratios(per_seed, matched, seeds)
    # (resamples, bins): each draw resamples each variant's seeds once, for every bin.
    draws = np.array([_log_ratios(per_seed, matched, [rng.choice(s, len(s)) for s in seeds], rng)
                      for _ in range(resamples)])
    tail = (1 - level) / 2 * 100

    def interval(values):
        return tuple(float(v) for v in np.nanpercentile(values, [tail, 100 - tail]))
    bins = [{"bin": int(index), "loss_range": bin_range(index), "ratio": float(np.exp(point[k])),
             "interval": interval(np.exp(draws[:, k]))} for k, index in enumerate(matched)]
    return {"coverage": table, "bins": bins, "ratio": float(_geometric_mean(point)),
            "interval": interval(_geometric_mean(draws, axis=1))}
