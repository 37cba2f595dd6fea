"""Multiply-accumulate counts of a Video Swin model for a clip size (as fvcore counts them).

Matmuls and convolutions only; attention windows include their zero padding, as they are
computed. For Swin-T on 32x224x224 this gives the paper's 88G.
"""

from __future__ import annotations

import math

from keras_vswin import windows as win
from keras_vswin.layers import PatchEmbedding3D, PatchMerging3D, SwinBlock3D


def matmul_shapes(model, clip_shape):
    """The matmuls of one forward pass of `model` on one clip, as a list of
    `(kind, (batch, m, k, n))`, one entry per matmul (repeats included); `kind` is a key of
    `count_macs`' breakdown. Patch embedding (a convolution) and head are left out."""
    matmuls, grid = [], None
    for layer in model.layers:
        if isinstance(layer, PatchEmbedding3D):
            grid = tuple(-(-e // p) for e, p in zip(clip_shape, layer.patch_size))
        elif isinstance(layer, SwinBlock3D):
            window, _ = win.effective_window(grid, layer.window_size, layer.shift_size)
            n, padded, c = math.prod(window), math.prod(win.padded_extent(grid, window)), layer.dim
            heads, tokens, hidden = layer.num_heads, math.prod(grid), int(c * layer.mlp_ratio)
            windows = padded // n * heads
            matmuls += [
                ("qkv_proj", (1, padded, c, 3 * c)),
                ("qkv_proj", (1, padded, c, c)),
                ("attention", (windows, n, c // heads, n)),  # q k^T
                ("attention", (windows, n, n, c // heads)),  # attention x v
                ("mlp", (1, tokens, c, hidden)),
                ("mlp", (1, tokens, hidden, c)),
            ]
        elif isinstance(layer, PatchMerging3D):
            grid = (grid[0], -(-grid[1] // 2), -(-grid[2] // 2))
            matmuls.append(("merging", (1, math.prod(grid), 4 * layer.dim, 2 * layer.dim)))
    return matmuls


def count_macs(model, clip_shape):
    """Multiply-accumulates of one forward pass of `model` on one clip.

    Args:
        model: a model from `keras_vswin.VideoSwin*`.
        clip_shape: `(frames, height, width)` of the clip.

    Returns:
        A dict with the total (`"total"`) and a breakdown by kind of computation.
    """
    breakdown = dict.fromkeys(
        ("patch_embedding", "qkv_proj", "attention", "mlp", "merging", "head"), 0
    )
    for kind, (batch, m, k, n) in matmul_shapes(model, clip_shape):
        breakdown[kind] += batch * m * k * n
    channels = None
    for layer in model.layers:
        if isinstance(layer, PatchEmbedding3D):
            grid = tuple(-(-e // p) for e, p in zip(clip_shape, layer.patch_size))
            channels = layer.embed_dim
            breakdown["patch_embedding"] += (
                math.prod(grid) * channels * 3 * math.prod(layer.patch_size)
            )
        elif isinstance(layer, PatchMerging3D):
            channels = 2 * layer.dim
        elif layer.name == "predictions":
            breakdown["head"] += channels * layer.units
    breakdown["total"] = sum(breakdown.values())
    return breakdown
