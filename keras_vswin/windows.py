"""Geometry of 3D (shifted) windows: pure functions, tested on their own.

Each function has a NumPy form working on Python ints (used whenever a clip's token grid is
known when the graph is built, so masks and indices become constants) and, where the model needs
it, a `keras.ops` form working on scalar tensors (used for clips whose size is only known at run
time). Both follow the official implementation exactly, including its quirks:

- an axis whose token extent is `<=` the window uses the extent as window and no shift;
- the shift mask gives the 3 regions `[0:-w]`, `[-w:-s]`, `[-s:]` of each shifted axis distinct
  ids and is -100 (not -inf) between tokens of different regions; an unshifted axis is one region;
- a clipped window takes `index[:N, :N]` of the configured window's relative position index.
"""

from __future__ import annotations

import functools

import numpy as np
from keras import ops

MASK_VALUE = -100.0


def effective_window(token_extent, window_size, shift_size):
    """Window and shift actually used on a token grid.

    Args:
        token_extent: `(frames, height, width)` of the token grid.
        window_size: the configured `(wd, wh, ww)`.
        shift_size: the configured shift, e.g. `(4, 3, 3)` (or zeros).

    Returns:
        `(window, shift)` tuples: on each axis whose extent is `<=` the window, the window is
        clipped to the extent and the shift is 0.
    """
    window, shift = [], []
    for extent, w, s in zip(token_extent, window_size, shift_size, strict=True):
        if extent <= w:
            window.append(int(extent))
            shift.append(0)
        else:
            window.append(int(w))
            shift.append(int(s))
    return tuple(window), tuple(shift)


def padded_extent(token_extent, window):
    """Token extents after zero-padding the end up to multiples of `window`."""
    return tuple(-(-int(e) // int(w)) * int(w) for e, w in zip(token_extent, window, strict=True))


def window_partition(x, window):
    """Split `(batch, D, H, W, C)` into windows `(batch * num_windows, wd * wh * ww, C)`.

    D, H, W must be multiples of `window`. Windows are ordered (d, h, w) within each clip and
    tokens are row-major inside a window. Works for NumPy arrays and tensors (dims may be
    scalar tensors).

    No intermediate tensor has more than 6 dimensions (the TFLite converter has no builtin
    8-D transpose): batch and depth blocks stay adjacent, and so do a window row's width and
    channels, so each pair moves as one axis.
    """
    shape = ops.shape(x)
    wd, wh, ww = window
    channels = shape[4]
    x = ops.reshape(x, (-1, wd, shape[2] // wh, wh, shape[3] // ww, ww * channels))
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5))  # (batch * D/wd, H/wh, W/ww, wd, wh, ww * C)
    return ops.reshape(x, (-1, wd * wh * ww, channels))


def window_reverse(windows, window, grid):
    """Inverse of `window_partition`: windows back to `(batch, D, H, W, C)` for `grid=(D,H,W)`.

    At most 6 dimensions, as in `window_partition`.
    """
    wd, wh, ww = window
    d, h, w = grid
    channels = ops.shape(windows)[-1]
    x = ops.reshape(windows, (-1, h // wh, w // ww, wd, wh, ww * channels))
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5))  # (batch * D/wd, wd, H/wh, wh, W/ww, ww * C)
    return ops.reshape(x, (-1, d, h, w, channels))


def numpy_window_partition(x, window):
    """NumPy reference of `window_partition` (used by tests and the static mask).

    Written the direct way, with 8 dimensions, so that tests compare two independent forms.
    """
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def _axis_regions(extent, window, shift):
    """Region id (0, 1, 2) of each position of one padded axis."""
    ids = np.zeros(extent, dtype="int32")
    if shift > 0:
        ids[extent - window : extent - shift] = 1
        ids[extent - shift :] = 2
    return ids


@functools.lru_cache(maxsize=64)
def region_ids(padded, window, shift):
    """Shift-mask region id of every token, grouped by window: int32 `(num_windows, N)`.

    Args:
        padded: padded token extents `(Dp, Hp, Wp)`, multiples of `window`.
        window: effective window `(wd, wh, ww)`.
        shift: effective shift `(sd, sh, sw)`.
    """
    d, h, w = (_axis_regions(e, wi, s) for e, wi, s in zip(padded, window, shift, strict=True))
    ids = d[:, None, None] * 9 + h[None, :, None] * 3 + w[None, None, :]
    return numpy_window_partition(ids[None, ..., None], window)[..., 0]


def shift_mask(padded, window, shift):
    """Attention mask `(num_windows, N, N)`: 0 within a region, -100 across regions."""
    ids = region_ids(tuple(padded), tuple(window), tuple(shift))
    return np.where(ids[:, :, None] != ids[:, None, :], MASK_VALUE, 0.0).astype("float32")


def relative_position_codes(window_size):
    """Per-token codes whose pairwise differences give the relative position index.

    The table row of a (query, key) pair is linear in their coordinates, so it equals
    `codes[query] - codes[key] + center` with `center` the row of the zero offset. Returns
    `(codes, center)`: int32 `(N,)` and an int. Graphs keep these N numbers instead of an
    `(N, N)` index per block.
    """
    wd, wh, ww = window_size
    d, h, w = np.meshgrid(np.arange(wd), np.arange(wh), np.arange(ww), indexing="ij")
    strides = ((2 * wh - 1) * (2 * ww - 1), 2 * ww - 1, 1)
    codes = (d * strides[0] + h * strides[1] + w).reshape(-1).astype("int32")
    center = (wd - 1) * strides[0] + (wh - 1) * strides[1] + (ww - 1)
    return codes, int(center)


def relative_position_factors(window_size):
    """The relative position index split into (depth, height) and width parts.

    Returns `(plane_index, width_index)`, int32 `(P * P,)` and `(ww, ww)` with `P = wd * wh`:
    table row `(dd + wd - 1)(2wh - 1)(2ww - 1) + (dh + wh - 1)(2ww - 1) + (dw + ww - 1)` is
    `plane_index[p1 * P + p2] * (2ww - 1) + width_index[w1, w2]` for tokens `(p1, w1)` and
    `(p2, w2)` (p = d * wh + h), i.e. `relative_position_index` for full windows.
    """
    wd, wh, ww = window_size
    d, h = np.meshgrid(np.arange(wd), np.arange(wh), indexing="ij")
    plane = (d * (2 * wh - 1) + h).reshape(-1)
    plane_index = plane[:, None] - plane[None, :] + (wd - 1) * (2 * wh - 1) + (wh - 1)
    width = np.arange(ww)
    width_index = width[:, None] - width[None, :] + ww - 1
    return plane_index.reshape(-1).astype("int32"), width_index.astype("int32")


@functools.lru_cache(maxsize=16)
def relative_position_index(window_size):
    """Index into the bias table for every (query, key) pair: int32 `(N, N)`, N = wd*wh*ww.

    The table has `(2wd-1)(2wh-1)(2ww-1)` rows; the pair with offsets (dd, dh, dw) = query - key
    uses row `(dd+wd-1)(2wh-1)(2ww-1) + (dh+wh-1)(2ww-1) + (dw+ww-1)`.
    """
    codes, center = relative_position_codes(tuple(window_size))
    return codes[:, None] - codes[None, :] + center


def bias_table_size(window_size):
    """Rows of the relative position bias table for a configured window."""
    wd, wh, ww = window_size
    return (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1)


# ----------------------------------------------------------------------------------------------
# Run-time forms (token grid known only as scalar tensors).


def dynamic_effective_window(token_extent, window_size, shift_size):
    """`effective_window` for scalar-tensor extents; returns lists of scalar tensors."""
    window, shift = [], []
    for extent, w, s in zip(token_extent, window_size, shift_size, strict=True):
        fits = ops.less_equal(extent, w)
        window.append(ops.where(fits, extent, w))
        shift.append(ops.where(fits, 0, s))
    return window, shift


def dynamic_region_ids(padded, window, shift):
    """`region_ids` for scalar-tensor sizes: int32 `(num_windows, N)`."""
    axes = []
    for extent, w, s in zip(padded, window, shift, strict=True):
        pos = ops.arange(extent, dtype="int32")
        ids = ops.where(ops.less(pos, extent - w), 0, ops.where(ops.less(pos, extent - s), 1, 2))
        axes.append(ops.where(ops.greater(s, 0), ids, ops.zeros_like(ids)))
    d, h, w = axes
    ids = d[:, None, None] * 9 + h[None, :, None] * 3 + w[None, None, :]
    return window_partition(ids[None, ..., None], window)[..., 0]


# ----------------------------------------------------------------------------------------------
# Both forms together: what a block needs for a token grid of ints or scalar tensors.


def window_geometry(grid, window_size, shift_size):
    """`(window, shift, padded, shifted)` for a token grid (ints, or scalar tensors).

    `shifted` says whether the block rolls and masks: for a grid known when the graph is built it
    is False when the effective shift is zero on every axis; for a run-time grid it follows the
    configuration (a zero effective shift then gives a roll by 0 and an all-zero mask).
    """
    if all(isinstance(e, int) for e in grid):
        window, shift = effective_window(grid, window_size, shift_size)
        return window, shift, padded_extent(grid, window), any(shift)
    window, shift = dynamic_effective_window(grid, window_size, shift_size)
    padded = [e + (w - e % w) % w for e, w in zip(grid, window)]
    return window, shift, padded, any(shift_size)


def attention_mask(grid, window_size, shift_size):
    """Shift mask `(num_windows, N, N)`, float32: 0 within a region, -100 across regions."""
    window, shift, padded, _ = window_geometry(grid, window_size, shift_size)
    if all(isinstance(e, int) for e in grid):
        ids = region_ids(tuple(padded), tuple(window), tuple(shift))
    else:
        ids = dynamic_region_ids(padded, window, shift)
    return ops.where(ops.not_equal(ids[:, :, None], ids[:, None, :]), MASK_VALUE, 0.0)
