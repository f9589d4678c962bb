"""BN Lab's probes under `model.fit`: `ProbeCallback`, a Keras callback.

    from pipeline.training.probe_callback import ProbeCallback
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=...)
    model.fit(x, y, batch_size=128, epochs=3,
              callbacks=[ProbeCallback("runs/mine", batch=(x[:128], y[:128]),
                                       probes=("ics", "landscape"), every=20)])

It writes a run directory like the training loop's (config.yaml, meta.json, the records
of pipeline.core.records), so `python -m pipeline claims` and `figures` read it.

Where it differs from the paper's definitions, and says so in meta.json (`probe_batch`):
a callback does not see the step's batch, so every probe measures on the one fixed batch
it is given (the training loop measures on the step's own batch). Measured before the
step's update (at `on_train_batch_begin`), in training mode, with the optimizer's own
update rule for ICS, and with BN Lab's task loss: cross-entropy of the model's outputs
taken as logits for integer labels, the summed squared error for real-valued targets
(the loss the model was compiled with is not read). `train/loss` records Keras' running
mean over the epoch (what `model.fit` reports), `eval` the test data given (else the
probe batch) at the end of training.
"""

import re

import keras
import numpy as np
import yaml

from pipeline.core import records
from pipeline.core.config import ConfigError, build_config, to_yaml
from pipeline.core.probe_settings import SETTINGS
from pipeline.core.run_meta import RunMeta
from pipeline.core.runs import CONFIG_FILE, RunDirectory
from pipeline.engines import backend_in_use, make_engine
from pipeline.inputs.tasks import TASKS
from pipeline.nets.families import Family
from pipeline.probes.stateless import ProbeContext, StatelessObjective
from pipeline.training.runtime import resolve_runtime

FIXED_BATCH = ("one fixed batch given to ProbeCallback under model.fit (a callback does not "
               "see the step's batch), before the step's update")


def detected_norm(model):
    """The norm the model's normalization layers are, as `model.norm` names it ("none"
    without any): the label its runs are grouped by in claims and figures."""
    from pipeline.nets.layers import BatchNormalization, NoisyBatchNormalization
    kinds = ((NoisyBatchNormalization, "noisy_batch"), (keras.layers.BatchNormalization, "batch"),
             (BatchNormalization, "batch"), (keras.layers.LayerNormalization, "layer"),
             (keras.layers.GroupNormalization, "group"))
    for layer in model._flatten_layers(include_self=False):
        for kind, name in kinds:
            if isinstance(layer, kind):
                return name
    return "none"


def _identifier(text):
    name = re.sub(r"\W", "_", text) or "model"
    return name if name[0].isalpha() else f"m_{name}"


class ProbeCallback(keras.callbacks.Callback):
    """Run BN Lab's probes every `every` steps of `model.fit` into run directory `workdir`.

    Args:
        workdir: the run directory (created; refused if it holds another run).
        batch: (x, y), the fixed batch every probe measures on.
        probes: names of probes (pipeline.probes.REGISTRY): ics, landscape, distributions,
            curvature.
        every: steps between probes (step 0 included).
        layers: {"ics": [...], "distributions": [...]}: 1-based weight-layer numbers; by
            default a third and two thirds of the depth (ICS; never layer 1 of several,
            whose ICS is 0), first, middle, last but one.
        test_data: (x, y) for the run's one evaluation at the end (default: `batch`).
        seed, description: recorded in the run's config.
        settings: further config values as "section.key=value" (e.g.
            "probes.landscape.multipliers=[0.5,1,2]").
    """

    def __init__(self, workdir, batch, probes=("ics", "landscape"), every=10, layers=None,
                 test_data=None, seed=0, description="model.fit", settings=()):
        super().__init__()
        unknown = sorted(set(probes) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"ProbeCallback probes={list(probes)}: {unknown} unknown; choose "
                              f"from {', '.join(SETTINGS)}")
        self.workdir, self.probe_names, self.every = workdir, tuple(probes), int(every)
        self.layers, self.seed, self.description = dict(layers or {}), seed, description
        self.settings = tuple(settings)
        self.x, self.y = (np.asarray(a) for a in batch)
        self.test_data = tuple(np.asarray(a) for a in (test_data or batch))
        self.task = TASKS["regression" if np.issubdtype(self.y.dtype, np.floating)
                          else "classification"]
        self.run = self.probes = self.config = None

    # The run's config: what the run directory says of this model.fit.
    def _make_config(self, steps):
        optimizer = self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        name = _identifier(self.model.name)
        values = [f"description={self.description!r}", f"seed={self.seed}",
                  f"model.factory=keras_fit:{name}", f"model.norm={detected_norm(self.model)}",
                  f"data.loader=keras_fit:{name}_data",
                  f"data.batch_size={len(self.x)}", f"data.eval_batch_size={len(self.test_data[0])}",
                  f"optim.lr={lr!r}", f"optim.momentum={float(getattr(optimizer, 'momentum', 0) or 0)!r}",
                  f"train.steps={steps}", f"train.log_every={self.every}",
                  f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                  "train.strategy=default", "train.progress=false"]
        for probe in self.probe_names:
            values += [f"probes.{probe}.enabled=true", f"probes.{probe}.every={self.every}"]
        values += [f"probes.{probe}.layers={list(chosen)}" for probe, chosen in self.layers.items()]
        return build_config([], values + list(self.settings))

    def on_train_begin(self, logs=None):
        steps = (self.params.get("steps") or 0) * (self.params.get("epochs") or 1)
        if not steps:
            raise ConfigError("ProbeCallback needs model.fit to know its steps: give "
                              "steps_per_epoch, or data whose length is known")
        self.config = self._make_config(steps)
        self.run = RunDirectory(self.workdir)
        self.run.lock()
        if self.run.read_meta().status is not None:
            self.run.close()
            raise ConfigError(f"{self.workdir} already holds a run; give ProbeCallback a new "
                              "workdir (a callback's run does not resume)")
        self.run.write_text(CONFIG_FILE, to_yaml(self.config))
        self.meta = RunMeta(status="running", steps=steps, seed=self.seed,
                            config=yaml.safe_load(to_yaml(self.config)),
                            backend=backend_in_use(), record_schema=records.VERSION,
                            probe_batch=FIXED_BATCH, command="model.fit with ProbeCallback")
        self.run.write_meta(self.meta)
        self.step = 0

    def _build_probes(self):
        from pipeline.probes import REGISTRY
        engine = make_engine(self.config, resolve_runtime(self.config.train))
        objective = StatelessObjective(engine, self.model, self.task, len(self.x))
        fixed = engine.device_batch((self.x, self.y.astype(np.float32 if self.task.kind ==
                                                           "regression" else np.int64)))
        context = ProbeContext(self.config, engine, self.model, self.model.optimizer, self.task,
                               objective, lambda step: fixed, Family(self.model.name, None))
        return [REGISTRY[name].Probe(getattr(self.config.probes, name), context)
                for name in sorted(self.probe_names)]

    def _record(self, stream, values):
        records.check(stream, values)
        self.run.writer(stream).write({"step": self.step, **values})

    def on_train_batch_begin(self, batch, logs=None):
        if self.probes is None:
            self.probes = self._build_probes()  # the optimizer is built by now
        for probe in self.probes:
            if probe.schedule.due(self.step):
                self._record(probe.name, probe(self.step))

    def on_train_batch_end(self, batch, logs=None):
        if self.step % self.every == 0 and logs and "loss" in logs:
            values = {"train/loss": float(logs["loss"])}
            if self.task.kind == "classification" and "accuracy" in logs:
                values["train/accuracy"] = float(logs["accuracy"])
            self._record("train", values)
        self.step += 1

    def on_train_end(self, logs=None):
        x, y = self.test_data
        outputs = keras.ops.convert_to_numpy(self.model(x, training=False))
        losses = keras.ops.convert_to_numpy(self.task.example_losses(y, outputs))
        correct = float((outputs.argmax(-1) == y).sum()) if self.task.kind == "classification" else 0.0
        self.step = self.meta.steps
        self._record("eval", self.task.metrics(float(losses.sum()), correct, len(y), "test/"))
        self.meta = self.meta.with_(
            status="finished", step=self.meta.steps,
            probe_steps={p.name: p.schedule.steps for p in self.probes or []})
        self.run.write_meta(self.meta)
        self.run.close()

    def __repr__(self):
        return f"ProbeCallback({self.workdir!r}, probes={self.probe_names}, every={self.every})"


