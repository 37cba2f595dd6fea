"""Loading weights into a Video Swin model: local files (registry names come with issue 3)."""

from __future__ import annotations

import os


def pretrained_overrides(variant, weights):
    """Architecture settings a `weights` value fixes for `variant` (none for local files)."""
    return {}


def load_weights(model, weights, include_top=True, classes=None):
    """Load `weights` (a `.keras` or `.weights.h5` path) into `model`."""
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(f"weights={weights!r}: no such file.")
    if path.endswith(".weights.h5"):
        model.load_weights(path)
    elif path.endswith(".keras"):
        import keras

        model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
    else:
        raise ValueError(f"weights={weights!r}: expected None, a `.keras` or a `.weights.h5` file.")
