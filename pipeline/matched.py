"""Comparing two variants' probe statistics at matched training progress (PROTOCOL.md
section 8).

A network that has converged is trivially smooth and shift-free, so a probe statistic
(ICS, landscape, curvature) is compared between variants only where both have the same
training loss: every probe record carries the loss of its own step, records are binned
by that loss (`BINS_PER_DECADE` log bins a decade), and a bin counts when each variant
has records from at least `MIN_SEEDS` seeds in it. Within such a bin each seed gives
the median of its records, each variant the median over its seeds, and the bin the
ratio variant / reference; the comparison is the geometric mean of the bins' ratios,
with a bootstrap interval over seeds (each variant's seeds resampled with
replacement). Fewer than `MIN_BINS` matched bins is "too few matched records", never
a verdict. Step 0 is left out: at initialization no network has trained, and BN's
loss band there (~5 against ~0.02) would decide a bin on its own.
"""

import numpy as np
import pandas as pd

BINS_PER_DECADE = 2
MIN_SEEDS = 2       # seeds of each variant with records in a bin, for it to count
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


def _summary(per_seed, bins, seeds):
    """Geometric mean over `bins` of median(variant seeds) / median(reference seeds),
    with `seeds` = {norm: seeds drawn}; NaN if no bin has both."""
    variant, reference = per_seed
    logs = []
    for index in bins:
        a = [variant[index][s] for s in seeds[0] if s in variant[index]]
        b = [reference[index][s] for s in seeds[1] if s in reference[index]]
        if a and b:
            with np.errstate(divide="ignore", invalid="ignore"):
                logs.append(np.log(np.median(a)) - np.log(np.median(b)))
    return float(np.exp(np.mean(logs))) if logs else float("nan")


def compare(variant_frame, reference_frame, rng, resamples=2000, level=0.95):
    """Compare two variants' records (frames with columns seed, step, loss, value).

    Returns a dict: `bins` (the matched bins, highest loss first, with each one's ratio
    and loss range), `coverage` (seeds/records per bin and variant, every bin), and
    either `ratio` and `interval`, or `reason` when too few bins match."""
    frames = {"variant": _clean(variant_frame), "reference": _clean(reference_frame)}
    table = coverage(frames)
    per_seed = [_per_seed_medians(frames["variant"]), _per_seed_medians(frames["reference"])]
    matched = [index for index in sorted(set(per_seed[0]) & set(per_seed[1]), reverse=True)
               if min(len(per_seed[0][index]), len(per_seed[1][index])) >= MIN_SEEDS]
    if len(matched) < MIN_BINS:
        return {"coverage": table, "bins": [
            {"bin": int(index), "loss_range": bin_range(index)} for index in matched],
            "reason": f"too few matched records ({len(matched)} loss bin(s) with >= {MIN_SEEDS} "
                      f"seeds of each variant; {MIN_BINS} needed)"}
    seeds = [np.array(sorted(f["seed"].unique())) for f in frames.values()]
    draws = [[rng.choice(s, len(s)) for s in seeds] for _ in range(resamples)]
    tail = (1 - level) / 2 * 100

    def estimate(bins):
        """(point, interval) of the geometric mean of `bins`' ratios."""
        values = [_summary(per_seed, bins, drawn) for drawn in draws]
        interval = tuple(float(v) for v in np.nanpercentile(values, [tail, 100 - tail]))
        return _summary(per_seed, bins, seeds), interval
    bins = []
    for index in matched:
        ratio, interval = estimate([index])
        bins.append({"bin": int(index), "loss_range": bin_range(index), "ratio": ratio,
                     "interval": interval})
    ratio, interval = estimate(matched)
    return {"coverage": table, "bins": bins, "ratio": ratio, "interval": interval}
