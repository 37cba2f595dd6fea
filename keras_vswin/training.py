"""Fine-tuning parts of the Video Swin recipe that work with `model.fit` and `tf.distribute`.

- `ParamGroupAdamW`: AdamW with a learning-rate and a weight-decay multiplier per variable
  (chosen by regular expressions on `variable.path`), and gradient accumulation that also works
  under `tf.distribute` strategies (Keras' own `gradient_accumulation_steps` does not).
- `recipe_param_rules`: the official parameter groups (backbone lr x0.1, no decay for the relative
  position bias tables and the norms).
- `WarmupCosineDecay`: mmcv's `CosineAnnealing` schedule with linear warmup, in optimizer steps.
- `resolve_batch` and `scaled_learning_rate`: global batch, accumulation and the linear lr rule.
- `make_strategy`: `MirroredStrategy` over local devices or `MultiWorkerMirroredStrategy` from
  `TF_CONFIG`.
- Callbacks for fault tolerance: `TrainingBackup` (mid-epoch resumable training state, written
  atomically), `AtomicModelCheckpoint`, `StopOnNonFiniteLoss`.

Example:

```python
import keras
import keras_vswin
from keras_vswin import training

model = keras_vswin.VideoSwinT(classes=10, weights="kinetics400")
schedule = training.WarmupCosineDecay(1e-3, total_steps=30 * 500, warmup_steps=2.5 * 500)
optimizer = training.ParamGroupAdamW(
    schedule, weight_decay=0.02, param_rules=training.recipe_param_rules()
)
model.compile(optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_vswin"

# --------------------------------------------------------------------------------------------
# Parameter groups

# Variable paths of a `keras_vswin.VideoSwin` model, e.g. "stage0_block1/norm2/gamma",
# "stage0_block1/attn/relative_position_bias_table", "predictions/kernel".
HEAD_PATTERN = r"^predictions/"
BACKBONE_PATTERN = r"^(?!predictions/)"
BIAS_TABLE_PATTERN = r"(^|/)relative_position_bias_table$"
NORM_PATTERN = r"(^|/)norm\d*/(gamma|beta)$"  # every LayerNormalization of the model

PARAM_GROUP_STYLES = ("paper", "mmcv")


def recipe_param_rules(backbone_lr_mult=0.1, style="paper"):
    """The official parameter groups as `ParamGroupAdamW.param_rules`.

    The official config (mmcv `paramwise_cfg.custom_keys`) lists: `relative_position_bias_table`
    and `norm` with `decay_mult=0`, `backbone` with `lr_mult=0.1`.

    Args:
        backbone_lr_mult: learning-rate multiplier of every non-head variable.
        style: "paper" applies every listed rule that matches a variable, as the paper and the
            config read: backbone lr x0.1 everywhere in the backbone, no decay on the bias
            tables and on all norms. "mmcv" reproduces what mmcv's `DefaultOptimizerConstructor`
            actually does with that config: only the longest matching key applies, so the bias
            tables keep lr x1 (no decay) and the backbone norms get lr x0.1 *with* decay.

    Returns:
        A list of `{"pattern", "lr_mult", "decay_mult"}` dicts.
    """
    if style == "paper":
        return [
            {"pattern": BIAS_TABLE_PATTERN, "decay_mult": 0.0},
            {"pattern": NORM_PATTERN, "decay_mult": 0.0},
            {"pattern": BACKBONE_PATTERN, "lr_mult": float(backbone_lr_mult)},
        ]
    if style == "mmcv":
        # mmcv sorts the keys by length, longest first, and stops at the first substring match.
        return [
            {"pattern": BIAS_TABLE_PATTERN, "decay_mult": 0.0, "first_match": True},
            {"pattern": BACKBONE_PATTERN, "lr_mult": float(backbone_lr_mult), "first_match": True},
            {"pattern": NORM_PATTERN, "decay_mult": 0.0, "first_match": True},
        ]
    raise ValueError(f"`style` must be one of {PARAM_GROUP_STYLES}, got {style!r}.")


def _check_rules(rules):
    checked = []
    for i, rule in enumerate(rules or ()):
        rule = dict(rule)
        unknown = set(rule) - {"pattern", "lr_mult", "decay_mult", "first_match"}
        if "pattern" not in rule or unknown:
            raise ValueError(
                f"param_rules[{i}] must be a dict with a 'pattern' and optional 'lr_mult', "
                f"'decay_mult', 'first_match' keys, got {rule!r}."
            )
        try:
            re.compile(rule["pattern"])
        except (re.error, TypeError) as error:
            raise ValueError(
                f"param_rules[{i}]['pattern'] is not a regular expression: {error}"
            ) from None
        for key in ("lr_mult", "decay_mult"):
            value = rule.setdefault(key, 1.0)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"param_rules[{i}][{key!r}] must be a number >= 0, got {value!r}.")
            rule[key] = float(value)
        rule["first_match"] = bool(rule.get("first_match", False))
        checked.append(rule)
    return checked


def param_multipliers(path, rules):
    """`(lr_mult, decay_mult)` of the variable at `path` under `rules`.

    Every rule whose `pattern` is found in `path` (`re.search`) multiplies the two values; a
    matching rule with `first_match=True` also ends the search (mmcv's behaviour).
    """
    lr_mult = decay_mult = 1.0
    for rule in _check_rules(rules):
        if re.search(rule["pattern"], path):
            lr_mult *= rule["lr_mult"]
            decay_mult *= rule["decay_mult"]
            if rule["first_match"]:
                break
    return lr_mult, decay_mult


def describe_param_groups(variables, rules, weight_decay=None):
    """Groups `variables` by their multipliers: a list of dicts, one per group.

    Each dict has `lr_mult`, `decay_mult`, `weight_decay` (when given), `variables` (count),
    `parameters` (count) and `examples` (a few paths).
    """
    groups = {}
    for variable in variables:
        key = param_multipliers(variable.path, rules)
        group = groups.setdefault(key, {"variables": 0, "parameters": 0, "examples": []})
        group["variables"] += 1
        group["parameters"] += int(np.prod(variable.shape))
        if len(group["examples"]) < 3:
            group["examples"].append(variable.path)
    table = []
    for (lr_mult, decay_mult), group in sorted(groups.items(), reverse=True):
        row = {"lr_mult": lr_mult, "decay_mult": decay_mult}
        if weight_decay is not None:
            row["weight_decay"] = weight_decay * decay_mult
        table.append({**row, **group})
    return table


@keras.saving.register_keras_serializable(package=PACKAGE)
class ParamGroupAdamW(keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate and weight-decay multipliers.

    A variable's update is PyTorch/mmcv AdamW with `lr = schedule(step) * lr_mult` and
    `weight_decay = weight_decay * decay_mult`: the decoupled decay `var -= lr * wd * var` uses
    the variable's own learning rate. The multipliers come from `param_rules` (see
    `param_multipliers`) matched against `variable.path`; unmatched variables use 1.0.

    Gradient accumulation (`gradient_accumulation_steps=N`) averages N micro-batch gradients
    per update and works under `tf.distribute` strategies: gradients are all-reduced every
    micro-batch, accumulated per replica and applied every N-th call. `iterations` and the
    learning-rate schedule count optimizer updates, not micro-batches.

    Args:
        learning_rate: a float or a `LearningRateSchedule` of the optimizer step.
        weight_decay: the base decoupled weight decay.
        param_rules: list of `{"pattern", "lr_mult", "decay_mult", "first_match"}` dicts
            (see `recipe_param_rules`).
        **kwargs: the other `keras.optimizers.AdamW` arguments (`beta_1`, `beta_2`, `epsilon`,
            `gradient_accumulation_steps`, ...).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.02, param_rules=None, **kwargs):
        kwargs.setdefault("epsilon", 1e-8)  # PyTorch's AdamW default
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.param_rules = _check_rules(param_rules)
        if self.gradient_accumulation_steps and (
            self.clipnorm or self.clipvalue or self.global_clipnorm
        ):
            raise ValueError(
                "Gradient clipping is not supported together with gradient_accumulation_steps."
            )

    def multipliers(self, variable):
        """`(lr_mult, decay_mult)` of a model variable."""
        return param_multipliers(variable.path, self.param_rules)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        pairs = [self.multipliers(v) for v in variables]
        self._lr_mults = tuple(p[0] for p in pairs)
        self._decay_mults = tuple(p[1] for p in pairs)

    def _get_current_learning_rate(self):
        # The schedule counts optimizer updates (Keras would pass the micro-batch counter).
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _apply_weight_decay(self, variables):
        pass  # applied per variable in `update_step`, with the variable's learning rate

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        lr_mult, decay_mult = self._lr_mults[index], self._decay_mults[index]
        learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), lr_mult)
        if self.weight_decay and decay_mult:
            decay = ops.cast(self.weight_decay * decay_mult, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, decay * learning_rate))
        super().update_step(gradient, variable, learning_rate)

    def _backend_apply_gradients(self, grads, trainable_variables):
        if not self.gradient_accumulation_steps or keras.backend.backend() != "tensorflow":
            return super()._backend_apply_gradients(grads, trainable_variables)
        import tensorflow as tf

        steps = self.gradient_accumulation_steps
        is_update = ops.equal((self._iterations + 1) % steps, 0)
        learning_rate = self.learning_rate
        tf_variables = [
            v.value if isinstance(v, keras.Variable) else v for v in trainable_variables
        ]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, tf_variables)))

        def accumulate_or_apply(variable, grad, learning_rate, is_update):
            accumulator = self._accumulated_gradients[self._get_variable_index(variable)]

            def apply():
                total = ops.divide(ops.add(accumulator.value, grad), steps)
                self.update_step(total, variable, learning_rate)
                self.assign(accumulator, ops.zeros_like(accumulator.value))

            def accumulate():
                self.assign_add(accumulator, grad)

            tf.cond(is_update, apply, accumulate)

        def cross_replica(distribution, grads_and_vars, learning_rate, is_update):
            for grad, variable in grads_and_vars:
                distribution.extended.update(
                    variable,
                    accumulate_or_apply,
                    args=(grad, learning_rate, is_update),
                    group=False,
                )

        # No synchronisation inside the cond: the merge call happens every micro-batch.
        tf.__internal__.distribute.interim.maybe_merge_call(
            cross_replica, self._distribution_strategy, grads_and_vars, learning_rate, is_update
        )

    def get_config(self):
        return {**super().get_config(), "param_rules": self.param_rules}


# --------------------------------------------------------------------------------------------
# Learning-rate schedule


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing with linear warmup, as mmcv's `CosineAnnealingLrUpdaterHook`.

    `lr(step) = cosine(step) * warmup(step)` where
    - `cosine(step) = min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2`, `progress` =
      `step / total_steps`, or with `steps_per_epoch` (mmcv's default `by_epoch=True`, the
      official setting) `floor(step / steps_per_epoch) * steps_per_epoch / total_steps`, so the
      rate changes once per epoch;
    - `warmup(step) = 1 - (1 - step / warmup_steps) * (1 - warmup_ratio)` while
      `step < warmup_steps`, else 1: it rises linearly from `warmup_ratio` (mmcv's default
      0.1) to 1.

    `step` counts optimizer updates. `warmup_steps` may be fractional (2.5 epochs).
    """

    def __init__(
        self,
        peak_lr,
        total_steps,
        warmup_steps=0.0,
        warmup_ratio=0.1,
        min_lr=0.0,
        steps_per_epoch=None,
        name="warmup_cosine_decay",
    ):
        super().__init__()
        if total_steps <= 0:
            raise ValueError(f"`total_steps` must be positive, got {total_steps!r}.")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"`warmup_steps` must be in [0, total_steps={total_steps}], got {warmup_steps!r}."
            )
        if not 0.0 < warmup_ratio <= 1.0:
            raise ValueError(f"`warmup_ratio` must be in (0, 1], got {warmup_ratio!r}.")
        if steps_per_epoch is not None and steps_per_epoch <= 0:
            raise ValueError(f"`steps_per_epoch` must be positive, got {steps_per_epoch!r}.")
        self.peak_lr = float(peak_lr)
        self.total_steps = float(total_steps)
        self.warmup_steps = float(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.min_lr = float(min_lr)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        position = step
        if self.steps_per_epoch:
            position = ops.floor(step / self.steps_per_epoch) * self.steps_per_epoch
        progress = ops.minimum(position / self.total_steps, 1.0)
        cosine = self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)
        )
        if not self.warmup_steps:
            return cosine
        ramp = 1.0 - (1.0 - step / self.warmup_steps) * (1.0 - self.warmup_ratio)
        return ops.where(step < self.warmup_steps, cosine * ramp, cosine)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "min_lr": self.min_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "name": self.name,
        }


# --------------------------------------------------------------------------------------------
# Batch size, learning-rate scaling and strategies


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


# --------------------------------------------------------------------------------------------
# Files written atomically (local paths and tf.io.gfile URLs)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and a rename."""
    gfile = _gfile()
    temporary = f"{path}.tmp-{os.getpid()}"
    with gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    gfile.rename(temporary, path, overwrite=True)


def atomic_save(path, save):
    """Calls `save(temporary_path)` then renames the result to `path`.

    The temporary file keeps `path`'s suffix (`.keras`, `.weights.h5`) so that Keras accepts it.
    """
    gfile = _gfile()
    folder, name = os.path.split(path)
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    temporary = os.path.join(
        folder, f".tmp-{os.getpid()}-{name[: len(name) - len(suffix)]}{suffix}"
    )
    save(temporary)
    gfile.rename(temporary, path, overwrite=True)


def _finite_weights(model):
    return all(np.isfinite(np.asarray(v)).all() for v in model.trainable_weights)


def _finite(logs, key="loss"):
    value = (logs or {}).get(key)
    return value is None or np.isfinite(float(value))


# --------------------------------------------------------------------------------------------
# Callbacks


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite, and remembers where.

    Attributes:
        failed_at: `(epoch, step_in_epoch)` of the first non-finite loss, or None.
    """

    def __init__(self):
        super().__init__()
        self.failed_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.failed_at is None and not _finite(logs):
            self.failed_at = (self._epoch, batch)
            self.model.stop_training = True


@dataclasses.dataclass
class ResumePoint:
    """Where a restored run continues.

    Attributes:
        epoch: the epoch to run next (0-based).
        step: micro-batches of that epoch already done.
        global_step: micro-batches done since the start of training.
        history: logs of the finished epochs, `[{"epoch": e, **logs}, ...]`.
        partial_logs: running train metrics of the unfinished epoch (at `step`).
        path: the state file restored.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list = dataclasses.field(default_factory=list)
    partial_logs: dict = dataclasses.field(default_factory=dict)
    path: str | None = None


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the whole training state so that a killed run continues exactly.

    Every `save_freq` micro-batches and at every epoch end, writes
    `backup_dir/state-{global_step:09d}.weights.h5` (model and optimizer variables, including
    the step counter and gradient accumulators) and then `state-{global_step:09d}.json` (epoch,
    step, history, running metrics) through temporary files and renames; the JSON is the commit
    record, so a kill at any moment leaves the previous state readable. Older states are
    deleted (`keep` are kept). States whose loss or weights are not finite are never written.

    Use `restore()` before `fit`, then run the rest of the interrupted epoch with
    `steps_per_epoch` reduced by `ResumePoint.step` (and the data stream advanced by
    `ResumePoint.global_step` micro-batches): the epoch's logs are merged so that the train
    metrics of the resumed epoch cover all its steps.

    Args:
        backup_dir: folder for the state files (local path or gfile URL).
        steps_per_epoch: micro-batches per epoch.
        save_freq: micro-batches between backups (None: only at epoch ends).
        keep: how many states to keep.
        write: False on non-chief workers (they restore but do not write).
    """

    def __init__(self, backup_dir, steps_per_epoch, save_freq=None, keep=2, write=True):
        super().__init__()
        self.backup_dir = str(backup_dir)
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_freq = save_freq
        self.keep = max(1, int(keep))
        self.write = write
        self.history = []
        self._epoch = 0
        self._offset = 0  # steps of the current epoch done before this fit call
        self._partial = {}
        self._resumed_epoch = None

    # -- files

    def states(self):
        """Names of the complete states in `backup_dir`, newest first."""
        gfile = _gfile()
        if not gfile.exists(self.backup_dir):
            return []
        names = [n for n in gfile.listdir(self.backup_dir) if re.fullmatch(r"state-\d+\.json", n)]
        return sorted(names, reverse=True)

    def restore(self, model):
        """Loads the newest complete state into `model` (and its optimizer).

        Returns a `ResumePoint` (epoch 0, step 0 when there is nothing to restore).
        """
        gfile = _gfile()
        for name in self.states():
            meta_path = os.path.join(self.backup_dir, name)
            weights_path = meta_path[: -len(".json")] + ".weights.h5"
            try:
                with gfile.GFile(meta_path, "r") as handle:
                    meta = json.load(handle)
                if not gfile.exists(weights_path):
                    continue
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(weights_path)
            except (OSError, ValueError, json.JSONDecodeError) as error:
                print(f"warning: skipping unreadable training state {meta_path}: {error}")
                continue
            self.history = list(meta["history"])
            point = ResumePoint(
                epoch=meta["epoch"],
                step=meta["step"],
                global_step=meta["global_step"],
                history=self.history,
                partial_logs=meta.get("partial_logs", {}),
                path=weights_path,
            )
            self.set_resume_point(point)
            return point
        return ResumePoint()

    def set_resume_point(self, point):
        self.history = list(point.history)
        self._epoch, self._offset = point.epoch, point.step
        self._partial = dict(point.partial_logs) if point.step else {}
        self._resumed_epoch = point.epoch if point.step else None

    def _save(self, epoch, step, partial_logs):
        if not self.write:
            return
        if not _finite_weights(self.model):
            return
        gfile = _gfile()
        gfile.makedirs(self.backup_dir)
        global_step = epoch * self.steps_per_epoch + step
        base = os.path.join(self.backup_dir, f"state-{global_step:09d}")
        atomic_save(base + ".weights.h5", self.model.save_weights)
        meta = {
            "epoch": epoch,
            "step": step,
            "global_step": global_step,
            "history": self.history,
            "partial_logs": partial_logs,
            "time": time.time(),
        }
        atomic_write_text(base + ".json", json.dumps(_jsonable(meta), indent=1))
        for name in self.states()[self.keep :]:
            stale = os.path.join(self.backup_dir, name)
            for path in (stale, stale[: -len(".json")] + ".weights.h5"):
                if gfile.exists(path):
                    gfile.remove(path)

    # -- callback hooks

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._epoch, self._offset, self._partial = epoch, 0, {}

    def on_train_batch_end(self, batch, logs=None):
        step = self._offset + batch + 1
        if self.save_freq and step % self.save_freq == 0 and step < self.steps_per_epoch:
            if _finite(logs):
                self._save(self._epoch, step, _train_logs(logs))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._offset and self._partial:
            # Train metrics of a resumed epoch: weight the part before the restart in.
            done, total = self._offset, self.steps_per_epoch
            for key, before in self._partial.items():
                if key in logs and not key.startswith("val_"):
                    after = float(logs[key])
                    logs[key] = (before * done + after * (total - done)) / total
        if not _finite(logs):
            return
        record = {"epoch": epoch, **_train_logs(logs or {}, validation=True)}
        self.history = [r for r in self.history if r["epoch"] != epoch] + [record]
        self._save(epoch + 1, 0, {})
        self._epoch, self._offset, self._partial = epoch + 1, 0, {}


def _train_logs(logs, validation=False):
    out = {}
    for key, value in (logs or {}).items():
        if key.startswith("val_") and not validation:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves `directory/epoch-{epoch:03d}.keras` at each epoch end, via a temporary file.

    Only finite states are saved; the newest `keep` checkpoints are kept (`keep=None`: all,
    `keep=0`: none are written). `write=False` on non-chief workers.
    """

    def __init__(self, directory, keep=2, write=True):
        super().__init__()
        self.directory = str(directory)
        self.keep = keep
        self.write = write
        self.last_saved = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.write or self.keep == 0:
            return
        if not _finite(logs) or not _finite_weights(self.model):
            return
        gfile = _gfile()
        gfile.makedirs(self.directory)
        path = os.path.join(self.directory, f"epoch-{epoch + 1:03d}.keras")
        atomic_save(path, self.model.save)
        self.last_saved = path
        if self.keep:
            saved = sorted(
                n for n in gfile.listdir(self.directory) if re.fullmatch(r"epoch-\d+\.keras", n)
            )
            for name in saved[: -self.keep]:
                gfile.remove(os.path.join(self.directory, name))


def latest_checkpoint(directory):
    """The newest `epoch-NNN.keras` in `directory`, or None."""
    gfile = _gfile()
    if not gfile.exists(directory):
        return None
    saved = sorted(n for n in gfile.listdir(directory) if re.fullmatch(r"epoch-\d+\.keras", n))
    return os.path.join(directory, saved[-1]) if saved else None
