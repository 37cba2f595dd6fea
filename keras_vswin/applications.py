"""The `keras.applications`-style constructors: architecture + pretrained weights.

`VideoSwinT/S/B/L(include_top=True, weights=None, input_shape=None, input_tensor=None,
pooling=None, classes=None, classifier_activation="softmax", **kwargs)` and `VideoSwin(...)` (any
configuration) build `keras_vswin.model.VideoSwin` and load `weights` through
`keras_vswin.weights`. The architecture itself (`keras_vswin.model`) knows nothing of weights.
"""

from __future__ import annotations

from keras_vswin import model as architecture
from keras_vswin import weights as pretrained
from keras_vswin.model import VARIANTS


def VideoSwin(weights=None, classes=None, skip_head=False, **kwargs):
    """A Video Swin Transformer of any configuration, optionally with pretrained weights.

    Args:
        weights: None (random), a registry name such as "kinetics400"
            (`keras_vswin.list_weights()`), or the path of a `.pth`, `.keras` or `.weights.h5`
            file.
        classes: classes of the head; None takes the class count of registry `weights`
            (e.g. 174 for "something_something_v2"), else 400.
        skip_head: with `weights`, load only the backbone and keep a fresh head of `classes`
            outputs (fine-tuning on a new label set); the skipped head is logged.
        **kwargs: the architecture's arguments (`keras_vswin.model.VideoSwin`: embed_dim,
            depths, num_heads, patch_size, window_size, include_top, input_shape,
            input_tensor, pooling, classifier_activation, drop_path_rate, remat, name, ...).

    Returns:
        A `keras.Model` taking clips `(batch, frames, height, width, 3)` normalised with
        `keras_vswin.preprocess_input`.
    """
    source = pretrained.resolve(weights)
    if classes is None:
        classes = (source.classes if source is not None else None) or 400
    model = architecture.VideoSwin(classes=classes, **kwargs)
    if source is not None:
        pretrained.load_weights(
            model,
            source,
            include_top=kwargs.get("include_top", True),
            classes=classes,
            skip_head=skip_head,
        )
    return model


def _variant(variant, kwargs, weights=None, **arguments):
    config = dict(VARIANTS[variant])
    source = pretrained.resolve(weights)
    # A registry entry or a checkpoint may fix parts of the architecture (e.g. the 16x7x7 window).
    config.update(source.overrides(variant) if source is not None else {})
    config.update(kwargs)
    config.setdefault("name", f"video_swin_{variant.lower()}")
    return VideoSwin(weights=source, **arguments, **config)


# One line each: the variant table plus the conventional arguments.
def VideoSwinT(include_top=True, weights=None, input_shape=None, input_tensor=None, pooling=None,
               classes=None, classifier_activation="softmax", **kwargs):  # fmt: skip
    """Video Swin-T (28.2M parameters). Arguments as in `VideoSwin`."""
    return _variant("T", **locals())


def VideoSwinS(include_top=True, weights=None, input_shape=None, input_tensor=None, pooling=None,
               classes=None, classifier_activation="softmax", **kwargs):  # fmt: skip
    """Video Swin-S (49.8M parameters). Arguments as in `VideoSwin`."""
    return _variant("S", **locals())


def VideoSwinB(include_top=True, weights=None, input_shape=None, input_tensor=None, pooling=None,
               classes=None, classifier_activation="softmax", **kwargs):  # fmt: skip
    """Video Swin-B (88.1M parameters). Arguments as in `VideoSwin`."""
    return _variant("B", **locals())


def VideoSwinL(include_top=True, weights=None, input_shape=None, input_tensor=None, pooling=None,
               classes=None, classifier_activation="softmax", **kwargs):  # fmt: skip
    """Video Swin-L (197.0M parameters). Arguments as in `VideoSwin`."""
    return _variant("L", **locals())
