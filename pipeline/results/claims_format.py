"""The claims ledger as text, as JSON, and its answer first: one line per headline claim
("what the paper claims -> what the paper's own value gives -> what we find"), which the
CLI prints above the ledger and the report shows above its full table. Each row's
numbers are printed by its claim's kind (pipeline.results.claim_kinds)."""

import json

import numpy as np

from pipeline.results.claim_kinds import kinds

# The figure (pipeline/results/report.py: figures/<name>.png) that shows each headline row.
FIGURES = {
    "bn_trains_faster": "training_accuracy", "large_lr": "lr_sensitivity",
    "noisy_bn_trains_like_bn": "training_accuracy",
    "noisy_bn_shifts_more": "distribution_shift_layer2",
    "ics_l2_not_smaller": "ics_vs_loss_layer3", "ics_cosine_not_larger": "ics",
    "bn_test_accuracy": "training_accuracy",
    "loss_band_narrower": "loss_band_vs_loss", "gradient_change_smaller": "landscape_per_eta",
    "beta_smaller": "beta_max_vs_loss", "dln_batch_vs_none_loss": "dln_loss",
    "dln_l1_vs_batch_loss": "dln_loss", "dln_batch_ics_cosine": "dln_ics",
    "dln_loss_band_narrower": "dln_landscape_per_eta", "dln_beta_smaller": "dln_landscape",
}


def _paper_line(row):
    shown = f"value {number(row.paper_value)}, " if row.paper_value is not None else ""
    return (f"paper: {row.paper} ({row.paper_source}; {shown}"
            f"rule on the paper's value: {row.paper_verdict})")


def details(row):
    """What the `ClaimRow` `row` measured, as lines: its numbers, the paper's, and how to
    measure it if its runs are missing. The one rendering of a row's details: the text
    table indents them, the HTML report shows them in its table."""
    lines = kinds()[row.kind].lines(row) if row.kind else []
    lines.append(_paper_line(row))
    if row.command:
        lines.append(f"to measure: {row.command}")
    return lines


def format_claims(rows):
    """The table as text, one block per row."""
    lines = []
    for row in rows:
        note = f": {row.note}" if row.note else ""
        ours = (f" (our rule: {row.rule_verdict})"
                if row.rule_verdict and row.rule_verdict != row.verdict else "")
        lines.append(f"{row.claim}\n  -> {row.verdict.upper()}{ours}{note}")
        lines += [f"    {line}" for line in details(row)]
    return "\n".join(lines)


def answer(rows):
    """The headline rows, in ledger order, as dicts: claim, lr, layer, paper (value and
    source), paper_verdict, ours (ratio and interval), verdict, figure."""
    return [{"claim": row.claim, "lr": row.lr, "layer": row.layer, "paper": row.paper,
             "paper_value": row.paper_value, "paper_source": row.paper_source,
             "paper_verdict": row.paper_verdict, "ratio": row.ratio, "interval": row.interval,
             "verdict": row.verdict, "rule_verdict": row.rule_verdict,
             "figure": FIGURES.get(row.key, "")} for row in rows if row.headline]


def number(value):
    """A value of the ledger in 3 significant digits: a pair in parentheses, None as -."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(f"{v:.3g}" for v in value) + ")"
    return "-" if value is None else f"{value:.3g}"


def format_answer(rows):
    """'What the paper claims -> the paper's value -> what we find', one line per
    headline row."""
    lines = ["What the paper claims -> the paper's value (its verdict) -> ours -> verdict "
             "(headline rows; the ledger below)"]
    for line in answer(rows):
        at = f" (LR {line['lr']:g})" if line["lr"] is not None else ""
        ours = number(line["ratio"]) + (f" [{line['interval'][0]:.3g}, "
                                         f"{line['interval'][1]:.3g}]" if line["interval"] else "")
        lines.append(f"  {line['claim']}{at}: paper {number(line['paper_value'])} "
                     f"({line['paper_verdict']}) -> ours {ours} -> {line['verdict'].upper()}"
                     + (f"  [figure {line['figure']}]" if line["figure"] else ""))
    return "\n".join(lines)


def to_json(rows):
    """The rows as strict JSON (no NaN), ready for other tools."""
    return json.dumps([row.to_json() for row in rows], indent=2, allow_nan=False)


# The families the paper's claims are about; runs of any other network are summarized.
PAPER_FAMILIES = ("vgg", "dln")


def format_other_networks(runs):
    """Lines summarizing runs of networks the paper's claims are not about (ResNet, MLP,
    a user's factory, a model.fit run): per family, norm and LR, the runs, how they
    ended, the median last training loss and test accuracy; '' if there are none."""
    groups = {}
    for run in runs:
        if run.family not in PAPER_FAMILIES:
            groups.setdefault((run.family, run.norm, run.lr), []).append(run)
    if not groups:
        return ""

    def last(run, stream, key):
        frame = run.records.get(stream)
        return float(frame[key].iloc[-1]) if frame is not None and key in frame and len(
            frame) else float("nan")
    lines = ["Runs of networks beyond the paper's (no claims: compare them in the figures, "
             "python -m pipeline figures RUNS --notebooks your_model):"]
    for (family, norm, lr), chosen in sorted(groups.items(), key=lambda item: str(item[0])):
        statuses = sorted({run.status or "unknown" for run in chosen})
        loss = np.nanmedian([last(r, "train", "train/loss") for r in chosen] + [np.nan])
        accuracy = np.nanmedian([last(r, "eval", "test/accuracy") for r in chosen] + [np.nan])
        lines.append(f"  {family}, norm {norm}, LR {lr:g}: {len(chosen)} run(s) "
                     f"({', '.join(statuses)}), last train loss {number(loss)}, "
                     f"test accuracy {number(accuracy)} (medians)")
    return "\n".join(lines)
