"""The record schema, declared once and public: the streams a run writes
(`records/<stream>.jsonl`, one JSON object a line), the fields of each, and the loss
each carries (what claims compare variants at: matched training progress).

Every record has `step` (the training step it belongs to: for probes, measured on that
step's batch before its update). A probe's record may hold a list of entries, one per
coordinate (`per_layer`: a weight layer; `per_eta`: a step size), each with its
coordinate as a field, never encoded in a key. The training loop checks every record it
writes against this schema (`check`), and readers take the loss keys from here, so the
two cannot drift apart. `meta.json` records the schema's `VERSION` (`record_schema`).

Reading records with pandas:

    import pandas as pd
    ics = pd.read_json("runs/x/records/ics.jsonl", lines=True)
    per_layer = ics.explode("ics/per_layer")  # one row per layer, its entry a dict
"""

from dataclasses import dataclass

# 2: this declaration; `name` (the layer's Keras name) beside `layer` in per-layer
# entries. Runs without `record_schema` in meta.json wrote version 1 (no `name`).
VERSION = 2

# What `meta.json`'s `probe_batch` says of runs of the training loop.
STEP_BATCH = "the step's own training batch, before the step's update"


@dataclass(frozen=True)
class Stream:
    name: str
    loss: str | None       # the key of the loss its records carry (None: no loss)
    fields: tuple          # the record's keys besides `step` (optional ones included)
    entries: str | None = None   # the key of its list of entries, if any
    entry_fields: tuple = ()     # the fields of each entry

    def allowed(self):
        return {"step", *self.fields, *([self.entries] if self.entries else [])}


STREAMS = {stream.name: stream for stream in (
    # Every train.log_every steps, on the step's batch (accuracy: classification only).
    Stream("train", "train/loss", ("train/loss", "train/accuracy")),
    # Every train.eval_every steps and at the end, over the whole test split; with
    # recomputed BN statistics, the moving averages' too.
    Stream("eval", "test/loss", ("test/loss", "test/accuracy", "test/moving_stats_loss",
                                 "test/moving_stats_accuracy")),
    # Internal covariate shift (paper Definition 2.1), per weight layer.
    Stream("ics", "ics/loss", ("ics/loss", "ics/next_cosine"), "ics/per_layer",
           ("layer", "name", "l2", "relative_l2", "cosine")),
    # The loss landscape along the gradient, per step size: `multiplier` (of the LR) and
    # `eta` (the step itself), each recorded, never one derived from the other.
    Stream("landscape", "landscape/loss",
           ("landscape/loss", "landscape/grad_norm", "landscape/loss_min", "landscape/loss_max",
            "landscape/grad_change_min", "landscape/grad_change_max", "landscape/beta_max",
            "landscape/next_cosine"), "landscape/per_eta",
           ("multiplier", "eta", "loss_at_eta", "grad_change", "beta", "cosine")),
    # Activation and weight distributions, per weight layer (no loss).
    Stream("distributions", None, ("distributions/quantile_levels",), "distributions/per_layer",
           ("layer", "name", "quantiles", "mean", "std", "channel_mean", "channel_var",
            "sample", "kernel_quantiles")),
    # The top Hessian eigenvalue (Lanczos).
    Stream("curvature", "curvature/loss", ("curvature/top_eigenvalue", "curvature/residual",
                                           "curvature/loss", "curvature/iterations")),
)}


def loss_key(stream):
    """The key of the loss `stream`'s records carry (None if they carry none)."""
    return STREAMS[stream].loss


class SchemaError(ValueError):
    """A writer's record does not follow the declared schema (a bug of the writer)."""


def check(stream, record):
    """Raise `SchemaError` if `record` (with or without `step`) of `stream` holds a key,
    or an entry a field, that the schema does not declare."""
    if stream not in STREAMS:
        raise SchemaError(f"stream {stream!r} is not declared in pipeline/core/records.py")
    declared = STREAMS[stream]
    extra = set(record) - declared.allowed()
    entries = record.get(declared.entries, []) if declared.entries else []
    extra |= {f"{declared.entries}[].{k}" for entry in entries for k in entry
              if k not in declared.entry_fields}
    if extra:
        raise SchemaError(f"records of {stream!r} hold {sorted(extra)}, which "
                          "pipeline/core/records.py does not declare; declare them there")
