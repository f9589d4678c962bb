"""The report's output folder: what a build may write there, what it may delete, and how
a new build replaces the last one without leaving half of itself behind.

A build writes into a staging folder of its own inside --output (`.bnlab-build`), then
moves its files into place: the manifest listing them first, then the files one by one
(`os.replace`, atomic each). So Ctrl-C, SIGTERM or SIGKILL at any instant leaves either
the earlier build, or files that the manifest lists (which the next build removes), and
at worst a staging folder, which the next build recognizes by its marker and removes.
Nothing a build did not write is deleted or overwritten: a place a build writes that
holds other files, or is a symbolic link, is refused before anything is touched.
"""

import json
import os
import shutil
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.runs import atomic_write_text, refuse_if_link

# The files the last build wrote (relative to the output folder): the only files a
# rebuild removes.
MANIFEST = ".bnlab-report.json"
BUILT = ("figures", "notebooks")  # folders a build writes into, beside report.html
STAGING = ".bnlab-build"
STAGING_MARKER = ".bnlab-staging"  # written first into a staging folder: it is ours


class ReportFolderError(InputError):
    """The output folder holds files a build did not write, or a damaged manifest."""


def built_files(folder):
    """Relative paths of the files in the places a build writes."""
    folder = Path(folder)
    found = [p for name in BUILT for p in (folder / name).rglob("*") if p.is_file()]
    found += [folder / "report.html"] if (folder / "report.html").is_file() else []
    return {str(p.relative_to(folder)) for p in found}


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


def _ours(output_dir):
    """The listed files of the last build that are plain files where a build writes."""
    root = output_dir.resolve()
    ours = []
    for name in _listed_files(output_dir):
        path = output_dir / name
        if (path.resolve().is_relative_to(root) and Path(name).parts[0] in (*BUILT, "report.html")
                and path.is_file() and not path.is_symlink()):
            ours.append(path)
    return ours


def check_output(output_dir):
    """Refuse, before anything is written or deleted, an output folder where a build
    would write through a symbolic link, or over files an earlier build did not write
    (they are someone else's), or whose staging folder is not a build's."""
    output_dir = Path(output_dir)
    for name in (*BUILT, "report.html", MANIFEST, STAGING):
        refuse_if_link(output_dir / name, "choose another --output")
    others = sorted(built_files(output_dir)
                    - {str(p.relative_to(output_dir)) for p in _ours(output_dir)})
    if others:
        raise ReportFolderError(
            f"{output_dir} holds files that BN Lab did not write where the report goes "
            f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose another "
            "--output, or move them")
    staging = output_dir / STAGING
    if staging.exists() and not (staging / STAGING_MARKER).is_file():
        raise ReportFolderError(f"{staging} is not a folder BN Lab made; move it, or choose "
                                "another --output")


def remove_previous_build(output_dir):
    """Delete the files the last build listed, once `check_output` has passed."""
    for path in _ours(Path(output_dir)):
        path.unlink(missing_ok=True)


def start_staging(output_dir):
    """A new, empty staging folder inside `output_dir` (a killed build's is removed:
    `check_output` has seen its marker)."""
    staging = Path(output_dir) / STAGING
    discard_staging(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARKER).write_text("a BN Lab report being built; removed when done\n")
    return staging


def discard_staging(staging):
    if (staging / STAGING_MARKER).is_file():
        shutil.rmtree(staging)


def publish(staging, output_dir):
    """Replace the last build in `output_dir` with the one in `staging`: its files
    listed in the manifest first, then the earlier build's files removed and the new
    ones moved into place."""
    output_dir = Path(output_dir)
    new = sorted(built_files(staging))
    check_output(output_dir)
    remove_previous_build(output_dir)
    atomic_write_text(output_dir / MANIFEST, json.dumps(new, indent=1))
    for name in new:
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, output_dir / name)
