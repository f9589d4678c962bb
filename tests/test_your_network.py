"""A user's own network and data (README "Measure your own network"): the README's
example as written, a kill and resume of it, the claims and figures on its runs, one
clear error for each wrong factory or loader, and the model.fit callback."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, SMOKE, clean_environment, flatten
from pipeline.core.runs import RunDirectory


def _readme_example():
    """The first Python block (my_net.py) and the first shell command of the README's
    "Measure your own network"."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Measure your own network"):]
    section = section[:section.index("\n## ", 1)]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    return python, command.split()


def _main_in(folder, arguments):
    """`python -m pipeline ARGUMENTS` in this process, from `folder` (as a user's shell
    runs it there: the folder on the import path); (exit code, stdout, stderr)."""
    from pipeline.__main__ import main
    handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    out, err, cwd, path = io.StringIO(), io.StringIO(), os.getcwd(), list(sys.path)
    try:
        os.chdir(folder)
        sys.path.insert(0, str(folder))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in arguments])
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for module in [m for m in sys.modules if m in ("my_net", "bad_nets", "bad_data")]:
            del sys.modules[module]  # each test's folder holds its own version
        for number, handler in handlers.items():
            signal.signal(number, handler)
    return code, out.getvalue(), err.getvalue()


def _records(path):
    run = RunDirectory(path)
    return {s: [flatten(r) for r in run.records(s)] for s in ("train", "eval", "ics", "landscape",
                                                               "distributions")}


@pytest.mark.slow
def test_the_readme_example_trains_a_users_network_resumes_after_a_kill_and_is_read(tmp_path):
    source, command = _readme_example()
    assert command[:3] == ["python", "-m", "pipeline"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_net.py").write_text(source)
    # The command as written, in its own process (killed once it passed a checkpoint).
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    env = {**clean_environment(), "PYTHONPATH": str(REPO), "TMPDIR": str(temporary)}
    process = subprocess.Popen([sys.executable, *command[1:]], cwd=mine, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = mine / "runs" / "my_net.build-batch"
    deadline = time.time() + 240

    def last_step():
        records = RunDirectory(run).records("train") if run.is_dir() else []
        return records[-1]["step"] if records else -1
    # Killed past its first checkpoint (step 20) with records beyond it, before the end (60).
    while process.poll() is None and time.time() < deadline and last_step() < 25:
        time.sleep(0.02)
    process.kill()
    _, stderr = process.communicate()
    assert RunDirectory(run).read_meta().status == "running", stderr[-2000:]
    uninterrupted = _records(run)  # what the killed process wrote, up to the kill
    killed_at = last_step()
    assert 25 <= killed_at < 60, "the run was not killed mid-way"
    # Resumed with the same command: from its last checkpoint, the steps the killed
    # process had written come out again to the bit (an uninterrupted run's records).
    assert _main_in(mine, command[3:])[0] == 0
    meta = RunDirectory(run).read_meta()
    assert meta.status == "finished" and meta.restarts == 1 and 20 <= meta.start_step <= killed_at
    resumed = _records(run)
    assert [r["step"] for r in resumed["train"]] == list(range(0, 60, 5))
    # Each stream up to its last record before the kill (a kill between two writes
    # leaves the later stream a record short; the resume writes it).
    overlap = {s: [r for r in rows if r["step"] <= max([u["step"] for u in uninterrupted[s]]
                                                        + [-1])]
               for s, rows in resumed.items()}
    assert overlap == uninterrupted and any(
        r["step"] >= meta.start_step for r in uninterrupted["ics"])
    code, out, err = _main_in(mine, command[3:] + ["--set", "model.norm=layer"])
    assert code == 0, err
    layer = mine / "runs" / "my_net.build-layer"
    meta = RunDirectory(layer).read_meta()
    assert meta.status == "finished" and meta.user_code["model.factory"]["sha256"]
    assert meta.probe_batch and meta.record_schema >= 2
    ics = RunDirectory(layer).records("ics")[0]["ics/per_layer"]
    assert [(e["layer"], e["name"]) for e in ics] == [(2, "conv2d_1"), (3, "conv2d_2")]  # of 4
    # The claims and the figures read them.
    code, out, err = _main_in(mine, ["claims", "runs"])
    assert code == 0 and "my_net:build, norm batch" in out and "my_net:build, norm layer" in out
    # Their figures: notebooks/your_model.ipynb on a factory's run is drawn in
    # test_notebooks.py (every notebook, one report), not built a second time here.


BAD_NETS = '''
import keras


def raises(config, input_shape, num_outputs, norm):
    raise ValueError("no such layer size")


def not_a_model(config, input_shape, num_outputs, norm):
    return "a model"


def wrong_outputs(config, input_shape, num_outputs, norm):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))


def wrong_inputs(config, input_shape, num_outputs, norm):
    inputs = keras.Input((7,))
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))


not_callable = 3
'''

BAD_DATA = '''
import numpy as np

x = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
x[:, :, :, 2] = 7  # a channel of one value: centred, not divided by 0
y = np.arange(40) % 4


def three(config):
    return x, y, x


def nan(config):
    bad = x.astype(np.float32)
    bad[3, 0, 0, 0] = np.nan
    return bad, y, bad, y


def labels(config):
    return {"x_train": x, "y_train": y - 1, "x_test": x, "y_test": y}


def rows(config):
    return x, y[:30], x, y


def fine(config):
    return x, y, x[:8], y[:8]
'''


@pytest.mark.parametrize("key, value, phrases", [
    ("model.factory", "my_net", ["model.factory='my_net' is not a function's path"]),
    ("model.factory", "no_such_module_here:build", ["no module 'no_such_module_here'"]),
    ("model.factory", "bad_nets:missing", ["has no attribute 'missing'"]),
    ("model.factory", "bad_nets:not_callable", ["bad_nets.not_callable is a int"]),
    ("model.factory", "bad_nets:raises", ["raised ValueError: no such layer size"]),
    ("model.factory", "bad_nets:not_a_model", ["returned str, not a keras.Model"]),
    ("model.factory", "bad_nets:wrong_outputs", ["outputs of shape (None, 3)",
                                                 "shape (batch, 10)"]),
    ("model.factory", "bad_nets:wrong_inputs", ["does not take inputs of shape (batch, 32, 32, 3)"]),
    ("data.loader", "bad_data:three", ["returned tuple of 3 items"]),
    ("data.loader", "bad_data:nan", ["x_train holds 1 NaN or infinite value(s)"]),
    ("data.loader", "bad_data:labels", ["labels run from -1 to 3"]),
    ("data.loader", "bad_data:rows", ["x_train has 40 rows but y_train 30"]),
])
def test_a_bad_factory_or_loader_is_one_error_line_exit_2_and_leaves_nothing(
        tmp_path, key, value, phrases):
    (tmp_path / "bad_nets.py").write_text(BAD_NETS)
    (tmp_path / "bad_data.py").write_text(BAD_DATA)
    code, out, err = _main_in(tmp_path, ["train", SMOKE, "--set", f"{key}={value}",
                                         "--workdir", "run"])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], err
    assert "Traceback" not in err and all(p in lines[0] for p in phrases), lines[0]
    assert not (tmp_path / "run").exists()  # refused before the run's folder was made


def test_a_users_loader_feeds_a_run_its_arrays(tmp_path):
    (tmp_path / "bad_data.py").write_text(BAD_DATA)
    code, _, err = _main_in(tmp_path, ["train", SMOKE, "--set", "data.loader=bad_data:fine",
                                       "--set", "model.family=mlp", "--set", "model.depth=2",
                                       "--set", "model.hidden_units=8", "--set",
                                       "data.batch_size=8", "--set", "train.steps=4", "--set", "train.eval_every=2",
                                       "--workdir", "run"])
    assert code == 0, err
    meta = RunDirectory(tmp_path / "run").read_meta()
    assert meta.user_code["data.loader"]["function"] == "bad_data:fine"
    evals = RunDirectory(tmp_path / "run").records("eval")
    # 4 classes (labels 0..3), the test split's 8 rows: accuracy in eighths.
    assert evals and evals[-1]["test/accuracy"] * 8 == round(evals[-1]["test/accuracy"] * 8)


def test_the_fit_callbacks_probes_equal_the_loops_on_the_same_weights_and_batch(tmp_path):
    """ProbeCallback under model.fit: its records at a step equal the training loop's
    probes on the weights of that step and the same batch, and the landscape's losses
    equal a direct computation (Keras' own forward pass and gradient)."""
    import keras
    import tensorflow as tf

    from pipeline.engines import make_engine
    from pipeline.inputs.tasks import TASKS
    from pipeline.nets.families import Family
    from pipeline.nets.layers import make_norm_layer
    from pipeline.probes import REGISTRY
    from pipeline.probes.stateless import ProbeContext, StatelessObjective
    from pipeline.training.probe_callback import FIXED_BATCH, ProbeCallback
    from pipeline.training.runtime import resolve_runtime
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = ((x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1)).astype("int64")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.ReLU()(make_norm_layer("batch", 12)(keras.layers.Dense(12)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snapshot = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 3:  # before step 3's update, when the callback probes
                snapshot["values"] = [v.numpy() for v in self.model.variables]
    fixed = (x[:16], y[:16])
    callback = ProbeCallback(tmp_path / "fit", fixed, probes=("ics", "landscape"), every=3)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[Snapshot(), callback])
    run = RunDirectory(tmp_path / "fit")
    meta = run.read_meta()
    assert meta.status == "finished" and meta.probe_batch == FIXED_BATCH
    assert meta.probe_steps == {"ics": [0, 3], "landscape": [0, 3]}
    recorded = {s: run.records(s)[-1] for s in ("ics", "landscape")}
    assert recorded["ics"]["step"] == 3
    from pipeline.core.runs import load_run
    assert load_run(tmp_path / "fit").family == "keras_fit:functional"  # claims read it

    # The loop's probes (their classes and objective, as make_probes builds them) on the
    # same weights and batch.
    for variable, value in zip(model.variables, snapshot["values"]):
        variable.assign(value)
    config, task = callback.config, TASKS["classification"]
    engine = make_engine(config, resolve_runtime(config.train))
    batch = (tf.constant(fixed[0]), tf.constant(fixed[1]))
    context = ProbeContext(config, engine, model, model.optimizer, task,
                           StatelessObjective(engine, model, task, 16), lambda step: batch,
                           Family("fit", None))
    for name in ("ics", "landscape"):
        loop = flatten(REGISTRY[name].Probe(getattr(config.probes, name), context)(3))
        ours = flatten({k: v for k, v in recorded[name].items() if k != "step"})
        assert loop.keys() == ours.keys()
        for key, value in loop.items():
            if not isinstance(value, str):
                np.testing.assert_allclose(ours[key], value, rtol=1e-5, atol=1e-7, err_msg=key)

    # Independently: Keras' forward pass and gradient, the weights moved by hand.
    trainable = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            batch[1], model(batch[0], training=True), from_logits=True))
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    for entry in recorded["landscape"]["landscape/per_eta"]:
        for variable, w, g in zip(model.trainable_variables, trainable, grads):
            variable.assign(w - entry["eta"] * g)
        moved = float(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            batch[1], model(batch[0], training=True), from_logits=True)))
        np.testing.assert_allclose(entry["loss_at_eta"], moved, rtol=1e-5)
    np.testing.assert_allclose(recorded["landscape"]["landscape/loss"], float(loss), rtol=1e-6)
    assert np.isclose(recorded["landscape"]["landscape/per_eta"][0]["eta"],
                      recorded["landscape"]["landscape/per_eta"][0]["multiplier"] * 0.05)


def test_a_sweep_from_a_users_folder_finds_bn_labs_config_by_name(tmp_path):
    """`sweep your_model.yaml` from a folder without it: each run is given the path of
    BN Lab's config (the runs of a sweep start in processes of their own)."""
    code, out, err = _main_in(tmp_path, ["sweep", "your_model.yaml", "--set",
                                         "model.factory=my_net:build", "--grid",
                                         "model.norm=none,batch", "--list", "--sweep-dir", "sw"])
    assert code == 0, err
    commands = [line for line in out.splitlines() if " train " in line]
    assert len(commands) == 2 and all(str(REPO / "configs" / "your_model.yaml") in line
                                      for line in commands), out
