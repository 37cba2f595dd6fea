"""The TFRecord shard format: one `tf.train.SequenceExample` per video.

Keys follow TF Model Garden / DMVR, so shards written by those tools read here too (only
`image/encoded` is required; the other keys have defaults).

Context features:

| key | type | meaning |
|---|---|---|
| `clip/label/index` | int64 | class index (-1: unlabelled) |
| `clip/label/text` | bytes | class name |
| `video/filename` | bytes | the source video, as listed at write time |
| `video/fps` | float | frame rate of the stored frames |
| `video/num_frames` | int64 | number of stored frames |
| `image/height`, `image/width` | int64 | size of the stored frames |
| `image/format` | bytes | `jpeg` |
| `clip/start/timestamp`, `clip/end/timestamp` | int64 | microseconds |
| `video/source/fps`, `video/source/height`, `video/source/width` | float, int64 | the file |

Feature list: `image/encoded`, one JPEG (bytes) per frame, in time order.

Shard files are named `{name}-{index:05d}-of-{count:05d}.tfrecord` (see `shard_filename`).
"""

from __future__ import annotations

import re

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
FILENAME = "video/filename"
FPS = "video/fps"
NUM_FRAMES = "video/num_frames"
HEIGHT = "image/height"
WIDTH = "image/width"
IMAGE_FORMAT = "image/format"
CLIP_START = "clip/start/timestamp"
CLIP_END = "clip/end/timestamp"
SOURCE_FPS = "video/source/fps"
SOURCE_HEIGHT = "video/source/height"
SOURCE_WIDTH = "video/source/width"

SHARD_SUFFIX = ".tfrecord"

CONTEXT_FEATURES = {
    LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    LABEL_TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FPS: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
}
SEQUENCE_FEATURES = {IMAGE_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string)}


def shard_filename(name, index, count):
    """`{name}-{index:05d}-of-{count:05d}.tfrecord`."""
    return f"{name}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


_SHARD_FILENAME = re.compile(r"(?P<name>.+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})\.tfrecord")


def parse_shard_filename(filename):
    """`(name, index, count)` of a `shard_filename` (a base name), else None."""
    match = _SHARD_FILENAME.fullmatch(filename)
    if match is None or int(match["index"]) >= int(match["count"]):
        return None
    return match["name"], int(match["index"]), int(match["count"])


def make_sequence_example(
    jpeg_frames,
    *,
    label_index=-1,
    label_text="",
    filename="",
    fps=0.0,
    height=0,
    width=0,
    source_fps=None,
    source_height=None,
    source_width=None,
):
    """Builds the `tf.train.SequenceExample` for one video.

    Args:
        jpeg_frames: sequence of JPEG-encoded frames (bytes), in time order.
        label_index, label_text: the class (-1 / "" when unlabelled).
        filename: the source video (str).
        fps, height, width: rate and size of the stored frames.
        source_fps, source_height, source_width: the same for the original file (optional).
    """
    example = tf.train.SequenceExample()
    context = example.context.feature
    context[LABEL_INDEX].int64_list.value.append(int(label_index))
    context[LABEL_TEXT].bytes_list.value.append(str(label_text).encode("utf-8"))
    context[FILENAME].bytes_list.value.append(str(filename).encode("utf-8"))
    context[FPS].float_list.value.append(float(fps))
    context[NUM_FRAMES].int64_list.value.append(len(jpeg_frames))
    context[HEIGHT].int64_list.value.append(int(height))
    context[WIDTH].int64_list.value.append(int(width))
    context[IMAGE_FORMAT].bytes_list.value.append(b"jpeg")
    context[CLIP_START].int64_list.value.append(0)
    end = int(round(len(jpeg_frames) / fps * 1_000_000)) if fps else 0
    context[CLIP_END].int64_list.value.append(end)
    if source_fps is not None:
        context[SOURCE_FPS].float_list.value.append(float(source_fps))
    if source_height is not None:
        context[SOURCE_HEIGHT].int64_list.value.append(int(source_height))
    if source_width is not None:
        context[SOURCE_WIDTH].int64_list.value.append(int(source_width))
    frames = example.feature_lists.feature_list[IMAGE_ENCODED]
    for jpeg in jpeg_frames:
        frames.feature.add().bytes_list.value.append(bytes(jpeg))
    return example


def parse_sequence_example(serialized, example_name=None):
    """Parses one serialized record (graph-safe).

    Args:
        serialized: scalar string tensor.
        example_name: optional scalar string naming the record in parse errors.

    Returns:
        `(context, frames)`: a dict of the `CONTEXT_FEATURES` tensors and a 1-D string tensor of
        JPEGs, one per frame.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features=CONTEXT_FEATURES,
        sequence_features=SEQUENCE_FEATURES,
        example_name=example_name,
    )
    return context, sequence[IMAGE_ENCODED]
