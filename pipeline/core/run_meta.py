"""meta.json as a typed object (`RunMeta`), its fields checked as a whole whenever the
file is read.

meta.json says how a run was produced and where it stands (its status, the step its
last checkpoint holds); commands act on it (resume, skip, summarize), so a field of the
wrong type must stop them with the file named, not deep inside with a traceback or,
worse, after they have marked the run `running`. Fields not listed here are kept as
they are (a newer version may add some)."""

import math
import numbers
from dataclasses import dataclass, field, fields, replace

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
# A run with one of these ended with a result (a diverged run's result is its divergence):
# nothing resumes it; the others resume on the next start.
DONE = ("finished", "diverged")


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value):
    return _whole(value) and value >= 0


def _amount(value):
    """A finite number >= 0: seconds, steps a second, a loss (NaN or inf in one of them
    would reach a summary or a loss-level measure as a value)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _text(value):
    return isinstance(value, str)


def _optional_text(value):
    return value is None or isinstance(value, str)


def _texts(value):
    return isinstance(value, list) and all(map(_text, value))


def _runtime(value):
    return (isinstance(value, dict) and (value.get("threads") is None or _count(value["threads"]))
            and _optional_text(value.get("backend")))


COUNT = (_count, "a whole number >= 0")
TEXT = (_text, "text")


def _checked(check, default=None):
    """A RunMeta field whose value in the file must pass `check`, a (test, what it must
    be) pair: the one place that says a field's type."""
    return field(default=default, metadata={"check": check})


class DamagedMeta(ValueError):
    """A meta.json field of the wrong type (the message names it and what it must be)."""


def is_done(status):
    """Whether a run with `status` (its meta.json's) has its result: no resume."""
    return status in DONE


@dataclass(frozen=True)
class RunMeta:
    """A run's meta.json, typed: where the run stands and how it was produced.

    `RunDirectory.read_meta` builds it (checking every field, `from_json`) and
    `RunDirectory.write_meta` writes it (`to_json`); nothing else reads or writes the
    file. Frozen: the training loop makes each change a new object (`with_`), so a
    meta.json written at a checkpoint cannot be changed afterwards by the loop going on.
    A field that is None is absent from the file (a run never started has none)."""
    # Where the run stands.
    status: str | None = _checked(           # None before the first start
        (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"))
    step: int = _checked(COUNT, 0)           # the last checkpoint's (a diverged run's: that step)
    steps: int | None = _checked(COUNT)      # the steps the run was configured for
    start_step: int | None = _checked(COUNT)  # where the latest attempt began
    restarts: int | None = _checked(COUNT)   # attempts after the first
    diverged_step: int | None = _checked(COUNT)
    error: str | None = _checked(TEXT)       # a failed or interrupted attempt's
    wall_time_s: float | None = _checked(    # all attempts
        (_amount, "a finite number of seconds >= 0"))
    steps_per_second: float | None = _checked((_amount, "a finite number >= 0"))
    probe_steps: dict | None = _checked(     # {probe: [steps it probes]}
        (lambda v: isinstance(v, dict) and all(isinstance(s, list) and all(map(_count, s))
                                               for s in v.values()), "an object of step lists"))
    loss_levels: list | None = _checked(     # the DLN's rank-k plateaus (pipeline.inputs.tasks)
        (lambda v: isinstance(v, list) and all(map(_amount, v)), "a list of finite numbers >= 0"))
    backend_changes: list | None = _checked(  # [{step, from, to}] where a resume switched backend
        (lambda v: isinstance(v, list) and all(isinstance(c, dict) and _count(c.get("step"))
                                               for c in v), "a list of changes"))
    # How it was produced.
    config: dict | None = _checked(          # the resolved config it trained with: its seal
        (lambda v: isinstance(v, dict), "an object (the resolved config)"))
    seed: int | None = _checked((_whole, "a whole number"))
    backend: str | None = _checked((lambda v: v in ("tensorflow", "jax"), "tensorflow or jax"))
    devices: list | None = _checked((_texts, "a list of device names"))
    strategy: str | None = _checked(TEXT)
    replicas: int | None = _checked(COUNT)
    processes: int | None = _checked(COUNT)  # JAX's process count (several workers)
    sync_batch_norm: bool | None = _checked((lambda v: isinstance(v, bool), "true or false"))
    runtime: dict | None = _checked(         # threads (None: all cores), steps_per_call, ...
        (_runtime, "an object whose threads is a whole number (or null)"))
    versions: dict | None = _checked(
        (lambda v: isinstance(v, dict) and all(map(_text, v.values())),
         "an object of version strings"))
    git_revision: str | None = _checked((_optional_text, "text or null"))
    command: str | None = _checked(TEXT)
    host: str | None = _checked(TEXT)
    user: str | None = _checked(TEXT)
    platform: str | None = _checked(TEXT)
    # The version of the record schema its records follow (pipeline.core.records).
    record_schema: int | None = _checked(COUNT)
    # The user's code a run's config names (model.factory, data.loader): {key: {function,
    # file, sha256}}; the config cannot seal that code, so the run records which it ran.
    user_code: dict | None = _checked(
        (lambda v: isinstance(v, dict) and all(isinstance(c, dict) for c in v.values()),
         "an object of {function, file, sha256} objects"))
    # Which batch the probes measured on: the step's own (the training loop) or a fixed
    # batch given to pipeline.probes.callback.ProbeCallback under model.fit (with why).
    probe_batch: str | None = _checked(TEXT)
    # Fields this version does not know (a newer one may add some): kept as they are.
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj):
        """The RunMeta of meta.json's parsed object `obj`; a `DamagedMeta` saying what is
        wrong (the first field of the wrong type, named, with what it must be)."""
        problem = meta_problem(obj)
        if problem:
            raise DamagedMeta(problem)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in obj.items() if k in known},
                   extra={k: v for k, v in obj.items() if k not in known})

    def to_json(self):
        """meta.json's object: every field that is set, and the unknown ones kept."""
        obj = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in obj.items() if v is not None}}

    def with_(self, **changes):
        """A copy with `changes` (None removes a field from the file)."""
        return replace(self, **changes)

    @property
    def done(self):
        """Whether the run has its result: nothing resumes it."""
        return is_done(self.status)


def meta_problem(meta):
    """What is wrong with the meta.json object `meta` ('' if nothing): the first field
    of the wrong type, named, with what it must be; then steps that contradict each
    other (a run never goes past its configured steps, nor starts after where it is)."""
    if not isinstance(meta, dict):
        return "it holds no JSON object"
    for f in fields(RunMeta):
        if "check" in f.metadata and f.name in meta:
            valid, expected = f.metadata["check"]
            if not valid(meta[f.name]):
                return f"its {f.name} is {meta[f.name]!r}, which must be {expected}"
    step, steps = meta.get("step", 0), meta.get("steps")
    for name in ("step", "diverged_step"):
        if steps is not None and meta.get(name, 0) > steps:
            return f"its {name} is {meta[name]}, beyond its steps ({steps})"
    if meta.get("start_step", 0) > step:
        return f"its start_step is {meta['start_step']}, beyond its step ({step})"
    return ""


def summary_row(meta, last_train=None, last_eval=None, broken=None):
    """A run's one-row summary, which every table of runs (the sweep's, the notebooks',
    the report's) selects from: status, steps done and planned, the step it diverged at
    ('' if it did not), the last train loss, the last test loss and accuracy, wall time
    (s), versions, and the error of a failed or broken run. `meta`: its `RunMeta`;
    `last_train`, `last_eval`: its last train and eval records (None if it has none);
    `broken`: why its files could not be read, if they could not (status `broken`)."""
    nan = float("nan")
    status = "broken" if broken else meta.status or "not started"
    error = broken or ((meta.error or "") if status == "failed" else "")
    return {"status": status, "step": meta.step, "steps": meta.steps,
            "diverged_at": "" if meta.diverged_step is None else meta.diverged_step,
            "train_loss": (last_train or {}).get("train/loss", nan),
            "test_loss": (last_eval or {}).get("test/loss", nan),
            "test_accuracy": (last_eval or {}).get("test/accuracy", nan),
            "wall_s": round(meta.wall_time_s or 0.0, 1),
            "versions": ", ".join(f"{k} {v}" for k, v in (meta.versions or {}).items()),
            "error": error}


def pick(row, columns):
    return {column: row[column] for column in columns}
