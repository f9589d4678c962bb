"""The claims table as text, as JSON, and its answer first: one line per headline claim
("what the paper claims -> what we find"), which the CLI prints above the table and the
report shows above its full table."""

import json

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


def _interval(interval, note=None):
    if interval:
        return f"[{interval[0]:.3g}, {interval[1]:.3g}]"
    return note or ""


def _where(row):
    if row.lr is None:
        return ""
    return f"LR {row.lr:g}, {row.seeds or 0} seed(s) per variant"


def _value(row):
    """The row's statistic and its interval (or, without one, why not)."""
    return f"{row.ratio:.3g} {_interval(row.interval, row.note)}"


def _ratio(row):
    return f"ratio {_value(row)}"


def _probe_lines(row):
    m = row.measured
    ratio = f": {_ratio(row)}" if row.ratio is not None else ""
    bins = ", ".join(f"{b['loss_range'][0]:.2g}-{b['loss_range'][1]:.2g}: {b['ratio']:.3g} "
                     f"{_interval(b['interval'])}" for b in m["matched_bins"])
    cover = "; ".join(f"{k} {' | '.join(f'{n} {c}' for n, c in v.items())}"
                      for k, v in m["coverage"].items())
    reading = ", ".join(f"{k} {v:.4g}" for k, v in m["paper_reading"].items())
    return [f"{row.statistic} at matched training loss (training regime: after the "
            f"first 5 % of steps), {_where(row)}{ratio}",
            f"per loss bin (variant / reference): {bins or 'no bin matched'}",
            f"coverage in the training regime (seeds/records per loss bin): {cover}",
            f"paper's reading (max over the curve, after step 0): {reading}"]


def _like_bn_lines(row):
    m = row.measured
    t = m["steps_medians"]
    lines = [f"{_where(row)}: steps to 90 % {row.variant} {t['variant']:.4g}, BN "
             f"{t['batch']:.4g}, standard {t['none']:.4g}; share of BN's speed-up kept "
             f"{_value(row)} ({m['parts']['keeps speed-up']})"]
    if "accuracy_difference" in m:
        lines.append(f"test accuracy at step {m['accuracy_step']}: "
                     + ", ".join(f"{k} {v:.4g}" for k, v in m["accuracy_medians"].items())
                     + f"; difference {m['accuracy_difference']:+.3g} "
                     f"{_interval(m['accuracy_interval'])} ({m['parts']['accuracy near BN']})")
    return lines


def _paired_lines(row):
    lines = []
    if row.ratio is not None:
        p = f", signed-rank p = {row.p_value:.3g}" if row.p_value is not None else ""
        lines.append(f"{row.statistic}, {_where(row)}: {_ratio(row)}{p}")
    for name, medians in row.measured["shown"].items():
        lines.append(f"median {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in medians.items()))
    return lines


def _run_level_lines(row):
    m = row.measured
    if row.ratio is None:
        return []
    if row.reference is None:
        return [f"{row.statistic}, {_where(row)}: {row.variant} median "
                f"{m['variant_median']:.4g} {_interval(row.interval, row.note)}"]
    p = f", rank test p = {row.p_value:.3g}" if row.p_value is not None else ""
    return [f"{row.statistic}, {_where(row)}: {row.variant} {m['variant_median']:.4g}"
            f" vs {row.reference} {m['reference_median']:.4g}, {_ratio(row)}{p}"]


LINES = {"probe": _probe_lines, "trains like BN": _like_bn_lines, "paired": _paired_lines,
         "run level": _run_level_lines, "": lambda row: []}


def details(row):
    """What the `ClaimRow` `row` measured, as lines: its numbers, the paper's, and how to
    measure it if its runs are missing. The one rendering of a row's details: the text
    table indents them, the HTML report shows them in its table."""
    lines = LINES[row.kind](row)
    lines.append(f"paper: {row.paper}")
    if row.command:
        lines.append(f"to measure: {row.command}")
    return lines


def format_claims(rows):
    """The table as text, one block per row."""
    lines = []
    for row in rows:
        note = f": {row.note}" if row.note else ""
        lines.append(f"{row.claim}\n  -> {row.verdict.upper()}{note}")
        lines += [f"    {line}" for line in details(row)]
    return "\n".join(lines)


def answer(rows):
    """The headline rows as (claim, LR, verdict, figure) tuples, in table order."""
    return [(row.claim, row.lr, row.verdict, FIGURES.get(row.key, ""))
            for row in rows if row.headline]


def format_answer(rows):
    """'What the paper claims -> what we find', one line per headline row."""
    lines = ["What the paper claims -> what we find (headline rows; details below)"]
    for claim, lr, found, figure in answer(rows):
        at = f" (LR {lr:g})" if lr is not None else ""
        lines.append(f"  {claim}{at} -> {found.upper()}" + (f"  [figure {figure}]" if figure else ""))
    return "\n".join(lines)


def to_json(rows):
    """The rows as strict JSON (no NaN), ready for other tools."""
    return json.dumps([row.to_json() for row in rows], indent=2, allow_nan=False)
