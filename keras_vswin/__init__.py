"""keras-vswin: the Video Swin Transformer for Keras 3 and TensorFlow."""

from keras_vswin.layers import (
    PatchEmbedding3D,
    PatchMerging3D,
    StochasticDepth,
    SwinBlock3D,
    WindowAttention3D,
)
from keras_vswin.model import VARIANTS, VideoSwin, VideoSwinB, VideoSwinL, VideoSwinS, VideoSwinT
from keras_vswin.preprocessing import decode_predictions, load_labels, preprocess_input

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "PatchEmbedding3D",
    "PatchMerging3D",
    "StochasticDepth",
    "SwinBlock3D",
    "VideoSwin",
    "VideoSwinB",
    "VideoSwinL",
    "VideoSwinS",
    "VideoSwinT",
    "WindowAttention3D",
    "decode_predictions",
    "load_labels",
    "preprocess_input",
]
