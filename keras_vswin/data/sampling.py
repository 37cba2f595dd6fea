"""Which frames of a video make a clip: dense (`SampleFrames`) and segment-uniform sampling.

Each rule exists twice with the same semantics: a NumPy version (`*_np`, easy to read and to test)
and a TensorFlow version (`*_tf`, graph-safe, stateless random numbers from a `seed` of shape
`(2,)`) used inside the tf.data pipelines. Indices are 0-based frame numbers.

Dense sampling (the Kinetics recipe; mmaction's `SampleFrames`, `out_of_bound_opt="loop"`):
a clip covers `span = clip_len * frame_interval` frames and takes every `frame_interval`-th one:
`indices = offset + arange(clip_len) * frame_interval`, wrapped modulo `num_frames` so that short
videos loop.
- training, one clip: `offset` is uniform in `[0, num_frames - span]` (0 when the video is
  shorter than the span). With several clips the video is cut into `num_clips` equal parts and
  each clip starts at a random point of its part.
- test (and evaluation with `num_clips=1`, the centre clip): clip starts are evenly spaced,
  `offset_i = floor((i + 1/2) * (num_frames - span + 1) / num_clips)` when
  `num_frames >= span`, else 0.

Segment-uniform sampling (the SSv2 recipe; `frame_uniform`): the video is cut into `clip_len`
segments with bounds `start_i = round(i * (num_frames - 1) / clip_len)` and
`end_i = round((i + 1) * (num_frames - 1) / clip_len)`; training takes a random frame in
`[start_i, end_i]` (inclusive), test the middle `(start_i + end_i) // 2`. `round` is NumPy's
(half to even) in both versions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = [
    "dense_sample_np",
    "dense_sample_tf",
    "uniform_sample_np",
    "uniform_sample_tf",
]


def _check(num_frames, clip_len, frame_interval=1, num_clips=1):
    if clip_len < 1 or frame_interval < 1 or num_clips < 1:
        raise ValueError(
            "clip_len, frame_interval and num_clips must be >= 1, got "
            f"{clip_len}, {frame_interval}, {num_clips}"
        )
    if num_frames is not None and not isinstance(num_frames, tf.Tensor) and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def dense_offsets_np(
    num_frames, clip_len, frame_interval=1, num_clips=1, test_mode=False, rng=None
):
    """Start frame of each clip, `(num_clips,)` int64 (see the module docstring)."""
    _check(num_frames, clip_len, frame_interval, num_clips)
    span = clip_len * frame_interval
    if test_mode:
        if num_frames > span - 1:
            average = (num_frames - span + 1) / num_clips
            return (np.arange(num_clips) * average + average / 2.0).astype(np.int64)
        return np.zeros(num_clips, np.int64)
    rng = np.random.default_rng() if rng is None else rng
    average = (num_frames - span + 1) // num_clips
    if average > 0:
        return np.arange(num_clips) * average + rng.integers(0, average, size=num_clips)
    if num_frames > max(num_clips, span):
        return np.sort(rng.integers(0, num_frames - span + 1, size=num_clips))
    if average == 0:
        ratio = (num_frames - span + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio).astype(np.int64)
    return np.zeros(num_clips, np.int64)


def dense_sample_np(num_frames, clip_len, frame_interval=1, num_clips=1, test_mode=False, rng=None):
    """Dense sampling, NumPy version.

    Args:
        num_frames: frames in the video (>= 1).
        clip_len: frames per clip.
        frame_interval: step between sampled frames.
        num_clips: clips per video (test: 4 for Kinetics).
        test_mode: deterministic, evenly spaced clips (else random offsets).
        rng: `np.random.Generator` for training mode.

    Returns:
        `(num_clips, clip_len)` int64 frame indices in `[0, num_frames)`.
    """
    offsets = dense_offsets_np(num_frames, clip_len, frame_interval, num_clips, test_mode, rng)
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.mod(indices, num_frames).astype(np.int64)


def uniform_sample_np(num_frames, clip_len, test_mode=False, rng=None):
    """Segment-uniform sampling, NumPy version; returns `(clip_len,)` int64 indices."""
    _check(num_frames, clip_len)
    segment = (num_frames - 1) / clip_len
    starts = np.round(segment * np.arange(clip_len)).astype(np.int64)
    ends = np.round(segment * np.arange(1, clip_len + 1)).astype(np.int64)
    if test_mode:
        return (starts + ends) // 2
    rng = np.random.default_rng() if rng is None else rng
    return rng.integers(starts, ends + 1).astype(np.int64)


def _stateless_int(shape, low, high, seed):
    """Uniform integers in `[low, high)` (tensors, broadcastable to `shape`; needs high > low)."""
    fraction = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float64)
    low = tf.cast(low, tf.float64)
    width = tf.cast(high, tf.float64) - low
    value = tf.floor(low + fraction * width)
    return tf.cast(tf.minimum(value, tf.cast(high, tf.float64) - 1.0), tf.int64)


def dense_offsets_tf(
    num_frames, clip_len, frame_interval=1, num_clips=1, test_mode=False, seed=None
):
    """TensorFlow version of `dense_offsets_np`; `seed` is a `(2,)` int tensor (training)."""
    _check(None, clip_len, frame_interval, num_clips)
    num_frames = tf.cast(num_frames, tf.int64)
    span = tf.constant(clip_len * frame_interval, tf.int64)
    clips = tf.range(num_clips, dtype=tf.int64)
    if test_mode:
        average = tf.cast(num_frames - span + 1, tf.float64) / num_clips
        offsets = tf.cast(tf.cast(clips, tf.float64) * average + average / 2.0, tf.int64)
        return tf.where(num_frames > span - 1, offsets, tf.zeros_like(offsets))
    if seed is None:
        raise ValueError("dense_offsets_tf needs a seed in training mode")
    seeds = tf.random.experimental.stateless_split(seed, 2)
    average = tf.math.floordiv(num_frames - span + 1, num_clips)
    per_part = clips * average + _stateless_int([num_clips], 0, tf.maximum(average, 1), seeds[0])
    anywhere = tf.sort(
        _stateless_int([num_clips], 0, tf.maximum(num_frames - span + 1, 1), seeds[1])
    )
    ratio = tf.cast(num_frames - span + 1, tf.float64) / num_clips
    spread = tf.cast(tf.round(tf.cast(clips, tf.float64) * ratio), tf.int64)
    zeros = tf.zeros([num_clips], tf.int64)
    return tf.where(
        average > 0,
        per_part,
        tf.where(
            num_frames > tf.maximum(tf.constant(num_clips, tf.int64), span),
            anywhere,
            tf.where(tf.equal(average, 0), spread, zeros),
        ),
    )


def dense_sample_tf(
    num_frames, clip_len, frame_interval=1, num_clips=1, test_mode=False, seed=None
):
    """Dense sampling, TensorFlow version of `dense_sample_np`.

    Returns:
        `(num_clips, clip_len)` int64 tensor of frame indices.
    """
    offsets = dense_offsets_tf(num_frames, clip_len, frame_interval, num_clips, test_mode, seed)
    steps = tf.range(clip_len, dtype=tf.int64) * frame_interval
    indices = offsets[:, None] + steps[None, :]
    return tf.math.floormod(indices, tf.cast(num_frames, tf.int64))


def uniform_sample_tf(num_frames, clip_len, test_mode=False, seed=None):
    """Segment-uniform sampling, TensorFlow version of `uniform_sample_np`; `(clip_len,)`."""
    _check(None, clip_len)
    segment = tf.cast(tf.cast(num_frames, tf.int64) - 1, tf.float64) / clip_len
    positions = tf.range(clip_len + 1, dtype=tf.float64)
    bounds = tf.cast(tf.round(segment * positions), tf.int64)
    starts, ends = bounds[:-1], bounds[1:]
    if test_mode:
        return (starts + ends) // 2
    if seed is None:
        raise ValueError("uniform_sample_tf needs a seed in training mode")
    return _stateless_int([clip_len], starts, ends + 1, seed)
