"""Figures and the HTML report: executing the notebooks with papermill, saving figures
with captions, and assembling one page that shows them all."""

import json
from pathlib import Path

from pipeline.core.errors import InputError, UserError
from pipeline.core.runs import SymlinkRefused, atomic_write_text, summary_row

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# Analysis notebooks in report order (the Colab quick-start is not part of the report).
NOTEBOOKS = ("training", "distributions", "ics", "landscape", "lp_variants", "dln")
CAPTIONS = "captions.json"
# The files the last build wrote (relative to the output folder): the only files a
# rebuild removes. Nothing else in the output folder is deleted or overwritten.
MANIFEST = ".bnlab-report.json"
BUILT = ("figures", "notebooks")  # folders a build writes into, beside report.html


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

    The files an earlier build wrote in `output_dir` (its manifest) are removed first, so
    the report shows only what these runs made; an output folder holding other files
    where a build writes is refused (ReportFolderError) rather than overwritten. A notebook that
    finds no runs of its kind (no DLN run for `dln`) says so and is left out; any other
    stop is an error.
    """
    from pipeline.results.analysis import load_runs
    unknown = sorted(set(notebooks) - set(NOTEBOOKS))
    if unknown:
        raise InputError(f"unknown notebook(s) {unknown}; choose from {', '.join(NOTEBOOKS)}")
    runs = [str(r) for r in runs]
    load_runs(runs)  # a missing run path stops here, before any notebook runs
    remove_previous_build(output_dir)
    failures = {}
    for index, name in enumerate(notebooks, 1):
        echo(f"[{index}/{len(notebooks)}] notebook {name}")
        message = execute(name, output_dir, {"runs": runs})
        if message and message.startswith("NothingToPlot"):
            echo(f"    skipped: {message.split(': ', 1)[1]}")
        elif message:
            failures[name] = message
            echo(f"    FAILED: {message}")
    report = build_report(output_dir, runs)
    atomic_write_text(Path(output_dir) / MANIFEST, json.dumps(sorted(_built_files(output_dir)),
                                                             indent=1))
    if failures:
        listed = "; ".join(f"{name}: {message}" for name, message in failures.items())
        raise NotebookFailure(f"{len(failures)} notebook(s) failed ({listed}); the executed "
                              f"copies in {Path(output_dir) / 'notebooks'} show where, and "
                              f"{report} holds what the others made")
    return report


def _built_files(output_dir):
    """Relative paths of the files in the places a build writes."""
    output_dir = Path(output_dir)
    found = [p for folder in BUILT for p in (output_dir / folder).rglob("*") if p.is_file()]
    found += [output_dir / "report.html"] if (output_dir / "report.html").is_file() else []
    return {str(p.relative_to(output_dir)) for p in found}


class ReportFolderError(InputError):
    """The output folder holds files a build did not write, or a damaged manifest."""


def _listed_files(output_dir):
    """The files the manifest of an earlier build lists ([] without one); a
    `ReportFolderError` naming it if it is not a JSON list of file names."""
    manifest = output_dir / MANIFEST
    if not manifest.exists():
        return []
    try:
        listed = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        listed = None
    if not (isinstance(listed, list) and all(isinstance(n, str) and n.strip() for n in listed)):
        raise ReportFolderError(
            f"{manifest} is damaged (it must be the list of files an earlier build wrote); "
            "delete it and move the folder's figures/, notebooks/ and report.html away, or "
            "choose another --output")
    return listed


def remove_previous_build(output_dir):
    """Refuse if the places a build writes are symbolic links or hold files the manifest
    does not list (they are someone else's), before anything is deleted; then delete the
    files it lists, and nothing else."""
    output_dir = Path(output_dir)
    for name in (*BUILT, "report.html", MANIFEST):
        if (output_dir / name).is_symlink():  # a build would write into its target
            raise SymlinkRefused(
                f"{output_dir / name} is a symbolic link; a report is written only inside "
                "--output, never through a link: remove the link (its target stays as it "
                "is), or choose another --output")
    root = output_dir.resolve()
    ours = []
    for name in _listed_files(output_dir):
        path = output_dir / name
        if (path.resolve().is_relative_to(root) and Path(name).parts[0] in (*BUILT, "report.html")
                and path.is_file() and not path.is_symlink()):
            ours.append(path)
    others = sorted(_built_files(output_dir) - {str(p.relative_to(output_dir)) for p in ours})
    if others:
        raise ReportFolderError(
            f"{output_dir} holds files that BN Lab did not write where the report goes "
            f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose another "
            "--output, or move them")
    for path in ours:
        path.unlink(missing_ok=True)


def run_inventory(loaded):
    """One row per run for the report (`runs.summary_row`): path, seed, steps, status,
    wall time, versions."""
    rows = []
    for run in loaded:
        row = summary_row(run["meta"])
        rows.append({"path": run["path"], "seed": run["config"]["seed"],
                     "steps": f"{run['meta'].get('step', '?')} of {run['config']['train']['steps']}",
                     "status": row["status"],
                     "wall_time": f"{row['wall_s']:.0f} s" if "wall_time_s" in run["meta"] else "",
                     "versions": row["versions"]})
    return rows


def build_report(output_dir, runs=()):
    """One HTML page: the claims table over `runs` (paths), every figure of
    output_dir/figures with its caption, and the run inventory."""
    import jinja2

    from pipeline.results.analysis import load_runs
    from pipeline.results.claims import claims_table
    from pipeline.results.claims_format import answer
    from pipeline.results.rules import RULES
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    captions_path = figures / CAPTIONS
    captions = json.loads(captions_path.read_text()) if captions_path.exists() else {}
    loaded = load_runs(runs) if runs else []
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
    claims = claims_table(loaded) if loaded else []
    page = environment.get_template("report.html.j2").render(
        claims=claims, answer=answer(claims),
        rules={name: rule.text for name, rule in RULES.items()},
        figures=[{"name": name, "caption": caption} for name, caption in captions.items()
                 if (figures / f"{name}.png").exists()],
        notebooks=[n.name for n in sorted((output_dir / "notebooks").glob("*.ipynb"))],
        runs=run_inventory(loaded))
    path = output_dir / "report.html"
    atomic_write_text(path, page)
    return path
