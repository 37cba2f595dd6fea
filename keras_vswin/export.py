"""SavedModel export of Video Swin models for TF Serving and TF Hub-style reuse.

`export_saved_model(model, "exports", name="video_swin_t")` writes a self-contained SavedModel
to `exports/video_swin_t/<version>/` (TF Serving's layout; the version is the next integer) and
returns that directory. The graph holds core TensorFlow ops only: TF Serving, `saved_model_cli`
or `tf.saved_model.load` run it without Python code from this package.

Classifier exports (the default) have three signatures (`B`: batch, `K`: top_k):

- `serving_default`: `video` uint8 `(B, frames, height, width, 3)` RGB, every dimension but
  the channels dynamic -> `probabilities` float32 `(B, classes)`, `logits` float32
  `(B, classes)`, `top_k_indices` int32 `(B, K)`, `top_k_labels` string `(B, K)` (class names),
  `top_k_probabilities` float32 `(B, K)`.
- `serve_float`: `clips` float32 `(B, frames, height, width, 3)` already normalised with
  `preprocess_input`, given to the model as they are -> the same outputs.
- `serve_multiview`: `video` uint8 `(B, frames, height, width, 3)` whole videos -> the official
  multi-view test protocol: `probabilities` (softmax of every view, averaged), `view_logits`
  `(B, views, classes)`, `top_k_indices`, `top_k_labels`, `top_k_probabilities`.

`serving_default` turns any video into the model's input with the official test pipeline
restricted to one view: the centre clip of `clip_len` frames every `frame_interval` frames
(mmaction's `SampleFrames` in test mode with one clip; frame indices wrap around, so videos
shorter than a clip loop), the shorter side resized to `crop_size` (bilinear, rounded to
integers like the official pipeline's uint8 frames), the centre `crop_size` square, then
`(x - mean) / std`. `serve_multiview` applies the full protocol:
`num_clips` evenly spaced clips x 3 crops along the long side (4 x 3 for Kinetics; SSv2 models
use segment-uniform sampling, 1 x 3). In `serving_default` and `serve_float`, `probabilities`
is `softmax(logits)`; every output is float32 whatever the export precision.

The export is written to `<path>/<name>/.tmp-...` and renamed to its version folder when
complete, so a TF Serving instance watching `<path>/<name>` never loads a partial model. An
existing version is only replaced with `overwrite=True`.

Feature-vector exports (`feature_vector=True`, TF Hub style) have one signature,
`serving_default`: `clips` float32 `(B, T, H, W, 3)` normalised -> `features` float32
`(B, channels)` (the pooled backbone output). Load it with
`keras.layers.TFSMLayer(path, call_endpoint="serving_default")` and train a head on top.

Next to the graph, `assets.extra/` (ignored by TF Serving) holds `labels.txt` and
`keras_vswin.json` (the view protocol, precision, classes): `python -m keras_vswin.predict
--saved-model DIR` reads them.

Options: `precision="bfloat16"` rebuilds the model under the `mixed_bfloat16` policy (weights
stay float32; outputs are float32). `jit_compile=True` compiles the model part of every signature
with XLA; it works with dynamic shapes (XLA compiles once per input shape, so the first call at a
new shape is slow) but needs a TensorFlow runtime with XLA (the `tensorflow` pip package has it).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_vswin.data.augment import short_side_size, three_crop_offsets
from keras_vswin.data.sampling import (
    dense_sample_np,
    dense_sample_tf,
    uniform_sample_np,
    uniform_sample_tf,
)
from keras_vswin.preprocessing import LABEL_SETS, MEAN_RGB, STD_RGB, load_labels

__all__ = [
    "PROTOCOLS",
    "ViewProtocol",
    "clip_frames",
    "clip_span",
    "default_labels",
    "export_saved_model",
    "features_function",
    "latest_version_dir",
    "logits_function",
    "read_export_metadata",
    "resize_short_side",
    "sample_indices",
    "non_core_ops",
    "preset_defaults",
    "protocol_for",
    "saved_model_op_types",
    "spatial_views",
    "video_views",
]

SERVING_DEFAULT = "serving_default"
SERVE_FLOAT = "serve_float"
SERVE_MULTIVIEW = "serve_multiview"
METADATA_FILE = os.path.join("assets.extra", "keras_vswin.json")
LABELS_FILE = os.path.join("assets.extra", "labels.txt")
PRECISIONS = ("float32", "bfloat16")
SAMPLINGS = ("dense", "uniform")
# Ops that call back into Python: a SavedModel holding them cannot be served.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


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
    """

    clip_len: int = 32
    frame_interval: int = 2
    num_clips: int = 4
    crop_size: int = 224
    num_crops: int = 3
    sampling: str = "dense"
    short_side: int | None = None

    def __post_init__(self):
        for field in ("clip_len", "frame_interval", "num_clips", "crop_size"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{field}` must be a positive int, got {value!r}.")
        if self.num_crops not in (1, 3):
            raise ValueError(f"`num_crops` must be 1 or 3, got {self.num_crops!r}.")
        if self.short_side is not None and (
            not isinstance(self.short_side, int | np.integer) or self.short_side < self.crop_size
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

    @property
    def resize_to(self):
        """The shorter side after resizing."""
        return self.short_side or self.crop_size

    @property
    def num_views(self):
        return self.num_clips * self.num_crops

    def single_view(self):
        """The same protocol reduced to one view: the centre clip, centre crop."""
        return dataclasses.replace(self, num_clips=1, num_crops=1)

    def to_dict(self):
        return dataclasses.asdict(self)


# The official test protocols (facts file, "Recipe").
PROTOCOLS = {
    "kinetics": ViewProtocol(clip_len=32, frame_interval=2, num_clips=4, sampling="dense"),
    "something_something_v2": ViewProtocol(
        clip_len=32, frame_interval=1, num_clips=1, sampling="uniform"
    ),
}


def default_labels(classes):
    """Class names for a head of `classes` outputs: a known label set of that size, else
    `class_0`, `class_1`, ..."""
    for name in LABEL_SETS:
        names = load_labels(name)
        if len(names) == classes:
            return names
    return tuple(f"class_{i}" for i in range(classes))


def _resolve_labels(labels, classes):
    if labels is None:
        return default_labels(classes)
    names = load_labels(labels) if isinstance(labels, str | os.PathLike) else tuple(labels)
    names = tuple(str(n) for n in names)
    if len(names) != classes:
        raise ValueError(
            f"`labels` has {len(names)} class names but the model has {classes} classes."
        )
    return names


# ----------------------------------------------------------------------------------------------
# Graph-safe preprocessing (used inside the SavedModel and by `keras_vswin.predict`).


def resize_short_side(frames, size, antialias=False):
    """Resize `(N, H, W, C)` frames (RGB 0-255) so that the shorter side is `size`.

    The aspect ratio is kept; the longer side is rounded half to even, like
    `keras_vswin.video.resized_shape` and the tf.data pipelines. Bilinear (the official
    pipeline's cv2 resize), without low-pass filtering unless `antialias`; values are rounded
    to integers in [0, 255], as the official pipeline's uint8 frames are. Returns float32.
    """
    shape = tf.shape(frames)
    new_size = short_side_size(shape[1], shape[2], size)
    resized = tf.image.resize(frames, new_size, method="bilinear", antialias=antialias)
    return tf.clip_by_value(tf.round(tf.cast(resized, tf.float32)), 0.0, 255.0)


def _clip_indices(num_frames, protocol):
    """`(num_clips, clip_len)` int64 frame indices of the test-mode clips."""
    if protocol.sampling == "uniform":
        return uniform_sample_tf(num_frames, protocol.clip_len, test_mode=True)[None]
    return dense_sample_tf(
        num_frames,
        protocol.clip_len,
        protocol.frame_interval,
        protocol.num_clips,
        test_mode=True,
    )


def _crop_offsets(height, width, protocol):
    if protocol.num_crops == 3:
        return three_crop_offsets(height, width, protocol.crop_size)
    centre = tf.stack([(height - protocol.crop_size) // 2, (width - protocol.crop_size) // 2])
    return centre[None]


def normalise(x):
    """`(x - mean) / std` with the official RGB statistics (float32 graph op)."""
    mean = tf.constant(MEAN_RGB, tf.float32)
    std = tf.constant(STD_RGB, tf.float32)
    return (tf.cast(x, tf.float32) - mean) / std


def clip_frames(video, protocol):
    """The frames of the protocol's test-mode clips, in clip order.

    Args:
        video: `(batch, frames, height, width, 3)`; all videos of a batch share their size.
        protocol: a `ViewProtocol`.

    Returns:
        `(batch, num_clips * clip_len, height, width, 3)`, the dtype of `video`.
    """
    video = tf.convert_to_tensor(video)
    num_frames = tf.shape(video)[1]
    with tf.control_dependencies(
        [tf.debugging.assert_positive(num_frames, message="the video has no frames")]
    ):
        indices = tf.reshape(_clip_indices(num_frames, protocol), [-1])
    return tf.gather(video, indices, axis=1)


def spatial_views(frames, protocol, antialias=False):
    """Clip frames -> normalised views: shorter side to `resize_to`, `num_crops` crops.

    Args:
        frames: `(batch, num_clips * clip_len, height, width, 3)` RGB in 0-255 (uint8 or
            float), e.g. from `clip_frames`.
        protocol: a `ViewProtocol`.
        antialias: low-pass filter when frames are shrunk.

    Returns:
        float32 `(batch, num_clips * num_crops, clip_len, crop_size, crop_size, 3)`: views
        ordered clip-major (clip 0 crops 0-2, clip 1 ...), normalised like `preprocess_input`.
    """
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    batch, height, width = shape[0], shape[2], shape[3]
    frames = tf.reshape(frames, tf.stack([-1, height, width, 3]))
    frames = resize_short_side(frames, protocol.resize_to, antialias=antialias)
    new_shape = tf.shape(frames)
    offsets = _crop_offsets(new_shape[1], new_shape[2], protocol)
    size = protocol.crop_size
    crops = [
        tf.slice(frames, tf.stack([0, offsets[i, 0], offsets[i, 1], 0]), [-1, size, size, 3])
        for i in range(protocol.num_crops)
    ]
    crops = tf.stack(crops, axis=1)  # (B * clips * clip_len, crops, size, size, 3)
    clips, clip_len, num_crops = protocol.num_clips, protocol.clip_len, protocol.num_crops
    crops = tf.reshape(crops, tf.stack([batch, clips, clip_len, num_crops, size, size, 3]))
    views = tf.transpose(crops, (0, 1, 3, 2, 4, 5, 6))
    views = tf.reshape(views, tf.stack([batch, clips * num_crops, clip_len, size, size, 3]))
    views = tf.ensure_shape(views, [None, clips * num_crops, clip_len, size, size, 3])
    return normalise(views)


def video_views(video, protocol, antialias=False):
    """Whole videos `(batch, frames, height, width, 3)` (RGB 0-255) -> the protocol's views
    `(batch, num_clips * num_crops, clip_len, crop_size, crop_size, 3)`, float32 normalised
    (`clip_frames` then `spatial_views`)."""
    return spatial_views(clip_frames(video, protocol), protocol, antialias=antialias)


# ----------------------------------------------------------------------------------------------
# Logits and features of a Keras model.


def _head(model):
    last = model.layers[-1]
    return last if isinstance(last, keras.layers.Dense) else None


def _activation_name(layer):
    return getattr(layer.activation, "__name__", str(layer.activation))


def logits_function(model):
    """`clips -> float32 logits (batch, classes)` for a classifier, sharing its weights.

    A model whose head is a Dense layer with softmax gets its head applied without the
    activation; a model that outputs logits (`classifier_activation=None`) is used as it is.

    Raises:
        ValueError: the model has no classification head (e.g. `include_top=False`) or its head
            applies another activation than softmax.
    """
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"Model {model.name!r} does not output class scores `(batch, classes)` (outputs: "
            f"{[tuple(o.shape) for o in model.outputs]}); export it with `feature_vector=True`."
        )
    head = _head(model)
    activation = _activation_name(head) if head is not None else "linear"
    if head is None or activation == "linear":
        return lambda clips: tf.cast(model(clips, training=False), tf.float32)
    if activation != "softmax":
        raise ValueError(
            f"The model's head applies {activation!r}; only softmax (or no activation) heads "
            "can be exported with logits and probabilities."
        )
    backbone = keras.Model(model.input, head.input, name=f"{model.name}_backbone")

    def logits(clips):
        features = tf.cast(backbone(clips, training=False), head.compute_dtype)
        out = tf.matmul(features, tf.convert_to_tensor(head.kernel))
        if head.use_bias:
            out = out + tf.convert_to_tensor(head.bias)
        return tf.cast(out, tf.float32)

    return logits


def _feature_extractor(model):
    head = _head(model)
    output = head.input if head is not None else model.outputs[0]
    if len(output.shape) not in (2, 5):
        raise ValueError(
            f"Cannot find pooled features in model {model.name!r}: output shape {output.shape}."
        )
    return keras.Model(model.input, output, name=f"{model.name}_features")


def features_function(model):
    """`clips -> float32 pooled features (batch, channels)`: the input of the classification
    head, the pooled output of an `include_top=False, pooling="avg"|"max"` model, or the mean
    over frames/height/width of a feature map. Returns `(function, channels)`."""
    extractor = _feature_extractor(model)
    rank = len(extractor.outputs[0].shape)

    def features(clips):
        x = tf.cast(extractor(clips, training=False), tf.float32)
        return tf.reduce_mean(x, axis=(1, 2, 3)) if rank == 5 else x

    return features, int(extractor.outputs[0].shape[-1])


def with_precision(model, precision):
    """`model` itself for "float32"; for "bfloat16" a copy with the `mixed_bfloat16` policy
    (float32 weights, bfloat16 compute) except its classification head, which stays float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "float32":
        return model
    head = _head(model)

    def clone_layer(layer):
        config = layer.get_config()
        if layer is not head:
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


# ----------------------------------------------------------------------------------------------
# Signatures.


def _classifier_outputs(logits, label_table, top_k, probabilities=None):
    if probabilities is None:
        probabilities = tf.nn.softmax(logits, axis=-1)
    top = tf.math.top_k(probabilities, k=top_k)
    return {
        "probabilities": probabilities,
        "top_k_indices": top.indices,
        "top_k_labels": tf.gather(label_table, top.indices),
        "top_k_probabilities": top.values,
    }


def protocol_for(
    model=None,
    classes=None,
    resolution=None,
    frames=None,
    frame_interval=None,
    num_clips=None,
    sampling=None,
    num_crops=None,
    short_side=None,
):
    """The view protocol for a model: explicit arguments first, then the model's fixed input
    size (`input_shape`), then the official protocol of its label set (174 classes: SSv2's
    uniform 1 x 3, else Kinetics' dense 4 x 3 with 32 frames every 2nd frame, 224 crops)."""
    if sampling is not None and sampling not in SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}.")
    if sampling is None:
        sampling = "uniform" if classes == 174 else "dense"
    base = PROTOCOLS["kinetics" if sampling == "dense" else "something_something_v2"]
    if model is not None:
        static_frames, static_height, static_width = model.input_shape[1:4]
        if resolution is None and static_height == static_width:
            resolution = static_height
        if frames is None:
            frames = static_frames
    changes = {
        "crop_size": resolution,
        "clip_len": frames,
        "frame_interval": frame_interval,
        "num_clips": num_clips,
        "num_crops": num_crops,
        "short_side": short_side,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def preset_defaults(weights, variant):
    """What registry weights need at test time, from `keras_vswin.presets`.

    Returns:
        None when `weights` is not a registry name, else `(protocol_arguments, labels, fps)`:
        keyword arguments for `protocol_for`, the label set name, and the frame rate the clips
        must be decoded at (None: the native rate).
    """
    from keras_vswin import weights as registry

    if not isinstance(weights, str) or weights not in registry.list_weights():
        return None
    info = registry.weights_info(weights, variant)
    preprocessing = info["preprocessing"]
    clips, crops = (int(v) for v in info["views"].split("x"))
    uniform = preprocessing["sampling"] == "uniform"
    fps = re.search(r"(\d+(?:\.\d+)?)\s*fps", preprocessing["sampling"])
    short_side = preprocessing.get("short_side")
    arguments = dict(
        frames=preprocessing["clip_len"],
        frame_interval=None if uniform else preprocessing.get("frame_interval") or 1,
        num_clips=clips,
        num_crops=crops,
        resolution=preprocessing["crop_size"],
        sampling="uniform" if uniform else "dense",
        short_side=None if short_side in (None, preprocessing["crop_size"]) else short_side,
    )
    return arguments, info["labels"], float(fps.group(1)) if fps else None


def sample_indices(num_frames, protocol):
    """NumPy twin of the in-graph sampling: `(num_clips, clip_len)` int64 frame indices of the
    test-mode clips of a `num_frames`-frame video (indices wrap around for short videos)."""
    if protocol.sampling == "uniform":
        return uniform_sample_np(num_frames, protocol.clip_len, test_mode=True)[None]
    return dense_sample_np(
        num_frames, protocol.clip_len, protocol.frame_interval, protocol.num_clips, test_mode=True
    )


def clip_span(protocol):
    """Frames a clip spans: shorter videos are looped (dense) or repeat frames (uniform)."""
    if protocol.sampling == "uniform":
        return protocol.clip_len
    return protocol.clip_len * protocol.frame_interval


def _input_spec(name, dtype):
    return tf.TensorSpec([None, None, None, None, 3], dtype, name=name)


def _shared_function(fn, jit_compile):
    """One tf.function for the model part of every signature: signatures that feed it the same
    input shape share one trace in the SavedModel (and one XLA cluster with `jit_compile`)."""
    return tf.function(fn, jit_compile=True if jit_compile else None, autograph=False)


def _build_archive(model, feature_vector, labels, protocol, top_k, jit_compile, antialias):
    archive = keras.export.ExportArchive()
    # TF Hub's `variables` / `trainable_variables` attributes, holding the very tf.Variables the
    # signatures read (`archive.track(model)` would save a second copy of every weight).
    used = _feature_extractor(model) if feature_vector else model
    for attribute in ("variables", "trainable_variables", "non_trainable_variables"):
        archive.add_variable_collection(attribute, [v.value for v in getattr(used, attribute)])
    info = {}
    if feature_vector:
        features, channels = features_function(model)
        run = _shared_function(features, jit_compile)
        info["feature_dim"] = channels

        def serve_features(clips):
            return {"features": run(clips)}

        archive.add_endpoint(SERVING_DEFAULT, serve_features, [_input_spec("clips", tf.float32)])
        info["signatures"] = [SERVING_DEFAULT]
        return archive, info

    logits_fn = logits_function(model)
    classes = int(model.outputs[0].shape[-1])
    names = _resolve_labels(labels, classes)
    top_k = min(int(top_k), classes)
    label_table = tf.constant(names, tf.string)
    run = _shared_function(logits_fn, jit_compile)
    single = protocol.single_view()

    def serve_video(video):
        views = video_views(video, single, antialias=antialias)
        logits = run(views[:, 0])
        return {"logits": logits, **_classifier_outputs(logits, label_table, top_k)}

    def serve_float(clips):
        logits = run(clips)
        return {"logits": logits, **_classifier_outputs(logits, label_table, top_k)}

    def serve_multiview(video):
        views = video_views(video, protocol, antialias=antialias)
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
        view_logits = tf.reshape(run(flat), [shape[0], shape[1], classes])
        probabilities = tf.reduce_mean(tf.nn.softmax(view_logits, axis=-1), axis=1)
        outputs = _classifier_outputs(None, label_table, top_k, probabilities=probabilities)
        return {"view_logits": view_logits, **outputs}

    archive.add_endpoint(SERVING_DEFAULT, serve_video, [_input_spec("video", tf.uint8)])
    archive.add_endpoint(SERVE_FLOAT, serve_float, [_input_spec("clips", tf.float32)])
    archive.add_endpoint(SERVE_MULTIVIEW, serve_multiview, [_input_spec("video", tf.uint8)])
    info.update(
        classes=classes,
        labels=names,
        top_k=top_k,
        signatures=[SERVING_DEFAULT, SERVE_FLOAT, SERVE_MULTIVIEW],
    )
    return archive, info


# ----------------------------------------------------------------------------------------------
# Versioned, atomic writing.


def _numeric_versions(parent):
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    return sorted(int(e) for e in entries if e.isdigit() and os.path.isdir(os.path.join(parent, e)))


def latest_version_dir(path):
    """`path` if it holds a `saved_model.pb`, else its highest numeric version sub-folder."""
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = _numeric_versions(path)
    for version in reversed(versions):
        candidate = os.path.join(path, str(version))
        if os.path.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise ValueError(
        f"{path!r} is neither a SavedModel (no saved_model.pb) nor a folder of numbered "
        "SavedModel versions."
    )


def _check_version(version):
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 0:
        raise ValueError(f"`version` must be a non-negative int or None, got {version!r}.")
    return int(version)


def _move_into_place(tmp, target, overwrite):
    """Rename `tmp` to `target`; an existing `target` is replaced only with `overwrite`."""
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(
                f"{target!r} exists; pass overwrite=True (--overwrite) to replace it or choose "
                "another version."
            )
        old = f"{target}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, target)


def _write_atomically(write, parent, version, overwrite):
    """Write into `<parent>/.tmp-...` with `write(tmp)`, then rename to `<parent>/<version>`
    (or the next free version). Returns the final path."""
    os.makedirs(parent, exist_ok=True)
    if version is not None and os.path.exists(os.path.join(parent, str(version))):
        if not overwrite:
            raise FileExistsError(
                f"Version {version} exists in {parent!r}; pass overwrite=True (--overwrite) "
                "to replace it or choose another version."
            )
    label = "next" if version is None else str(version)
    tmp = os.path.join(parent, f".tmp-{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        if version is not None:
            target = os.path.join(parent, str(version))
            _move_into_place(tmp, target, overwrite)
            return target
        # A concurrent export may take the version we picked: try the next one.
        for _ in range(100):
            versions = _numeric_versions(parent)
            target = os.path.join(parent, str(versions[-1] + 1 if versions else 1))
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not os.path.exists(target):
                    raise
        raise RuntimeError(f"Could not find a free version number in {parent!r}.")
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def export_saved_model(
    model,
    path,
    *,
    name=None,
    version=None,
    versioned=True,
    overwrite=False,
    feature_vector=False,
    labels=None,
    top_k=5,
    resolution=None,
    frames=None,
    frame_interval=None,
    num_clips=None,
    num_crops=None,
    sampling=None,
    short_side=None,
    fps=None,
    antialias=False,
    precision="float32",
    jit_compile=False,
    verbose=False,
):
    """Export a Keras Video Swin model as a self-contained SavedModel (see the module doc).

    Args:
        model: a built `keras.Model` taking `(batch, frames, height, width, 3)` clips. For a
            classifier export its output must be class scores (softmax or logits); for
            `feature_vector=True` any Video Swin model (the head, if any, is dropped).
        path: the base folder. With `versioned=True` the SavedModel goes to
            `<path>/<name>/<version>/`, else to `path` itself.
        name: model folder name (default `model.name`).
        version: integer version; None takes the next one after the existing versions.
        versioned: write TF Serving's `<name>/<version>` layout.
        overwrite: replace an existing version (or `path`); otherwise that raises
            `FileExistsError`.
        feature_vector: export pooled features instead of class scores (TF Hub style).
        labels: class names: a label set name, a text file (one name per line) or a sequence.
            Default: the known label set with as many classes as the model, else `class_<i>`.
        top_k: how many top classes the signatures return.
        resolution: crop size of the views (default: the model's fixed input size, else 224).
        frames: clip length (default: the model's fixed frame count, else 32).
        frame_interval: step between sampled frames (default 2, the Kinetics protocol).
        num_clips: clips per video in `serve_multiview` (default 4; SSv2-style models 1).
        num_crops: crops per clip in `serve_multiview`: 3 (default) or 1 (centre).
        sampling: "dense" (Kinetics) or "uniform" (SSv2); default from the class count
            (174 classes: uniform).
        short_side: resize the shorter side to this before cropping (default: `resolution`).
        fps: the frame rate the model expects, recorded for clients (a SavedModel sees frames,
            not timestamps, and cannot resample; `keras_vswin.predict` decodes at this rate).
        antialias: low-pass filter when frames are shrunk (off, like the official pipeline;
            turn it on for clients that send frames much larger than `resolution`).
        precision: "float32" or "bfloat16" (mixed precision, float32 outputs).
        jit_compile: compile the model part of the signatures with XLA.
        verbose: let Keras print the exported endpoints.

    Returns:
        The folder holding the written SavedModel.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    version = _check_version(version)
    classes = None if feature_vector else int(model.outputs[0].shape[-1])
    protocol = protocol_for(
        model,
        classes,
        resolution=resolution,
        frames=frames,
        frame_interval=frame_interval,
        num_clips=num_clips,
        sampling=sampling,
        num_crops=num_crops,
        short_side=short_side,
    )
    export_model = with_precision(model, precision)
    archive, info = _build_archive(
        export_model, feature_vector, labels, protocol, top_k, jit_compile, antialias
    )
    metadata = {
        "format": "keras_vswin.saved_model/1",
        "flavour": "feature_vector" if feature_vector else "classifier",
        "model_name": model.name,
        "signatures": info["signatures"],
        "protocol": protocol.to_dict(),
        "antialias": bool(antialias),
        "fps": None if fps is None else float(fps),
        "precision": precision,
        "jit_compile": bool(jit_compile),
        "classes": info.get("classes"),
        "feature_dim": info.get("feature_dim"),
        "top_k": info.get("top_k"),
        "normalisation": {"mean": list(MEAN_RGB), "std": list(STD_RGB)},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

    def write(target):
        archive.write_out(target, verbose=verbose)
        extra = os.path.join(target, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        if "labels" in info:
            with open(os.path.join(target, LABELS_FILE), "w", encoding="utf-8") as f:
                f.write("\n".join(info["labels"]) + "\n")
        with open(os.path.join(target, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")

    path = os.fspath(path)
    if versioned:
        parent = os.path.join(path, name or model.name)
        return _write_atomically(write, parent, version, overwrite)
    if version is not None:
        raise ValueError("`version` needs versioned=True.")
    parent, leaf = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
    tmp = os.path.join(parent, f".tmp-{leaf}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        _move_into_place(tmp, path, overwrite)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------------
# Reading exports back.


def read_export_metadata(path):
    """`(metadata dict, labels tuple or None)` of an export (a version folder or its parent);
    `({}, None)` for SavedModels written by other tools."""
    path = latest_version_dir(path)
    metadata, labels = {}, None
    if os.path.exists(os.path.join(path, METADATA_FILE)):
        with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as f:
            metadata = json.load(f)
    if os.path.exists(os.path.join(path, LABELS_FILE)):
        with open(os.path.join(path, LABELS_FILE), encoding="utf-8") as f:
            labels = tuple(line.strip() for line in f if line.strip())
    return metadata, labels


def saved_model_op_types(path):
    """Every op type in a SavedModel's graphs and function library: `{op: count}`."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = latest_version_dir(path)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    counts = {}
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        functions = {fn.signature.name for fn in graph.library.function}
        nodes = list(graph.node)
        for fn in graph.library.function:
            nodes.extend(fn.node_def)
        for node in nodes:
            if node.op not in functions:  # a call of a library function by name
                counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def non_core_ops(path):
    """Op types of a SavedModel that are not core TensorFlow ops (sorted; empty when it is
    servable by a stock TF Serving / TensorFlow): custom ops and Python callbacks."""
    from tensorflow.python.framework import op_def_registry

    return sorted(
        op
        for op in saved_model_op_types(path)
        if op in PYTHON_OPS or op_def_registry.get(op) is None or not hasattr(tf.raw_ops, op)
    )
