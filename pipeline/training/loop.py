"""The training loop, `run_loop` (pipeline.training.train starts or resumes a run and
hands it over), and its parts: the schedule of compiled calls around probes, evaluations
and checkpoints; the recorder of a run's records; the speed meter; and the training
state they share. Probes run before the step they are due at and see exactly the batch
and weights that step uses.

Step convention: step t is the t-th update (0-based). Train and probe records at step t
describe the weights after t updates on batch t; evaluation records at step s describe
the weights after s updates.
"""

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np

from pipeline.core import interrupts, records
from pipeline.core.config import AUTO
from pipeline.core.fingerprint import checkpoint_identity
from pipeline.inputs.data import make_dataset
from pipeline.inputs.tasks import task_of
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.evaluation import make_evaluate
from pipeline.training.tensorboard_events import TensorBoardWriter


@dataclasses.dataclass
class TrainingState:
    """What one attempt at a run works on. `meta` is the run's meta.json (a frozen
    `RunMeta`, replaced at each change) as the loop keeps it up to date (status, step,
    probe steps, speed); `wall_time()` the seconds of all attempts so far."""
    config: Any
    run: Any        # pipeline.core.runs.RunDirectory
    engine: Any     # pipeline.engines: the backend's Engine
    model: Any
    optimizer: Any
    arrays: Any     # pipeline.inputs.data.Arrays
    meta: Any       # pipeline.core.run_meta.RunMeta
    wall_time: Callable[[], float]


def steps_to_next_event(step, cadences, last_step, schedules=()):
    """Steps from `step` until the first later step that is a multiple of one of
    `cadences` (where an evaluation or checkpoint falls) or in one of `schedules` (a
    probe's), or `last_step`."""
    later = [s.next_after(step) for s in schedules]
    return min([last_step - step] + [(step // every + 1) * every - step for every in cadences]
               + [s - step for s in later if s is not None])


class CallLength:
    """How many steps the next compiled call runs: `train.steps_per_call`, or with `auto`
    about `TARGET_SECONDS` of work at the last call's speed (the first call, which
    traces, runs one step). Several workers run the same calls, so there `auto` is the
    fixed `MULTI_WORKER_STEPS`: each worker's own timing would differ."""
    TARGET_SECONDS = 1.0
    MAX_STEPS = 1000
    MULTI_WORKER_STEPS = 100

    def __init__(self, steps_per_call, multi_worker=False):
        self.fixed = steps_per_call if steps_per_call != AUTO else (
            self.MULTI_WORKER_STEPS if multi_worker else None)
        self.seconds_per_step = None

    def __call__(self):
        if self.fixed:
            return self.fixed
        if self.seconds_per_step is None:
            return 1
        return int(np.clip(self.TARGET_SECONDS / self.seconds_per_step, 1, self.MAX_STEPS))

    def observe(self, seconds, steps):
        self.seconds_per_step = seconds / steps


class Events:
    """When things happen: probes before their steps, evaluations and checkpoints after
    theirs (`train.eval_every`, `train.checkpoint_every` and the last step), and how
    many steps the next compiled call runs so that it ends where one is due."""

    def __init__(self, train, probes, multi_worker):
        self.train, self.probes = train, probes
        self.cadences = [train.eval_every, train.checkpoint_every]
        self.schedules = [probe.schedule for probe in probes]
        self.call_length = CallLength(train.steps_per_call, multi_worker)

    def probes_due(self, step):
        return [probe for probe in self.probes if probe.schedule.due(step)]

    def run_call(self, train_steps, step):
        """Run the next compiled call from `step`; returns its (losses, corrects)."""
        count = min(self.call_length(),
                    steps_to_next_event(step, self.cadences, self.train.steps, self.schedules))
        began = time.perf_counter()
        losses, corrects = train_steps(count)
        self.call_length.observe(time.perf_counter() - began, len(losses))
        return losses, corrects

    def evaluation_due(self, step):
        return step % self.train.eval_every == 0 or step == self.train.steps

    def checkpoint_due(self, step):
        return step % self.train.checkpoint_every == 0 or step == self.train.steps


class Recorder:
    """A run's records: JSONL per stream, TensorBoard scalars, and progress. Only the
    chief writes (a run directory that is not writable records nothing). Progress is a
    bar on a terminal; elsewhere (a sweep's `train.log`) plain lines, one per
    `PLAIN_LINES`-th of the run, since a bar's redraws would be carriage-return
    fragments on one line of the log."""
    PLAIN_LINES = 10

    def __init__(self, state, start):
        import sys
        from tqdm.auto import tqdm
        run, train = state.run, state.config.train
        self.run, self.name, self.total = run, run.path.name, train.steps
        self.tensorboard = TensorBoardWriter(run.tensorboard_dir) if run.writable else None
        shown = train.progress and run.writable
        self.plain = shown and not sys.stderr.isatty()
        self.bar = tqdm(total=train.steps, initial=start, disable=not shown or self.plain,
                        desc=self.name, unit="step", dynamic_ncols=True)
        self.step, self.latest, self.began = start, {}, (time.perf_counter(), start)
        self.next_line = self._line_after(start)

    def _line_after(self, step):
        every = max(1, self.total // self.PLAIN_LINES)
        return min((step // every + 1) * every, self.total)

    def record(self, stream, step, values):
        records.check(stream, values)  # the declared schema, before anything is written
        self.run.writer(stream).write({"step": step, **values})
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)

    def show(self, values):
        """The latest train metrics beside the progress bar (or in the next line)."""
        self.latest = {k.split("/")[1]: f"{v:.4g}" for k, v in values.items()}
        self.bar.set_postfix(self.latest)

    def say(self, line):
        self.bar.write(line)

    def advance(self, steps):
        self.bar.update(steps)
        self.step += steps
        if self.plain and self.step >= self.next_line:
            seconds = time.perf_counter() - self.began[0]
            rate = (self.step - self.began[1]) / seconds if seconds > 0 else 0.0
            metrics = "".join(f", {k} {v}" for k, v in self.latest.items())
            print(f"{self.name}: step {self.step}/{self.total}{metrics}, {rate:.1f} steps/s",
                  flush=True)
            self.next_line = self._line_after(self.step)

    def close(self):
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class SpeedMeter:
    """Whole-loop speed (records, evaluations, checkpoints, probes) after tracing: timed
    from the end of the first call and again from the first evaluation, the two that
    trace (probes trace before the first call), so the window (first evaluation, last
    step] holds every later evaluation and checkpoint, one of each per cadence."""

    def __init__(self):
        self.since = None  # (time, step)
        self.evaluated = False

    def after_call(self, step):
        self.since = self.since or (time.perf_counter(), step)

    def after_evaluation(self, step, last_step):
        if not self.evaluated and step < last_step:
            self.since, self.evaluated = (time.perf_counter(), step), True

    def steps_per_second(self, step):
        """Steps per second up to `step`, or None if nothing was timed."""
        if self.since and step > self.since[1]:
            return (step - self.since[1]) / (time.perf_counter() - self.since[0])
        return None


def first_nonfinite(losses):
    """Index of the first non-finite loss of a call, or None."""
    return next((k for k, loss in enumerate(losses) if not math.isfinite(loss)), None)


def run_loop(state, start, probes):
    """Train from `start` to the last step (or the first non-finite loss), probing,
    recording, evaluating and checkpointing as the config says; keeps `state.meta` up to
    date (its status `running` until the loop ends)."""
    config, engine = state.config, state.engine
    t, task = config.train, task_of(state.arrays)
    train_steps = engine.train_steps(state.model, state.optimizer, task, state.arrays, start)
    evaluate = make_evaluate(engine, config, state.model,
                             make_dataset(config, "test", arrays=state.arrays), state.arrays)
    events = Events(t, probes, engine.multi_worker)
    recorder, speed = Recorder(state, start), SpeedMeter()
    state.meta = state.meta.with_(probe_steps={p.name: p.schedule.steps for p in probes})
    step = start
    while step < t.steps:
        for probe in events.probes_due(step):
            recorder.record(probe.name, step, probe(step))
        losses, corrects = (values.tolist() for values in events.run_call(train_steps, step))
        interrupts.raise_pending()
        bad = first_nonfinite(losses)  # the call's last step, if any
        for offset, (loss, correct) in enumerate(zip(losses, corrects)):
            values = task.train_metrics(loss, correct, config.data.batch_size)
            if offset == bad or (step + offset) % t.log_every == 0:
                recorder.record("train", step + offset, values)
                recorder.show(values)
        if bad is not None:
            state.meta = state.meta.with_(status="diverged", diverged_step=step + bad,
                                          step=step + bad)
            recorder.say(f"diverged: training loss {losses[bad]} at step {step + bad}")
            break
        step += len(losses)
        recorder.advance(len(losses))
        speed.after_call(step)
        if events.evaluation_due(step):
            recorder.record("eval", step, evaluate())
            speed.after_evaluation(step, t.steps)
        if events.checkpoint_due(step):
            _checkpoint(state, step)
    recorder.close()
    steps_per_second = speed.steps_per_second(step)  # None for a run too short to time
    if steps_per_second is not None:
        state.meta = state.meta.with_(steps_per_second=steps_per_second)
    if state.meta.status == "running":
        state.meta = state.meta.with_(status="finished")


def _checkpoint(state, step):
    t = state.config.train
    if state.run.writable:
        save_checkpoint(state.run.checkpoint_dir, step, state.model, state.optimizer,
                        checkpoint_identity(state.config), t.keep_checkpoints)
    # Wall time so far, so a killed run's meta.json still says how long it ran.
    state.meta = state.meta.with_(step=step, wall_time_s=state.wall_time())
    state.run.write_meta(state.meta)
