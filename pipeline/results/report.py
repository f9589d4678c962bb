"""Figures and the HTML report: executing the notebooks with papermill, saving figures
with captions, and assembling one page that shows them all."""

import json
from pathlib import Path

from pipeline.core.errors import InputError, UserError
from pipeline.core.run_meta import summary_row
from pipeline.core.runs import atomic_write_text
from pipeline.results.report_folder import check_output, discard_staging, publish, start_staging

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# Analysis notebooks in report order (the Colab quick-start is not part of the report).
NOTEBOOKS = ("training", "distributions", "ics", "landscape", "lp_variants", "dln", "your_model")
CAPTIONS = "captions.json"


class NotebookFailure(UserError, RuntimeError):
    """Notebooks stopped with an error; the message names them and their messages."""


def save_captioned(fig, output_dir, name, caption, formats=("png", "svg")):
    """Save `fig` under output_dir/figures and record its caption for the report."""
    from pipeline.results.plots import save_figure
    figures = Path(output_dir) / "figures"
    paths = save_figure(fig, figures, name, formats)
    captions_path = figures / CAPTIONS
    captions = json.loads(captions_path.read_text()) if captions_path.exists() else {}
    captions[name] = caption
    atomic_write_text(captions_path, json.dumps(captions, indent=2))
    return paths


def notebook_parameters(name):
    """The parameter names (and defaults) of notebooks/<name>.ipynb."""
    import papermill
    return papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))


def check_parameters(name, parameters):
    """Refuse parameter names the notebook does not declare, listing the valid ones."""
    valid = notebook_parameters(name)
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise InputError(f"notebook {name}.ipynb has no parameter(s) {unknown}; "
                         f"valid: {sorted(valid)}")


def execute(name, output_dir, parameters):
    """Run notebooks/<name>.ipynb with papermill into output_dir/notebooks/<name>.ipynb.
    Returns None, or the notebook's own error message when it stopped."""
    import papermill
    check_parameters(name, parameters)
    target = Path(output_dir) / "notebooks" / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target),
                                   parameters={**parameters, "output_dir": str(output_dir)},
                                   kernel_name="python3", progress_bar=False,
                                   cwd=str(NOTEBOOK_DIR.parent),
                                   # The kernel's own log is not the user's to act on:
                                   # its start-up warnings (TCP transport on localhost),
                                   # and the "KeyboardInterrupt caught in kernel" ERROR
                                   # it logs now and then when jupyter_client interrupts
                                   # it on shutdown. A cell's error reaches the user
                                   # through papermill.
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except papermill.PapermillExecutionError as error:
        return f"{error.ename}: {error.evalue}"
    return None


def make_figures(runs, output_dir="reports", notebooks=NOTEBOOKS, echo=print):
    """Execute each notebook on `runs` (paths), then write output_dir/report.html: the
    claims table, the figures, the run inventory.

    The build replaces the files an earlier build wrote in `output_dir` (its manifest),
    so the report shows only what these runs made, and only once it is complete
    (`pipeline.results.report_folder`); an output folder holding other files where a
    build writes is refused (ReportFolderError) rather than overwritten. A notebook that
    finds no runs of its kind (no DLN run for `dln`) says so and is left out; any other
    stop is an error.
    """
    from pipeline.results.analysis import load_runs
    unknown = sorted(set(notebooks) - set(NOTEBOOKS))
    if unknown:
        raise InputError(f"unknown notebook(s) {unknown}; choose from {', '.join(NOTEBOOKS)}")
    # Absolute: the notebooks run with the repository as their working folder.
    runs = [str(Path(r).resolve()) for r in runs]
    load_runs(runs)  # a missing run path stops here, before any notebook runs
    output_dir = Path(output_dir).resolve()
    check_output(output_dir)
    try:
        return _build(runs, output_dir, notebooks, echo)
    except OSError as error:  # a full disk names no file: it is the output's
        if error.filename is None:
            error.filename = str(output_dir)
        raise


def _build(runs, output_dir, notebooks, echo):
    staging = start_staging(output_dir)
    try:
        failures = {}
        for index, name in enumerate(notebooks, 1):
            echo(f"[{index}/{len(notebooks)}] notebook {name}")
            message = execute(name, staging, {"runs": runs})
            if message and message.startswith("NothingToPlot"):
                echo(f"    skipped: {message.split(': ', 1)[1]}")
            elif message:
                failures[name] = message
                echo(f"    FAILED: {message}")
        _name_the_output_in_notebooks(staging, output_dir)
        build_report(staging, runs)
        publish(staging, output_dir)
    finally:
        discard_staging(staging)
    report = output_dir / "report.html"
    if failures:
        listed = "; ".join(f"{name}: {message}" for name, message in failures.items())
        raise NotebookFailure(f"{len(failures)} notebook(s) failed ({listed}); the executed "
                              f"copies in {output_dir / 'notebooks'} show where, and "
                              f"{report} holds what the others made")
    return report


def _name_the_output_in_notebooks(staging, output_dir):
    """The executed notebooks name the folder their figures are in (their `output_dir`
    parameter), which was the staging folder while they ran: name the one they end in."""
    for notebook in (staging / "notebooks").glob("*.ipynb"):
        text = notebook.read_text()
        atomic_write_text(notebook, text.replace(json.dumps(str(staging))[1:-1],
                                                 json.dumps(str(output_dir))[1:-1]))


def run_inventory(loaded):
    """One row per run for the report (`run_meta.summary_row`): path, seed, steps, status,
    wall time, versions."""
    rows = []
    for run in loaded:
        row = summary_row(run.meta)
        rows.append({"path": run.path, "seed": run.seed,
                     "steps": f"{run.meta.step} of {run.steps}",
                     "status": row["status"],
                     "wall_time": (f"{row['wall_s']:.0f} s" if run.meta.wall_time_s is not None
                                   else ""),
                     "versions": row["versions"]})
    return rows


def build_report(output_dir, runs=()):
    """One HTML page: the claims table over `runs` (paths), every figure of
    output_dir/figures with its caption, and the run inventory."""
    import jinja2

    from pipeline.results.analysis import load_runs
    from pipeline.results.claims import claims_table
    from pipeline.results.claims_format import answer, details, number
    from pipeline.results.rules import RULES
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    captions_path = figures / CAPTIONS
    captions = json.loads(captions_path.read_text()) if captions_path.exists() else {}
    loaded = load_runs(runs) if runs else []
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
    environment.filters["details"] = details  # a row's details as the text table has them
    environment.filters["number"] = number
    claims = claims_table(loaded) if loaded else []
    names = [name for name in captions if (figures / f"{name}.png").exists()]
    page = environment.get_template("report.html.j2").render(
        claims=claims, answer=answer(claims), figure_names=names,
        rules={name: rule.text for name, rule in RULES.items()},
        figures=[{"name": name, "caption": captions[name]} for name in names],
        notebooks=[n.name for n in sorted((output_dir / "notebooks").glob("*.ipynb"))],
        runs=run_inventory(loaded))
    path = output_dir / "report.html"
    atomic_write_text(path, page)
    return path
