"""Input normalisation and class names for Video Swin models.

Two places to normalise RGB 0-255 clips to the official mean/std:
- on the host: `preprocess_input` (or `keras_vswin.data` pipelines with `normalize=True`);
- in the model, on the accelerator: `ClipNormalization` as the model's first layer, fed raw
  clips (uint8 from `keras_vswin.data` pipelines by default: 4x less host memory traffic and
  host-to-device transfer than float32). `with_clip_normalization(model)` adds it to a model,
  `without_clip_normalization(model)` gives back the model that takes normalised clips (what
  `keras_vswin.export_saved_model` and other exporters expect).
"""

from __future__ import annotations

import functools
import os
from importlib import resources

import keras
import numpy as np
from keras import ops

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


@keras.saving.register_keras_serializable(package="keras_vswin")
class ClipNormalization(keras.layers.Layer):
    """RGB 0-255 clips (uint8 or float) -> `(x - mean) / std`, the input of a Video Swin model.

    As a model's first layer it moves normalisation to the accelerator: the input pipeline keeps
    clips uint8 (`keras_vswin.data` pipelines with the default `normalize=False`). The result is
    computed in float32 exactly as `preprocess_input` computes it (so the model gives the same
    logits as when fed `preprocess_input(clips)`), then cast to the layer's compute dtype.

    ```python
    inputs = keras.Input((32, 224, 224, 3))  # float32: takes uint8 and float 0-255 clips
    model = keras_vswin.VideoSwinT(
        weights="kinetics400", input_tensor=ClipNormalization()(inputs))
    ```

    Args:
        mean, std: per-channel statistics in 0-255 units (default: the official `MEAN_RGB`,
            `STD_RGB`).
    """

    def __init__(self, mean=MEAN_RGB, std=STD_RGB, **kwargs):
        kwargs.setdefault("autocast", False)  # the input is cast in `call`, in float32
        super().__init__(**kwargs)
        self.mean = _channel_values(mean, "mean")
        self.std = _channel_values(std, "std")
        if min(self.std) <= 0:
            raise ValueError(f"ClipNormalization: `std` must be positive, got {self.std}.")

    def call(self, inputs):
        if inputs.shape[-1] not in (None, 3):
            raise ValueError(
                f"ClipNormalization expects RGB clips with 3 channels in the last axis, got "
                f"shape {tuple(inputs.shape)}."
            )
        x = ops.cast(inputs, "float32")
        x = (x - ops.convert_to_tensor(self.mean, "float32")) / ops.convert_to_tensor(
            self.std, "float32"
        )
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def _channel_values(values, name):
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise ValueError(
            f"ClipNormalization: `{name}` must be 3 numbers (R, G, B), got {values!r}."
        )
    return values


def _clip_normalization_layer(model):
    """The `ClipNormalization` layer that takes `model`'s input, or None."""
    if len(model.inputs) != 1:
        return None
    for layer in model.layers:
        if isinstance(layer, ClipNormalization) and layer.input is model.inputs[0]:
            return layer
    return None


def with_clip_normalization(model, input_dtype="float32"):
    """`model` with a `ClipNormalization` first layer: takes RGB 0-255 clips.

    The new model shares `model`'s layers and weights (training one trains the other); its
    layers are the same flat list plus the normalisation, so weight loading, `.keras` saving and
    `without_clip_normalization` work on it. A model that already starts with the layer is
    returned as it is.

    Args:
        model: a functional Keras model taking normalised clips (e.g. `keras_vswin.VideoSwinT`).
        input_dtype: dtype of the new input. "float32" (default) takes uint8 clips (cast on the
            accelerator) and fractional 0-255 clips (MixUp, random erasing); "uint8" takes only
            uint8 clips (float clips would be cast to uint8).
    """
    if not isinstance(model, keras.Model) or len(model.inputs or ()) != 1:
        raise ValueError(
            "with_clip_normalization: `model` must be a functional keras.Model with one input, "
            f"got {type(model).__name__}."
        )
    if _clip_normalization_layer(model) is not None:
        return model
    inputs = keras.Input(
        batch_shape=tuple(model.inputs[0].shape), dtype=input_dtype, name=model.inputs[0].name
    )
    normalised = ClipNormalization(name="clip_normalization")(inputs)
    # `call` (not `__call__`) re-applies the model's layers one by one: a flat graph, not a
    # nested model.
    outputs = model.call(normalised)
    return keras.Model(inputs, outputs, name=model.name)


def without_clip_normalization(model):
    """A copy of `model` that takes normalised float32 clips: its `ClipNormalization` first
    layer becomes an identity (same weights, copied); `model` itself when it has no such layer.

    Exporters that feed the model normalised clips need it, e.g.
    `keras_vswin.export_saved_model(without_clip_normalization(model), ...)`.
    """
    normalization = _clip_normalization_layer(model)
    if normalization is None:
        return model

    def clone(layer):
        if layer is normalization:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    # A copy rather than a sub-model sharing layers: shared layers' first call would belong to
    # `model`'s graph, and exporters look a layer's input up from its first call.
    inputs = keras.Input(batch_shape=tuple(model.inputs[0].shape), name=model.inputs[0].name)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


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
