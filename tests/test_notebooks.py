"""Every notebook executed by papermill on tiny smoke runs; parameter-error paths."""

import json

import pytest

from conftest import REPO, SMOKE, call_cli, fake_run
from pipeline.core.config import load_config
from pipeline.probes import make_probes
from pipeline.results import analysis
from pipeline.results.report import NOTEBOOKS, check_parameters, execute, make_figures
from pipeline.training.train import train_and_evaluate

LANDSCAPE = ["probes.landscape.enabled=true", "probes.landscape.every=4"]
DISTRIBUTIONS = ["probes.distributions.enabled=true", "probes.distributions.every=4"]
EVERY_PROBE = [*LANDSCAPE, *DISTRIBUTIONS, "probes.ics.enabled=true", "probes.ics.every=4",
               "probes.curvature.enabled=true", "probes.curvature.iterations=3",
               "probes.curvature.every=4"]
# Each variant with the probes the demo gives it (configs/demo_plan.yaml): every probe
# for the standard and BN networks, activations for noisy BN, the landscape for l1.
VGG_PROBES = {"none": EVERY_PROBE, "batch": EVERY_PROBE, "noisy_batch": DISTRIBUTIONS,
              "l1": LANDSCAPE}
# The DLN at depth 6, not the paper's 25: the notebook draws any depth, and tracing 25
# BN layers twice for the landscape took 8 s of the fixture's 31.
DLN = ["model.depth=6", "data.regression_train_size=64", "data.regression_test_size=64",
       "data.batch_size=64", "train.steps=8", "train.log_every=2", "train.eval_every=4",
       "train.progress=false", "probes.landscape.enabled=true", "probes.landscape.every=2"]

YOURS = ["model.factory=pipeline.nets.mlp:mlp", "model.depth=3", "model.hidden_units=16",
         "probes.ics.layers=null",
         "probes.ics.enabled=true", "probes.ics.every=4", *LANDSCAPE]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for norm, probes in VGG_PROBES.items():
        train_and_evaluate(load_config(SMOKE, [f"model.norm={norm}", *probes]), root / "vgg" / norm,
                           probes_factory=make_probes)
    for norm in ("none", "batch"):
        train_and_evaluate(load_config(REPO / "configs" / "dln.yaml", [f"model.norm={norm}", *DLN]),
                           root / "dln" / norm, probes_factory=make_probes)
    # A network named by its factory (model.factory), as a user's: your_model's figures.
    train_and_evaluate(load_config(SMOKE, YOURS), root / "yours" / "batch",
                       probes_factory=make_probes)
    return root


@pytest.mark.slow
def test_every_notebook_makes_its_figures_and_the_report(sweep, tmp_path, monkeypatch):
    report = make_figures([sweep], tmp_path, echo=lambda message: None)
    figures = tmp_path / "figures"
    expected = ["training_accuracy", "training_loss", "activations_layer3", "activations_layer9",
                "ics", "ics_vs_loss_layer2", "ics_vs_loss_layer5", "landscape",
                "gradient_change_vs_step", "loss_band_vs_loss", "beta_max_vs_loss", "curvature",
                "lp_training", "lp_landscape", "dln_loss", "dln_landscape",
                "your_model_training", "your_model_landscape", "your_model_ics"]
    # The ratios per step size need matched loss bins, which these few-step runs lack:
    # no such figure, rather than an empty one (tests/test_plots.py draws it).
    assert not (figures / "landscape_per_eta.png").exists()
    for name in expected:
        for fmt in ("png", "svg"):
            assert (figures / f"{name}.{fmt}").stat().st_size > 1000, name
    assert_no_two_figures_are_the_same(figures)
    page = report.read_text()
    assert all(f"figures/{name}.png" in page for name in expected)
    assert "seeds per variant" in page and "data set synthetic" in page
    # The answer comes first, then the claims table; the run inventory last.
    assert (page.index("What the paper claims, and what we find") < page.index("<h2>Claims: the ledger</h2>")
            < page.index("<h2>Figures</h2>") < page.index("<h2>Runs</h2>"))
    # The first screen: each headline claim with the paper's value, ours, the verdict and
    # a thumbnail of its figure.
    answer = page[:page.index("<h2>Claims: the ledger</h2>")]
    assert 'class="thumb" src="figures/training_accuracy.png"' in answer
    assert "0.485" in answer and "Fig 1" in answer  # the paper's steps to 90 %, its source
    assert "BN trains faster" in page and page.count("<tr>") >= 6
    assert {p.stem for p in (tmp_path / "notebooks").glob("*.ipynb")} == set(NOTEBOOKS)
    # They name the folder they were published to, not the staging folder they ran in.
    executed = (tmp_path / "notebooks" / "training.ipynb").read_text()
    assert f'output_dir = \\"{tmp_path}\\"' in executed and ".bnlab-build" not in executed
    # `claims --json` on the same demo-like runs (VGG and DLN, every probe): strict JSON.
    # The table's details are the text table's, line for line (one rendering of a row).
    from markupsafe import escape
    details = [line.strip() for line in call_cli("claims", sweep).stdout.splitlines()
               if line.startswith("    ")]
    assert len(details) > 20 and all(str(escape(line)) in page for line in details)
    rows = json.loads(call_cli("claims", sweep, "--json").stdout)
    assert {row["key"] for row in rows} >= {"bn_trains_faster", "dln_batch_vs_none_loss",
                                            "loss_band_narrower_transient", "dln_batch_ics_cosine"}
    # A rebuild removes what the earlier build wrote, and nothing else. Its notebook
    # stands in for dln's (each kernel costs ~5 s of CPU; a real one ran above).
    from pipeline.results import report as report_module

    def dln_notebook(name, output_dir, parameters):
        (output_dir / "figures").mkdir(parents=True)
        (output_dir / "figures" / "dln_loss.png").write_bytes(b"drawn")
    monkeypatch.setattr(report_module, "execute", dln_notebook)
    (tmp_path / "mine.txt").write_text("a user's file")
    make_figures([sweep], tmp_path, notebooks=("dln",), echo=lambda message: None)
    assert not (figures / "training_accuracy.png").exists() and (figures / "dln_loss.png").exists()
    assert (tmp_path / "mine.txt").read_text() == "a user's file"
    # A file it did not write where the report goes: refused, and left as it was.
    (figures / "mine.png").write_bytes(b"mine")
    with pytest.raises(ValueError, match="holds files that BN Lab did not write"):
        make_figures([sweep], tmp_path, notebooks=("dln",), echo=lambda message: None)
    assert (figures / "mine.png").read_bytes() == b"mine"
    assert (figures / "dln_loss.png").exists()  # refused before anything was deleted


def assert_no_two_figures_are_the_same(figures):
    """A figure under two names (a caption on the wrong picture) fails: every PNG differs."""
    import hashlib
    seen = {}
    for path in sorted(figures.glob("*.png")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest not in seen, f"{path.name} repeats {seen[digest]}"
        seen[digest] = path.name


def test_the_figure_check_fails_on_a_repeated_figure(tmp_path):
    (tmp_path / "landscape.png").write_bytes(b"the same picture")
    (tmp_path / "lp_landscape.png").write_bytes(b"another picture")
    assert_no_two_figures_are_the_same(tmp_path)
    (tmp_path / "lp_landscape.png").write_bytes(b"the same picture")
    with pytest.raises(AssertionError, match="repeats landscape.png"):
        assert_no_two_figures_are_the_same(tmp_path)


def test_notebooks_are_stored_without_outputs():
    import nbformat
    for name in NOTEBOOKS + ("colab_quickstart",):
        book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), name
        if name != "colab_quickstart":
            assert any("parameters" in cell.metadata.get("tags", []) for cell in book.cells), name


def test_parameter_errors_stop_with_a_clear_message(tmp_path):
    # Its own small run, not the module's runs: test workers would each build those.
    run = tmp_path / "dln"
    train_and_evaluate(load_config(REPO / "configs" / "dln.yaml", [
        *DLN, "probes.distributions.enabled=true", "probes.distributions.layers=[1,5]"]), run,
        probes_factory=make_probes)
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['layer'\]; valid: .*'layers'"):
        check_parameters("ics", {"runs": [], "layer": [5]})
    message = execute("training", tmp_path, {"runs": [str(tmp_path / "missing")]})
    assert message.startswith("MissingRunsError") and "does not exist" in message
    message = execute("distributions", tmp_path,
                      {"runs": [str(run)], "family": "dln", "layers": [4]})
    assert "layer(s) [4] were not recorded" in message and "have layers [1, 5]" in message
    # What the notebooks' first step says of a run trained without the probe, without a
    # kernel of its own.
    with pytest.raises(ValueError, match=r"1 run\(s\) have no ics records.*probes.ics.enabled=true"):
        analysis.notebook_runs([run], "DLN runs", family="dln", probe="ics",
                               echo=lambda message: None)


@pytest.mark.slow
def test_colab_quickstart_runs_offline_end_to_end(tmp_path):
    import papermill
    output = tmp_path / "quickstart.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "colab_quickstart.ipynb"), str(output),
                               parameters={"steps": 3, "norms": ["none", "batch"], "depth": 13,
                                           "width": 0.0625, "dataset": "digits",
                                           "workdir": str(tmp_path / "runs")},
                               kernel_name="python3", progress_bar=False, cwd=str(REPO))
    text = output.read_text()
    assert "image/png" in text  # the figures were drawn inline
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["digits-batch", "digits-none"]
    import yaml
    model = yaml.safe_load((tmp_path / "runs" / "digits-none" / "config.yaml").read_text())["model"]
    assert (model["depth"], model["width_multiplier"]) == (13, 0.0625)  # the parameters were used


@pytest.mark.parametrize("manifest", ["[1]", "[null]", '[""]', '"figures/a.png"', "{", "[\"figures\"]"])
def test_a_damaged_report_manifest_is_named_and_deletes_nothing(manifest, tmp_path):
    from pipeline.results.report_folder import MANIFEST, ReportFolderError, check_output
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    (tmp_path / "report.html").write_text("<html>")
    (tmp_path / MANIFEST).write_text(manifest)
    with pytest.raises(ReportFolderError) as error:
        check_output(tmp_path)
    if manifest == '["figures"]':  # valid, but lists a folder: what it holds is not listed
        assert "did not write" in str(error.value)
    else:
        assert f"{tmp_path / MANIFEST} is damaged" in str(error.value)
    assert (tmp_path / "figures" / "a.png").exists() and (tmp_path / "report.html").exists()


@pytest.mark.parametrize("linked", ["figures", "notebooks", "report.html", ".bnlab-report.json",
                                    ".bnlab-build"])
def test_a_report_folder_or_file_that_is_a_symlink_is_refused_before_anything_is_written(
        linked, tmp_path):
    # The figures (or the executed notebooks, the page, the manifest) would be written
    # into the link's target, someone else's folder or file.
    from pipeline.core.runs import SymlinkRefused
    target = tmp_path / "someone_elses"
    target.mkdir()
    (target / "theirs.png").write_bytes(b"theirs")
    output = tmp_path / "report"
    output.mkdir()
    (output / linked).symlink_to(target if "." not in linked else target / "theirs.png")
    with pytest.raises(SymlinkRefused, match=f"{linked} is a symbolic link"):
        make_figures([fake_run(tmp_path / "run")], output, echo=lambda message: None)
    assert [p.name for p in target.iterdir()] == ["theirs.png"]
    assert (target / "theirs.png").read_bytes() == b"theirs"
    assert sorted(p.name for p in output.iterdir()) == [linked]


def test_an_interrupted_build_leaves_the_last_report_and_the_next_build_goes_ahead(
        tmp_path, monkeypatch):
    # Ctrl-C in the middle of the notebooks, SIGKILL (a staging folder left behind) and
    # Ctrl-C while the files move into place: each time the last complete report stays,
    # or only files the manifest lists; the next build is never refused for them.
    import os

    from pipeline.results import report, report_folder
    run = fake_run(tmp_path / "run")
    output = tmp_path / "report"

    def notebook(stop_at=None, label="first"):
        def execute(name, output_dir, parameters):
            if name == stop_at:
                raise KeyboardInterrupt
            figures = output_dir / "figures"
            figures.mkdir(parents=True, exist_ok=True)
            (figures / f"{name}.png").write_text(label)
            (output_dir / "notebooks").mkdir(exist_ok=True)
            (output_dir / "notebooks" / f"{name}.ipynb").write_text(label)
        return execute

    def build(**kwargs):
        monkeypatch.setattr(report, "execute", notebook(**kwargs))
        return make_figures([run], output, notebooks=("training", "dln"), echo=lambda m: None)

    build()
    complete = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert (output / "figures" / "dln.png").read_text() == "first"
    with pytest.raises(KeyboardInterrupt):
        build(stop_at="dln", label="second")
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == complete
    # A SIGKILLed build's staging folder, and a move cut short by Ctrl-C.
    staging = report_folder.start_staging(output)
    (staging / "figures").mkdir()
    (staging / "figures" / "half.png").write_text("killed")
    moves, replace = [], os.replace

    def interrupted_replace(source, target):
        if report_folder.STAGING in str(source) and report_folder.STAGING not in str(target):
            moves.append(target)  # a move into place (not a write inside the staging folder)
            if len(moves) == 2:
                raise KeyboardInterrupt
        replace(source, target)
    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        build(label="third")
    monkeypatch.setattr(os, "replace", replace)
    assert len(moves) == 2 and not (output / report_folder.STAGING).exists()
    build(label="fourth")
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file()) == [
        ".bnlab-report.json", "figures/dln.png", "figures/training.png", "notebooks/dln.ipynb",
        "notebooks/training.ipynb", "report.html"]
    assert (output / "figures" / "dln.png").read_text() == "fourth"
    # A staging folder BN Lab did not make is not removed.
    (output / report_folder.STAGING).mkdir()
    (output / report_folder.STAGING / "mine.txt").write_text("mine")
    with pytest.raises(report_folder.ReportFolderError, match="is not a folder BN Lab made"):
        build()
    assert (output / report_folder.STAGING / "mine.txt").read_text() == "mine"
