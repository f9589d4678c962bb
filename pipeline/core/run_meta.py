"""meta.json's fields and their types, checked as a whole whenever the file is read.

meta.json says how a run was produced and where it stands (its status, the step its
last checkpoint holds); commands act on it (resume, skip, summarize), so a field of the
wrong type must stop them with the file named, not deep inside with a traceback or,
worse, after they have marked the run `running`. Fields not listed here are kept as
they are (a newer version may add some)."""

import numbers

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
# A run with one of these ended with a result (a diverged run's result is its divergence):
# nothing resumes it; the others resume on the next start.
DONE = ("finished", "diverged")


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _text(value):
    return isinstance(value, str)


def _optional_text(value):
    return value is None or isinstance(value, str)


def _texts(value):
    return isinstance(value, list) and all(map(_text, value))


def _runtime(value):
    return (isinstance(value, dict) and (value.get("threads") is None or _count(value["threads"]))
            and _optional_text(value.get("backend")))


# field: (test, what it must be)
FIELDS = {
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "step": (_count, "a whole number >= 0"),
    "steps": (_count, "a whole number >= 0"),
    "start_step": (_count, "a whole number >= 0"),
    "restarts": (_count, "a whole number >= 0"),
    "diverged_step": (_count, "a whole number >= 0"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "wall_time_s": (_number, "a number of seconds"),
    "steps_per_second": (_number, "a number"),
    "backend": (lambda v: v in ("tensorflow", "jax"), "tensorflow or jax"),
    "error": (_text, "text"),
    "git_revision": (_optional_text, "text or null"),
    "command": (_text, "text"),
    "devices": (_texts, "a list of device names"),
    "versions": (lambda v: isinstance(v, dict) and all(map(_text, v.values())),
                 "an object of version strings"),
    "runtime": (_runtime, "an object whose threads is a whole number (or null)"),
    "loss_levels": (lambda v: isinstance(v, list) and all(map(_number, v)), "a list of numbers"),
    "probe_steps": (lambda v: isinstance(v, dict) and all(
        isinstance(s, list) and all(map(_count, s)) for s in v.values()),
        "an object of step lists"),
    "backend_changes": (lambda v: isinstance(v, list) and all(
        isinstance(c, dict) and _count(c.get("step")) for c in v), "a list of changes"),
}


def meta_problem(meta):
    """What is wrong with the meta.json object `meta` ('' if nothing): the first field
    of the wrong type, named, with what it must be."""
    if not isinstance(meta, dict):
        return "it holds no JSON object"
    for field, (valid, expected) in FIELDS.items():
        if field in meta and not valid(meta[field]):
            return f"its {field} is {meta[field]!r}, which must be {expected}"
    return ""
