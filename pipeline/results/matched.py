"""Comparing two variants' probe statistics at matched training progress (PROTOCOL.md
section 8).

A network that has converged is trivially smooth and shift-free, so a probe statistic
(ICS, landscape, curvature) is compared between variants only where both have the same
training loss: every probe record carries the loss of its own step, records are binned
by that loss (`BINS_PER_DECADE` log bins a decade), and a bin counts when each variant
has at least `MIN_RECORDS` records from each of at least `MIN_SEEDS` seeds in it (one
record of a seed passing through a bin is not a state it was in). Within such a bin each
seed with `MIN_RECORDS` records gives
the median of its records, each variant the median over its seeds, and the bin the
ratio variant / reference; the comparison is the geometric mean of the bins' ratios,
with a bootstrap interval over seeds (each variant's seeds resampled with replacement,
once per draw for every bin). Every draw keeps the same bins: a bin that a draw leaves
without a seed of one variant draws that bin's own seeds again, so the interval is not
a mixture of comparisons over different bins. Fewer than `MIN_BINS` matched bins is
"too few matched records", never a verdict. Step 0 is left out: at initialization no
network has trained, and BN's loss band there (~5 against ~0.02) would decide a bin on
its own. Which records enter (the training regime) is the caller's choice.

Matched loss is not always matched state, so each bin's coverage says, per variant, the
steps its records come from (runs of different lengths meet at different steps) and the
share of its records that oscillate (a record's `oscillating` flag, where the probe
records one: PROTOCOL.md section 8).
"""

import warnings

import numpy as np
import pandas as pd

BINS_PER_DECADE = 2
MIN_SEEDS = 3       # seeds of each variant with records in a bin, for it to count
MIN_RECORDS = 2     # records a seed needs in a bin to count there
MIN_BINS = 2        # matched bins, for a comparison to be made


def loss_bin(loss):
    """The log bin of a training loss: bin b holds [10^(b/B), 10^((b+1)/B)), B = BINS_PER_DECADE."""
    return np.floor(np.log10(np.asarray(loss, float)) * BINS_PER_DECADE).astype(int)


def bin_range(index):
    return 10 ** (index / BINS_PER_DECADE), 10 ** ((index + 1) / BINS_PER_DECADE)


def _clean(frame):
    """Records that can be binned: after step 0, finite positive loss, finite value."""
    if "oscillating" not in frame:
        frame = frame.assign(oscillating=np.nan)
    frame = frame.astype({"step": float, "loss": float, "value": float, "oscillating": float})
    frame = frame[(frame["step"] > 0) & np.isfinite(frame["loss"]) & (frame["loss"] > 0)
                  & np.isfinite(frame["value"])]
    return frame.assign(bin=loss_bin(frame["loss"]))


def _counted(frame):
    """The records of the (bin, seed) pairs with at least MIN_RECORDS records."""
    sizes = frame.groupby(["bin", "seed"])["value"].transform("size")
    return frame[sizes >= MIN_RECORDS]


def coverage(frames):
    """{bin: {variant: {...}}} for every bin any variant has records in, highest loss
    first: `seeds` (with MIN_RECORDS records there, the ones that count), `records`,
    `steps` [first, last] and `oscillating` (the share of records flagged, None where
    the probe records no flag)."""
    table = {}
    for norm, frame in frames.items():
        counted = _counted(frame)
        for index, rows in frame.groupby("bin"):
            flags = rows["oscillating"].dropna()
            table.setdefault(int(index), {})[norm] = {
                "seeds": int(counted[counted["bin"] == index]["seed"].nunique()),
                "records": int(len(rows)),
                "steps": [int(rows["step"].min()), int(rows["step"].max())],
                "oscillating": float(flags.mean()) if len(flags) else None}
    empty = {"seeds": 0, "records": 0, "steps": None, "oscillating": None}
    return {index: {norm: table[index].get(norm, empty) for norm in frames}
            for index in sorted(table, reverse=True)}


def _per_seed_medians(frame):
    """{bin: {seed: median value}} over the (bin, seed) pairs that count."""
    medians = _counted(frame).groupby(["bin", "seed"])["value"].median()
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


def _bootstrap_log_ratios(per_seed, bins, seeds, rng, resamples):
    """(resamples, bins): `_log_ratios` of `resamples` bootstrap draws at once, each draw
    resampling each variant's `seeds` once for every bin (a bin left without a seed of a
    variant draws its own seeds again, as in `_log_ratios`)."""
    drawn = [rng.integers(0, len(s), (resamples, len(s))) for s in seeds]
    logs = np.empty((resamples, len(bins)))
    for k, index in enumerate(bins):
        medians = []
        for values, own_seeds, draws in zip(per_seed, seeds, drawn):
            # The seed medians of this bin by seed position, NaN where a seed has none.
            table = np.array([values[index].get(seed, np.nan) for seed in own_seeds])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a draw with no seed here
                median = np.nanmedian(table[draws], axis=1)
            empty = np.isnan(median)
            if empty.any():
                own = np.array(list(values[index].values()))
                median[empty] = np.median(rng.choice(own, (int(empty.sum()), len(own))), axis=1)
            medians.append(median)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[:, k] = np.log(medians[0]) - np.log(medians[1])
    return logs


def _geometric_mean(logs, axis=None):
    """exp(mean of the finite-or-infinite logs), ignoring NaN (NaN if all are)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: NaN
        return np.exp(np.nanmean(logs, axis=axis))


def compare(variant_frame, reference_frame, rng, resamples=2000, level=0.95):
    """Compare two variants' records (frames with columns seed, step, loss, value).

    Returns a dict: `coverage` (per bin and variant, every bin: see `coverage`), and either
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
                          f"{MIN_RECORDS} records from each of >= {MIN_SEEDS} seeds of each "
                          f"variant; {MIN_BINS} needed): more "
                          "seeds, or probes where both variants pass the same losses"}
    seeds = [np.array(sorted(f["seed"].unique())) for f in frames.values()]
    point = _log_ratios(per_seed, matched, seeds)
    # (resamples, bins): each draw resamples each variant's seeds once, for every bin.
    draws = _bootstrap_log_ratios(per_seed, matched, seeds, rng, resamples)
    tail = (1 - level) / 2 * 100

    def interval(values):
        # An infinite draw (a reference of 0 in float32) interpolates to NaN: quietly.
        with np.errstate(invalid="ignore"):
            return tuple(float(v) for v in np.nanpercentile(values, [tail, 100 - tail]))
    bins = [{"bin": int(index), "loss_range": bin_range(index), "ratio": float(np.exp(point[k])),
             "interval": interval(np.exp(draws[:, k]))} for k, index in enumerate(matched)]
    return {"coverage": table, "bins": bins, "ratio": float(_geometric_mean(point)),
            "interval": interval(_geometric_mean(draws, axis=1))}
