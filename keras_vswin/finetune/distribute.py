"""Batch splitting, the linear learning-rate rule and `tf.distribute` strategies."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split.

    Attributes:
        global_batch_size: examples per optimizer update
            (`per_replica_batch_size * num_replicas * accumulation_steps`).
        per_replica_batch_size: examples per replica per micro-batch.
        num_replicas: replicas in sync (all workers).
        accumulation_steps: micro-batches per optimizer update.
    """

    global_batch_size: int
    per_replica_batch_size: int
    num_replicas: int
    accumulation_steps: int

    @property
    def micro_batch_size(self):
        """Examples per micro-batch over all replicas (what one `fit` step consumes)."""
        return self.per_replica_batch_size * self.num_replicas


def resolve_batch(
    num_replicas, batch_size=None, per_replica_batch_size=None, accumulation_steps=None
):
    """Completes `batch_size = per_replica_batch_size * num_replicas * accumulation_steps`.

    Give `batch_size` (the optimizer's batch, e.g. the paper's 64) and optionally one of
    `per_replica_batch_size` (what fits in a device's memory) or `accumulation_steps`; or give
    `per_replica_batch_size` (and optionally `accumulation_steps`) without `batch_size`.
    Names in the errors are the config keys `train.<name>`.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    for name, value in [
        ("batch_size", batch_size),
        ("per_replica_batch_size", per_replica_batch_size),
        ("accumulation_steps", accumulation_steps),
    ]:
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"train.{name} must be a positive integer or None, got {value!r}.")
    if batch_size is None:
        if per_replica_batch_size is None:
            raise ValueError("Set train.batch_size or train.per_replica_batch_size.")
        accumulation_steps = accumulation_steps or 1
        batch_size = per_replica_batch_size * num_replicas * accumulation_steps
    elif per_replica_batch_size is None:
        accumulation_steps = accumulation_steps or 1
        per_replica_batch_size, rest = divmod(batch_size, num_replicas * accumulation_steps)
        if rest or not per_replica_batch_size:
            raise ValueError(
                f"train.batch_size={batch_size} is not a multiple of num_replicas={num_replicas} "
                f"x train.accumulation_steps={accumulation_steps}."
            )
    elif accumulation_steps is None:
        accumulation_steps, rest = divmod(batch_size, per_replica_batch_size * num_replicas)
        if rest or not accumulation_steps:
            raise ValueError(
                f"train.batch_size={batch_size} is not a multiple of "
                f"train.per_replica_batch_size={per_replica_batch_size} x "
                f"num_replicas={num_replicas}."
            )
    elif per_replica_batch_size * num_replicas * accumulation_steps != batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} != train.per_replica_batch_size="
            f"{per_replica_batch_size} x num_replicas={num_replicas} x "
            f"train.accumulation_steps={accumulation_steps}."
        )
    return BatchPlan(
        int(batch_size), int(per_replica_batch_size), int(num_replicas), int(accumulation_steps)
    )


def scaled_learning_rate(base_lr, batch_size, reference_batch_size=64):
    """The linear scaling rule: `base_lr * batch_size / reference_batch_size`."""
    return float(base_lr) * batch_size / reference_batch_size


def configure_cpu_replicas(count):
    """Splits the CPU into `count` logical devices (call before TensorFlow runs anything).

    Returns the logical CPU device names. Used where no GPU exists so that `MirroredStrategy`
    runs with several replicas (tests, debugging).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (len(current) if current else 1) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"Cannot split the CPU into {count} devices: TensorFlow is already initialised "
                f"in this process ({error}). Configure the replicas before running any op."
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")][:count]


def make_strategy(kind="auto", cpu_replicas=1):
    """The `tf.distribute` strategy for a run.

    Args:
        kind: "auto" (`MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster with more
            than one task, else `MirroredStrategy`), "mirrored", "multi_worker" or "default"
            (no distribution).
        cpu_replicas: without GPUs, split the CPU into this many logical devices and mirror over
            them (ignored when GPUs exist). Multi-worker runs use one replica per worker on CPU.
    """
    import tensorflow as tf

    kinds = ("auto", "mirrored", "multi_worker", "default")
    if kind not in kinds:
        raise ValueError(f"distribution.strategy must be one of {kinds}, got {kind!r}.")
    if kind == "auto":
        kind = "multi_worker" if _cluster_size() > 1 else "mirrored"
    if kind == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if gpus:
        return tf.distribute.MirroredStrategy()
    devices = configure_cpu_replicas(cpu_replicas) if cpu_replicas > 1 else ["/cpu:0"]
    return tf.distribute.MirroredStrategy(devices)


def _cluster_size():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return sum(len(tasks) for tasks in config.get("cluster", {}).values())


def is_chief(strategy=None):
    """Whether this process writes the run's files (the chief, or worker 0 without a chief)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if not task:
        return True
    task_type, task_id = task.get("type"), task.get("index", 0)
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in config.get("cluster", {})
