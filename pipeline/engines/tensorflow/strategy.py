"""Choosing a `tf.distribute` strategy: TPU, then several GPUs, then one device;
or multi-worker from `TF_CONFIG`. Create it before any other TensorFlow work:
multi-worker and TPU set-up must run before the runtime starts."""

import json
import os

import tensorflow as tf

from pipeline.core.backend import tpu_present
from pipeline.core.config import ConfigError


def _tf_config_workers():
    """Number of workers described by the TF_CONFIG environment variable (0 if unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]}; fix the "
                          "variable or unset it") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_strategy():
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def accelerator_kind():
    """"tpu", "gpu" or "cpu": the fastest kind of device this process can use."""
    if tpu_present():
        return "tpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def detect_strategy_kind():
    """The kind `auto` resolves to on this machine."""
    if _tf_config_workers() > 1:
        return "multi_worker"
    if tpu_present():
        return "tpu"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(kind="auto"):
    """A `tf.distribute.Strategy` of `kind` (see `pipeline.core.config.STRATEGIES`)."""
    if kind == "auto":
        kind = detect_strategy_kind()
    if kind == "multi_worker":
        if _tf_config_workers() == 0:
            raise ConfigError("train.strategy=multi_worker needs TF_CONFIG describing the "
                              "cluster (see https://www.tensorflow.org/guide/distributed_training)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        if not tpu_present():
            raise ConfigError("train.strategy=tpu, but this machine has no TPU; use "
                              "train.strategy=auto (it picks what the machine has)")
        return _tpu_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe_devices():
    """Devices TensorFlow sees, e.g. ['CPU:0', 'GPU:0']."""
    return [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices()]


def strategy_name(strategy):
    """The public name of `strategy` (MWMS's own class is CollectiveAllReduceStrategy)."""
    names = [(tf.distribute.TPUStrategy, "TPUStrategy"),
             (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
             (tf.distribute.MirroredStrategy, "MirroredStrategy")]
    return next((name for cls, name in names if isinstance(strategy, cls)), "OneDevice")
