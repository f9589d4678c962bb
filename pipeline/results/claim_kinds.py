"""The kinds of claim (PROTOCOL.md section 8). Each kind is a class that owns how its
statistic is compared over runs (`evaluate`: the runs of each variant at one LR -> the
numbers of its rows) and how such a row is printed (`lines`); `KINDS` finds a kind by
the name its rows carry, so a new kind is one more subclass and nothing else names them.

- `RunLevel`: a statistic per run (steps to an accuracy, a final value), its median over
  seeds per variant, the ratio (or difference) of the medians, a bootstrap interval over
  seeds and a two-sided rank test; with no reference, the variant's median alone.
- `MatchedProbe` (pipeline.results.claim_probe): a probe statistic at matched training
  loss, with the paper's own reading beside it and, for the landscape, its value at every
  step size of the grid.
- `TrainsLikeBN`: the share of BN's speed-up kept and the test accuracy against BN's.
- `Paired`: a statistic of the whole run compared between runs of the same seed (DLN).
"""

import dataclasses
from typing import ClassVar, Optional

import numpy as np

from pipeline.results import rules
from pipeline.results.measures import final_value, steps_to_accuracy, test_accuracies
from pipeline.results.rules import verdict


@dataclasses.dataclass(frozen=True)
class Paper:
    """What the paper shows for a claim: where (`source`, figure and panel), its numbers in
    words (`reading`), and `value`, its value of the row's statistic as the paper reads it
    (`statistic`): one number, or a dict by LR or by (LR, layer); None where the paper
    has no such value (a row beyond the paper)."""
    source: str
    reading: str
    value: object = None
    statistic: str = "the row's statistic"

    def at(self, lr, layer=None):
        """The paper's value at one LR (and layer), or None."""
        value = self.value
        if isinstance(value, dict):
            value = value.get((lr, layer), value.get(lr))
        return value


BEYOND = Paper(source="not measured by the paper", reading="not measured by the paper")


def finite(values):
    values = np.asarray(values, float)
    return values[np.isfinite(values)]


def interval_text(interval, note=None):
    if interval:
        return f"[{interval[0]:.3g}, {interval[1]:.3g}]"
    return note or ""


def where(row):
    if row.lr is None:
        return ""
    return f"LR {row.lr:g}, {row.seeds or 0} seed(s) per variant"


def value_text(row):
    """The row's statistic and its interval (or, without one, why not)."""
    return f"{row.ratio:.3g} {interval_text(row.interval, row.note)}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper (or beyond it): what is compared, by which rule, and what
    the paper shows. `check`: a manipulation check (true by construction when the code is
    right, like the noise's added shift), shown but never counted among the findings."""
    key: str
    text: str                    # the claim in PROTOCOL.md's words
    family: str                  # "vgg" or "dln"
    variant: str                 # norm of the numerator (or the one variant measured)
    reference: Optional[str]     # norm of the denominator; None: compared with 1
    lr: object                   # "low" / "high" (smallest / largest LR of the runs), "each",
                                 # or one LR (a float)
    statistic: str               # what is measured per run or record
    expect: str                  # a key of RULES
    paper: Paper = BEYOND
    headline: bool = False       # one of the paper's headline claims (the report's summary)
    check: bool = False
    kind: ClassVar[str] = ""

    def norms(self):
        return [n for n in (self.variant, self.reference) if n is not None]

    def runs_read(self, runs):
        """The runs of one variant at one LR that the claim reads, all of one length
        (PROTOCOL.md section 8): the shortest, the length the plan gives every variant
        (the DLN's 10,000 steps), so that run-level statistics describe the same stretch
        of training."""
        length = min((r.steps for r in runs), default=None)
        return [r for r in runs if r.steps == length]

    def paper_verdict(self, value):
        """The verdict the row's rule gives the paper's own value (one run: a point)."""
        if value is None:
            return "no value"
        return verdict(self.expect, (value, value))

    def evaluate(self, chosen, groups, lr, rng):
        """The rows' numbers (dicts) from `chosen` {norm: runs at `lr`}; `groups` holds
        every run by (family, norm, lr), for kinds that read more than the two variants."""
        raise NotImplementedError

    @staticmethod
    def lines(row):
        return []


@dataclasses.dataclass(frozen=True)
class RunLevel(Claim):
    """A run-level statistic `measure` (run -> float), compared on runs of one length.
    `difference`: the statistic is median(variant) - median(reference), not their ratio
    (accuracies, which a ratio would squeeze)."""
    measure: object = None
    difference: bool = False
    kind: ClassVar[str] = "run level"

    def evaluate(self, chosen, groups, lr, rng):
        values = {norm: finite([self.measure(r) for r in runs]) for norm, runs in chosen.items()}
        if not all(len(v) for v in values.values()):
            return [{"verdict": "missing records", "command": "make demo (the runs with the "
                     "probes this statistic needs)"}]
        a = values[self.variant]
        row = {"seeds": len(a), "variant_median": float(np.median(a))}
        if self.reference is not None:
            b = values[self.reference]
            row.update(seeds=min(len(a), len(b)), reference_median=float(np.median(b)),
                       p_value=rules.rank_test(a, b))
            if self.difference:
                row["ratio"] = row["variant_median"] - row["reference_median"]
                row["difference"] = True
            else:
                row["ratio"] = (row["variant_median"] / row["reference_median"]
                                if row["reference_median"] else float("inf"))
        else:
            row["ratio"] = row["variant_median"]
        if row["seeds"] < 2:
            return [{**row, "interval": None, "verdict": "inconclusive",
                     "note": "one seed: no interval"}]
        reference = None if self.reference is None else values[self.reference]
        if self.difference:
            interval = rules.percentile_interval(rules.resample_medians(a, rng)
                                                 - rules.resample_medians(reference, rng))
        else:
            interval = rules.bootstrap_ratio(a, reference, rng)
        return [{**row, "interval": list(interval), "verdict": verdict(self.expect, interval)}]

    @staticmethod
    def lines(row):
        m = row.measured
        if row.ratio is None:
            return []
        if row.reference is None:
            return [f"{row.statistic}, {where(row)}: {row.variant} median "
                    f"{m['variant_median']:.4g} {interval_text(row.interval, row.note)}"]
        p = f", rank test p = {row.p_value:.3g}" if row.p_value is not None else ""
        name = "difference" if m.get("difference") else "ratio"
        lines = [f"{row.statistic}, {where(row)}: {row.variant} {m['variant_median']:.4g}"
                 f" vs {row.reference} {m['reference_median']:.4g}, {name} {value_text(row)}{p}"]
        if "horizon" in m:
            h = m["horizon"]
            lines.append(f"horizon: both LRs at step {h['step']}, where the standard network at "
                         f"LR {h['low_lr']:g} has passed {rules.percent(rules.MILESTONE_LEVEL)} in "
                         f"{h['reached']} of {h['runs']} "
                         f"seeds (median step {h['median_step']:.4g})")
        return lines


@dataclasses.dataclass(frozen=True)
class LargeLR(RunLevel):
    """The large-LR claim: a run-level statistic at the largest LR, read over a horizon
    (the runs' length) that the row checks: by then the standard network at the smallest
    LR has passed 90 % mini-batch accuracy, so "fails at the large LR" is not "has not
    trained yet" (PROTOCOL.md section 8, matched state)."""
    kind: ClassVar[str] = "run level"

    def evaluate(self, chosen, groups, lr, rng):
        rows = super().evaluate(chosen, groups, lr, rng)
        lrs = sorted(l for (family, _, l) in groups if family == self.family)
        low = [r for r in groups.get((self.family, "none", lrs[0]), [])]
        step = min(r.steps for runs in chosen.values() for r in runs)
        if low:
            reach = [steps_to_accuracy(rules.MILESTONE_LEVEL)(r) for r in low]
            passed = [s for s, r in zip(reach, low) if s < r.steps and s <= step]
            rows[0]["horizon"] = {"step": step, "low_lr": lrs[0], "runs": len(low),
                                  "reached": len(passed), "median_step": float(np.median(reach))}
        return rows


def final_test_accuracy(run):
    """The test accuracy at the run's last step (NaN if it was not evaluated there)."""
    return test_accuracies(run).get(run.steps, float("nan"))


def speedup_kept(t_standard, t_variant, t_bn):
    """K = log(T_standard / T_variant) / log(T_standard / T_BN) (NaN where BN has no
    speed-up to keep); broadcasts over bootstrap draws."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log(np.divide(t_standard, t_bn))
        return np.where(gain > 0, np.log(np.divide(t_standard, t_variant)) / gain, np.nan)


def accuracy_at_common_step(runs_by_norm):
    """{norm: [test accuracy of each run]} at the last step every run evaluated, and it."""
    accuracies = {norm: [test_accuracies(r) for r in runs] for norm, runs in runs_by_norm.items()}
    steps = set.intersection(*[set(a) for runs in accuracies.values() for a in runs])
    if not steps:
        return None, None
    step = max(steps)
    return {norm: np.array([a[step] for a in runs]) for norm, runs in accuracies.items()}, step


@dataclasses.dataclass(frozen=True)
class TrainsLikeBN(Claim):
    """The share of BN's speed-up over the standard network kept (steps to `level`
    accuracy) and the test accuracy against BN's; the paper's value is the pair (share
    kept, accuracy difference)."""
    level: float = rules.MILESTONE_LEVEL
    kind: ClassVar[str] = "trains like BN"

    def paper_verdict(self, value):
        if value is None:
            return "no value"
        kept, difference = value
        return rules.both(verdict("keeps speed-up", (kept, kept)),
                          verdict("accuracy near BN", (difference, difference)))

    def evaluate(self, chosen, groups, lr, rng):
        standard = self.runs_read(groups.get((self.family, "none", lr), []))
        if not standard:
            return [{"verdict": "missing runs", "command": "make demo (the standard network's "
                     "runs at this LR)"}]
        measure = steps_to_accuracy(self.level)
        steps = {"variant": finite([measure(r) for r in chosen[self.variant]]),
                 "batch": finite([measure(r) for r in chosen["batch"]]),
                 "none": finite([measure(r) for r in standard])}
        medians = {k: float(np.median(v)) for k, v in steps.items()}
        kept = float(speedup_kept(medians["none"], medians["variant"], medians["batch"]))
        draws = {k: rules.resample_medians(v, rng) for k, v in steps.items()}
        kept_interval = rules.percentile_interval(speedup_kept(draws["none"], draws["variant"],
                                                               draws["batch"]))
        row = {"seeds": min(len(v) for v in steps.values()), "steps_medians": medians,
               "ratio": kept, "interval": list(kept_interval),
               "parts": {"keeps speed-up": verdict("keeps speed-up", kept_interval)}}
        accuracy, step = accuracy_at_common_step({"variant": chosen[self.variant],
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
                       accuracy_medians={self.variant: float(np.median(accuracy["variant"])),
                                         "batch": float(np.median(accuracy["batch"]))})
            row["parts"]["accuracy near BN"] = verdict("accuracy near BN", interval)
        return [{**row, "verdict": rules.both(*row["parts"].values())}]

    @staticmethod
    def lines(row):
        m = row.measured
        t = m["steps_medians"]
        lines = [f"{where(row)}: steps to {rules.percent(rules.MILESTONE_LEVEL)} {row.variant} "
                 f"{t['variant']:.4g}, BN "
                 f"{t['batch']:.4g}, standard {t['none']:.4g}; share of BN's speed-up kept "
                 f"{value_text(row)} ({m['parts']['keeps speed-up']})"]
        if "accuracy_difference" in m:
            lines.append(f"test accuracy at step {m['accuracy_step']}: "
                         + ", ".join(f"{k} {v:.4g}" for k, v in m["accuracy_medians"].items())
                         + f"; difference {m['accuracy_difference']:+.3g} "
                         f"{interval_text(m['accuracy_interval'])} "
                         f"({m['parts']['accuracy near BN']})")
        return lines


@dataclasses.dataclass(frozen=True)
class Paired(Claim):
    """A run-level statistic `measure` compared between runs of the same seed (the DLN:
    same data, same initial kernels): the geometric mean over seeds of the per-seed ratio
    (`measure` is a log10), a bootstrap interval over pairs and a signed-rank test;
    `shown` adds medians of other statistics beside it; `paper_measure` is the paper's
    statistic (a log10 too), compared the same way beside the row's."""
    measure: object = None
    paper_measure: object = None
    shown: tuple = ()
    kind: ClassVar[str] = "paired"

    def _log_differences(self, measure, by_seed, seeds):
        log10 = {norm: np.array([measure(by_seed[norm][s]) for s in seeds])
                 for norm in (self.variant, self.reference)}
        differences = log10[self.variant] - log10[self.reference]
        return differences[np.isfinite(differences)]

    def _compare(self, differences, rng):
        """(ratio, interval): the geometric mean of the per-seed ratios, bootstrapped."""
        draws = rng.choice(differences, (rules.BOOTSTRAP_RESAMPLES, len(differences))).mean(axis=1)
        return (float(10 ** differences.mean()),
                [float(10 ** v) for v in rules.percentile_interval(draws)])

    def evaluate(self, chosen, groups, lr, rng):
        by_seed = {norm: {r.seed: r for r in runs} for norm, runs in chosen.items()}
        seeds = sorted(set(by_seed[self.variant]) & set(by_seed[self.reference]))
        differences = self._log_differences(self.measure, by_seed, seeds)
        shown = {name: {norm: float(np.median([measure(r) for r in runs]))
                        for norm, runs in chosen.items()} for name, measure in self.shown}
        row = {"seeds": len(differences), "pairs": len(differences), "shown": shown}
        if len(differences) < 2:
            return [{**row, "verdict": "inconclusive", "note": f"{len(differences)} seed "
                     "pair(s) with both variants: run the same seeds of both (make demo)"}]
        if self.paper_measure is not None:
            ratio, interval = self._compare(
                self._log_differences(self.paper_measure, by_seed, seeds), rng)
            row["paper_statistic"] = {"ratio": ratio, "interval": interval,
                                      "verdict": verdict(self.expect, interval)}
        ratio, interval = self._compare(differences, rng)
        return [{**row, "ratio": ratio, "interval": interval,
                 "p_value": rules.signed_rank_test(differences),
                 "verdict": verdict(self.expect, interval)}]

    @staticmethod
    def lines(row):
        lines = []
        if row.ratio is not None:
            p = f", signed-rank p = {row.p_value:.3g}" if row.p_value is not None else ""
            lines.append(f"{row.statistic}, {where(row)}: ratio {value_text(row)}{p}")
        if "paper_statistic" in row.measured:
            paper = row.measured["paper_statistic"]
            lines.append(f"the paper's statistic (final loss, variant / reference, geometric "
                         f"mean over seed pairs): {paper['ratio']:.3g} "
                         f"{interval_text(paper['interval'])} ({paper['verdict']})")
        for name, medians in row.measured["shown"].items():
            lines.append(f"median {name}: " + ", ".join(f"{k} {v:.4g}"
                                                        for k, v in medians.items()))
        return lines


FINAL_LOSS = ("final loss", final_value("train", "train/loss"))


def kinds():
    """{kind name: class} of every kind (the classes defined so far, subclasses included)."""
    from pipeline.results import claim_probe  # noqa: F401  (defines MatchedProbe)
    found, stack = {}, [Claim]
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        if cls.kind:
            found.setdefault(cls.kind, cls)
    return found
