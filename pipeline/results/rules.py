"""The verdict rules of the claims and the statistics behind their intervals
(PROTOCOL.md section 8): each rule is one object holding its text and its decision, so
the table's prose and its verdicts cannot drift apart.

A rule decides from a 95 % interval (low, high) of the claim's statistic: "reproduced",
"not reproduced" or "inconclusive". The paper's own numbers are single runs: fed to a
rule as the point interval (v, v), they must come out "reproduced" (tests/test_claims.py).
"""

import dataclasses
from typing import Callable

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95
ABOUT_EQUAL = 1.5          # "about equal": within [1/1.5, 1.5]; "clearly" smaller / larger
SPEEDUP_KEPT = 1 / 3       # "trains like BN": keeps at least this share of BN's speed-up
ACCURACY_MARGIN = 0.02     # ... and its test accuracy is at most 2 points below BN's
MILESTONE_LEVEL = 0.9      # the milestone of "trains faster" and "trains like BN"


def percent(share):
    """0.9 -> '90 %', as the ledger writes shares."""
    return f"{share * 100:g} %"


# The thresholds as the rules' texts print them.
_E, _K, _M = f"{ABOUT_EQUAL:g}", "1/3", f"{ACCURACY_MARGIN:g}"


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    text: str
    decide: Callable[[float, float], str]  # (low, high) of the interval -> verdict

    def __call__(self, interval):
        return self.decide(*interval)


def _by_bounds(reproduced, failed):
    def decide(low, high):
        return ("reproduced" if reproduced(low, high) else
                "not reproduced" if failed(low, high) else "inconclusive")
    return decide


# "smaller" and "larger" read "clearly" as "not smaller" does: a change of 1.5x or more
# (the paper's effects are 2-7x). An interval that has not left 1 but excludes such a
# change is a finding, not thin evidence: the claimed effect, at the size at stake, is
# absent (PROTOCOL.md section 8, "Verdicts"). Reproduced takes precedence: an interval
# wholly below 1 establishes a reduction, however small.
RULES = {rule.name: rule for rule in (
    Rule("smaller", "reproduced if the whole interval of the ratio lies below 1; else not "
         f"reproduced if it lies at or above 1/{_E} (no reduction of {_E}x or more), else "
         "inconclusive",
         _by_bounds(lambda lo, hi: hi < 1, lambda lo, hi: lo >= 1 / ABOUT_EQUAL)),
    Rule("larger", "reproduced if the whole interval lies above 1; else not reproduced if "
         f"it lies at or below {_E} (no increase of {_E}x or more), else inconclusive",
         _by_bounds(lambda lo, hi: lo > 1, lambda lo, hi: hi <= ABOUT_EQUAL)),
    Rule("not smaller", f"reproduced if the whole interval lies at or above 1/{_E} (not "
         f"clearly smaller), not reproduced if it lies below 1/{_E}, else inconclusive",
         _by_bounds(lambda lo, hi: lo >= 1 / ABOUT_EQUAL, lambda lo, hi: hi < 1 / ABOUT_EQUAL)),
    Rule("about equal", f"reproduced if the whole interval lies within [1/{_E}, {_E}], not "
         "reproduced if it lies outside, else inconclusive",
         _by_bounds(lambda lo, hi: 1 / ABOUT_EQUAL <= lo and hi <= ABOUT_EQUAL,
                    lambda lo, hi: hi < 1 / ABOUT_EQUAL or lo > ABOUT_EQUAL)),
    Rule("keeps speed-up", "the share K of BN's speed-up over the standard network kept, "
         "K = log(T_standard / T) / log(T_standard / T_BN) with T the median steps to "
         f"{percent(MILESTONE_LEVEL)}: reproduced if its interval lies at or above {_K}, not "
         "reproduced if below",
         _by_bounds(lambda lo, hi: lo >= SPEEDUP_KEPT, lambda lo, hi: hi < SPEEDUP_KEPT)),
    Rule("accuracy higher", "test accuracy minus the reference's (medians over seeds, at "
         "the runs' last step): reproduced if its interval lies above 0, not reproduced if "
         "it lies at or below 0, else inconclusive",
         _by_bounds(lambda lo, hi: lo > 0, lambda lo, hi: hi <= 0)),
    Rule("accuracy near BN", "test accuracy minus BN's (medians over seeds, at the last "
         f"step both evaluated): reproduced if its interval lies at or above -{_M}, not "
         "reproduced if below",
         _by_bounds(lambda lo, hi: lo >= -ACCURACY_MARGIN, lambda lo, hi: hi < -ACCURACY_MARGIN)),
)}


def verdict(expect, interval):
    """The verdict of rule `expect` (a key of RULES) on `interval` (low, high)."""
    return RULES[expect](interval)


def both(*verdicts):
    """The verdict of a claim with several parts, each required."""
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "not reproduced" if "not reproduced" in verdicts else "inconclusive"


def percentile_interval(draws, level=LEVEL):
    """The central `level` interval of bootstrap draws, ignoring NaN draws."""
    tail = (1 - level) / 2 * 100
    with np.errstate(invalid="ignore"):  # infinite draws interpolate to NaN, quietly
        return tuple(float(v) for v in np.nanpercentile(draws, [tail, 100 - tail]))


def resample_medians(values, rng, resamples=BOOTSTRAP_RESAMPLES):
    """Medians of `resamples` draws of `values` with replacement, shape (resamples,)."""
    values = np.asarray(values, float)
    return np.median(rng.choice(values, (resamples, len(values))), axis=1)


def bootstrap_ratio(variant, reference, rng, resamples=BOOTSTRAP_RESAMPLES, level=LEVEL):
    """Percentile interval of median(variant) / median(reference), seeds resampled with
    replacement within each group (`reference` None: of median(variant) alone)."""
    a = resample_medians(variant, rng, resamples)
    if reference is None:
        return percentile_interval(a, level)
    b = resample_medians(reference, rng, resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_interval(a / b, level)


def rank_test(a, b):
    """Two-sided Mann-Whitney U p-value (exact for small samples), or None."""
    from scipy.stats import mannwhitneyu
    if len(a) < 2 or len(b) < 2:
        return None
    return float(mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)


def signed_rank_test(differences):
    """Two-sided exact Wilcoxon signed-rank p-value of paired differences, or None."""
    from scipy.stats import wilcoxon
    differences = np.asarray(differences, float)
    if len(differences) < 2 or not np.any(differences):
        return None
    return float(wilcoxon(differences, alternative="two-sided", method="exact").pvalue)
