"""Synthetic videos for the data tests: frame order is readable from the pixels."""

import os

import numpy as np

from keras_vswin import video

LEVEL_OFFSET = 8
LEVEL_STEP = 5
MAX_FRAMES = 48  # 8 + 5 * 47 = 243 < 255


def moving_frames(num_frames, height=64, width=80, square=12):
    """Frames whose grey background level encodes the frame index (8 + 5 * t) and with a white
    square moving left to right, so the order is visible to people and to code."""
    if num_frames > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} frames can be told apart")
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = LEVEL_OFFSET + LEVEL_STEP * t
        x = int(round(t * (width - square) / max(1, num_frames - 1)))
        y = (height - square) // 2
        frames[t, y : y + square, x : x + square] = 255
    return frames


def frame_index(frames):
    """Recovers the frame index of each `(..., height, width, 3)` RGB frame (0-255 values)."""
    frames = np.asarray(frames, np.float32)
    flat = frames.reshape(-1, frames.shape[-3] * frames.shape[-2] * frames.shape[-1])
    levels = np.median(flat, axis=1)
    indices = np.round((levels - LEVEL_OFFSET) / LEVEL_STEP).astype(int)
    return indices.reshape(frames.shape[:-3])


def write_moving_video(path, num_frames, height=64, width=80, fps=25, **kwargs):
    """H.264 (lossless quantiser, so that grey levels survive) of `moving_frames`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kwargs.setdefault("options", {"crf": "0", "preset": "veryfast"})
    video.write_video(path, moving_frames(num_frames, height, width), fps=fps, **kwargs)
    return path


def write_dataset(root, counts_per_class, height=64, width=80, fps=25, extension=".mp4"):
    """Writes `root/<class>/<class>_<i>.mp4` for each `{class: [num_frames, ...]}`; returns the
    list of `(path, class)` in writing order."""
    written = []
    for label, frame_counts in counts_per_class.items():
        for i, num_frames in enumerate(frame_counts):
            path = os.path.join(root, label, f"{label}_{i}{extension}")
            write_moving_video(path, num_frames, height, width, fps)
            written.append((path, label))
    return written
