"""Figures and the HTML report: executing the notebooks with papermill, saving figures
with captions, and assembling one page that shows them all."""

import html
import json
from pathlib import Path

from pipeline.runs import atomic_write_text

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Analysis notebooks in report order (the Colab quick-start is not part of the report).
NOTEBOOKS = ("training", "distributions", "ics", "landscape", "lp_variants", "dln")
CAPTIONS = "captions.json"


def save_captioned(fig, output_dir, name, caption, formats=("png", "svg")):
    """Save `fig` under output_dir/figures and record its caption for the report."""
    from pipeline.plots import save_figure
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
        raise ValueError(f"notebook {name}.ipynb has no parameter(s) {unknown}; "
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
                                   cwd=str(NOTEBOOK_DIR.parent))
    except papermill.PapermillExecutionError as error:
        return f"{error.ename}: {error.evalue}"
    return None


def make_figures(runs, output_dir="reports", notebooks=NOTEBOOKS, echo=print):
    """Execute each notebook on `runs` (paths), then write output_dir/report.html.

    A notebook that finds no runs of its kind (no DLN run for `dln`, no l_p run for
    `lp_variants`) says so and is left out of the report; any other stop is an error.
    """
    runs = [str(r) for r in runs]
    failures = {}
    for index, name in enumerate(notebooks, 1):
        echo(f"[{index}/{len(notebooks)}] notebook {name}")
        message = execute(name, output_dir, {"runs": runs})
        if message and message.startswith("NothingToPlot"):
            echo(f"    skipped: {message.split(': ', 1)[1]}")
        elif message:
            failures[name] = message
            echo(f"    FAILED: {message}")
    report = build_report(output_dir)
    if failures:
        raise RuntimeError(f"notebooks failed: {failures}; executed copies in "
                           f"{Path(output_dir) / 'notebooks'} show where")
    return report


def build_report(output_dir):
    """One HTML page with every figure of output_dir/figures and its caption."""
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    captions_path = figures / CAPTIONS
    captions = json.loads(captions_path.read_text()) if captions_path.exists() else {}
    sections = []
    for name, caption in captions.items():
        if not (figures / f"{name}.png").exists():
            continue
        sections.append(
            f'<figure id="{html.escape(name)}"><img src="figures/{html.escape(name)}.png" '
            f'alt="{html.escape(name)}"><figcaption><b>{html.escape(name)}</b>: '
            f"{html.escape(caption)} (<a href=\"figures/{html.escape(name)}.svg\">svg</a>)"
            "</figcaption></figure>")
    notebooks = sorted((output_dir / "notebooks").glob("*.ipynb"))
    links = " ".join(f'<a href="notebooks/{n.name}">{n.stem}</a>' for n in notebooks)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>BN Lab report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}img{{max-width:100%}}
figure{{margin:2em 0;border-bottom:1px solid #ddd}}figcaption{{color:#333}}</style></head>
<body><h1>BN Lab: how does batch normalization help optimization?</h1>
<p>Figures made from the run directories by the notebooks ({links or 'none'}).
Santurkar et al., NeurIPS 2018, reproduced with Keras 3 / TensorFlow.</p>
{''.join(sections) or '<p>No figures were made.</p>'}
</body></html>
"""
    path = output_dir / "report.html"
    atomic_write_text(path, page)
    return path
