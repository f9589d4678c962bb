"""Analysis frames and plot functions on small synthetic run directories."""

import json

import numpy as np
import pytest

from conftest import make_config
from pipeline.core.config import to_yaml
from pipeline.results import analysis, plots
from pipeline.results.report import build_report, save_captioned

pytestmark = pytest.mark.backend_free  # trains nothing: run once, in the JAX pass


def write_fake_run(path, norm, lr, seed, steps=(0, 10, 20, 30), diverged=False, evaluated=True):
    """A run directory with deterministic records (no training)."""
    path.mkdir(parents=True)
    config = make_config(f"model.norm={norm}", f"optim.lr={lr}", f"seed={seed}")
    (path / "config.yaml").write_text(to_yaml(config))
    meta = {"status": "diverged" if diverged else "finished", "step": steps[-1]}
    if diverged:
        meta["diverged_step"] = steps[-1]
    (path / "meta.json").write_text(json.dumps(meta))
    records = path / "records"
    records.mkdir()
    offset = {"none": 0.0, "batch": 0.2, "noisy_batch": 0.1}[norm] + 0.01 * seed
    lines = {"train": [], "eval": [], "landscape": [], "ics": [], "distributions": []}
    rng = np.random.default_rng(seed)
    for step in steps:
        accuracy = min(1.0, offset + step / 40)
        lines["train"].append({"step": step, "train/accuracy": accuracy, "train/loss": 2 - accuracy})
        lines["eval"].append({"step": step + 10, "test/accuracy": accuracy, "test/loss": 2 - accuracy})
        etas = [0.05, 0.1, 0.2, 0.4]
        lines["landscape"].append({
            "step": step, "landscape/loss": 2 - accuracy, "landscape/loss_min": 1 - offset,
            "landscape/loss_max": 2 + step / 10, "landscape/grad_change_min": 0.1,
            "landscape/grad_change_max": 1 + seed, "landscape/beta_max": 10 + seed,
            "landscape/per_eta": [{"eta": e, "grad_change": e * (1 + step)} for e in etas]})
        lines["ics"].append({"step": step, "ics/loss": 2 - accuracy, "ics/per_layer": [
            {"layer": 5, "l2": 1 + offset, "cosine": 0.5},
            {"layer": 10, "l2": 2 + offset, "cosine": 0.25}]})
        lines["distributions"].append({"step": step, "distributions/per_layer": [{
            "layer": 3, "sample": rng.normal(size=50).tolist(),
            # Channel means move by (1 + offset) per probe step, variances by 0.5.
            "channel_mean": [(1 + offset) * step / 10] * 4,
            "channel_var": [1 + 0.5 * step / 10, 1.0, 1.0, 1.0]}]})
    if not evaluated:  # diverged before its first evaluation
        del lines["eval"]
    for stream, rows in lines.items():
        (records / f"{stream}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs(tmp_path):
    for norm in ("none", "batch"):
        for seed in (0, 1):
            write_fake_run(tmp_path / f"{norm}-{seed}", norm, 0.1, seed)
    return analysis.load_runs(tmp_path)


def test_frames_label_variants_and_summaries(runs, tmp_path):
    train = analysis.records_frame(runs, "train")
    assert set(train["variant"]) == {"standard", "BN"} and len(train) == 16
    write_fake_run(tmp_path / "none-lr", "none", 0.5, 0, diverged=True)
    mixed = analysis.load_runs(tmp_path)
    assert "standard, LR 0.5" in {r.variant for r in mixed}
    summary = analysis.runs_summary(mixed)
    assert (summary["status"] == "diverged").sum() == 1
    assert "seeds per variant" in analysis.describe_scale(runs) and "synthetic" in analysis.describe_scale(runs)


def test_training_milestones_are_first_crossings_of_the_seed_mean(runs):
    train = analysis.records_frame(runs, "train")
    evals = analysis.records_frame(runs, "eval")
    milestones = analysis.training_milestones(train, evals)  # records 10 steps apart: raw
    # BN seeds: accuracy 0.2(+0.01 seed 1) + step/40 -> mean 0.205 + step/40 >= 0.9 first at 30.
    assert milestones.loc["BN", "steps to 90 %"] == 30
    assert np.isnan(milestones.loc["standard", "steps to 90 %"])
    assert milestones.loc["BN", "test accuracy"] == pytest.approx(np.mean([0.2 + 0.75, 0.21 + 0.75]))


def test_errors_say_what_is_missing(tmp_path, runs):
    with pytest.raises(analysis.MissingRunsError, match="does not exist; train it first"):
        analysis.load_runs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.MissingRunsError, match="holds no run directory"):
        analysis.load_runs(tmp_path / "empty")
    with pytest.raises(analysis.NothingToPlot, match="no DLN runs among the 4"):
        analysis.select(runs, family="dln", what="DLN runs")
    with pytest.raises(ValueError, match="have no curvature records.*probes.curvature.enabled=true"):
        analysis.require_stream(runs, "curvature")


def _line_for(ax, label):
    handles, labels = ax.get_legend_handles_labels()
    index = [i for i, text in enumerate(labels) if text == label]
    assert index, labels
    color = handles[index[0]].get_color()
    return next(line for line in ax.lines if line.get_color() == color)


def test_training_plot_draws_the_seed_mean_with_seed_counts(runs):
    fig = plots.plot_training(analysis.records_frame(runs, "train"), analysis.records_frame(runs, "eval"))
    ax = fig.axes[0]
    line = _line_for(ax, "BN (n=2)")
    np.testing.assert_allclose(line.get_ydata(), [0.205 + s / 40 for s in (0, 10, 20, 30)])
    assert ax.get_xlabel() == "training step"


def test_landscape_bands_are_each_runs_band_with_the_median_over_seeds(runs):
    fig = plots.plot_landscape(analysis.probe_frame(runs, "landscape", expand=False))
    bands = fig.axes[0].collections
    assert len(bands) == 2  # one band per variant
    vertices = np.concatenate([p.vertices for p in bands[0].get_paths()])
    # BN's loss band: low = median over seeds of 1 - offset (0.8, 0.79) = 0.795, not
    # their minimum (an envelope over seeds); high = 2 + step / 10.
    assert vertices[:, 1].min() == pytest.approx(0.795) and vertices[:, 1].max() == pytest.approx(5.0)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["BN (n=2)", "standard (n=2)"]


def test_probe_frames_have_one_row_per_layer_or_step_size(runs):
    ics = analysis.probe_frame(runs, "ics")
    assert len(ics) == 4 * 4 * 2 and sorted(ics["ics/layer"].unique()) == [5, 10]
    assert (ics[ics["ics/layer"] == 10]["ics/cosine"] == 0.25).all()
    assert "ics/per_layer" not in ics and "ics/loss" in ics
    landscape = analysis.probe_frame(runs, "landscape")
    assert len(landscape) == 4 * 4 * 4 and "landscape/eta" in landscape
    assert len(analysis.probe_frame(runs, "landscape", expand=False)) == 4 * 4


def test_other_figures_have_a_panel_per_layer_or_variant(runs, tmp_path):
    distributions = analysis.probe_frame(runs, "distributions")
    assert len(plots.plot_activation_violins(distributions, 3, max_steps=3).axes) == 2
    # Per channel: (mean, variance) x variants; one line per channel of the first seed.
    fig = plots.plot_channel_statistics(distributions, 3)
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 4
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.2 * s / 10 for s in (0, 10, 20, 30)])
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), [1 + 0.5 * s / 10 for s in (0, 10, 20, 30)])
    fig = plots.plot_ics(analysis.probe_frame(runs, "ics"))
    assert len(fig.axes) == 4  # (l2, cosine) x layers 5 and 10, one learning rate
    assert fig.axes[0].get_yscale() == "log" and "layer #10" in fig.axes[2].get_title()
    np.testing.assert_allclose(_line_for(fig.axes[2], "BN (n=2)").get_ydata(), [2.205] * 4)
    fig = plots.plot_gradient_change_vs_step_size(analysis.probe_frame(runs, "landscape"))
    assert len(fig.axes[0].lines) == 4  # one line per probe step of the first seed
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [0.05 * 11, 0.1 * 11, 0.2 * 11, 0.4 * 11])
    fig = plots.plot_versus_loss(analysis.probe_frame(runs, "ics").query("`ics/layer` == 5"),
                                 "ics/l2", "ics/loss", "ICS", "l2")
    assert fig.axes[0].get_legend().get_title().get_text() == ""  # no column name
    frame = analysis.probe_frame(runs, "ics").query("`ics/layer` == 5 and step > 0")
    early = int((frame["step"] < 0.05 * frame["run_steps"]).sum())
    collections = [c for c in fig.axes[0].collections if len(c.get_offsets())]
    points = sum(len(c.get_offsets()) for c in collections)
    assert points == 4 * 3 and fig.axes[0].xaxis_inverted()  # steps after 0, all runs

    def hollow(collection):
        faces = collection.get_facecolor()
        return faces.size == 0 or faces[0][3] == 0
    # The initial transient's records (these runs are 1,000 steps: all of them), which
    # the claims leave out, are hollow; the training regime's filled.
    assert sum(len(c.get_offsets()) for c in collections if hollow(c)) == early
    assert sum(len(c.get_offsets()) for c in collections if not hollow(c)) == 4 * 3 - early
    write_fake_run(tmp_path / "diverged", "none", 0.5, 0, diverged=True)
    summary = analysis.runs_summary(analysis.load_runs(tmp_path))
    scatter = plots.plot_lr_sensitivity(summary).axes[0].collections[-1]
    np.testing.assert_allclose(scatter.get_offsets(), [[0.5, 0.0]])


def test_saved_figures_and_the_report_carry_captions(runs, tmp_path):
    fig = plots.plot_curvature(analysis.probe_frame(runs, "ics").rename(
        columns={"ics/l2": "curvature/top_eigenvalue"}))
    paths = save_captioned(fig, tmp_path / "out", "curvature", "Top <eigenvalue> & seeds: 2")
    assert all(p.stat().st_size > 1000 for p in paths)
    page = build_report(tmp_path / "out").read_text()
    assert 'src="figures/curvature.png"' in page and "Top &lt;eigenvalue&gt; &amp; seeds: 2" in page


def test_training_and_landscape_plots_have_one_row_of_panels_per_learning_rate(runs, tmp_path):
    for seed in (0, 1):
        write_fake_run(tmp_path / f"batch-large-{seed}", "batch", 0.5, seed)
    mixed = analysis.load_runs(tmp_path)
    fig = plots.plot_training(analysis.records_frame(mixed, "train"),
                              analysis.records_frame(mixed, "eval"))
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title().startswith("LR 0.1") and fig.axes[2].get_title().startswith("LR 0.5")
    # LR 0.5 has BN only, in BN's colour of the LR 0.1 panel.
    assert _line_for(fig.axes[2], "BN (n=2)").get_color() == _line_for(fig.axes[0], "BN (n=2)").get_color()
    labels = fig.axes[2].get_legend_handles_labels()[1]
    assert labels == ["BN (n=2)"]
    landscape = plots.plot_landscape(analysis.probe_frame(mixed, "landscape", expand=False))
    assert len(landscape.axes) == 6 and landscape.axes[3].get_title().startswith("LR 0.5")


def test_distribution_shift_is_the_mean_change_between_probe_steps(runs):
    fig = plots.plot_distribution_shift(analysis.probe_frame(runs, "distributions"), 3)
    mean_panel, var_panel = fig.axes
    # Standard seeds: offsets 0 and 0.01, means move by (1 + offset) per step -> mean 1.005.
    np.testing.assert_allclose(_line_for(mean_panel, "standard (n=2)").get_ydata(), [1.005] * 3)
    # One of 4 channels' variance moves by 0.5: mean change over channels 0.125.
    np.testing.assert_allclose(_line_for(var_panel, "BN (n=2)").get_ydata(), [0.125] * 3)
    assert mean_panel.get_yscale() == "log"
    first_step = analysis.probe_frame(runs, "distributions").query("step == 0")
    with pytest.raises(analysis.NothingToPlot, match="needs two probe steps"):
        plots.plot_distribution_shift(first_step, 3)


def test_a_panel_shows_every_variant_it_lists_and_says_which_runs_diverged(tmp_path):
    for seed in (0, 1):
        write_fake_run(tmp_path / f"none-{seed}", "none", 0.5, seed)
    write_fake_run(tmp_path / "none-2", "none", 0.5, 2, diverged=True, evaluated=False)
    runs = analysis.load_runs(tmp_path)
    fig = plots.plot_training(analysis.records_frame(runs, "train"), analysis.records_frame(runs, "eval"))
    label = "standard (n=3, 1 diverged)"
    assert len(_line_for(fig.axes[0], label).get_xdata()) > 0  # listed and drawn
    # The test panel has no record of the diverged run, and still draws the others.
    np.testing.assert_allclose(_line_for(fig.axes[1], label).get_xdata(), [10, 20, 30, 40])


def test_every_figure_gives_a_network_one_colour_and_name_and_captions_say_what_was_drawn(tmp_path):
    from pipeline.core.config import to_yaml
    for norm, lr, seed, diverged in (("none", 0.1, 0, False), ("batch", 0.1, 0, False),
                                     ("none", 0.5, 0, True), ("batch", 0.5, 0, False),
                                     ("noisy_batch", 0.1, 0, False)):
        write_fake_run(tmp_path / f"{norm}-{lr}", norm, lr, seed, diverged=diverged)
    # The LR 0.5 runs are shorter, as in the demo (200 steps against 400).
    for norm in ("none", "batch"):
        config = make_config(f"model.norm={norm}", "optim.lr=0.5", "seed=0", "train.steps=6")
        (tmp_path / f"{norm}-0.5" / "config.yaml").write_text(to_yaml(config))
    runs = analysis.load_runs(tmp_path)
    # The caption counts what it draws: steps per variant where they differ, divergence.
    scale = analysis.describe_scale(runs)
    assert "BN, LR 0.5 / standard, LR 0.5: 6 steps; " in scale and ": 15000 steps;" in scale, scale
    assert "standard, LR 0.5: 1 (1 diverged)" in scale, scale
    # The same colour for the standard network whichever networks a figure shows.
    two = analysis.records_frame([r for r in runs if r.norm != "noisy_batch"], "train")
    three = analysis.records_frame(runs, "train")
    for frame in (two, three):
        _, palette, _ = plots.per_learning_rate(frame)
        assert {name.split(" (n=")[0]: colour for name, colour in palette.items()}["standard"] == "C5"
    fig = plots.plot_lr_sensitivity(analysis.runs_summary(runs))
    ax = fig.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert ax.get_legend().get_title().get_text() == "network"
    assert set(legend) == {"BN", "noisy BN", "standard", "standard: 1 diverged"}, legend
    lines = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert lines["standard"] == "C5" and lines["BN"] == "C0"
    cross = next(c for c in ax.collections if c.get_label() == "standard: 1 diverged")
    assert list(cross.get_offsets()[0]) == [0.5, 0.0]
    # A variant trained for two lengths (the demo's long standard DLN) counts its seeds
    # once and says how many runs it drew.
    write_fake_run(tmp_path / "none-0.1-long", "none", 0.1, 0)
    config = make_config("model.norm=none", "optim.lr=0.1", "seed=0", "train.steps=60")
    (tmp_path / "none-0.1-long" / "config.yaml").write_text(to_yaml(config))
    scale = analysis.describe_scale(analysis.load_runs(tmp_path))
    assert "standard, LR 0.1: 1 (2 runs);" in scale and "LR 0.1: 60 steps" in scale, scale


def test_the_per_step_size_figure_draws_each_rows_ratios_with_their_intervals():
    from pipeline.results.analysis import NothingToPlot
    from pipeline.results.claim_row import ClaimRow
    per_eta = [{"multiplier": m, "ratio": r, "interval": [r / 2, r * 2], "verdict": "", "bins": 2}
               for m, r in ((0.5, 1.2), (1.0, 0.7), (4.0, 0.3))]
    row = ClaimRow.of("probe", {"key": "beta_smaller", "claim": "c", "statistic": "s",
                                "variant": "batch", "reference": "none", "paper": "", "rule": "",
                                "headline": True, "verdict": "reproduced", "lr": 0.1, "seeds": 5,
                                "per_eta": per_eta})
    fig = plots.plot_per_eta([row], "title")
    line = fig.axes[0].lines[0]  # the ratios (then the error bars' caps and the line at 1)
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.0, 4.0])
    np.testing.assert_allclose(line.get_ydata(), [1.2, 0.7, 0.3])
    assert fig.axes[0].get_xscale() == "log" and "LR 0.1, 5 seeds" in fig.axes[0].get_title()
    unmatched = ClaimRow.of("probe", {**row.measured, "key": "k", "claim": "c", "statistic": "s",
                                      "variant": "batch", "reference": "none", "paper": "",
                                      "rule": "", "headline": True, "verdict": "inconclusive",
                                      "per_eta": [{**per_eta[0], "ratio": None, "interval": None}]})
    with pytest.raises(NothingToPlot):
        plots.plot_per_eta([unmatched], "title")
