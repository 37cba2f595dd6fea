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
is `softmax(logits)`, the logits being what the model computes before its softmax (a softmax
Dense head without its activation, the input of a final softmax layer, or `logits_layer`;
see `logits_function`: a head it cannot read is refused); every output is float32 whatever the
export precision.

The export is written to `<path>/<name>/.tmp-...` and renamed to its version folder when
complete, so a TF Serving instance watching `<path>/<name>` never loads a partial model. An
existing version is only replaced with `overwrite=True`.

Every export also implements TensorFlow's Reusable SavedModel API (what TF Hub's
`hub.KerasLayer(path, trainable=True)` loads and fine-tunes): the root object is callable,
`__call__(inputs, training=False)` takes float32 RGB clips `(B, T, H, W, 3)` in [0, 1] of any
size (the TF Hub convention), normalises them inside and returns logits (classifier) or
`(B, channels)` features (feature vector), traced for both `training` values (dropout and
stochastic depth act only in training); `variables`, `trainable_variables` and
`regularization_losses` are saved with it. In Keras 3, `ReusableLayer(path)` fine-tunes it with
any optimizer (Keras' `TFSMLayer` cannot train with Adam).

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
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_vswin import atomic
from keras_vswin.data import views
from keras_vswin.data.views import KINETICS, ViewProtocol
from keras_vswin.preprocessing import (
    LABEL_SETS,
    MEAN_RGB,
    STD_RGB,
    load_labels,
    without_clip_normalization,
)

__all__ = [
    "default_labels",
    "export_saved_model",
    "features_function",
    "latest_version_dir",
    "logits_function",
    "model_protocol",
    "non_core_ops",
    "preset_protocol",
    "read_export_metadata",
    "saved_model_op_types",
]

SERVING_DEFAULT = "serving_default"
SERVE_FLOAT = "serve_float"
SERVE_MULTIVIEW = "serve_multiview"
METADATA_FILE = os.path.join("assets.extra", "keras_vswin.json")
LABELS_FILE = os.path.join("assets.extra", "labels.txt")
PRECISIONS = ("float32", "bfloat16")
# Ops that call back into Python: a SavedModel holding them cannot be served.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


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
# Logits and features of a Keras model.


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return getattr(activation, "__name__", str(activation))


def _is_softmax(layer):
    if isinstance(layer, keras.layers.Softmax):
        return layer.axis in (-1, 1)
    return isinstance(layer, keras.layers.Activation) and _activation_name(layer) == "softmax"


def _producer(model, tensor):
    """The layer of `model` whose output is `tensor` (None when no layer's is)."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError):  # never called, or called several times
            continue
    return None


def _output_layer(model):
    return _producer(model, model.outputs[0]) or model.layers[-1]


def _head(model):
    """The Dense layer that computes the class scores: the last layer, or the one just before
    a final softmax layer. None when there is none (`include_top=False`, other heads)."""
    last = _output_layer(model)
    if _is_softmax(last):
        last = _producer(model, last.input)
    return last if isinstance(last, keras.layers.Dense) else None


@dataclasses.dataclass
class _Logits:
    """Where a classifier's logits are: the pre-activation of the softmax Dense `dense`, or the
    output `tensor` of the layer `layer`."""

    layer: keras.layers.Layer
    tensor: object = None
    dense: keras.layers.Dense | None = None

    def describe(self):
        return f"{self.layer.name} (before its softmax)" if self.dense else self.layer.name


def _unreadable(model, why):
    return ValueError(
        f"Cannot tell the logits of model {model.name!r}: {why}. Pass logits_layer=NAME "
        "(--logits-layer NAME), the layer whose output are the logits that a softmax turns "
        "into the model's probabilities."
    )


def _named_logits(model, name, classes):
    try:
        layer = model.get_layer(name)
    except ValueError:
        last = ", ".join(repr(layer.name) for layer in model.layers[-4:])
        raise ValueError(
            f"logits_layer={name!r}: model {model.name!r} has no such layer (its last layers: "
            f"{last})."
        ) from None
    try:
        output = layer.output
    except (AttributeError, ValueError):
        raise ValueError(f"logits_layer={name!r} has no single output in the model.") from None
    if len(output.shape) != 2 or output.shape[-1] != classes:
        raise ValueError(
            f"logits_layer={name!r} outputs {tuple(output.shape)}, not (batch, {classes}) class "
            "scores."
        )
    activation = _activation_name(layer)
    if isinstance(layer, keras.layers.Dense) and activation == "softmax":
        return _Logits(layer, dense=layer)
    if activation != "linear":
        raise ValueError(
            f"logits_layer={name!r} applies {activation!r}: its outputs are not logits."
        )
    return _Logits(layer, tensor=output)


def _find_logits(model, logits_layer=None):
    """Where the logits of classifier `model` are (see `logits_function`)."""
    classes = model.outputs[0].shape[-1]
    if logits_layer is not None:
        return _named_logits(model, logits_layer, classes)
    last = _output_layer(model)
    activation = _activation_name(last)
    if isinstance(last, keras.layers.Dense):
        if activation == "softmax":
            return _Logits(last, dense=last)
        if activation == "linear":
            return _Logits(last, tensor=model.outputs[0])
        raise _unreadable(model, f"its head {last.name!r} applies {activation!r}, not softmax")
    if _is_softmax(last):
        before = _producer(model, last.input)
        if before is None:
            raise _unreadable(model, f"the input of its final softmax {last.name!r} is unknown")
        if _activation_name(before) != "linear":
            raise _unreadable(
                model,
                f"{before.name!r} applies {_activation_name(before)!r} before the final "
                f"softmax {last.name!r}",
            )
        return _Logits(before, tensor=last.input)
    raise _unreadable(
        model,
        f"its output comes from {last.name!r} ({type(last).__name__}), neither a Dense layer "
        "(softmax or no activation) nor a softmax after one",
    )


def logits_function(model, logits_layer=None):
    """`clips -> float32 logits (batch, classes)` for a classifier, sharing its weights.

    The logits are what the model really computes before its softmax: a final Dense layer
    with softmax is applied without the activation; a final softmax layer (`Softmax`,
    `Activation("softmax")`) is left out; a final Dense without activation
    (`classifier_activation=None`) already outputs them. `logits_layer` names the layer whose
    output are the logits instead (a Dense with softmax: its pre-activation). Exports compute
    `probabilities = softmax(logits)`.

    Raises:
        ValueError: the model has no classification head (e.g. `include_top=False`), or a head
            whose logits cannot be told (another activation, another final layer) and no
            usable `logits_layer`.
    """
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"Model {model.name!r} does not output class scores `(batch, classes)` (outputs: "
            f"{[tuple(o.shape) for o in model.outputs]}); export it with `feature_vector=True`."
        )
    found = _find_logits(model, logits_layer)
    if found.dense is None:
        target = (
            model
            if found.tensor is model.outputs[0]
            else keras.Model(model.input, found.tensor, name=f"{model.name}_logits")
        )
        return lambda clips, training=False: tf.cast(target(clips, training=training), tf.float32)
    head = found.dense
    backbone = keras.Model(model.input, head.input, name=f"{model.name}_backbone")

    def logits(clips, training=False):
        features = tf.cast(backbone(clips, training=training), head.compute_dtype)
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

    def features(clips, training=False):
        x = tf.cast(extractor(clips, training=training), tf.float32)
        return tf.reduce_mean(x, axis=(1, 2, 3)) if rank == 5 else x

    return features, int(extractor.outputs[0].shape[-1])


def with_precision(model, precision, logits_layer=None):
    """`model` itself for "float32"; for "bfloat16" a copy with the `mixed_bfloat16` policy
    (float32 weights, bfloat16 compute) except its classification head (the Dense layer, the
    `logits_layer` and a final softmax), which stays float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "float32":
        return model
    try:
        found = _find_logits(model, logits_layer)
        head = {id(found.layer), id(_output_layer(model))}
    except ValueError:
        if logits_layer is not None:
            raise
        head = set()  # no head (a feature extractor): everything in bfloat16

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) not in head:
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


def model_protocol(model, protocol=None):
    """The view protocol for `model`: `protocol` (default `KINETICS`, the official Kinetics
    4x3 views) with the clip length and crop size that a fixed `input_shape` requires."""
    protocol = KINETICS if protocol is None else ViewProtocol.from_dict(protocol)
    if not isinstance(protocol, ViewProtocol):
        raise ValueError(f"`protocol` must be a ViewProtocol, got {protocol!r}.")
    return views.for_input_shape(protocol, model.input_shape[1:])


def preset_protocol(weights, variant):
    """What registry weights need at test time, from `keras_vswin.presets`.

    Returns:
        None when `weights` is not a registry name, else `(protocol, labels)`: the
        `ViewProtocol` the published accuracy was measured with and the label set name.
    """
    from keras_vswin import weights as registry

    if not isinstance(weights, str) or weights not in registry.list_weights():
        return None
    info = registry.weights_info(weights, variant)
    return info["protocol"], info["labels"]


def _input_spec(name, dtype):
    return tf.TensorSpec([None, None, None, None, 3], dtype, name=name)


def _shared_function(fn, jit_compile):
    """One tf.function for the model part of every signature: signatures that feed it the same
    input shape share one trace in the SavedModel (and one XLA cluster with `jit_compile`)."""
    return tf.function(fn, jit_compile=True if jit_compile else None, autograph=False)


class _ReusableRoot(tf.Module):
    """The SavedModel's root object: TensorFlow's Reusable SavedModel API (what TF Hub's
    `hub.KerasLayer` and `keras_vswin.export.ReusableLayer` load and fine-tune)."""

    # tf.Module computes these as properties; the API stores them as saved lists instead.
    variables = None
    trainable_variables = None
    regularization_losses = None


class _SavedModelArchive:
    """A root object and its serving signatures, written with `tf.saved_model.save`."""

    def __init__(self, root, signatures):
        self.root, self.signatures = root, signatures

    def write_out(self, path, verbose=False):
        tf.saved_model.save(self.root, path, signatures=self.signatures)
        if verbose:
            print(f"Saved {path}: signatures {sorted(self.signatures)}, __call__(inputs, training)")


def _reusable_call(model_fn):
    """`__call__(inputs, training=False)`: float32 RGB in [0, 1] of any size (the TF Hub
    convention for image and video modules) -> what `model_fn` computes on normalised clips,
    traced for both `training` values (dropout and stochastic depth act only in training)."""

    @tf.function(autograph=False)
    def call(inputs, training=False):
        clips = views.normalize(tf.cast(inputs, tf.float32) * 255.0)
        return model_fn(clips, training=training)

    spec = _input_spec("inputs", tf.float32)
    for training in (False, True):
        call.get_concrete_function(spec, training=training)
    return call


def _regularization_losses(model):
    """Zero-argument functions returning the model's regularisation losses (Video Swin has
    none of its own; a kernel regularizer added by a user is kept)."""
    if not any(getattr(v, "regularizer", None) is not None for v in model.trainable_variables):
        return []

    @tf.function(autograph=False)
    def total():
        return tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses])

    total.get_concrete_function()
    return [total]


def _build_archive(
    model, feature_vector, labels, protocol, top_k, jit_compile, antialias, logits_layer=None
):
    root = _ReusableRoot()
    # The very tf.Variables the functions read (tracking the Keras model itself would save a
    # second copy of every weight).
    used = _feature_extractor(model) if feature_vector else model
    root.variables = [v.value for v in used.variables]
    root.trainable_variables = [v.value for v in used.trainable_variables]
    root.regularization_losses = _regularization_losses(used)
    info = {}
    if feature_vector:
        features, channels = features_function(model)
        root.__call__ = _reusable_call(features)
        run = _shared_function(features, jit_compile)
        info["feature_dim"] = channels

        @tf.function(input_signature=[_input_spec("clips", tf.float32)], autograph=False)
        def serve_features(clips):
            return {"features": run(clips)}

        info["signatures"] = [SERVING_DEFAULT]
        return _SavedModelArchive(root, {SERVING_DEFAULT: serve_features}), info

    logits_fn = logits_function(model, logits_layer)
    info["logits"] = _find_logits(model, logits_layer).describe()
    root.__call__ = _reusable_call(logits_fn)
    classes = int(model.outputs[0].shape[-1])
    names = _resolve_labels(labels, classes)
    top_k = min(int(top_k), classes)
    label_table = tf.constant(names, tf.string)
    run = _shared_function(logits_fn, jit_compile)
    single = protocol.single_view()

    @tf.function(input_signature=[_input_spec("video", tf.uint8)], autograph=False)
    def serve_video(video):
        clips = views.video_views(video, single, antialias=antialias)
        logits = run(clips[:, 0])
        return {"logits": logits, **_classifier_outputs(logits, label_table, top_k)}

    @tf.function(input_signature=[_input_spec("clips", tf.float32)], autograph=False)
    def serve_float(clips):
        logits = run(clips)
        return {"logits": logits, **_classifier_outputs(logits, label_table, top_k)}

    @tf.function(input_signature=[_input_spec("video", tf.uint8)], autograph=False)
    def serve_multiview(video):
        clips = views.video_views(video, protocol, antialias=antialias)
        shape = tf.shape(clips)
        flat = tf.reshape(clips, tf.concat([[-1], shape[2:]], axis=0))
        view_logits = tf.reshape(run(flat), [shape[0], shape[1], classes])
        probabilities = tf.reduce_mean(tf.nn.softmax(view_logits, axis=-1), axis=1)
        outputs = _classifier_outputs(None, label_table, top_k, probabilities=probabilities)
        return {"view_logits": view_logits, **outputs}

    signatures = {
        SERVING_DEFAULT: serve_video,
        SERVE_FLOAT: serve_float,
        SERVE_MULTIVIEW: serve_multiview,
    }
    info.update(classes=classes, labels=names, top_k=top_k, signatures=list(signatures))
    return _SavedModelArchive(root, signatures), info


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


def _write_version(write, parent, version, overwrite):
    """`write(tmp)` a SavedModel next to its version folders, then rename it to
    `<parent>/<version>` (or the next free version). Returns the final path."""
    os.makedirs(parent, exist_ok=True)
    if version is not None:
        target = os.path.join(parent, str(version))
        with atomic.atomic_path(target, overwrite=overwrite) as tmp:
            write(tmp)
        return target
    tmp = atomic.temporary_name(os.path.join(parent, "next"))
    try:
        write(tmp)
        atomic.normal_permissions(tmp)  # TensorFlow makes its folders 0755 whatever the umask
        # A concurrent export may take the version we picked: try the next one (the rename
        # onto a non-empty version folder fails).
        for _ in range(100):
            versions = _numeric_versions(parent)
            target = os.path.join(parent, str(versions[-1] + 1 if versions else 1))
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not os.path.exists(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError(f"Could not find a free version number in {parent!r}.")


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
    protocol=None,
    antialias=False,
    precision="float32",
    jit_compile=False,
    logits_layer=None,
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
        protocol: the `ViewProtocol` of the serving signatures (default: the official
            Kinetics 4x3 protocol, `keras_vswin.data.KINETICS`; SSv2 models want
            `keras_vswin.data.SSV2`); a fixed model input shape sets its clip length and crop
            size. Its `fps` is recorded for clients (a SavedModel sees frames, not timestamps;
            `keras-vswin predict` decodes at that rate).
        antialias: low-pass filter when frames are shrunk (off, like the official pipeline;
            turn it on for clients that send frames much larger than `resolution`).
        precision: "float32" or "bfloat16" (mixed precision, float32 outputs).
        jit_compile: compile the model part of the signatures with XLA.
        logits_layer: name of the layer whose output are the logits, for classifiers whose
            head `logits_function` cannot read by itself (a head it cannot read is refused).
        verbose: print the written signatures.

    Returns:
        The folder holding the written SavedModel.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    # The signatures normalise inside: a model that normalises raw clips itself (its first
    # layer a ClipNormalization) is exported without that layer, or clips would be normalised
    # twice.
    model = without_clip_normalization(model)
    version = _check_version(version)
    if feature_vector and logits_layer is not None:
        raise ValueError("`logits_layer` is for classifier exports, not `feature_vector=True`.")
    protocol = model_protocol(model, protocol)
    export_model = with_precision(model, precision, logits_layer)
    archive, info = _build_archive(
        export_model,
        feature_vector,
        labels,
        protocol,
        top_k,
        jit_compile,
        antialias,
        logits_layer,
    )
    metadata = {
        "format": "keras_vswin.saved_model/1",
        "flavour": "feature_vector" if feature_vector else "classifier",
        "model_name": model.name,
        "signatures": info["signatures"],
        "protocol": protocol.to_dict(),
        "antialias": bool(antialias),
        "precision": precision,
        "jit_compile": bool(jit_compile),
        "classes": info.get("classes"),
        "logits": info.get("logits"),
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
        return _write_version(write, os.path.join(path, name or model.name), version, overwrite)
    if version is not None:
        raise ValueError("`version` needs versioned=True.")
    with atomic.atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    return path


# ----------------------------------------------------------------------------------------------
# Fine-tuning an export from Keras 3.


@keras.saving.register_keras_serializable(package="keras_vswin")
class ReusableLayer(keras.layers.Layer):
    """A trainable Keras 3 layer over a Reusable SavedModel (TensorFlow backend).

    `keras.layers.TFSMLayer(path, trainable=True)` trains with SGD but not with optimizers that
    keep slot variables (Adam, AdamW): it names the variables after their TensorFlow names,
    `.../kernel:0`, which are not valid scope names for the slots. This layer wraps the same
    variables under valid names and calls the SavedModel's `__call__(inputs, training)`, so
    dropout and stochastic depth follow Keras' training flag and gradients reach every
    variable the export marks trainable.

    Args:
        path: an export of `export_saved_model` (a version folder, or its parent: the latest
            version), or any SavedModel implementing the Reusable SavedModel API.
        trainable: whether the SavedModel's trainable variables train.

    Inputs: float32 RGB clips `(batch, frames, height, width, 3)` in [0, 1]. Outputs: logits
    (classifier exports) or `(batch, channels)` features (feature-vector exports).
    """

    def __init__(self, path, trainable=True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.saved_model_path = os.fspath(path)
        directory = latest_version_dir(self.saved_model_path)
        self._loaded = tf.saved_model.load(directory)
        if not callable(self._loaded) or not hasattr(self._loaded, "variables"):
            raise ValueError(
                f"{directory!r} is not a Reusable SavedModel (no __call__ or variables): "
                "export it again with keras_vswin.export_saved_model."
            )
        trainable_ids = {id(v) for v in getattr(self._loaded, "trainable_variables", ())}
        self.saved_variables = [
            keras.Variable(
                v,  # the loaded tf.Variable itself, not a copy: the SavedModel's functions read it
                trainable=id(v) in trainable_ids,
                name=v.name.split(":")[0].replace("/", "_"),
            )
            for v in self._loaded.variables
        ]
        self._regularizers = list(getattr(self._loaded, "regularization_losses", ()))
        self.built = True

    def call(self, inputs, training=False):
        outputs = self._loaded(tf.cast(inputs, tf.float32), training=bool(training))
        if training and self.trainable:
            for loss in self._regularizers:
                self.add_loss(loss())
        return outputs

    def get_config(self):
        return {**super().get_config(), "path": self.saved_model_path}


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
    # `tf.raw_ops` lists every op TensorFlow itself registers (custom ops are not in it).
    return sorted(
        op for op in saved_model_op_types(path) if op in PYTHON_OPS or not hasattr(tf.raw_ops, op)
    )
