"""The learning-rate schedule of the recipe: mmcv's cosine annealing with linear warmup."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vswin.finetune.optimizer import PACKAGE


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
