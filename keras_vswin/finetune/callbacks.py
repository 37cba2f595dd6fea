"""Callbacks for fault-tolerant training.

- `TrainingBackup`: mid-epoch resumable training state, written atomically.
- `AtomicModelCheckpoint`: one `.keras` file per epoch, written atomically.
- `StopOnNonFiniteLoss`: stops at the first NaN/inf loss and remembers where.
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

from keras_vswin import atomic


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


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
    The temporaries a killed run left behind are removed by the next run (`restore`, and its
    first backup).

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
        self._cleaned = False

    # -- files

    def _remove_stale(self):
        """Removes the temporaries of killed runs (once; only the writer: they are its files)."""
        if self.write and not self._cleaned:
            atomic.remove_stale(self.backup_dir)
            self._cleaned = True

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
        self._remove_stale()
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
        self._remove_stale()
        global_step = epoch * self.steps_per_epoch + step
        base = os.path.join(self.backup_dir, f"state-{global_step:09d}")
        with atomic.atomic_path(base + ".weights.h5") as tmp:
            self.model.save_weights(tmp)
        meta = {
            "epoch": epoch,
            "step": step,
            "global_step": global_step,
            "history": self.history,
            "partial_logs": partial_logs,
            "time": time.time(),
        }
        atomic.write_text(base + ".json", json.dumps(_jsonable(meta), indent=1))
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
        if self.last_saved is None:  # first save of this run: a killed run's temporaries go
            atomic.remove_stale(self.directory)
        path = os.path.join(self.directory, f"epoch-{epoch + 1:03d}.keras")
        with atomic.atomic_path(path) as tmp:
            self.model.save(tmp)
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
