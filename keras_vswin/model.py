"""The Video Swin Transformer as a Keras functional model, and its variants T/S/B/L."""

from __future__ import annotations

import keras
import numpy as np

from keras_vswin import windows as win
from keras_vswin.layers import (
    LayerNorm,
    PatchEmbedding3D,
    PatchMerging3D,
    ShiftedWindowMask3D,
    SwinBlock3D,
    _triple,
)

# One source of truth for the architectures (paper, Table 1) and their default stochastic depth
# (the official fine-tuning configs).
VARIANTS = {
    "T": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "S": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "B": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
    "L": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.3),
}

POOLINGS = (None, "avg", "max")


def _check_input_shape(input_shape):
    if input_shape is None:
        return (None, None, None, 3)
    shape = tuple(input_shape)
    ok = len(shape) == 4 and shape[-1] == 3
    ok = ok and all(d is None or (isinstance(d, int | np.integer) and d > 0) for d in shape[:3])
    if not ok:
        raise ValueError(
            "`input_shape` must be (frames, height, width, 3) with positive ints or None for "
            f"frames/height/width and 3 RGB channels, got {input_shape!r}."
        )
    return tuple(None if d is None else int(d) for d in shape)


def _check_architecture(embed_dim, depths, num_heads, mlp_ratio, drop_path_rate):
    if not isinstance(embed_dim, int | np.integer) or embed_dim <= 0:
        raise ValueError(f"`embed_dim` must be a positive int, got {embed_dim!r}.")
    depths, num_heads = tuple(depths), tuple(num_heads)
    if not depths or any(not isinstance(d, int | np.integer) or d <= 0 for d in depths):
        raise ValueError(f"`depths` must be a non-empty sequence of positive ints, got {depths!r}.")
    if len(num_heads) != len(depths):
        raise ValueError(
            f"`num_heads` must give one head count per stage ({len(depths)} stages from "
            f"`depths`), got {num_heads!r}."
        )
    for i, heads in enumerate(num_heads):
        dim = embed_dim * 2**i
        if not isinstance(heads, int | np.integer) or heads <= 0 or dim % heads:
            raise ValueError(
                f"`num_heads[{i}]`={heads!r} must be a positive divisor of the stage's "
                f"channels {dim}."
            )
    if mlp_ratio <= 0:
        raise ValueError(f"`mlp_ratio` must be positive, got {mlp_ratio!r}.")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"`drop_path_rate` must be in [0, 1), got {drop_path_rate!r}.")
    return depths, num_heads


def _stage_mask(x, window_size, shift, name):
    """The stage's shared shift mask, or None when the stage's grid is known to need none."""
    grid = tuple(x.shape[1:4])
    if all(isinstance(e, int) for e in grid) and not any(
        win.effective_window(grid, window_size, shift)[1]
    ):
        return None
    return ShiftedWindowMask3D(window_size, shift, name=name)(x)


def VideoSwin(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    patch_size=(2, 4, 4),
    window_size=(8, 7, 7),
    mlp_ratio=4.0,
    qkv_bias=True,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.1,
    patch_norm=True,
    include_top=True,
    input_shape=None,
    input_tensor=None,
    pooling=None,
    classes=400,
    classifier_activation="softmax",
    head_dropout_rate=0.5,
    remat=False,
    name="video_swin",
):
    """Build the architecture of a Video Swin Transformer of any configuration (random weights).

    `keras_vswin.VideoSwin` adds `weights=` (pretrained weights) on top of this function.

    Args:
        embed_dim: channels C of the first stage (doubled after every patch merging).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        patch_size: `(frames, height, width)` of a patch token.
        window_size: `(frames, height, width)` of an attention window, in tokens.
        mlp_ratio: hidden width of the MLPs relative to the channels.
        qkv_bias: whether the qkv projection has a bias.
        dropout_rate: dropout after the attention projection and in the MLPs.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block; rates grow linearly from 0.
        patch_norm: LayerNorm after the patch embedding.
        include_top: whether to add the classification head.
        input_shape: `(frames, height, width, 3)`; None entries (the default for all three) make
            the model accept any clip size.
        input_tensor: a Keras tensor (`keras.Input(...)` or a layer's output) to use as the
            model's input instead of a new `keras.Input`, as in `keras.applications`.
        pooling: with `include_top=False`: None returns the feature map
            `(batch, T', H', W', channels)`, "avg"/"max" return `(batch, channels)`.
        classes: number of classes of the head.
        classifier_activation: activation of the head ("softmax", None for logits, ...).
        head_dropout_rate: dropout before the head's Dense layer.
        remat: recompute each block's activations in the backward pass instead of keeping them
            (activation checkpointing): less training memory for about 1/3 more compute.
        name: model name.

    Returns:
        A `keras.Model` taking clips `(batch, frames, height, width, 3)` normalised with
        `keras_vswin.preprocess_input`.
    """
    depths, num_heads = _check_architecture(embed_dim, depths, num_heads, mlp_ratio, drop_path_rate)
    patch_size = _triple(patch_size, "patch_size")
    window_size = _triple(window_size, "window_size")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
    if include_top and (
        isinstance(classes, bool) or not isinstance(classes, int | np.integer) or classes <= 0
    ):
        raise ValueError(
            f"`classes` must be a positive int when include_top=True, got {classes!r}."
        )
    inputs, x = _model_input(input_shape, input_tensor)
    x = PatchEmbedding3D(patch_size, embed_dim, patch_norm=patch_norm, name="patch_embedding")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="pos_drop")(x)
    rates = np.linspace(0.0, drop_path_rate, sum(depths))
    shift = tuple(w // 2 for w in window_size)
    block = 0
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = embed_dim * 2**stage
        mask = _stage_mask(x, window_size, shift, name=f"stage{stage}_mask") if depth > 1 else None
        for j in range(depth):
            x = SwinBlock3D(
                dim,
                heads,
                window_size=window_size,
                shift_size=(0, 0, 0) if j % 2 == 0 else shift,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                dropout=dropout_rate,
                attention_dropout=attention_dropout_rate,
                drop_path=float(rates[block]),
                remat=remat,
                name=f"stage{stage}_block{j}",
            )(x, attention_mask=mask if j % 2 else None)
            block += 1
        if stage < len(depths) - 1:
            x = PatchMerging3D(dim, name=f"stage{stage}_merging")(x)
    x = LayerNorm(name="norm")(x)

    if include_top:
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
        if head_dropout_rate:
            x = keras.layers.Dropout(head_dropout_rate, name="head_dropout")(x)
        # float32 head: logits and probabilities stay float32 under mixed precision.
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            dtype="float32",
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling3D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def _model_input(input_shape, input_tensor):
    """`(model inputs, first tensor)` from `input_shape` and/or `input_tensor`."""
    if input_tensor is None:
        inputs = keras.Input(shape=_check_input_shape(input_shape), name="video")
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` must be a Keras tensor (from keras.Input or a layer), got "
            f"{type(input_tensor).__name__}."
        )
    shape = tuple(input_tensor.shape[1:])
    _check_input_shape(shape)
    if input_shape is not None and tuple(_check_input_shape(input_shape)) != shape:
        raise ValueError(
            f"`input_shape`={tuple(input_shape)!r} disagrees with `input_tensor`'s shape "
            f"{shape!r}; pass one of them."
        )
    # As in keras.applications: the model starts at the graph inputs `input_tensor` comes from.
    inputs = keras.utils.get_source_inputs(input_tensor)
    return (inputs[0] if len(inputs) == 1 else inputs), input_tensor


def same_backbone(variant, arch):
    """Whether two architectures have the same embed_dim, depths and num_heads."""
    return all(
        np.array_equal(variant[key], arch[key]) for key in ("embed_dim", "depths", "num_heads")
    )


def variant_of(arch):
    """The `VARIANTS` name ("T", "S", "B", "L") an architecture is, or None."""
    return next((name for name, v in VARIANTS.items() if same_backbone(v, arch)), None)
