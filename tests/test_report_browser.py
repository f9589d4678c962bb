"""The report as a reader sees it: opened in headless Chromium (Debian's `chromium`,
driven by Playwright; nothing is downloaded at test time), every figure loaded, no
console error, the answer, the claims table and each caption on the page."""

import json
import shutil

import pytest

from conftest import fake_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.backend_free, pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium: sudo apt-get install chromium (.ci/run does)")]


def _figure(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)


def _report(folder, runs, broken=False):
    """A report as `figures` builds it, over `runs`, with two figures and their captions
    (the second a damaged PNG if `broken`)."""
    from pipeline.results.report import CAPTIONS, build_report
    figures = folder / "figures"
    figures.mkdir(parents=True)
    captions = {"training_loss": "Training loss of 2 runs.", "landscape": "Loss landscape."}
    for name in captions:
        _figure(figures / f"{name}.png")
    if broken:
        (figures / "landscape.png").write_bytes(b"\x89PNG not an image")
    (figures / CAPTIONS).write_text(json.dumps(captions))
    return build_report(folder, runs), captions


def _open(*reports):
    """For each report: (images as [src, natural width], console errors, the page's
    text), as headless Chromium shows it, with a full-page screenshot beside it
    (report.png, kept with the test's folder: pytest keeps the last 3)."""
    from playwright.sync_api import sync_playwright
    seen = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for report in reports:
                errors, page = [], browser.new_page()
                page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.goto(report.as_uri(), wait_until="load")
                images = page.eval_on_selector_all(
                    "img", "images => images.map(i => [i.getAttribute('src'), i.naturalWidth])")
                page.screenshot(path=str(report.with_suffix(".png")), full_page=True)
                seen.append((images, errors, page.inner_text("body")))
        finally:
            browser.close()
    return seen


def test_the_report_opens_in_a_real_browser_with_every_figure(tmp_path):
    runs = [fake_run(tmp_path / "runs" / f"{norm}-{seed}", f"model.norm={norm}", f"seed={seed}")
            for norm in ("none", "batch") for seed in range(2)]
    report, captions = _report(tmp_path / "report", runs)
    # The same page with a damaged PNG: the check must see a figure that does not load.
    damaged, _ = _report(tmp_path / "damaged", runs, broken=True)
    (images, errors, text), (damaged_images, _, _) = _open(report, damaged)
    assert sorted(src for src, _ in images) == ["figures/landscape.png", "figures/training_loss.png"]
    assert all(width > 0 for _, width in images), images
    assert errors == []
    assert "What the paper claims, and what we find" in text and "BN trains faster" in text
    assert all(caption in text for caption in captions.values())
    assert report.with_suffix(".png").stat().st_size > 10_000
    assert dict(damaged_images)["figures/landscape.png"] == 0
