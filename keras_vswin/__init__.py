"""keras-vswin: the Video Swin Transformer for Keras 3 and TensorFlow.

Layers (`keras_vswin.layers`) and the architecture (`keras_vswin.model`) import nothing that
loads weights; the pretrained constructors (`keras_vswin.applications`) sit on the weights
registry (`keras_vswin.weights`, `keras_vswin.presets`). Subpackages: `data` (tf.data pipelines,
shard writing), `finetune` (model.fit recipe), `export` (SavedModel), `cli` (`keras-vswin`).
"""

import importlib

# `finetune` registers the optimizer and schedule so that training checkpoints load after this
# import (its building blocks need Keras only).
from keras_vswin import finetune
from keras_vswin.applications import VideoSwin, VideoSwinB, VideoSwinL, VideoSwinS, VideoSwinT
from keras_vswin.convert import (
    infer_architecture,
    inflate_2d_checkpoint,
    load_state_dict,
    resize_bias_table,
)
from keras_vswin.flops import count_macs
from keras_vswin.layers import (
    LayerNorm,
    PatchEmbedding3D,
    PatchMerging3D,
    ShiftedWindowMask3D,
    StochasticDepth,
    SwinBlock3D,
    WindowAttention3D,
)
from keras_vswin.model import VARIANTS
from keras_vswin.preprocessing import decode_predictions, load_labels, preprocess_input
from keras_vswin.weights import (
    HeadMismatchError,
    WeightsDownloadError,
    convert_checkpoint,
    list_weights,
    load_weights,
    weights_info,
)

__version__ = "0.2.0"

# TensorFlow-only parts load on first use, so that other backends do not import TensorFlow.
_LAZY = {"export_saved_model": ("keras_vswin.export", "export_saved_model")}


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'keras_vswin' has no attribute {name!r}")


__all__ = [
    "VARIANTS",
    "HeadMismatchError",
    "LayerNorm",
    "PatchEmbedding3D",
    "PatchMerging3D",
    "ShiftedWindowMask3D",
    "StochasticDepth",
    "SwinBlock3D",
    "VideoSwin",
    "VideoSwinB",
    "VideoSwinL",
    "VideoSwinS",
    "VideoSwinT",
    "WeightsDownloadError",
    "WindowAttention3D",
    "convert_checkpoint",
    "count_macs",
    "decode_predictions",
    "export_saved_model",
    "finetune",
    "infer_architecture",
    "inflate_2d_checkpoint",
    "list_weights",
    "load_labels",
    "load_state_dict",
    "load_weights",
    "preprocess_input",
    "resize_bias_table",
    "weights_info",
]
