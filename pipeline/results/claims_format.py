"""The claims table as text, as JSON, and its answer first: one line per headline claim
("what the paper claims -> what we find"), which the CLI prints above the table and the
report shows above its full table."""

import json
import math

import numpy as np

# The figure (pipeline/results/report.py: figures/<name>.png) that shows each headline row.
FIGURES = {
    "bn_trains_faster": "training_accuracy", "large_lr": "lr_sensitivity",
    "noisy_bn_trains_like_bn": "training_accuracy",
    "noisy_bn_shifts_more": "distribution_shift_layer2",
    "ics_l2_not_smaller": "ics_vs_loss_layer3", "ics_cosine_not_larger": "ics",
    "loss_band_narrower": "loss_band_vs_loss", "gradient_change_smaller": "landscape",
    "beta_smaller": "beta_max_vs_loss", "dln_batch_lower_loss": "dln_loss",
    "dln_l1_lower_loss": "dln_loss", "dln_batch_ics_cosine": "dln_ics",
}


def _interval(row, key="interval"):
    if row.get(key):
        return f"[{row[key][0]:.3g}, {row[key][1]:.3g}]"
    return row.get("note", "")


def _where(row):
    if "lr" not in row:
        return ""
    return f"LR {row['lr']:g}, {row.get('seeds', 0)} seed(s) per variant"


def _probe_lines(row):
    ratio = f": ratio {row['ratio']:.3g} {_interval(row)}" if "ratio" in row else ""
    bins = ", ".join(f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g}: {b['ratio']:.3g} "
                     f"[{b['interval'][0]:.3g}, {b['interval'][1]:.3g}]"
                     for b in row["matched_bins"])
    cover = "; ".join(f"{k} {' | '.join(f'{n} {c}' for n, c in v.items())}"
                      for k, v in row["coverage"].items())
    reading = ", ".join(f"{k} {v:.4g}" for k, v in row["paper_reading"].items())
    return [f"{row['statistic']} at matched training loss (training regime: after the "
            f"first 5 % of steps), {_where(row)}{ratio}",
            f"per loss bin (variant / reference): {bins or 'no bin matched'}",
            f"coverage in the training regime (seeds/records per loss bin): {cover}",
            f"paper's reading (max over the curve, after step 0): {reading}"]


def _like_bn_lines(row):
    t = row["steps_medians"]
    lines = [f"{_where(row)}: steps to 90 % {row['variant']} {t['variant']:.4g}, BN "
             f"{t['batch']:.4g}, standard {t['none']:.4g}; share of BN's speed-up kept "
             f"{row['ratio']:.3g} {_interval(row)} ({row['parts']['keeps speed-up']})"]
    if "accuracy_difference" in row:
        lines.append(f"test accuracy at step {row['accuracy_step']}: "
                     + ", ".join(f"{k} {v:.4g}" for k, v in row["accuracy_medians"].items())
                     + f"; difference {row['accuracy_difference']:+.3g} "
                     f"{_interval(row, 'accuracy_interval')} ({row['parts']['accuracy near BN']})")
    return lines


def _paired_lines(row):
    lines = []
    if "ratio" in row:
        p = f", signed-rank p = {row['p_value']:.3g}" if row.get("p_value") is not None else ""
        lines.append(f"{row['statistic']}, {_where(row)}: ratio {row['ratio']:.3g} "
                     f"{_interval(row)}{p}")
    for name, medians in row.get("shown", {}).items():
        lines.append(f"median {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in medians.items()))
    return lines


def _run_level_lines(row):
    if row["reference"] is None:
        return [f"{row['statistic']}, {_where(row)}: {row['variant']} median "
                f"{row['variant_median']:.4g} {_interval(row)}"]
    p = f", rank test p = {row['p_value']:.3g}" if row.get("p_value") is not None else ""
    return [f"{row['statistic']}, {_where(row)}: {row['variant']} {row['variant_median']:.4g}"
            f" vs {row['reference']} {row['reference_median']:.4g}, ratio {row['ratio']:.3g} "
            f"{_interval(row)}{p}"]


def details(row):
    """What a row measured, as lines: its numbers, the paper's, and how to measure it if
    its runs are missing. The one rendering of a row's details: the text table indents
    them, the HTML report shows them in its table."""
    if "coverage" in row:
        lines = _probe_lines(row)
    elif "steps_medians" in row:
        lines = _like_bn_lines(row)
    elif "shown" in row:
        lines = _paired_lines(row)
    elif "ratio" in row:
        lines = _run_level_lines(row)
    else:
        lines = []
    lines.append(f"paper: {row['paper']}")
    if "command" in row:
        lines.append(f"to measure: {row['command']}")
    return lines


def format_claims(rows):
    """The table as text, one block per row."""
    lines = []
    for row in rows:
        note = f": {row['note']}" if "note" in row else ""
        lines.append(f"{row['claim']}\n  -> {row['verdict'].upper()}{note}")
        lines += [f"    {line}" for line in details(row)]
    return "\n".join(lines)


def answer(rows):
    """The headline rows as (claim, LR, verdict, figure) tuples, in table order."""
    return [(row["claim"], row.get("lr"), row["verdict"], FIGURES.get(row["key"], ""))
            for row in rows if row.get("headline")]


def format_answer(rows):
    """'What the paper claims -> what we find', one line per headline row."""
    lines = ["What the paper claims -> what we find (headline rows; details below)"]
    for claim, lr, found, figure in answer(rows):
        at = f" (LR {lr:g})" if lr is not None else ""
        lines.append(f"  {claim}{at} -> {found.upper()}" + (f"  [figure {figure}]" if figure else ""))
    return "\n".join(lines)


def _plain(value):
    """A JSON-ready copy: NumPy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(rows):
    """The rows as strict JSON (no NaN), ready for other tools."""
    return json.dumps(_plain(rows), indent=2, allow_nan=False)
