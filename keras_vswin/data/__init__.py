"""Video data: tf.data pipelines over TFRecord shards, shard writing, and the view protocol.

- `train_dataset`, `eval_dataset`, `test_dataset`: the three pipelines (see their docstrings);
  clips are `(batch, frames, height, width, 3)` uint8 RGB for a model whose first layer is
  `keras_vswin.preprocessing.ClipNormalization`, or float32 normalised like
  `keras_vswin.preprocess_input` with `normalize=True` (test: `(batch, views, frames, ...)`).
- `from_data_service`: the training pipeline served by tf.data service workers.
- `ViewProtocol` (`data.views`): how a video becomes test-time views; `KINETICS`, `SSV2`.
- `distribute_dataset`: per-worker file sharding with `tf.distribute` strategies.
- `CorruptRecords`: what `skip_corrupt` dropped.
- `schema` (the shard format), `sampling` (frame indices), `augment` (clip augmentations),
  `write_shards` / `inspect_shards` / `synthetic` (the shard commands).

TensorFlow is imported when a pipeline is first used, not by `import keras_vswin`.
"""

import importlib

from keras_vswin.data.views import (
    KINETICS,
    KINETICS_VALIDATION,
    SSV2,
    TORCHVISION_KINETICS,
    ViewProtocol,
)

_DATASETS = (
    "CorruptRecords",
    "distribute_dataset",
    "eval_dataset",
    "from_data_service",
    "list_shards",
    "normalize",
    "test_dataset",
    "train_dataset",
)
_MODULES = (
    "augment",
    "beam_shards",
    "datasets",
    "inspect_shards",
    "sampling",
    "schema",
    "synthetic",
    "write_shards",
)


def __getattr__(name):
    if name in _DATASETS:
        return getattr(importlib.import_module("keras_vswin.data.datasets"), name)
    if name == "ClipRandAugment":
        return importlib.import_module("keras_vswin.data.augment").ClipRandAugment
    if name in _MODULES:
        return importlib.import_module(f"keras_vswin.data.{name}")
    raise AttributeError(f"module 'keras_vswin.data' has no attribute {name!r}")


__all__ = [
    "KINETICS",
    "KINETICS_VALIDATION",
    "SSV2",
    "TORCHVISION_KINETICS",
    "ClipRandAugment",
    "CorruptRecords",
    "ViewProtocol",
    "augment",
    "distribute_dataset",
    "eval_dataset",
    "from_data_service",
    "list_shards",
    "normalize",
    "sampling",
    "schema",
    "test_dataset",
    "train_dataset",
]
