"""tf.data input pipelines for Video Swin: TFRecord shards -> `(clips, labels)` batches.

- `train_dataset`, `eval_dataset`, `test_dataset`: the three pipelines (see their docstrings);
  clips are `(batch, frames, height, width, 3)` float32, normalised like
  `keras_vswin.preprocess_input` (test: `(batch, views, frames, height, width, 3)`).
- `distribute_dataset`: per-worker file sharding with `tf.distribute` strategies.
- `CorruptRecords`: what `skip_corrupt` dropped.
- `schema` (the shard format), `sampling` (frame indices), `augment` (clip augmentations).
"""

from keras_vswin.data import augment, sampling, schema
from keras_vswin.data.augment import ClipRandAugment
from keras_vswin.data.datasets import (
    CorruptRecords,
    distribute_dataset,
    eval_dataset,
    list_shards,
    normalize,
    test_dataset,
    train_dataset,
)

__all__ = [
    "ClipRandAugment",
    "CorruptRecords",
    "augment",
    "distribute_dataset",
    "eval_dataset",
    "list_shards",
    "normalize",
    "sampling",
    "schema",
    "test_dataset",
    "train_dataset",
]
