"""The test-time view protocol: how a video becomes model inputs. One home for it.

`ViewProtocol` names the clips (`clip_len`, `frame_interval`, `num_clips`, `sampling`, `fps`) and
the crops (`short_side`, `crop_size`, `num_crops`) of the official test pipelines; `KINETICS`,
`SSV2` and `TORCHVISION_KINETICS` are the published ones. The presets table, the datasets
(`eval_dataset`, `test_dataset`), the SavedModel export, `keras-vswin predict`, the training
configs (`data.eval_views`, `data.test_views`) and the command-line flags
(`add_arguments`/`from_arguments`) all take a `ViewProtocol`.

Graph functions (TensorFlow, for tf.data and SavedModel signatures): `clip_indices`,
`clip_frames`, `resize_short_side`, `crop_offsets`, `crop_views`, `normalize`, `spatial_views`,
`video_views`.
The NumPy twin for clients that decode frames themselves: `sample_indices`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SAMPLINGS = ("dense", "uniform")


def _positive_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class ViewProtocol:
    """How a video becomes model inputs (the official test pipeline).

    Attributes:
        clip_len: frames per clip.
        frame_interval: step between the sampled frames (dense sampling).
        num_clips: clips per video, evenly spaced (dense sampling; uniform sampling has 1).
        crop_size: side of the square crops given to the model.
        num_crops: 3 (start, centre and end of the longer side) or 1 (centre).
        sampling: "dense" (mmaction `SampleFrames`, Kinetics) or "uniform" (one frame from the
            middle of each of `clip_len` equal segments, SSv2's `frame_uniform`).
        short_side: the shorter side is resized to this before cropping; None: `crop_size`
            (the official protocol; torchvision's weights use 256).
        fps: the frame rate videos are decoded at before sampling; None: their own rate.
    """

    clip_len: int = 32
    frame_interval: int = 2
    num_clips: int = 4
    crop_size: int = 224
    num_crops: int = 3
    sampling: str = "dense"
    short_side: int | None = None
    fps: float | None = None

    def __post_init__(self):
        for field in ("clip_len", "frame_interval", "num_clips", "crop_size"):
            value = getattr(self, field)
            if not _positive_int(value):
                raise ValueError(f"`{field}` must be a positive int, got {value!r}.")
        if self.num_crops not in (1, 3) or isinstance(self.num_crops, bool):
            raise ValueError(f"`num_crops` must be 1 or 3, got {self.num_crops!r}.")
        if self.short_side is not None and (
            not _positive_int(self.short_side) or self.short_side < self.crop_size
        ):
            raise ValueError(
                f"`short_side` must be None or an int >= `crop_size` ({self.crop_size}), got "
                f"{self.short_side!r}."
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {self.sampling!r}.")
        if self.sampling == "uniform" and self.num_clips != 1:
            raise ValueError(
                f"`sampling`='uniform' takes one clip spread over the whole video; got "
                f"`num_clips`={self.num_clips} (use 1, e.g. the SSv2 protocol 1 clip x 3 crops)."
            )
        if self.fps is not None and (
            not isinstance(self.fps, int | float | np.number) or not self.fps > 0
        ):
            raise ValueError(f"`fps` must be None or a positive number, got {self.fps!r}.")

    @property
    def resize_to(self):
        """The shorter side after resizing."""
        return self.short_side or self.crop_size

    @property
    def num_views(self):
        return self.num_clips * self.num_crops

    @property
    def clip_span(self):
        """Frames a clip spans: shorter videos are looped (dense) or repeat frames (uniform)."""
        if self.sampling == "uniform":
            return self.clip_len
        return self.clip_len * self.frame_interval

    def single_view(self):
        """The same protocol reduced to one view: the centre clip, centre crop."""
        return dataclasses.replace(self, num_clips=1, num_crops=1)

    def replace(self, **changes):
        """A copy with `changes` applied; None values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, name="protocol"):
        """A protocol from a dict of field values; unknown keys are named in the error."""
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise ValueError(f"{name} must be a dict of ViewProtocol fields, got {values!r}.")
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"{name} has unknown view fields {sorted(unknown)}; known: "
                f"{[f.name for f in dataclasses.fields(cls)]}."
            )
        return cls(**values)

    def describe(self):
        """`"4 clips x 3 crops, 32 frames every 2nd, 224 crops of short side 224"`."""
        frames = (
            f"{self.clip_len} frames uniform"
            if self.sampling == "uniform"
            else f"{self.clip_len} frames every {self.frame_interval}"
        )
        rate = f" at {self.fps:g} fps" if self.fps else ""
        return (
            f"{self.num_clips} clip(s) x {self.num_crops} crop(s), {frames}{rate}, "
            f"{self.crop_size}px crops of short side {self.resize_to}"
        )


# The published test protocols (facts file, "Recipe").
KINETICS = ViewProtocol()
SSV2 = ViewProtocol(clip_len=32, frame_interval=1, num_clips=1, sampling="uniform")
# mmaction's validation pipeline during training: the centre clip, short side 256, centre crop.
KINETICS_VALIDATION = ViewProtocol(num_clips=1, num_crops=1, short_side=256)
# torchvision's evaluation of its ports: 15 fps, short side 256, centre crop (12 clips per video).
TORCHVISION_KINETICS = ViewProtocol(
    clip_len=32, frame_interval=1, num_clips=12, num_crops=1, short_side=256, fps=15.0
)


def for_input_shape(protocol, input_shape):
    """`protocol` with the clip length and crop size a fixed model input shape requires."""
    frames, height, width = tuple(input_shape)[-4:-1]
    return protocol.replace(clip_len=frames, crop_size=height if height == width else None)


# ----------------------------------------------------------------------------------------------
# Command-line flags, one per field.

_FLAG_HELP = {
    "clip_len": "frames per clip",
    "frame_interval": "step between sampled frames (dense sampling)",
    "num_clips": "clips per video",
    "crop_size": "side of the square crops",
    "num_crops": "crops per clip: 3 (along the long side) or 1 (centre)",
    "sampling": "dense (Kinetics) or uniform (SSv2 segments)",
    "short_side": "resize the shorter side to this before cropping (default: crop size)",
    "fps": "decode videos at this frame rate (default: their own)",
}


def add_arguments(parser, title="view protocol (default: the weights' own, else Kinetics 4x3)"):
    """Adds `--clip-len`, `--frame-interval`, ... (one flag per field, default None)."""
    group = parser.add_argument_group(title)
    for field in dataclasses.fields(ViewProtocol):
        kind = {"sampling": str, "fps": float}.get(field.name, int)
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=None,
            choices=SAMPLINGS if field.name == "sampling" else None,
            help=_FLAG_HELP[field.name],
        )
    return group


def from_arguments(args, base=KINETICS):
    """`base` with the fields given on the command line (`add_arguments`) replaced.

    Another `--sampling` than `base`'s starts from that sampling's official protocol (SSv2's
    1 clip for uniform, Kinetics' 32x2 x 4 clips for dense), keeping the crops and frame rate.
    """
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ViewProtocol)}
    if given["sampling"] and given["sampling"] != base.sampling:
        official = SSV2 if given["sampling"] == "uniform" else KINETICS
        base = dataclasses.replace(
            official, crop_size=base.crop_size, short_side=base.short_side, fps=base.fps
        )
    return base.replace(**given)


# ----------------------------------------------------------------------------------------------
# NumPy twins of the graph functions.


def sample_indices(num_frames, protocol):
    """`(num_clips, clip_len)` int64 frame indices of the test-mode clips of a video of
    `num_frames` frames (indices wrap around for short videos)."""
    from keras_vswin.data import sampling as frame_sampling  # imports TensorFlow: on first use

    if protocol.sampling == "uniform":
        return frame_sampling.uniform_sample_np(num_frames, protocol.clip_len, test_mode=True)[None]
    return frame_sampling.dense_sample_np(
        num_frames, protocol.clip_len, protocol.frame_interval, protocol.num_clips, test_mode=True
    )


# ----------------------------------------------------------------------------------------------
# Graph functions (TensorFlow).


def clip_indices(num_frames, protocol):
    """`(num_clips, clip_len)` int64 frame indices of the test-mode clips (graph op)."""
    from keras_vswin.data import sampling as frame_sampling

    if protocol.sampling == "uniform":
        return frame_sampling.uniform_sample_tf(num_frames, protocol.clip_len, test_mode=True)[None]
    return frame_sampling.dense_sample_tf(
        num_frames, protocol.clip_len, protocol.frame_interval, protocol.num_clips, test_mode=True
    )


def clip_frames(video, protocol):
    """The frames of the protocol's test-mode clips, in clip order.

    Args:
        video: `(batch, frames, height, width, 3)`; all videos of a batch share their size.
        protocol: a `ViewProtocol`.

    Returns:
        `(batch, num_clips * clip_len, height, width, 3)`, the dtype of `video`.
    """
    import tensorflow as tf

    video = tf.convert_to_tensor(video)
    num_frames = tf.shape(video)[1]
    with tf.control_dependencies(
        [tf.debugging.assert_positive(num_frames, message="the video has no frames")]
    ):
        indices = tf.reshape(clip_indices(num_frames, protocol), [-1])
    return tf.gather(video, indices, axis=1)


def resize_short_side(frames, size, antialias=False, dtype="float32"):
    """Resize `(N, H, W, C)` frames (RGB 0-255) so that the shorter side is `size`.

    The aspect ratio is kept; the longer side is rounded half to even, like
    `keras_vswin.video.resized_shape`. Bilinear (the official pipeline's cv2 resize), without
    low-pass filtering unless `antialias`; values are rounded to integers in [0, 255], as the
    official pipeline's uint8 frames are. Returns `dtype` (float32 or uint8).
    """
    import tensorflow as tf

    from keras_vswin.data.augment import short_side_size

    shape = tf.shape(frames)
    new_size = short_side_size(shape[1], shape[2], size)
    resized = tf.image.resize(frames, new_size, method="bilinear", antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(resized, tf.float32)), 0.0, 255.0), dtype)


def crop_offsets(height, width, protocol):
    """`(num_crops, 2)` int32 `(y, x)` of the protocol's crops in a `height x width` frame."""
    import tensorflow as tf

    from keras_vswin.data.augment import centre_crop_offsets, three_crop_offsets

    if protocol.num_crops == 3:
        return three_crop_offsets(height, width, protocol.crop_size)
    y, x = centre_crop_offsets(height, width, protocol.crop_size)
    return tf.cast(tf.stack([y, x])[None], tf.int32)


def crop_views(frames, protocol):
    """Resized clip frames -> the protocol's views, keeping the dtype.

    Args:
        frames: `(batch, num_clips * clip_len, height, width, 3)` whose shorter side is already
            `protocol.resize_to` (e.g. `clip_frames`, then `resize_short_side`).
        protocol: a `ViewProtocol`.

    Returns:
        `(batch, num_clips * num_crops, clip_len, crop_size, crop_size, 3)`: views ordered
        clip-major (view `v = clip * num_crops + crop`).
    """
    import tensorflow as tf

    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    batch, height, width = shape[0], shape[2], shape[3]
    offsets = crop_offsets(height, width, protocol)
    size = protocol.crop_size
    crops = [
        tf.slice(frames, tf.stack([0, 0, offsets[i, 0], offsets[i, 1], 0]), [-1, -1, size, size, 3])
        for i in range(protocol.num_crops)
    ]
    crops = tf.stack(crops, axis=2)  # (batch, clips * clip_len, crops, size, size, 3)
    clips, clip_len, num_crops = protocol.num_clips, protocol.clip_len, protocol.num_crops
    # Rank <= 6 throughout (converters such as TFLite's reject higher ranks).
    crops = tf.reshape(crops, tf.stack([batch * clips, clip_len, num_crops, size * size * 3]))
    views = tf.transpose(crops, (0, 2, 1, 3))
    views = tf.reshape(views, tf.stack([batch, clips * num_crops, clip_len, size, size, 3]))
    return tf.ensure_shape(views, [None, clips * num_crops, clip_len, size, size, 3])


def normalize(clips):
    """uint8/float RGB 0-255 -> float32 `(x - MEAN_RGB) / STD_RGB` (the model's input; graph op)."""
    import tensorflow as tf

    from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

    mean = tf.constant(MEAN_RGB, tf.float32)
    std = tf.constant(STD_RGB, tf.float32)
    clips = tf.cast(clips, tf.float32)
    if clips.shape.rank is not None and clips.shape.rank < 2:
        return (clips - mean) / std
    if clips.shape[-1] is not None and clips.shape[-1] != 3:
        raise ValueError(f"normalize expects RGB clips (..., 3), got shape {clips.shape}")
    if clips.shape[-1] is None:
        with tf.control_dependencies(
            [tf.debugging.assert_equal(tf.shape(clips)[-1], 3, message="normalize: not RGB")]
        ):
            clips = tf.identity(clips)
    # The same arithmetic on rows of `width * 3` values against the statistics tiled along a
    # row: TensorFlow broadcasts a row about 4x faster than a last axis of 3.
    shape = tf.shape(clips)
    width = shape[-2]
    rows = tf.reshape(clips, tf.stack([-1, width * 3]))
    normalised = (rows - tf.tile(mean, [width])) / tf.tile(std, [width])
    normalised = tf.reshape(normalised, shape)
    normalised.set_shape(clips.shape)
    return normalised


def spatial_views(frames, protocol, antialias=False):
    """Clip frames `(batch, num_clips * clip_len, height, width, 3)` (RGB 0-255, e.g. from
    `clip_frames`) -> the protocol's views `(batch, num_views, clip_len, crop_size, crop_size,
    3)`, float32 normalised: `resize_short_side` (with `antialias`), `crop_views`,
    `normalize`."""
    import tensorflow as tf

    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], axis=0))
    resized = resize_short_side(flat, protocol.resize_to, antialias=antialias)
    frames = tf.reshape(resized, tf.concat([shape[:2], tf.shape(resized)[1:]], axis=0))
    return normalize(crop_views(frames, protocol))


def video_views(video, protocol, antialias=False):
    """Whole videos `(batch, frames, height, width, 3)` (RGB 0-255) -> the protocol's views:
    `clip_frames`, then `spatial_views`."""
    return spatial_views(clip_frames(video, protocol), protocol, antialias=antialias)
