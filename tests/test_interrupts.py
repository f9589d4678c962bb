"""Signals: an interrupt that Python could not raise where it came is raised again
between steps; a second signal does not cut short the stop of the first; an interrupt
that surfaces as a framework's error still records the run interrupted."""

import pytest

from conftest import SMOKE
from pipeline.core.config import load_config

pytestmark = pytest.mark.backend_free  # trains nothing: run once, in the JAX pass


def test_an_interrupt_swallowed_on_its_way_is_raised_again_between_steps(interrupts_installed):
    import signal
    interrupts = interrupts_installed
    interrupts.raise_pending()  # nothing pending: no effect
    try:  # as in a __del__ or a callback, where Python prints and ignores it
        signal.raise_signal(signal.SIGTERM)
    except BaseException:
        pass
    with pytest.raises(interrupts.Terminated):
        interrupts.raise_pending()


def test_a_second_signal_does_not_cut_short_the_stop_of_the_first(interrupts_installed):
    """submitit's local executor kills a cancelled task 1 s after Ctrl-C, and the run then
    gets SIGTERM (its parent died): the run's cleanup must finish and record Ctrl-C."""
    import signal
    interrupts = interrupts_installed
    with pytest.raises(KeyboardInterrupt):
        try:
            signal.raise_signal(signal.SIGINT)
        finally:  # the cleanup, as train() writes meta.json
            signal.raise_signal(signal.SIGTERM)  # recorded, not raised
            recorded = "written"
    assert recorded == "written" and interrupts._received == [signal.SIGINT, signal.SIGTERM]
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_pending()  # the first is the reason
    with pytest.raises(interrupts.Terminated):  # outside a stop, a signal raises again
        signal.raise_signal(signal.SIGTERM)


def test_an_interrupt_that_comes_out_as_a_frameworks_error_records_the_run_interrupted(
        interrupts_installed, tmp_path):
    """A Ctrl-C landing inside TensorFlow's tracing can surface as TensorFlow's own error:
    the run is interrupted (resumable), not failed, and the CLI sees the interrupt."""
    import signal

    from pipeline.core.runs import RunDirectory
    from pipeline.probes.schedule import Schedule
    from pipeline.training.train import train_and_evaluate

    class TracedProbe:  # a probe whose "tracing" is hit by Ctrl-C and wraps it
        name = "landscape"
        schedule = Schedule([1])

        def __call__(self, step):
            interrupts_installed._received.append(signal.SIGINT)
            raise RuntimeError("in user code: KeyboardInterrupt (wrapped by tracing)")
    with pytest.raises(KeyboardInterrupt) as raised:
        train_and_evaluate(load_config(SMOKE, ["train.steps=4"]), tmp_path / "run",
                           probes_factory=lambda *args: [TracedProbe()])
    assert isinstance(raised.value.__cause__, RuntimeError)
    meta = RunDirectory(tmp_path / "run").read_meta()
    assert meta.status == "interrupted" and meta.error == "interrupted (Ctrl-C)"
