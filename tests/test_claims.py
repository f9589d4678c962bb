"""Claims: every measure on constructed records, matched progress, verdict rules."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import matched
from pipeline.claims import bootstrap_ratio, claims_table, format_claims, verdict
from pipeline.measures import levels_passed, steps_to_accuracy


def _run(norm, seed, reach_step=10, lr=0.1, steps=100, family="vgg", loss=None, band=None,
         ics=None, curvature=None, meta=None):
    """A run whose mini-batch accuracy jumps from 0.05 to 1.0 at `reach_step` (records at
    every step). Probe records every 2 steps carry their own training loss `loss(step)`;
    `band(step)` is the landscape's loss band, `ics(step, layer)` the (l2, relative l2,
    cosine) of layers 5 and 10, `curvature(step)` the top eigenvalue."""
    logged = np.arange(steps)
    loss = loss or (lambda step: 2.3 if step < reach_step else 0.01)
    records = {"train": pd.DataFrame({"step": logged,
                                      "train/accuracy": np.where(logged >= reach_step, 1.0, 0.05),
                                      "train/loss": [loss(s) for s in logged]})}
    probe_steps = np.arange(0, steps, 2)
    if band is not None:
        records["landscape"] = pd.DataFrame({
            "step": probe_steps, "landscape/loss": [loss(s) for s in probe_steps],
            "landscape/loss_min": 1.0, "landscape/loss_max": [1.0 + band(s) for s in probe_steps],
            "landscape/beta_max": [band(s) for s in probe_steps]})
    if ics is not None:
        records["ics"] = pd.DataFrame({
            "step": probe_steps, "ics/loss": [loss(s) for s in probe_steps],
            "ics/per_layer": [[dict(zip(("layer", "l2", "relative_l2", "cosine"),
                                        (layer, *ics(s, layer)))) for layer in (5, 10)]
                              for s in probe_steps]})
    if curvature is not None:
        records["curvature"] = pd.DataFrame({
            "step": probe_steps, "curvature/loss": [loss(s) for s in probe_steps],
            "curvature/top_eigenvalue": [curvature(s) for s in probe_steps]})
    config = {"seed": seed, "model": {"family": family, "norm": norm}, "optim": {"lr": lr},
              "train": {"steps": steps}}
    return {"path": f"{norm}-{seed}", "config": config, "meta": meta or {}, "records": records}


def _rows(runs, key):
    return [r for r in claims_table(runs) if r["key"] == key]


def _brute_force_crossing(steps, values, level, window):
    for step in steps:
        inside = [v for s, v in zip(steps, values) if abs(s - step) <= window // 2]
        if np.mean(inside) >= level:
            return step
    return None


def test_milestones_are_not_floored_by_step_0_or_the_logging_cadence():
    measure = steps_to_accuracy(0.9)
    rng = np.random.default_rng(0)
    for reach in (1, 12, 30):
        run = _run("batch", 0, reach_step=reach)
        train = run["records"]["train"]
        train["train/accuracy"] = np.clip(train["train/accuracy"] + rng.normal(0, 0.03, len(train)), 0, 1)
        expected = _brute_force_crossing(train["step"].tolist(), train["train/accuracy"].tolist(),
                                         0.9, 9)
        assert measure(run) == expected and reach <= expected <= reach + 4
    assert measure(_run("batch", 0, reach_step=200)) == 100    # never: the run's length
    # Records every 10 steps (the paper's cadence is 100): the window holds one record,
    # so the crossing is the first record at 90 %, not 4 records after the jump.
    sparse = _run("batch", 0, reach_step=30)
    sparse["records"]["train"] = sparse["records"]["train"].iloc[::10]
    assert measure(sparse) == 30


def test_a_claim_that_holds_over_five_seeds_is_reproduced_with_a_rank_test():
    runs = ([_run("batch", s, 10 + s) for s in range(5)]
            + [_run("none", s, 50 + s) for s in range(5)])
    [row] = _rows(runs, "bn_trains_faster")
    # The centred 9-step mean reaches 90 % once the whole window has jumped: 4 steps on.
    assert row["variant_median"] == 12 + 4 and row["reference_median"] == 52 + 4
    assert row["interval"][1] < 1 and row["verdict"] == "reproduced" and row["seeds"] == 5
    assert row["p_value"] == pytest.approx(2 / 252)  # all 5 below all 5: exact two-sided p
    mixed = [_run("batch", s, [20, 60, 30][s]) for s in range(3)] + [_run("none", s, 40)
                                                                     for s in range(3)]
    [row] = _rows(mixed, "bn_trains_faster")
    assert row["interval"][0] < 1 < row["interval"][1] and row["verdict"] == "inconclusive"


def test_ics_rows_read_the_l2_of_every_probed_layer():
    # BN's ||G - G'|| is 3x the standard network's in both layers, while its *relative*
    # l2 is 10x smaller: reading the relative column (or only the deepest layer, or
    # layer10 sorted before layer5 as strings) gives another verdict.
    def bn(step, layer):
        return 3.0 * layer, 0.01, 0.2

    def standard(step, layer):
        return 1.0 * layer, 0.1, 0.9
    loss = (lambda step: 2.0 * 0.97 ** step)  # both pass through the same losses
    runs = ([_run("batch", s, loss=loss, ics=bn) for s in range(3)]
            + [_run("none", s, loss=loss, ics=standard) for s in range(3)])
    rows = _rows(runs, "ics_l2_not_smaller")
    assert [r["layer"] for r in rows] == [5, 10]
    for row in rows:
        assert row["ratio"] == pytest.approx(3.0) and row["verdict"] == "reproduced"
        assert row["claim"].endswith(f"layer #{row['layer']}")
    cosine = _rows(runs, "ics_cosine_not_larger")
    assert all(r["ratio"] == pytest.approx(0.8 / 0.1) and r["verdict"] == "reproduced"
               for r in cosine)


def test_probe_claims_compare_at_matched_training_loss_with_coverage():
    # BN's loss falls fast and its band is narrow only once it has converged; at the
    # losses both pass through, BN's band is twice the standard network's.
    def bn_loss(step):
        return max(2.0 * 0.8 ** step, 1e-3)

    def standard_loss(step):
        return 2.0 * 0.97 ** step
    bn = [_run("batch", s, loss=bn_loss, band=lambda step: 1.0 if bn_loss(step) > 0.1 else 0.001)
          for s in range(3)]
    standard = [_run("none", s, loss=standard_loss, band=lambda step: 0.5) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    assert row["ratio"] == pytest.approx(2.0) and row["verdict"] == "not reproduced"
    assert all(b["loss_range"][0] >= 0.1 for b in row["matched_bins"])  # BN's converged bins unmatched
    assert row["coverage"]["1-3.16"] == {"batch": "3/3", "none": "3/33"}  # seeds/records
    # Over the whole curve (unmatched), BN's median band would read 1000x narrower.
    text = format_claims([row])
    assert "coverage (seeds/records per loss bin)" in text and "NOT REPRODUCED" in text


def test_too_few_matched_records_is_inconclusive_with_the_reason():
    bn = [_run("batch", s, loss=lambda step: 0.001, band=lambda step: 0.01) for s in range(3)]
    standard = [_run("none", s, loss=lambda step: 2.0, band=lambda step: 0.5) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    assert row["verdict"] == "inconclusive" and "too few matched records" in row["note"]
    assert "ratio" not in row and row["coverage"]  # coverage still shown


def test_matched_comparison_is_the_geometric_mean_of_per_bin_ratios():
    rng = np.random.default_rng(0)
    loss = np.geomspace(3.0, 0.01, 40)
    reference = pd.DataFrame({"seed": np.repeat([0, 1], 40), "step": np.tile(np.arange(1, 41), 2),
                              "loss": np.tile(loss, 2), "value": np.tile(loss, 2)})
    # Variant = 2 x reference at high loss, 8 x at low loss (bins below 0.1).
    variant = reference.assign(value=reference["value"] * np.where(reference["loss"] > 0.1, 2, 8))
    result = matched.compare(variant, reference, rng, resamples=50)
    ratios = [b["ratio"] for b in result["bins"]]
    assert ratios[0] == pytest.approx(2) and ratios[-1] == pytest.approx(8)
    expected = np.exp(np.mean(np.log(ratios)))
    assert result["ratio"] == pytest.approx(expected)
    # Step 0 is never counted, whatever it holds.
    at_zero = pd.concat([variant, variant.iloc[:1].assign(step=0, value=1e9)])
    assert matched.compare(at_zero, reference, rng, resamples=10)["ratio"] == pytest.approx(expected)


def test_dln_rows_count_the_plateaus_passed():
    levels = [90000.0, 60000.0, 37000.0, 21000.0, 13000.0, 5900.0]
    meta = {"loss_levels": levels}

    def dln(norm, seed, final):
        return _run(norm, seed, family="dln", lr=1e-6, loss=lambda step: final, meta=meta)
    assert levels_passed(dln("none", 0, 21050.0)) == 3   # on the rank-3 plateau
    runs = [dln("batch", s, 5910.0) for s in range(3)] + [dln("none", s, 21050.0) for s in range(3)]
    [row] = _rows(runs, "dln_batch_more_levels")
    assert row["variant_median"] == 5 and row["reference_median"] == 3
    assert row["verdict"] == "reproduced"


def test_edge_of_stability_and_beta_against_curvature_rows():
    runs = [_run("none", s, lr=0.1, curvature=lambda step: 20.0 if step else 500.0,
                 band=lambda step: 20.0) for s in range(3)]
    [row] = _rows(runs, "edge_of_stability_none")
    assert row["variant_median"] == pytest.approx(1.0) and row["verdict"] == "reproduced"
    [row] = _rows(runs, "beta_is_curvature_none")
    assert row["variant_median"] == pytest.approx(1.0) and row["verdict"] == "reproduced"


def test_bootstrap_interval_and_rules():
    rng = np.random.default_rng(0)
    assert bootstrap_ratio([2.0, 2.0, 2.0], [4.0, 4.0], rng) == (0.5, 0.5)
    low, high = bootstrap_ratio([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], rng)
    assert low == pytest.approx(0.5) and high == pytest.approx(1.5)
    assert verdict("smaller", (0.2, 0.9)) == "reproduced"
    assert verdict("smaller", (1.0, 3.0)) == "not reproduced"
    assert verdict("larger", (0.5, 1.5)) == "inconclusive"
    assert verdict("about equal", (0.8, 1.3)) == "reproduced"
    assert verdict("about equal", (2.0, 3.0)) == "not reproduced"
    assert verdict("not smaller", (0.9, 5.0)) == "reproduced"
    assert verdict("not smaller", (0.1, 0.5)) == "not reproduced"


def test_missing_runs_say_how_to_make_them_and_the_table_is_json(tmp_path, capsys):
    from pipeline.__main__ import main
    rows = claims_table([_run("batch", 0), _run("none", 0)])
    large_lr = next(r for r in rows if r["key"] == "large_lr")
    assert large_lr["verdict"] == "missing runs" and large_lr["command"] == "make demo"
    one_seed = next(r for r in rows if r["key"] == "bn_trains_faster")
    assert one_seed["verdict"] == "inconclusive" and one_seed["note"] == "one seed: no interval"
    json.dumps(rows)  # every row is JSON as it is
    assert main(["claims", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bins_that_disagree_make_a_probe_claim_inconclusive_and_say_where():
    # BN rougher than standard at high loss (its first steps), smoother at low loss: a
    # mean over bins would be decided by the most extreme bin.
    def loss(step):
        return 3.0 * 0.93 ** step

    def bn_band(step):
        return 300.0 if loss(step) > 1 else 0.1

    bn = [_run("batch", s, loss=loss, band=bn_band) for s in range(3)]
    standard = [_run("none", s, loss=loss, band=lambda step: 1.0) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    verdicts = {b["loss_range"][0] >= 1: b["verdict"] for b in row["matched_bins"]}
    assert verdicts == {True: "not reproduced", False: "reproduced"}
    assert row["verdict"] == "inconclusive" and row["note"].startswith("the loss bins disagree")
    assert "holds at training loss 0.32-1 (reproduced)" in row["note"]
    assert "fails at 1-3.2 (not reproduced)" in row["note"]
