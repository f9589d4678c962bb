"""The claims ledger (`python -m pipeline claims RUNS... [--json]`): every empirical claim
of the paper as a row, at the paper's setting, with the paper's own value of the row's
statistic and the verdict our rule gives it, beside what we find (PROTOCOL.md sections
6 and 8).

A claim is an object of its kind (pipeline.results.claim_kinds: run level, matched
probe, trains like BN, paired), which compares the runs and prints its row. A row is
"reproduced" only where the paper's own value at that setting passes the row's rule;
where it fails, or the paper has no value there, the row is "beyond the paper" (what we
find where the paper shows no effect), whatever our rule says of our runs (kept as
`rule_verdict`). A manipulation check (true by construction when the code is right) is
labelled "check passed" or "check failed" and never counted among the findings. A row
whose runs or records are missing says which command makes them.
"""

import dataclasses

import numpy as np
from pipeline.results.claim_kinds import (FINAL_LOSS, LargeLR, Paired, Paper, RunLevel,
                                          TrainsLikeBN, final_test_accuracy)
from pipeline.results.claim_probe import MatchedProbe
from pipeline.results.claim_row import ClaimRow
from pipeline.results.measures import (CURVATURE, DLN_LANDSCAPE, ICS_COSINE, ICS_L2,
                                       ICS_RELATIVE, LOCAL_BETA, VGG_LANDSCAPE, activation_shift,
                                       beta_over_curvature, edge_of_stability, final_log_loss,
                                       levels_passed, mean_log_loss, steps_to_accuracy,
                                       transient_median)
from pipeline.results.analysis import MILESTONE_WINDOW
from pipeline.results.measures import TRANSIENT
from pipeline.results.rules import MILESTONE_LEVEL, RULES, percent

LEVEL = percent(MILESTONE_LEVEL)
MILESTONE = (f"steps to {LEVEL} mini-batch training accuracy (centred {MILESTONE_WINDOW}-step "
             "average)")
LIKE_BN = f"share of BN's speed-up kept (steps to {LEVEL}) and test accuracy minus BN's"
EARLY = percent(TRANSIENT)
DLN_CURVE = "geometric-mean training loss over the run, paired by seed (variant / reference)"
DLN_SHOWN = (FINAL_LOSS, ("rank-k levels passed", levels_passed))
FIG_4 = "max over the curve after step 0, one run"

# VGG: BN against the standard network at the smallest LR of the runs.
BN_VGG = dict(family="vgg", variant="batch", reference="none", lr="low")
# The DLN at the paper's LR 1e-6 (PROTOCOL.md section 1).
BN_DLN = dict(family="dln", variant="batch", reference="none", lr=1e-6)


def _landscape(key, text, statistic, measure, paper, headline=False, setting=BN_VGG):
    """A landscape claim (BN smoother than standard, per step size too) and its
    initial-transient row (beyond the paper)."""
    return [MatchedProbe(key=key, text=text, **setting, statistic=statistic, measure=measure,
                         per_eta=True, expect="smaller", paper=paper, headline=headline),
            RunLevel(key=f"{key}_transient",
                     text=f"beyond the paper: BN is rougher during its first {EARLY} of steps "
                          f"({statistic})", **setting,
                     statistic=f"median of {statistic} over the initial transient (steps 1 "
                               f"to {EARLY} of the run)",
                     measure=transient_median(measure), expect="larger")]


def _dln_loss(variant, reference, expect, paper, headline=False, lr=1e-6, text=None):
    names = {"batch": "BN", "none": "the standard network", "l1": "l1", "l2": "l2",
             "linf": "linf"}
    relation = {"smaller": "lower loss than", "about equal": "about the loss of",
                "larger": "higher loss than"}[expect]
    return Paired(key=f"dln_{variant}_vs_{reference}_loss",
                  text=text or f"on the DLN, {names[variant]} trains to {relation} "
                               f"{names[reference]}",
                  family="dln", variant=variant, reference=reference, lr=lr,
                  statistic=DLN_CURVE, measure=mean_log_loss, paper_measure=final_log_loss,
                  shown=DLN_SHOWN, expect=expect, paper=paper, headline=headline)


def _fig5(variant, reference):
    final = {"none": 1.65e3, "batch": 4.75e2, "l1": 96, "l2": 4.8e2, "linf": 9.8e2}
    return Paper(source="Fig 5 (DLN final training loss, LR 1e-6); PROTOCOL.md section 6",
                 reading=f"final loss {variant} {final[variant]:.3g} vs {reference} "
                         f"{final[reference]:.3g} at LR 1e-6",
                 value={1e-6: final[variant] / final[reference]},
                 statistic="final training loss, one run (ours: per seed pair, geometric mean)")


CLAIMS = [
    RunLevel(key="bn_trains_faster", text="BN trains faster", **BN_VGG, statistic=MILESTONE,
             measure=steps_to_accuracy(MILESTONE_LEVEL), expect="smaller", headline=True,
             paper=Paper("Fig 1 (training accuracy, LR 0.1); PROTOCOL.md section 6",
                         "BN 1.6k vs standard 3.3k steps to 90 %", 1.6 / 3.3)),
    RunLevel(key="bn_test_accuracy", text="BN reaches a higher test accuracy", **BN_VGG,
             statistic="test accuracy at the runs' last step (BN minus standard)",
             measure=final_test_accuracy, difference=True, expect="accuracy higher",
             headline=True,
             paper=Paper("Fig 1 (test accuracy, LR 0.1, 15k steps); PROTOCOL.md section 6",
                         "BN 82.8 % vs standard 80.0 %", 0.828 - 0.800)),
    LargeLR(key="large_lr", text="at the large LR the standard network fails while BN trains",
            **{**BN_VGG, "lr": "high"},
            statistic="test accuracy at the runs' last step (a horizon at which the standard "
                      f"network at the small LR has passed {LEVEL})",
            measure=final_test_accuracy, expect="larger", headline=True,
            paper=Paper("Fig 1 (test accuracy, LR 0.5); PROTOCOL.md section 6",
                        "BN 80.1 % vs standard 10 % (does not train)", 80.1 / 10.0)),
    TrainsLikeBN(key="noisy_bn_trains_like_bn", text="noisy BN trains like BN", family="vgg",
                 variant="noisy_batch", reference="batch", lr="low", statistic=LIKE_BN,
                 expect="keeps speed-up", headline=True,
                 paper=Paper("Fig 2 (training accuracy, LR 0.1); PROTOCOL.md section 6",
                             "noisy BN 2.4k, BN 1.6k, standard 3.3k steps to 90 % (keeps 44 %); "
                             "test accuracy about BN's (read as a difference of 0)",
                             (float(np.log(3.3 / 2.4) / np.log(3.3 / 1.6)), 0.0),
                             "(share of the speed-up kept, test accuracy minus BN's)")),
    RunLevel(key="noisy_bn_shifts_more", text="noisy BN's activations shift more than BN's",
             family="vgg", variant="noisy_batch", reference="batch", lr="low",
             statistic="mean change of per-channel activation means between probe steps",
             measure=activation_shift, expect="larger", check=True,
             paper=Paper("Algorithm 1 and Fig 8 (activation distributions)",
                         "the injected noise shifts the means by E|delta mu| = 1/3 by "
                         "construction: a check that the noise is there, not a finding")),
    MatchedProbe(key="ics_l2_not_smaller", text="ICS (l2) is not smaller with BN", **BN_VGG,
                 statistic="||G - G'||", measure=ICS_L2, paper_reduce="median",
                 expect="not smaller", headline=True,
                 paper=Paper("Fig 3 (VGG, LR 0.1, layers #5 and #10)",
                             "l2 ~0.3-0.9 for both networks", 1.0,
                             "typical value over the curve, one run")),
    MatchedProbe(key="ics_cosine_not_larger",
                 text="ICS (cosine) is not smaller with BN: cos(G, G') not closer to 1",
                 **BN_VGG, statistic="1 - cos(G, G')", measure=ICS_COSINE,
                 paper_reduce="median", expect="not smaller", headline=True,
                 paper=Paper("Fig 3 (VGG, LR 0.1, layers #5 and #10)",
                             "cos 0.37-0.66 (#5) and 0.02-0.16 (#10) for both networks", 1.0,
                             "typical value over the curve, one run")),
    MatchedProbe(key="ics_relative_not_smaller",
                 text="beyond the paper: ICS relative to the gradient is not smaller with BN",
                 **BN_VGG, statistic="||G - G'|| / ||G||", measure=ICS_RELATIVE,
                 paper_reduce="median", expect="not smaller"),
    *_landscape("loss_band_narrower", "the loss band is narrower with BN",
                "loss_max - loss_min along the gradient (the paper's grid, eta >= LR/2)",
                VGG_LANDSCAPE["band"],
                Paper("Fig 4a (VGG, LR 0.1)", "max ~9.7 vs <= 2.7", 2.7 / 9.7, FIG_4), True),
    *_landscape("gradient_change_smaller", "gradient change is smaller with BN",
                "max over the paper's grid of ||grad(theta - eta g) - g||",
                VGG_LANDSCAPE["grad_change"],
                Paper("Fig 4b (VGG, LR 0.1); Fig 11 against the step size", "max ~255 vs ~38",
                      38 / 255, FIG_4), True),
    MatchedProbe(key="gradient_change_relative_smaller",
                 text="beyond the paper: gradient change relative to the gradient is smaller "
                      "with BN", **BN_VGG,
                 statistic="max over the paper's grid of ||grad(theta - eta g) - g|| / ||g||",
                 measure=VGG_LANDSCAPE["relative_grad_change"], per_eta=True, expect="smaller"),
    *_landscape("beta_smaller", "the effective beta is smaller with BN",
                "effective beta-smoothness, max over the paper's grid (eta in {1/2 ... 4} x LR)",
                VGG_LANDSCAPE["beta"],
                Paper("Fig 4c (VGG, LR 0.1)", "max ~46 vs ~20 (BN's flat)", 20 / 46, FIG_4), True),
    MatchedProbe(key="local_beta_smaller",
                 text="beyond the paper: local curvature along the gradient (the effective "
                      "beta at the grid's smallest step) is smaller with BN", **BN_VGG,
                 statistic="||grad(theta - eta g) - g|| / ||eta g|| at eta = LR/16",
                 measure=LOCAL_BETA, expect="smaller"),
    *[TrainsLikeBN(key=f"{p}_trains_like_bn", text=f"{p} normalization trains like BN",
                   family="vgg", variant=p, reference="batch", lr="low", statistic=LIKE_BN,
                   expect="keeps speed-up",
                   paper=Paper("Fig 5 (VGG, l_p training accuracy)", "l1, l2, linf ~ BN "
                               "(read as BN's steps and accuracy)", (1.0, 0.0),
                               "(share of the speed-up kept, test accuracy minus BN's)"))
      for p in ("l1", "l2", "linf")],
    *[MatchedProbe(key=f"{p}_gradient_change_smaller",
                   text=f"{p} normalization's gradient change is smaller than the standard "
                        "network's", family="vgg", variant=p, reference="none", lr="low",
                   statistic="max over the paper's grid of ||grad(theta - eta g) - g||",
                   measure=VGG_LANDSCAPE["grad_change"], per_eta=True, expect="smaller",
                   paper=Paper("Fig 12 (VGG, l_p landscapes)", "l_p about as smooth as BN "
                               "(no value read off)"))
      for p in ("l1", "l2", "linf")],
    # At each LR the runs have; the paper's value is at LR 1e-6 (at 1e-7: beyond it).
    _dln_loss("batch", "none", "smaller", _fig5("batch", "none"), headline=True, lr="each"),
    _dln_loss("l1", "none", "smaller", _fig5("l1", "none")),
    _dln_loss("l1", "batch", "smaller", _fig5("l1", "batch"), headline=True),
    _dln_loss("l2", "batch", "about equal", _fig5("l2", "batch")),
    _dln_loss("linf", "batch", "larger", _fig5("linf", "batch")),
    _dln_loss("linf", "none", "smaller", _fig5("linf", "none")),
    MatchedProbe(key="dln_batch_ics_cosine",
                 text="on the DLN, BN makes G and G' far less aligned (1 - cos larger)",
                 family="dln", variant="batch", reference="none", lr="each",
                 statistic="1 - cos(G, G')", measure=ICS_COSINE, paper_reduce="median",
                 expect="larger", headline=True,
                 paper=Paper("Fig 3 (DLN, layers #9 and #17)", "LR 1e-7: standard cos ~0.99, "
                             "BN ~0.1; LR 1e-6: 1 - cos BN / standard ~0.74 (#9), ~0.96 (#17)",
                             {(1e-7, 9): (1 - 0.1) / (1 - 0.99),
                              (1e-7, 17): (1 - 0.1) / (1 - 0.99),
                              (1e-6, 9): 0.74, (1e-6, 17): 0.96},
                             "typical value over the curve, one run")),
    *_landscape("dln_loss_band_narrower", "on the DLN, the loss band is narrower with BN",
                "loss_max - loss_min along the gradient (eta in [1/100, 30] x LR)",
                DLN_LANDSCAPE["band"],
                Paper("Fig 10a (DLN, LR 1e-6); PROTOCOL.md section 6", "max ~1e14.5 vs <= 1e5",
                      1e5 / 10 ** 14.5, FIG_4), True, BN_DLN),
    MatchedProbe(key="dln_gradient_change_smaller",
                 text="on the DLN, gradient change is smaller with BN", **BN_DLN,
                 statistic="max over the grid of ||grad(theta - eta g) - g||",
                 measure=DLN_LANDSCAPE["grad_change"], per_eta=True, expect="smaller",
                 paper=Paper("Fig 10b (DLN, LR 1e-6)", "smaller with BN (no value read off)")),
    *_landscape("dln_beta_smaller", "on the DLN, the effective beta is smaller with BN",
                "effective beta-smoothness, max over the grid (eta in [1/100, 30] x LR)",
                DLN_LANDSCAPE["beta"],
                Paper("Fig 10c (DLN, LR 1e-6); PROTOCOL.md section 6", "max ~1.2e15 vs ~2e6",
                      2e6 / 1.2e15, FIG_4), True, BN_DLN),
    *[MatchedProbe(key="dln_l1_gradient_change_smaller",
                   text="on the DLN, l1 normalization's gradient change is smaller than the "
                        "standard network's", family="dln", variant="l1", reference="none",
                   lr=1e-6, statistic="max over the grid of ||grad(theta - eta g) - g||",
                   measure=DLN_LANDSCAPE["grad_change"], per_eta=True, expect="smaller",
                   paper=Paper("Fig 13 (DLN, l_p landscapes)", "l_p about as smooth as BN "
                               "(no value read off)"))],
    MatchedProbe(key="dln_batch_curvature_smaller",
                 text="beyond the paper: on the DLN, the top Hessian eigenvalue is smaller "
                      "with BN", **BN_DLN, statistic="|top Hessian eigenvalue|",
                 measure=CURVATURE, expect="smaller"),
    *[RunLevel(key=f"dln_edge_of_stability_{p}",
               text=f"beyond the paper: on the DLN, {name} trains at the edge of stability "
                    "(top eigenvalue ~ 2/LR)", family="dln", variant=p, reference=None,
               lr=1e-6, statistic="|top Hessian eigenvalue| in units of 2/LR, median over the "
                                  "second half of the run",
               measure=edge_of_stability, expect="about equal")
      for p, name in (("none", "the standard network"), ("batch", "BN"))],
    *[RunLevel(key=f"dln_beta_is_curvature_{p}",
               text=f"beyond the paper: on the DLN, {name}'s effective beta measures the "
                    "curvature (beta ~ |top eigenvalue|)", family="dln", variant=p,
               reference=None, lr=1e-6,
               statistic="effective beta / |top Hessian eigenvalue| at the same steps",
               measure=beta_over_curvature, expect="about equal")
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


# An interval across its rule's boundary is thin evidence, not a finding either way.
UNDECIDED = ("the interval crosses the rule's boundary: more seeds (their number fixed "
             "before the runs, on both seed sets) would narrow it")
DECIDED = ("reproduced", "not reproduced", "inconclusive")


def _standing(claim, values):
    """The row's final verdict from its rule's verdict on our runs and the paper's value."""
    found = values.get("verdict")
    paper_value = claim.paper.at(values.get("lr"), values.get("layer"))
    paper_verdict = claim.paper_verdict(paper_value)
    standing = {"paper_value": paper_value, "paper_source": claim.paper.source,
                "paper_verdict": paper_verdict, "rule_verdict": found, "check": claim.check}
    if found not in DECIDED:
        return standing
    if found == "inconclusive" and not values.get("note"):
        standing["note"] = UNDECIDED
    if claim.check:
        standing["verdict"] = {"reproduced": "check passed",
                               "not reproduced": "check failed"}.get(found, found)
    elif paper_verdict != "reproduced":
        standing["verdict"] = "beyond the paper"
    return standing


def evaluate_claim(claim, groups, lrs, rng):
    """The ledger rows (`ClaimRow`) of `claim`: one per LR it is read at, and per probed
    layer."""
    base = {"claim": claim.text, "key": claim.key, "statistic": claim.statistic,
            "variant": claim.variant, "reference": claim.reference,
            "paper": claim.paper.reading, "rule": RULES[claim.expect].text,
            "headline": claim.headline}
    rows = []
    for lr in _claim_lrs(claim, lrs) or [None]:
        chosen = {norm: claim.runs_read(groups.get((claim.family, norm, lr), []))
                  for norm in claim.norms()}
        if lr is None or not all(chosen.values()):
            values = {**base, "lr": lr, "verdict": "missing runs", "command": "make demo"}
            rows.append(ClaimRow.of("", {**values, **_standing(claim, values)}))
            continue
        for found in claim.evaluate(chosen, groups, lr, rng):
            values = {**base, "lr": lr, **found}
            kind = claim.kind if "command" not in found else ""
            rows.append(ClaimRow.of(kind, {**values, **_standing(claim, values)}))
    return rows


def claims_table(runs, claims=CLAIMS, seed=0):
    """The ledger's rows (`ClaimRow`s), from runs as `pipeline.results.analysis.load_runs`
    gives them."""
    groups, lrs = _groups(runs)
    rng = np.random.default_rng(seed)
    return [row for claim in claims for row in evaluate_claim(claim, groups, lrs, rng)]
