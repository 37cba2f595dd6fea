"""Input normalisation and class names for Video Swin models."""

from __future__ import annotations

import functools
import os
from importlib import resources

import numpy as np

# The official normalisation (RGB, 0-255 input), shared by every released checkpoint.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

LABEL_SETS = ("kinetics400", "kinetics600", "something_something_v2")


def preprocess_input(x):
    """Normalise RGB clips in 0-255 to the mean/std the released models expect.

    Args:
        x: array or tensor `(..., 3)` with RGB values in [0, 255] (any numeric dtype).

    Returns:
        A float32 array/tensor of the same shape: `(x - mean) / std` per channel.
    """
    if hasattr(x, "shape") and len(x.shape) and x.shape[-1] not in (None, 3):
        raise ValueError(
            f"preprocess_input expects RGB input with 3 channels in the last axis, "
            f"got shape {tuple(x.shape)}."
        )
    if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, list | tuple):
        x = np.asarray(x, dtype="float32")
        return (x - np.asarray(MEAN_RGB, "float32")) / np.asarray(STD_RGB, "float32")
    from keras import ops

    x = ops.cast(x, "float32")
    return (x - ops.convert_to_tensor(MEAN_RGB, "float32")) / ops.convert_to_tensor(
        STD_RGB, "float32"
    )


@functools.cache
def load_labels(labels: str) -> tuple[str, ...]:
    """Class names in the official order.

    Args:
        labels: one of `LABEL_SETS`, or the path of a text file with one class name per line.
    """
    if labels in LABEL_SETS:
        text = (
            resources.files("keras_vswin")
            .joinpath("labels", f"{labels}.txt")
            .read_text(encoding="utf-8")
        )
    else:
        try:
            with open(labels, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(
                f"labels={labels!r} is neither one of {LABEL_SETS} nor a readable text file "
                f"with one class name per line ({e})."
            ) from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ValueError(f"labels={labels!r}: the label file holds no class names.")
    return names


def decode_predictions(probs, top=5, labels="kinetics400"):
    """Turn class scores into readable `(index, class_name, score)` lists, best first.

    Args:
        probs: array `(batch, classes)` of probabilities or logits.
        top: how many classes to return per clip.
        labels: a label set name (see `LABEL_SETS`), a path to a label file, or a sequence of
            class names (one per class, in index order).

    Returns:
        A list (one per clip) of `top` tuples `(class_index, class_name, score)`.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(
            f"decode_predictions expects `probs` of shape (batch, classes), got {probs.shape}."
        )
    if isinstance(labels, str | os.PathLike):
        names = load_labels(os.fspath(labels))
    else:
        try:
            names = tuple(str(name) for name in labels)
        except TypeError:
            raise ValueError(
                f"`labels` must be a label set name, a label file or a sequence of class names, "
                f"got {type(labels).__name__}."
            ) from None
        labels = f"<{len(names)} names>"
    if probs.shape[1] != len(names):
        raise ValueError(
            f"`probs` has {probs.shape[1]} classes but labels={labels!r} has {len(names)} "
            f"names; pass the label set the model was trained on."
        )
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive integer, got {top!r}.")
    top = min(top, probs.shape[1])
    results = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(int(i), names[i], float(row[i])) for i in order])
    return results
