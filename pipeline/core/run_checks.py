"""Checks that a run's results are its own and whole before they count (issue 42): its
config.yaml is the one it trained with (the seal in meta.json), every stream its config
writes has a record at every step it should, and a finished run's records hold finite
numbers. `runs.load_run` runs them on every run the claims and figures read; a resume
checks the seal and the streams before it goes on."""

import math

from pipeline.core.runs import BrokenRunError


def differing_keys(a, b):
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += [f"{key}.{k}" for k in differing_keys(x, y)]
        elif x != y:
            keys.append(key)
    return keys


class UnsealedConfig(BrokenRunError):
    """A run's config.yaml no longer holds the config the run trained with."""


def check_seal(path, config, meta):
    """Raise `UnsealedConfig` if the config.yaml at `path` (read as `config`) differs from
    the config the run trained with, sealed in its meta.json (`RunMeta.config`; runs from
    before the seal have none, and pass)."""
    if meta.config is None:
        return
    differing = differing_keys(meta.config, config)
    if differing:
        raise UnsealedConfig(
            f"{path} no longer holds the config the run trained with (meta.json's seal; "
            f"differing: {', '.join(differing)}): its results are not those of this config; "
            "restore the file (meta.json's `config` holds the values it trained with), or "
            "train the changed config as a new run in another folder")


def check_streams(run, upto, config, meta, records=None):
    """Raise `BrokenRunError` naming the file if a stream the run's (`RunDirectory`) `config` (a dict)
    says it writes has a hole before step `upto`: a logged step (every
    train.log_every), an evaluation (every
    train.eval_every steps, and at the last) or a probe step (meta.json's
    `probe_steps`) without its record. `records`: {stream: records} already read."""
    train = config.get("train", {})
    every, steps = train.get("eval_every"), train.get("steps")
    expected = {}
    if isinstance(train.get("log_every"), int) and train["log_every"] > 0:
        expected["train"] = list(range(0, upto, train["log_every"]))
    if isinstance(every, int) and isinstance(steps, int) and every > 0:
        expected["eval"] = sorted({*range(every, min(upto, steps) + 1, every),
                                   *([steps] if steps <= upto else [])})
    for stream, probed in (meta.probe_steps or {}).items():
        expected[stream] = [s for s in probed if s < upto]
    for stream, wanted in expected.items():
        found = {r["step"] for r in (records[stream] if records and stream in records
                                     else run.records(stream))}
        missing = sorted(set(wanted) - found)
        if missing:
            raise BrokenRunError(
                f"{run.records_path(stream)} misses the record of step {missing[0]} "
                f"({len(missing)} of the {len(wanted)} steps the run's config records "
                f"before step {upto}): records deleted or cut; restore the run's files, or "
                f"delete {run.path} to start that run over")


def _nonfinite_in(value):
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_nonfinite_in, value.values()))
    if isinstance(value, list):
        return any(map(_nonfinite_in, value))
    return False


def refuse_nonfinite(path, rows):
    """A finished run's records hold finite numbers only (a diverged run's last loss is
    its result; a NaN written into a finished one would move a claim's ratio)."""
    for line, row in enumerate(rows, 1):
        bad = sorted(key for key, value in row.items() if _nonfinite_in(value))
        if bad:
            raise BrokenRunError(
                f"{path}, line {line} (step {row.get('step')}): {', '.join(bad)} is not a "
                "finite number in a finished run; restore the run's files, or delete the run "
                "directory to train it again")
