"""Multiply-accumulate counts of a Video Swin model for a clip size (as fvcore counts them).

Matmuls and convolutions only; attention windows include their zero padding, as they are
computed. For Swin-T on 32x224x224 this gives the paper's 88G.
"""

from __future__ import annotations

import math

from keras_vswin import windows as win
from keras_vswin.layers import PatchEmbedding3D, PatchMerging3D, SwinBlock3D


def count_macs(model, clip_shape):
    """Multiply-accumulates of one forward pass of `model` on one clip.

    Args:
        model: a model from `keras_vswin.VideoSwin*`.
        clip_shape: `(frames, height, width)` of the clip.

    Returns:
        A dict with the total (`"total"`) and a breakdown by kind of computation.
    """
    breakdown = {
        "patch_embedding": 0,
        "qkv_proj": 0,
        "attention": 0,
        "mlp": 0,
        "merging": 0,
        "head": 0,
    }
    grid, channels = None, None
    for layer in model.layers:
        if isinstance(layer, PatchEmbedding3D):
            grid = tuple(-(-e // p) for e, p in zip(clip_shape, layer.patch_size))
            channels = layer.embed_dim
            breakdown["patch_embedding"] += (
                math.prod(grid) * channels * 3 * math.prod(layer.patch_size)
            )
        elif isinstance(layer, SwinBlock3D):
            window, _ = win.effective_window(grid, layer.window_size, layer.shift_size)
            padded_tokens = math.prod(win.padded_extent(grid, window))
            tokens = math.prod(grid)
            c = layer.dim
            breakdown["qkv_proj"] += padded_tokens * c * 4 * c
            breakdown["attention"] += 2 * padded_tokens * math.prod(window) * c
            breakdown["mlp"] += 2 * tokens * c * int(c * layer.mlp_ratio)
        elif isinstance(layer, PatchMerging3D):
            grid = (grid[0], -(-grid[1] // 2), -(-grid[2] // 2))
            breakdown["merging"] += math.prod(grid) * 4 * layer.dim * 2 * layer.dim
            channels = 2 * layer.dim
        elif layer.name == "predictions":
            breakdown["head"] += channels * layer.units
    breakdown["total"] = sum(breakdown.values())
    return breakdown
