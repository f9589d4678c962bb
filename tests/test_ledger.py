"""The ledger against the paper: each row's rule on the paper's own value of the same
statistic (PROTOCOL.md section 6), and no row "reproduced" where that value fails or is
absent."""

import pytest

from pipeline.results.claim_kinds import speedup_kept
from pipeline.results.claims import CLAIMS, HEADLINE, claims_table
from test_claims import _run

pytestmark = pytest.mark.backend_free  # trains nothing: run once, in the JAX pass


# The paper's own numbers (PROTOCOL.md section 6), one run each, recomputed here from
# the figures' readings as the statistic each row's paper value is of (maximum against
# maximum for the landscape, final loss against final loss for the DLN), with the
# verdict the row's rule must give them.
PAPER_NUMBERS = {
    ("bn_trains_faster", None, None): (1.6 / 3.3, "reproduced"),       # steps to 90 %
    ("bn_test_accuracy", None, None): (0.828 - 0.800, "reproduced"),   # test accuracy
    ("large_lr", None, None): (80.1 / 10.0, "reproduced"),             # test accuracy, LR 0.5
    ("noisy_bn_trains_like_bn", None, None): ((float(speedup_kept(3.3, 2.4, 1.6)), 0.0),
                                              "reproduced"),
    ("l1_trains_like_bn", None, None): ((1.0, 0.0), "reproduced"),     # "~ BN"
    ("ics_l2_not_smaller", None, None): (0.6 / 0.6, "reproduced"),     # l2 ~0.3-0.9 for both
    ("ics_cosine_not_larger", None, None): ((1 - 0.5) / (1 - 0.5), "reproduced"),
    ("loss_band_narrower", None, None): (2.7 / 9.7, "reproduced"),     # maxima over the curve
    ("gradient_change_smaller", None, None): (38 / 255, "reproduced"),
    ("beta_smaller", None, None): (20 / 46, "reproduced"),
    ("dln_batch_vs_none_loss", 1e-6, None): (4.75e2 / 1.65e3, "reproduced"),
    ("dln_l1_vs_none_loss", 1e-6, None): (96 / 1.65e3, "reproduced"),
    ("dln_l1_vs_batch_loss", 1e-6, None): (96 / 4.75e2, "reproduced"),
    ("dln_l2_vs_batch_loss", 1e-6, None): (4.8e2 / 4.75e2, "reproduced"),
    ("dln_linf_vs_batch_loss", 1e-6, None): (9.8e2 / 4.75e2, "reproduced"),
    ("dln_batch_ics_cosine", 1e-7, 9): ((1 - 0.1) / (1 - 0.99), "reproduced"),
    ("dln_batch_ics_cosine", 1e-7, 17): ((1 - 0.1) / (1 - 0.99), "reproduced"),
    # At LR 1e-6 the paper's Fig 3 shows 1 - cos about equal: its own value fails
    # "larger", so our rows there are beyond the paper.
    ("dln_batch_ics_cosine", 1e-6, 9): (0.74, "not reproduced"),
    ("dln_batch_ics_cosine", 1e-6, 17): (0.96, "not reproduced"),
    ("dln_loss_band_narrower", 1e-6, None): (1e5 / 10 ** 14.5, "reproduced"),
    ("dln_beta_smaller", 1e-6, None): (2e6 / 1.2e15, "reproduced"),
}


def test_each_rule_gives_the_papers_own_value_the_verdict_the_ledger_states():
    claims = {claim.key: claim for claim in CLAIMS}
    assert PAPER_NUMBERS[("noisy_bn_trains_like_bn", None, None)][0][0] == pytest.approx(0.44, abs=0.005)
    for (key, lr, layer), (value, expected) in PAPER_NUMBERS.items():
        claim = claims[key]
        held = claim.paper.at(lr, layer)
        assert held == pytest.approx(value), key
        assert claim.paper_verdict(held) == expected, (key, lr, layer)
    # Every headline claim has the paper's value at the paper's setting (DLN: LR 1e-6).
    for key in HEADLINE:
        lr = 1e-6 if claims[key].family == "dln" else None
        assert any(k == key and (lr is None or at == lr) for k, at, _ in PAPER_NUMBERS), key
    # The old "about equal" reading of noisy BN's steps sat on its boundary (2.4k / 1.6k).
    assert 2.4 / 1.6 == pytest.approx(1.5)
    # Beta is read as the paper reads it, the maximum over the curve: Fig 4c's median
    # over the curve (~1: BN's flat ~20 against the standard network's ~20 outside its
    # peak) would fail "smaller", so feeding it the maximum of 20 / 46 tests the rule on
    # the same statistic only because the ledger's value is declared a maximum.
    assert claims["beta_smaller"].paper.statistic.startswith("max over the curve")
    assert claims["beta_smaller"].paper_verdict(1.0) == "not reproduced"


def test_no_row_is_reproduced_where_the_papers_own_value_fails_or_is_absent():
    # Our runs pass every rule (BN 0.5x at matched loss, ICS 5x) at LR 1e-6 layers the
    # paper gives no value for, and in the beyond-the-paper rows: none reads "reproduced".
    def loss(step):
        return 3.0 * 0.97 ** step
    runs = [_run(n, s, loss=loss, family="dln", lr=1e-6, band=band, ics=ics)
            for s in range(3) for n, band, ics in (
                ("batch", lambda step: 0.5, lambda step, layer: (5.0, 0.5, 0.5)),
                ("none", lambda step: 1.0, lambda step, layer: (1.0, 1.0, 0.9)))]
    rows = claims_table(runs)
    assert [r.rule_verdict for r in rows if r.key == "dln_beta_smaller"] == ["reproduced"]
    assert [r.verdict for r in rows if r.key == "dln_beta_smaller"] == ["reproduced"]
    for row in rows:
        if row.verdict == "reproduced":
            assert row.paper_verdict == "reproduced", row.key
        if row.rule_verdict == "reproduced" and row.paper_verdict != "reproduced":
            assert row.verdict == "beyond the paper", row.key
    assert {r.verdict for r in rows if r.key == "dln_beta_smaller_transient"} <= {
        "beyond the paper", "missing records"}


def test_a_manipulation_check_is_labelled_and_not_a_headline():
    claims = {claim.key: claim for claim in CLAIMS}
    assert claims["noisy_bn_shifts_more"].check and not claims["noisy_bn_shifts_more"].headline
    assert not any(claims[key].check for key in HEADLINE)
