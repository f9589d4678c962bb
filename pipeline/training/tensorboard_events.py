"""The records' numbers as TensorBoard scalars: an event file per attempt at a run,
written by the records' own thread with the `tensorboard` package's protobufs and
record framing, on either backend.

Not `tf.summary`: it ran a few eager TensorFlow ops per record, ~0.6 ms, which was
12 % of a BatchNorm DLN run's training loop at one record every 10 steps (and its
writer lives in TensorFlow's runtime, which a JAX run otherwise needs only for tf.data).
Each event is written when it is made (a killed run keeps what it recorded; TensorBoard
skips a last event cut short). TensorBoard reads `simple_value` scalars as it reads
`tf.summary.scalar`'s.
"""

import itertools
import os
import socket
import time

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

# Tells apart the event files one process opens in one second (a sweep's worker may
# resume a run in the same folder right after an attempt).
_opened = itertools.count()


class TensorBoardWriter:
    """Scalars of the records as TensorBoard events, in `folder` (a real folder: the
    run directory refuses a linked one before anything is written)."""

    def __init__(self, folder):
        folder.mkdir(exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_opened)}")
        # "x": a new file, never one that is there already.
        self._records = RecordWriter(open(folder / name, "xb", buffering=0))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event):
        self._records.write(event.SerializeToString())

    def scalars(self, step, values):
        """The numeric entries of `values` (a record without its step) at `step`."""
        numbers = [Summary.Value(tag=key, simple_value=float(value))
                   for key, value in values.items() if isinstance(value, (int, float))]
        if numbers:
            self._write(Event(wall_time=time.time(), step=step, summary=Summary(value=numbers)))

    def close(self):
        """Release the events file (a sweep's worker process trains many runs)."""
        self._records.close()
