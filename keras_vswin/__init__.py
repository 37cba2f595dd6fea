"""keras-vswin: the Video Swin Transformer for Keras 3 and TensorFlow."""

# `training` registers the optimizer and schedule so epoch checkpoints load after this import.
from keras_vswin import training
from keras_vswin.convert import (
    convert_checkpoint,
    infer_architecture,
    inflate_2d_checkpoint,
    load_state_dict,
    resize_bias_table,
)
from keras_vswin.export import export_saved_model
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
from keras_vswin.model import VARIANTS, VideoSwin, VideoSwinB, VideoSwinL, VideoSwinS, VideoSwinT
from keras_vswin.preprocessing import decode_predictions, load_labels, preprocess_input
from keras_vswin.weights import (
    HeadMismatchError,
    WeightsDownloadError,
    list_weights,
    load_weights,
    weights_info,
)

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "HeadMismatchError",
    "ShiftedWindowMask3D",
    "WeightsDownloadError",
    "convert_checkpoint",
    "export_saved_model",
    "count_macs",
    "infer_architecture",
    "inflate_2d_checkpoint",
    "list_weights",
    "load_state_dict",
    "load_weights",
    "resize_bias_table",
    "training",
    "weights_info",
    "LayerNorm",
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
