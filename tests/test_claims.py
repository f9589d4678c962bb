"""Claims: verdict rules on constructed records, the bootstrap interval, missing runs."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from pipeline.claims import CLAIMS, bootstrap_ratio, claims_table, verdict

FASTER = next(c for c in CLAIMS if c.key == "bn_trains_faster")
BAND = next(c for c in CLAIMS if c.key == "loss_band_narrower")


def _run(norm, seed, reach_step, lr=0.1, steps=100, band=None, loss=lambda step: 1.0):
    """A VGG run whose mini-batch accuracy jumps from 0.1 to 1.0 at `reach_step`, with
    landscape records whose loss band is `band` (step -> width) at loss `loss` (step ->)."""
    steps_logged = np.arange(0, steps, 2)
    train = pd.DataFrame({"step": steps_logged,
                          "train/accuracy": np.where(steps_logged >= reach_step, 1.0, 0.1),
                          "train/loss": np.where(steps_logged >= reach_step, 0.01, 2.3)})
    records = {"train": train}
    if band is not None:
        probe_steps = np.arange(0, steps, 10)
        widths = np.array([band(s) for s in probe_steps], float)
        records["landscape"] = pd.DataFrame({
            "step": probe_steps, "landscape/loss": [loss(s) for s in probe_steps],
            "landscape/loss_min": 1.0, "landscape/loss_max": 1.0 + widths})
    config = {"seed": seed, "model": {"family": "vgg", "norm": norm}, "optim": {"lr": lr},
              "train": {"steps": steps}}
    return {"path": f"{norm}-{seed}", "config": config, "meta": {}, "records": records}


def _row(rows, claim):
    return next(r for r in rows if r["key"] == claim.key)


def test_a_claim_that_holds_over_three_seeds_is_reproduced():
    runs = [_run("batch", s, 10 + 2 * s) for s in range(3)] + [_run("none", s, 50 + 2 * s)
                                                               for s in range(3)]
    row = _row(claims_table(runs), FASTER)
    # Smoothing over 5 records of 2 steps: 90 % is first reached 8 steps after the jump.
    assert row["variant_median"] == 20 and row["reference_median"] == 60
    assert row["ratio"] == pytest.approx(1 / 3) and row["seeds"] == 3
    assert row["interval"][1] < 1 and row["verdict"] == "reproduced"
    assert row["paper"] == "BN 1.6k vs standard 3.3k steps" and "below 1" in row["rule"]


def test_a_claim_that_fails_is_not_reproduced_and_a_mixed_one_is_inconclusive():
    slower = [_run("batch", s, 60 + 2 * s) for s in range(3)] + [_run("none", s, 20 + 2 * s)
                                                                 for s in range(3)]
    assert _row(claims_table(slower), FASTER)["verdict"] == "not reproduced"
    mixed = [_run("batch", s, [20, 60, 30][s]) for s in range(3)] + [_run("none", s, 40)
                                                                     for s in range(3)]
    row = _row(claims_table(mixed), FASTER)
    assert row["interval"][0] < 1 < row["interval"][1] and row["verdict"] == "inconclusive"


def test_one_seed_gives_no_interval_and_missing_runs_give_the_command():
    rows = claims_table([_run("batch", 0, 10), _run("none", 0, 50)])
    row = _row(rows, FASTER)
    assert row["verdict"] == "inconclusive" and row["note"] == "one seed: no interval"
    assert row["interval"] is None
    large_lr = _row(rows, next(c for c in CLAIMS if c.key == "large_lr"))
    assert large_lr["verdict"] == "missing runs"
    assert "--grid optim.lr=0.1,0.5" in large_lr["command"]
    dln = _row(rows, next(c for c in CLAIMS if c.key == "dln_batch_lower_loss"))
    assert dln["verdict"] == "missing runs" and "model.norm=none,batch" in dln["command"]
    band = _row(rows, BAND)
    assert band["verdict"] == "missing records" and "probes" in band["command"]


def test_probe_statistics_use_the_window_not_the_first_steps():
    # BN's band is huge at step 0 only; the standard network's is moderate throughout.
    bn = [_run("batch", s, 10, band=lambda step: 5.0 if step == 0 else 0.01) for s in range(3)]
    standard = [_run("none", s, 50, band=lambda step: 0.5) for s in range(3)]
    row = _row(claims_table(bn + standard), BAND)
    assert row["variant_median"] == pytest.approx(0.01) and row["verdict"] == "reproduced"
    # The paper's reading, the maximum over the curve, is reported beside it.
    assert row["paper_reading"] == {"batch": pytest.approx(5.0), "none": pytest.approx(0.5)}


def test_landscape_claims_compare_at_matched_training_loss():
    # BN's loss falls to 0.001 by step 30 and only then is its band narrow; at the losses
    # the standard network passes through (2 -> 0.5), BN's band is twice as wide.
    def bn_loss(step):
        return max(2.0 - step / 20, 0.001)
    bn = [_run("batch", s, 10, loss=bn_loss, band=lambda step: 0.01 if bn_loss(step) < 0.5 else 1.0)
          for s in range(3)]
    standard = [_run("none", s, 50, loss=lambda step: 2.0 - step / 66, band=lambda step: 0.5)
                for s in range(3)]
    row = _row(claims_table(bn + standard), BAND)
    low, high = row["matched_loss_range"]
    assert low == pytest.approx(2.0 - 90 / 66) and high == pytest.approx(1.5)
    assert row["variant_median"] == 1.0 and row["verdict"] == "not reproduced"
    # Unmatched, the median over the window would call BN smoother.
    unmatched = BAND.measure(bn[0])
    assert unmatched == pytest.approx(0.01)


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


def test_cli_prints_the_table_as_json_and_refuses_a_missing_path(tmp_path):
    from conftest import SMOKE
    run_cli("train", SMOKE, "--set", "train.steps=4", "--workdir", tmp_path / "run")
    rows = json.loads(run_cli("claims", tmp_path, "--json").stdout)
    assert len(rows) == len(CLAIMS)
    assert {r["verdict"] for r in rows} <= {"missing runs", "missing records", "inconclusive"}
    missing = run_cli("claims", tmp_path / "nowhere", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
