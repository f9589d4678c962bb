"""Claims: every measure on constructed records, matched progress, verdict rules."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.run_meta import RunMeta
from pipeline.core.runs import LoadedRun
from pipeline.results import matched
from pipeline.results.claims import claims_table
from pipeline.results.claims_format import format_answer, format_claims, to_json
from pipeline.results.measures import levels_passed, mean_log_loss, steps_to_accuracy
from pipeline.results.rules import RULES, bootstrap_ratio, verdict


def _run(norm, seed, reach_step=10, lr=0.1, steps=100, family="vgg", loss=None, band=None,
         ics=None, curvature=None, meta=None, test_accuracy=None):
    """A run whose mini-batch accuracy jumps from 0.05 to 1.0 at `reach_step` (records at
    every step). Probe records every 2 steps carry their own training loss `loss(step)`;
    `band(step)` is the landscape's loss band, `ics(step, layer)` the (l2, relative l2,
    cosine) of layers 5 and 10, `curvature(step)` the top eigenvalue."""
    logged = np.arange(steps)
    loss = loss or (lambda step: 2.3 if step < reach_step else 0.01)
    records = {"train": pd.DataFrame({"step": logged,
                                      "train/accuracy": np.where(logged >= reach_step, 1.0, 0.05),
                                      "train/loss": [loss(s) for s in logged]})}
    if test_accuracy is not None:
        records["eval"] = pd.DataFrame({"step": [steps // 2, steps],
                                        "test/accuracy": [test_accuracy / 2, test_accuracy]})
    probe_steps = np.arange(0, steps, 2)
    if band is not None:  # the paper's grid {1/2 ... 4} x LR: band, gradient change, beta
        records["landscape"] = pd.DataFrame({
            "step": probe_steps, "landscape/loss": [loss(s) for s in probe_steps],
            "landscape/loss_min": 1.0, "landscape/loss_max": [1.0 + band(s) for s in probe_steps],
            "landscape/beta_max": [band(s) for s in probe_steps],
            "landscape/grad_norm": 1.0,
            "landscape/per_eta": [[{"multiplier": m, "eta": m * lr,
                                    "loss_at_eta": 1.0 + band(s) * (m == 1.0),
                                    "grad_change": band(s), "beta": band(s)}
                                   for m in (0.5, 1.0, 2.0, 4.0)] for s in probe_steps]})
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
    return LoadedRun(path=f"{norm}-{seed}", config=config, meta=meta or RunMeta(),
                     records=records)


def _rows(runs, key):
    return [r for r in claims_table(runs) if r.key == key]


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
        train = run.records["train"]
        train["train/accuracy"] = np.clip(train["train/accuracy"] + rng.normal(0, 0.03, len(train)), 0, 1)
        expected = _brute_force_crossing(train["step"].tolist(), train["train/accuracy"].tolist(),
                                         0.9, 9)
        assert measure(run) == expected and reach <= expected <= reach + 4
    assert measure(_run("batch", 0, reach_step=200)) == 100    # never: the run's length
    # Records every 10 steps (the paper's cadence is 100): the window holds one record,
    # so the crossing is the first record at 90 %, not 4 records after the jump.
    sparse = _run("batch", 0, reach_step=30)
    sparse.records["train"] = sparse.records["train"].iloc[::10]
    assert measure(sparse) == 30


def test_a_claim_that_holds_over_five_seeds_is_reproduced_with_a_rank_test():
    runs = ([_run("batch", s, 10 + s) for s in range(5)]
            + [_run("none", s, 50 + s) for s in range(5)])
    [row] = _rows(runs, "bn_trains_faster")
    # The centred 9-step mean reaches 90 % once the whole window has jumped: 4 steps on.
    assert row.measured["variant_median"] == 12 + 4 and row.measured["reference_median"] == 52 + 4
    assert row.interval[1] < 1 and row.verdict == "reproduced" and row.seeds == 5
    assert row.p_value == pytest.approx(2 / 252)  # all 5 below all 5: exact two-sided p
    mixed = [_run("batch", s, [20, 60, 30][s]) for s in range(3)] + [_run("none", s, 40)
                                                                     for s in range(3)]
    [row] = _rows(mixed, "bn_trains_faster")
    assert row.interval[0] < 1 < row.interval[1] and row.verdict == "inconclusive"


def test_an_interval_across_the_boundary_is_inconclusive_and_says_what_would_decide_it():
    # Medians 30 against 35 steps from overlapping seeds: the interval straddles 1.
    runs = [_run(norm, s, reach_step=reach + 10 * s) for s in range(5)
            for norm, reach in (("batch", 10), ("none", 15))]
    [row] = _rows(runs, "bn_trains_faster")
    assert row.interval[0] < 1 < row.interval[1] and row.verdict == "inconclusive"
    assert "more seeds" in row.note
    assert "INCONCLUSIVE: the interval crosses the rule's boundary" in format_claims([row])


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
    assert [r.layer for r in rows] == [5, 10]
    for row in rows:
        assert row.ratio == pytest.approx(3.0) and row.verdict == "reproduced"
        assert row.claim.endswith(f"layer #{row.layer}")
    cosine = _rows(runs, "ics_cosine_not_larger")
    assert all(r.ratio == pytest.approx(0.8 / 0.1) and r.verdict == "reproduced"
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
    assert row.ratio == pytest.approx(2.0) and row.verdict == "not reproduced"
    bins = row.measured["matched_bins"]
    assert all(b["loss_range"][0] >= 0.1 for b in bins)  # BN's converged bins unmatched
    # Training regime only (steps >= 5 of 100): standard steps 6..22 lie in 1-3.16, BN none.
    cell = row.measured["coverage"]["1-3.16"]
    assert cell["batch"]["records"] == 0
    assert cell["none"] == {"seeds": 3, "records": 27, "steps": [6, 22], "oscillating": None}
    text = format_claims([row])
    assert "coverage in the training regime (seeds with >= 2 records / records" in text
    assert "none 3/27, steps 6-22" in text
    assert "NOT REPRODUCED" in text


def test_too_few_matched_records_is_inconclusive_with_the_reason():
    bn = [_run("batch", s, loss=lambda step: 0.001, band=lambda step: 0.01) for s in range(3)]
    standard = [_run("none", s, loss=lambda step: 2.0, band=lambda step: 0.5) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    assert row.verdict == "inconclusive" and "too few matched records" in row.note
    assert row.ratio is None and row.measured["coverage"]  # coverage still shown
    # Two seeds of each variant are not enough for a bin (3 are needed).
    two = [_run(n, s, loss=lambda step: 2.0 * 0.97 ** step, band=lambda step: 1.0)
           for n in ("batch", "none") for s in range(2)]
    [row] = _rows(two, "loss_band_narrower")
    assert row.verdict == "inconclusive" and "0 loss bin(s) with >= 2 records from each of >= 3 seeds" in row.note


def test_matched_comparison_is_the_geometric_mean_of_per_bin_ratios():
    rng = np.random.default_rng(0)
    loss = np.geomspace(3.0, 0.01, 40)
    reference = pd.DataFrame({"seed": np.repeat([0, 1, 2], 40), "step": np.tile(np.arange(1, 41), 3),
                              "loss": np.tile(loss, 3), "value": np.tile(loss, 3)})
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


def test_every_bootstrap_draw_keeps_every_matched_bin():
    # Bin 0 holds seeds 0-2 of each variant, bin 1 only seeds 3-5: a draw of seeds 0-2
    # (or of seeds no bin has) must still give both bins a value, from the bin's own seeds.
    per_seed = [{0: {0: 2.0, 1: 2.0, 2: 2.0}, 1: {3: 8.0, 4: 8.0, 5: 8.0}},
                {0: {0: 1.0, 1: 1.0, 2: 1.0}, 1: {3: 1.0, 4: 1.0, 5: 1.0}}]
    rng = np.random.default_rng(0)
    for drawn in ([0, 1, 2], [9, 9, 9]):
        logs = matched._log_ratios(per_seed, [0, 1], [drawn, drawn], rng)
        assert np.exp(logs) == pytest.approx([2.0, 8.0])
    # The same, vectorized over draws, as compare() draws them: every draw of seeds 0-5
    # has both bins (most draws leave one bin with few of its seeds, some with none).
    seeds = [np.arange(6), np.arange(6)]
    logs = matched._bootstrap_log_ratios(per_seed, [0, 1], seeds, rng, 500)
    assert logs.shape == (500, 2) and np.exp(logs) == pytest.approx(np.tile([2.0, 8.0], (500, 1)))
    # ... and a draw's median is the median of the drawn seeds the bin has.
    varied = [{0: {0: 1.0, 1: 2.0, 2: 4.0}}, {0: {0: 1.0, 1: 1.0, 2: 1.0}}]
    draws = np.exp(matched._bootstrap_log_ratios(varied, [0], [np.arange(3)] * 2, rng, 2000))
    assert set(np.round(draws.ravel(), 6)) == {1.0, 2.0, 4.0}
    assert abs(np.mean(draws == 2.0) - 13 / 27) < 0.04  # P(median of 3 draws is the middle)


def test_the_initial_transient_has_its_own_row_and_vetoes_nothing():
    # BN's band is 300x the standard network's in its first 5 % of steps (steps 1-4 of
    # 100) and half of it after: the training-regime row says smoother, the transient
    # row rougher, at the same losses.
    def loss(step):
        return 3.0 * 0.97 ** step
    bn = [_run("batch", s, loss=loss, band=lambda step: 300.0 if step < 5 else 0.5)
          for s in range(3)]
    standard = [_run("none", s, loss=loss, band=lambda step: 1.0) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    assert row.ratio == pytest.approx(0.5) and row.verdict == "reproduced"
    assert row.note is None
    [row] = _rows(bn + standard, "loss_band_narrower_transient")
    assert row.measured["variant_median"] == pytest.approx(300.0)
    assert row.rule_verdict == "reproduced" and row.verdict == "beyond the paper"


def test_a_bin_against_the_verdict_is_named_not_a_veto():
    def loss(step):
        return 3.0 * 0.93 ** step

    def bn_band(step):  # rougher while the loss is above 1, much smoother below
        return 3.0 if loss(step) > 1 else 0.01
    bn = [_run("batch", s, loss=loss, band=bn_band) for s in range(3)]
    standard = [_run("none", s, loss=loss, band=lambda step: 1.0) for s in range(3)]
    [row] = _rows(bn + standard, "loss_band_narrower")
    assert row.verdict == "reproduced" and row.interval[1] < 1
    assert row.note.startswith("loss bin(s) where the interval says otherwise: 1-3.2")


def _dln(norm, seed, scale, lr=1e-6):
    meta = RunMeta(loss_levels=[9e4, 3e4, 1e4, 3e3, 1e3])
    return _run(norm, seed, family="dln", lr=lr, steps=100, meta=meta,
                loss=lambda step: scale * (1e4 * 0.95 ** step + 1e3 * (1 + 0.1 * seed)))


def test_dln_rows_compare_the_whole_loss_curve_paired_by_seed():
    runs = [_dln(norm, s, scale) for s in range(6) for norm, scale in (("none", 1.0), ("batch", 0.5),
                                                                      ("l1", 0.1))]
    for key, ratio in (("dln_batch_vs_none_loss", 0.5), ("dln_l1_vs_none_loss", 0.1)):
        [row] = _rows(runs, key)
        assert row.ratio == pytest.approx(ratio) and row.interval == pytest.approx([ratio] * 2)
        assert row.verdict == "reproduced" and row.measured["pairs"] == 6
        assert row.p_value == pytest.approx(2 / 64)  # all 6 pairs one way: exact two-sided p
    # The statistic is the mean log10 loss: NumPy's geometric mean of the records.
    losses = runs[0].records["train"]["train/loss"]
    assert 10 ** mean_log_loss(runs[0]) == pytest.approx(np.exp(np.log(losses).mean()))
    # A seed that goes the other way: the paired test no longer reaches 0.05.
    runs[1] = _dln("batch", 0, 3.0)
    [row] = _rows(runs, "dln_batch_vs_none_loss")
    assert row.p_value > 0.05 and row.verdict in ("inconclusive", "reproduced")
    text = format_claims([row])
    assert "median final loss" in text and "signed-rank p" in text


def test_a_longer_run_set_feeds_the_probe_rows_and_the_plans_length_the_loss_rows():
    # PROTOCOL.md section 8: the standard DLN also trains 4x longer, with ICS, so that it
    # reaches the losses BN passes; the loss rows still compare the 100-step runs.
    def loss(scale):
        return lambda step: scale * (1e4 * 0.97 ** step + 1e2)

    def cosine(value):
        return lambda step, layer: (1.0, 1.0, value)
    runs = []
    for s in range(6):
        runs += [_run("batch", s, family="dln", lr=1e-6, loss=loss(0.5), ics=cosine(0.5)),
                 _run("none", s, family="dln", lr=1e-6, loss=loss(1.0), ics=cosine(0.99)),
                 _run("none", s, family="dln", lr=1e-6, steps=400, loss=loss(1.0),
                      ics=cosine(0.9))]
    [row] = _rows(runs, "dln_batch_vs_none_loss")
    assert row.measured["pairs"] == 6 and row.ratio == pytest.approx(0.5)  # the 100-step runs
    rows = _rows(runs, "dln_batch_ics_cosine")
    assert [r.layer for r in rows] == [5, 10]
    for row in rows:  # 1 - cos: BN 0.5 against the long runs' 0.1, not the short runs' 0.01
        assert row.seeds == 6 and len(row.measured["matched_bins"]) >= 2
        assert row.ratio == pytest.approx(5.0) and row.rule_verdict == "reproduced"
        # The paper has no value at these layers and LR 1e-6: beyond the paper, never
        # a "reproduced" (PROTOCOL.md section 8).
        assert row.paper_value is None and row.verdict == "beyond the paper"


def test_trains_like_bn_reads_the_share_of_the_speed_up_kept_and_test_accuracy():
    def runs(variant_step, variant_accuracy):
        return ([_run("none", s, 300 + s, steps=400, test_accuracy=0.95) for s in range(5)]
                + [_run("batch", s, 40 + s, steps=400, test_accuracy=0.99) for s in range(5)]
                + [_run("noisy_batch", s, variant_step + s, steps=400,
                        test_accuracy=variant_accuracy) for s in range(5)])
    [row] = _rows(runs(60, 0.985), "noisy_bn_trains_like_bn")
    expected = np.log(306 / 66) / np.log(306 / 46)  # medians, 4 steps for the centred window
    assert row.ratio == pytest.approx(expected) and row.verdict == "reproduced"
    m = row.measured
    assert m["accuracy_step"] == 400 and m["accuracy_difference"] == pytest.approx(-0.005)
    [row] = _rows(runs(250, 0.99), "noisy_bn_trains_like_bn")
    parts = row.measured["parts"]
    assert parts["keeps speed-up"] == "not reproduced" and row.verdict == "not reproduced"
    [row] = _rows(runs(60, 0.90), "noisy_bn_trains_like_bn")
    assert row.measured["parts"] == {"keeps speed-up": "reproduced",
                                     "accuracy near BN": "not reproduced"}


def test_edge_of_stability_and_beta_against_curvature_rows_read_the_dln():
    runs = [_run("none", s, family="dln", lr=1e-6, curvature=lambda step: 2e6 if step else 5e7,
                 band=lambda step: 2e6) for s in range(3)]
    [row] = _rows(runs, "dln_edge_of_stability_none")
    assert row.measured["variant_median"] == pytest.approx(1.0) and row.rule_verdict == "reproduced"
    [row] = _rows(runs, "dln_beta_is_curvature_none")
    assert row.measured["variant_median"] == pytest.approx(1.0) and row.rule_verdict == "reproduced"
    assert levels_passed(_dln("none", 0, 1.0)) == 4  # final loss ~1.1e3: below 4 of 5 levels


def test_bootstrap_interval_and_rules():
    rng = np.random.default_rng(0)
    assert bootstrap_ratio([2.0, 2.0, 2.0], [4.0, 4.0], rng) == (0.5, 0.5)
    low, high = bootstrap_ratio([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], rng)
    assert low == pytest.approx(0.5) and high == pytest.approx(1.5)
    assert verdict("smaller", (0.2, 0.9)) == "reproduced"
    assert verdict("smaller", (1.0, 3.0)) == "not reproduced"
    # Not below 1, and a reduction of 1.5x or more excluded: decided, not reproduced; a
    # reduction of 1.5x or more still possible: inconclusive; wholly below 1: reproduced,
    # however small the reduction.
    assert verdict("smaller", (0.85, 1.3)) == "not reproduced"
    assert verdict("smaller", (0.6, 1.3)) == "inconclusive"
    assert verdict("smaller", (0.7, 0.95)) == "reproduced"
    assert verdict("larger", (0.5, 1.5)) == "not reproduced"
    assert verdict("larger", (0.5, 1.6)) == "inconclusive"
    assert verdict("larger", (1.05, 1.4)) == "reproduced"
    assert verdict("about equal", (0.8, 1.3)) == "reproduced"
    assert verdict("about equal", (2.0, 3.0)) == "not reproduced"
    assert verdict("not smaller", (0.9, 5.0)) == "reproduced"
    assert verdict("not smaller", (0.1, 0.5)) == "not reproduced"
    assert verdict("keeps speed-up", (0.35, 0.9)) == "reproduced"
    assert verdict("keeps speed-up", (0.1, 0.3)) == "not reproduced"
    assert verdict("accuracy near BN", (-0.01, 0.01)) == "reproduced"
    assert all(rule.text for rule in RULES.values())


def test_missing_runs_say_how_to_make_them_and_the_table_is_strict_json(tmp_path, capsys):
    from pipeline.__main__ import main
    rows = claims_table([_run("batch", np.int64(0)), _run("none", np.int64(0))])
    large_lr = next(r for r in rows if r.key == "large_lr")
    assert large_lr.verdict == "missing runs" and large_lr.command == "make demo"
    one_seed = next(r for r in rows if r.key == "bn_trains_faster")
    assert one_seed.verdict == "inconclusive" and one_seed.note == "one seed: no interval"
    decoded = json.loads(to_json(rows))
    assert decoded[0]["key"] == "bn_trains_faster" and decoded[0]["kind"] == "run level"
    # One flat object per row: every field present (null where unset), beside the numbers
    # of its kind of comparison.
    assert all({"verdict", "ratio", "interval", "note", "command", "lr", "paper_value",
                "paper_source", "paper_verdict", "rule_verdict"} <= set(r) for r in decoded)
    assert decoded[0]["paper_value"] == pytest.approx(1.6 / 3.3)
    assert decoded[0]["paper_source"].startswith("Fig 1")
    assert decoded[0]["variant_median"] == one_seed.measured["variant_median"] == 14
    assert next(r for r in decoded if r["key"] == "large_lr")["ratio"] is None
    answer = format_answer(rows)
    assert answer.splitlines()[1].startswith(
        "  BN trains faster (LR 0.1): paper 0.485 (reproduced) -> ours 1 -> INCONCLUSIVE")
    assert main(["claims", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_copies_of_one_experiment_count_once_and_are_named(tmp_path):
    import shutil
    from conftest import call_cli, fake_run
    fake_run(tmp_path / "runs" / "a", "seed=0")
    fake_run(tmp_path / "runs" / "b", "seed=1")
    assert call_cli("claims", tmp_path / "runs", tmp_path / "runs" / "a").returncode == 0  # twice: once
    one = json.loads(call_cli("claims", tmp_path / "runs", "--json").stdout)
    # A copy that differs only in keys that do not change the numbers (its description,
    # its launcher's settings) is the same experiment: counted once, and said so.
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(tmp_path / "runs" / "a", copy)
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("description: ", "description: a copy ", 1)
                                      .replace("threads: auto", "threads: 2"))
    meta = json.loads((copy / "meta.json").read_text())
    meta.pop("config", None)  # a run from before the seal: its config.yaml is read as is
    (copy / "meta.json").write_text(json.dumps(meta))
    result = call_cli("claims", tmp_path / "runs", "--json")
    assert json.loads(result.stdout) == one  # the same ledger, seed 0 once
    assert "runs/copy is the same experiment as" in result.stderr and "counted once" in result.stderr
    assert "runs/a" in result.stderr


def test_landscape_rows_give_their_ratio_at_every_step_size_and_where_a_maximum_sits():
    # Gradient change per step size: BN's m, the standard network's 2m below LR and 4m
    # above it, at the same losses: the ratio is 0.5 for m <= 1 and 0.25 above, each
    # at matched loss; BN's beta (change / m) is flat, so its maximum over the paper's
    # grid sits at the grid's smallest step (LR/2) in every record, the standard
    # network's at its largest.
    def loss(step):
        return 3.0 * 0.97 ** step

    def runs(norm, factor):
        made = [_run(norm, s, loss=loss, band=lambda step: 1.0) for s in range(3)]
        for run in made:
            frame = run.records["landscape"]
            frame["landscape/per_eta"] = [
                [{**e, "grad_change": e["multiplier"] * factor(e["multiplier"]),
                  "beta": 1 + 1e-3 * (e["multiplier"] < 1) if norm == "batch" else e["multiplier"]}
                 for e in entries] for entries in frame["landscape/per_eta"]]
        return made
    bn = runs("batch", lambda m: 1.0)
    standard = runs("none", lambda m: 2.0 if m <= 1 else 4.0)
    [row] = _rows(bn + standard, "gradient_change_smaller")
    per_eta = {e["multiplier"]: e for e in row.measured["per_eta"]}
    assert sorted(per_eta) == [0.5, 1.0, 2.0, 4.0]
    for m, expected in ((0.5, 0.5), (1.0, 0.5), (2.0, 0.25), (4.0, 0.25)):
        assert per_eta[m]["ratio"] == pytest.approx(expected) and per_eta[m]["verdict"] == "reproduced"
    [beta] = _rows(bn + standard, "beta_smaller")
    assert beta.measured["grid_ends"]["batch"]["smallest"] == 1.0
    assert beta.measured["grid_ends"]["none"]["largest"] == 1.0
    text = format_claims([beta])
    assert "batch's maximum sits at the smallest step of the grid in 100% of its records" in text
    assert "per step size (multiple of LR: ratio [interval]): 0.5: " in text
