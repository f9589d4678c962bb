"""The matched-probe kind of claim: a probe statistic (ICS, landscape, curvature)
compared at matched training loss in the training regime (pipeline.results.matched,
PROTOCOL.md section 8), one row per probed layer, with

- the coverage of every loss bin: seeds and records per variant, the steps they come
  from, and the share of records that oscillate;
- the paper's own statistic beside it, as the paper reads it (`paper_reduce` of each
  run's curve after step 0: its maximum for the landscape, its median for ICS), median
  over seeds, the ratio of the variants with a bootstrap interval and its verdict;
- for a landscape statistic, its value at every step size of the grid (`per_eta`: the
  ratio at matched loss per multiplier of the LR, with its interval), and where a
  maximum over the grid sits at an end of it in at least half of a variant's records,
  which end and how often.
"""

import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd

from pipeline.results import matched, rules
from pipeline.results.claim_kinds import Claim, interval_text, value_text, where
from pipeline.results.measures import (TRANSIENT, grid_end_shares, grid_multipliers,
                                       records_frame, training_regime)
from pipeline.results.rules import percent, verdict

# Where a variant's maximum over the grid sits at one end in at least this share of its
# records, the row says so: the maximum then measures the grid (PROTOCOL.md section 4).
GRID_END_SHARE = 0.5


def bin_name(index):
    low, high = matched.bin_range(index)
    return f"{low:.3g}-{high:.3g}"


def _paper_statistic(frames, reduce, variant, reference, expect, rng):
    """The paper's reading: per run `reduce` of its values after step 0, the median over
    seeds per variant, their ratio with a bootstrap interval over seeds."""
    per_run = {}
    for norm, frame in frames.items():
        late = frame[frame["step"] > 0]
        per_run[norm] = late.groupby("seed")["value"].agg(reduce).dropna().to_numpy(float)
    medians = {norm: float(np.median(v)) if len(v) else float("nan")
               for norm, v in per_run.items()}
    reading = {"reduce": reduce, "medians": medians}
    if reference is None or not all(len(v) >= 2 for v in per_run.values()):
        return reading
    interval = rules.bootstrap_ratio(per_run[variant], per_run[reference], rng)
    return {**reading, "ratio": medians[variant] / medians[reference],
            "interval": list(interval), "verdict": verdict(expect, interval)}


@dataclasses.dataclass(frozen=True)
class MatchedProbe(Claim):
    """A `ProbeMeasure` compared at matched training loss; `paper_reduce` is how the
    paper reads a run's curve ("max" or "median"); `per_eta` adds the statistic at each
    step size of the grid."""
    measure: object = None
    paper_reduce: str = "max"
    per_eta: bool = False
    kind: ClassVar[str] = "probe"

    def runs_read(self, runs):
        """A probe claim compares at matched training loss, which needs no equal lengths:
        it reads the longest runs that hold its probe's records (a longer run reaches
        losses the other variant passes; PROTOCOL.md section 8)."""
        stream = self.measure.stream
        runs = [r for r in runs if not r.records.get(stream, pd.DataFrame()).empty] or runs
        length = max((r.steps for r in runs), default=None)
        return [r for r in runs if r.steps == length]

    def evaluate(self, chosen, groups, lr, rng):
        frames = {norm: pd.concat([self.measure.records(r) for r in runs], ignore_index=True)
                  for norm, runs in chosen.items()}
        if any(frame.empty for frame in frames.values()):
            return [{"verdict": "missing records", "command": "make demo (the runs with the "
                     f"{self.measure.stream} probe on)"}]
        if not self.measure.per_layer:
            return [self._row(frames, chosen, rng)]
        layers = sorted(frames[self.variant]["layer"].dropna().astype(int).unique())
        return [{"layer": int(layer), "claim": f"{self.text}, layer #{layer}",
                 **self._row({n: f[f["layer"] == layer] for n, f in frames.items()}, chosen,
                             rng)}
                for layer in layers]

    def _compare(self, frames, rng):
        """The matched comparison of the training-regime records of `frames`."""
        regime = {norm: training_regime(frame) for norm, frame in frames.items()}
        return matched.compare(regime[self.variant], regime[self.reference], rng,
                               rules.BOOTSTRAP_RESAMPLES, rules.LEVEL)

    def _row(self, frames, chosen, rng):
        compared = self._compare(frames, rng)
        names = {"variant": self.variant, "reference": self.reference}
        row = {"seeds": min(frame["seed"].nunique() for frame in frames.values()),
               "coverage": {bin_name(b): {names[n]: c for n, c in counts.items()}
                            for b, counts in compared["coverage"].items()},
               "matched_bins": [{"loss_range": list(b["loss_range"]), "ratio": b["ratio"],
                                 "interval": list(b["interval"]),
                                 "verdict": verdict(self.expect, b["interval"])}
                                for b in compared["bins"]],
               "paper_statistic": _paper_statistic(frames, self.paper_reduce, self.variant,
                                                   self.reference, self.expect, rng)}
        if self.per_eta:
            row["per_eta"] = self._per_eta(chosen, rng)
        if self.measure.grid_from is not None:
            row["grid_ends"] = self._grid_ends(chosen)
        if "reason" in compared:
            return {**row, "verdict": "inconclusive", "note": compared["reason"]}
        row.update(ratio=compared["ratio"], interval=list(compared["interval"]),
                   verdict=verdict(self.expect, compared["interval"]))
        against = [b for b in row["matched_bins"]
                   if b["verdict"] not in (row["verdict"], "inconclusive")]
        if against and row["verdict"] != "inconclusive":
            row["note"] = "loss bin(s) where the interval says otherwise: " + ", ".join(
                f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g} ({b['verdict']})"
                for b in against)
        return row

    def _per_eta(self, chosen, rng):
        """[{multiplier, ratio, interval, verdict, bins}] at matched loss, one per step
        size of the variant's grid (None ratio where too few bins match)."""
        runs = [r for runs in chosen.values() for r in runs]
        results = []
        for multiplier in grid_multipliers(records_frame(runs, "landscape")):
            at = self.measure.at(multiplier)
            frames = {norm: pd.concat([at.records(r) for r in runs], ignore_index=True)
                      for norm, runs in chosen.items()}
            compared = self._compare(frames, rng)
            if "reason" in compared:
                results.append({"multiplier": multiplier, "ratio": None, "interval": None,
                                "verdict": "inconclusive", "bins": 0})
                continue
            results.append({"multiplier": multiplier, "ratio": compared["ratio"],
                            "interval": list(compared["interval"]),
                            "verdict": verdict(self.expect, compared["interval"]),
                            "bins": len(compared["bins"])})
        return results

    def _grid_ends(self, chosen):
        """{norm: {"smallest": share, "largest": share}} of the records (training regime)
        whose maximum over the grid sits at that end."""
        ends = {}
        for norm, runs in chosen.items():
            frame = records_frame(runs, "landscape")
            if frame.empty:
                continue
            frame = frame[frame["step"] >= TRANSIENT * frame["run_steps"]]
            ends[norm] = grid_end_shares(frame, low=self.measure.grid_from)
        return ends

    @staticmethod
    def lines(row):
        m = row.measured
        ratio = f": ratio {value_text(row)}" if row.ratio is not None else ""
        bins = ", ".join(f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g}: {b['ratio']:.3g} "
                         f"{interval_text(b['interval'])}" for b in m["matched_bins"])
        lines = [f"{row.statistic} at matched training loss (training regime: after the "
                 f"first {percent(TRANSIENT)} of steps), {where(row)}{ratio}",
                 f"per loss bin (variant / reference): {bins or 'no bin matched'}",
                 "coverage in the training regime (seeds with >= "
                 f"{matched.MIN_RECORDS} records / records, steps, oscillating share):"]
        lines += [f"  {name}: " + " | ".join(_cell(norm, c) for norm, c in counts.items())
                  for name, counts in m["coverage"].items()]
        lines.append(_paper_statistic_line(m["paper_statistic"]))
        if "per_eta" in m:
            lines.append("per step size (multiple of LR: ratio [interval]): " + ", ".join(
                f"{e['multiplier']:.3g}: " + (f"{e['ratio']:.3g} {interval_text(e['interval'])}"
                                              if e["ratio"] is not None else "no match")
                for e in m["per_eta"]))
        for norm, shares in m.get("grid_ends", {}).items():
            for end, share in shares.items():
                if share >= GRID_END_SHARE:
                    lines.append(f"{norm}'s maximum sits at the {end} step of the grid in "
                                 f"{share:.0%} of its records")
        return lines


def _cell(norm, counts):
    if not counts["records"]:
        return f"{norm} -"
    oscillating = ("" if counts["oscillating"] is None
                   else f", {counts['oscillating']:.0%} osc.")
    first, last = counts["steps"]
    return f"{norm} {counts['seeds']}/{counts['records']}, steps {first}-{last}{oscillating}"


def _paper_statistic_line(reading):
    medians = ", ".join(f"{k} {v:.4g}" for k, v in reading["medians"].items())
    text = (f"the paper's statistic ({reading['reduce']} over each run's curve after step 0, "
            f"median over seeds): {medians}")
    if "ratio" in reading:
        text += (f"; ratio {reading['ratio']:.3g} {interval_text(reading['interval'])} "
                 f"({reading['verdict']})")
    return text
