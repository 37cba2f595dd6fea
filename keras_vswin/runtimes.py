"""Export a Video Swin classifier to deployment runtimes: ONNX, LiteRT and OpenVINO.

`export_runtime(model, "swin_t.onnx", "onnx")` writes one file (OpenVINO: `.xml` + `.bin`)
plus a sidecar `<file>.json` (input shape, view protocol, normalisation, labels). Every format
takes the same input, `video`: a uint8 RGB clip `(batch, frames, height, width, 3)`, already
cut to the centre view of the model's protocol (`clip_len` frames every `frame_interval`, the
shorter side resized to `crop_size`, the centre square), and returns float32 `logits`
`(batch, classes)`; the `(x - mean) / std` normalisation runs inside the graph, as in the
SavedModel's serving signature. Apply softmax in the client for probabilities.

- `onnx`: Keras' ONNX export (tf2onnx). Batch, frames, height and width are dynamic unless the
  model or `input_shape` fixes them (frames must stay a multiple of the temporal patch size and
  the spatial sizes of the spatial one). Needs the `[onnx]` extra.
- `litert`: Keras' LiteRT export restricted to builtin ops (no Flex / TF Select), at a static
  shape (`input_shape`, else the model's, else the protocol's clip length and crop size), so
  the interpreter's default XNNPACK delegate runs the whole graph. `precision="float16"` stores
  float16 weights, `"int8"` int8 weights (dynamic-range quantisation); both compute in float32.
  Needs the `[litert]` extra to run (conversion uses TensorFlow's converter).
- `openvino`: Keras' OpenVINO export, float32 weights in the IR, dynamic like ONNX. The window
  attention is traced in the form the CPU plugin fuses into one kernel per block (scale, bias,
  shift mask, softmax and both matmuls; see `layers.runtime_attention_form`). On CPUs with
  bfloat16 support OpenVINO computes in bf16 by default: compile with
  `{"INFERENCE_PRECISION_HINT": "f32"}` for float32 results (the sidecar records it), or keep
  bf16 for speed (top-1 agrees, logits differ by ~1e-3). Reshaping the model to the clip's
  static shape before compiling (`model.reshape({0: [1, *input_shape]})`) makes it faster.
  Needs the `[openvino]` extra.

The model file and its sidecar are written under temporary names and renamed when complete;
an existing export is only replaced with `overwrite=True`.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import shutil
import tempfile

import keras

from keras_vswin.layers import runtime_attention_form
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB, ClipNormalization

__all__ = ["FORMATS", "PRECISIONS", "export_runtime", "require_extra", "serving_model"]

FORMATS = ("onnx", "litert", "openvino")
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite", "openvino": ".xml"}
PRECISIONS = {
    "onnx": ("float32",),
    "litert": ("float32", "float16", "int8"),
    "openvino": ("float32",),
}
# The packages each format needs, and the extra that installs them.
_NEEDS = {
    "onnx": ("tf2onnx", "onnx"),
    "litert": (),  # conversion is TensorFlow's own; running needs ai_edge_litert
    "openvino": ("openvino",),
}
_RUNTIME = {"onnx": "onnxruntime", "litert": "ai_edge_litert", "openvino": "openvino"}
INPUT_NAME = "video"


def require_extra(format, runtime=False):
    """Raise ImportError naming the extra when a package the format needs is missing."""
    modules = _NEEDS[format] + ((_RUNTIME[format],) if runtime else ())
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"The {format!r} format needs {', '.join(missing)}: pip install 'keras-vswin[{format}]'"
        )


@keras.saving.register_keras_serializable(package="keras_vswin")
def serving_model(model, input_shape=None):
    """A Keras model `video` uint8 `(batch, *input_shape)` -> float32 logits `(batch, classes)`
    sharing `model`'s weights: normalisation in front, the softmax of the head left out.

    Args:
        model: a Video Swin classifier (softmax or logits head).
        input_shape: `(frames, height, width, 3)`; default the model's own (None entries stay
            dynamic).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"Model {model.name!r} does not output class scores `(batch, classes)`; only "
            "classifiers can be exported to runtimes."
        )
    shape = tuple(model.input_shape[1:]) if input_shape is None else tuple(input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (frames, height, width, 3), got {shape!r}.")
    for want, have in zip(model.input_shape[1:], shape, strict=True):
        if want is not None and have != want:
            raise ValueError(
                f"`input_shape` {shape!r} disagrees with the model's input {model.input_shape}."
            )
    head = model.layers[-1]
    video = keras.Input(shape, dtype="uint8", name=INPUT_NAME)
    x = ClipNormalization(name="normalize")(video)
    activation = getattr(getattr(head, "activation", None), "__name__", "linear")
    if not isinstance(head, keras.layers.Dense) or activation == "linear":
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(model(x))
        return keras.Model(video, logits, name=f"{model.name}_serving")
    if activation != "softmax":
        raise ValueError(f"The model's head applies {activation!r}; only softmax heads export.")
    features = keras.Model(model.input, head.input, name=f"{model.name}_backbone")(x)
    dense = keras.layers.Dense(head.units, use_bias=head.use_bias, dtype="float32", name="logits")
    logits = dense(features)
    dense.set_weights(head.get_weights())
    return keras.Model(video, logits, name=f"{model.name}_serving")


def _static_shape(model, input_shape, protocol):
    if input_shape is not None:
        shape = tuple(input_shape)
    else:
        from keras_vswin.export import model_protocol

        p = model_protocol(model, protocol)
        shape = tuple(model.input_shape[1:])
        defaults = (p.clip_len, p.crop_size, p.crop_size, 3)
        shape = tuple(d if s is None else s for s, d in zip(shape, defaults, strict=True))
    if any(d is None for d in shape):
        raise ValueError(f"LiteRT needs a static `input_shape`, got {shape!r}.")
    return shape


def _convert(serving, target, format, precision):
    import tensorflow as tf

    spec = keras.InputSpec(shape=(None, *serving.input_shape[1:]), dtype="uint8")
    if format == "litert":
        spec = keras.InputSpec(shape=(1, *serving.input_shape[1:]), dtype="uint8")
        kwargs = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
        if precision == "float16":
            kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
            kwargs["target_spec"]["supported_types"] = [tf.float16]
        elif precision == "int8":
            kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
        serving.export(target, format="litert", input_signature=[spec], verbose=False, **kwargs)
    elif format == "openvino":
        # The attention in the form OpenVINO's CPU plugin fuses into one kernel per block.
        with runtime_attention_form():
            serving.export(target, format=format, input_signature=[spec], verbose=False)
    else:
        serving.export(target, format=format, input_signature=[spec], verbose=False)
    if format == "openvino":
        import openvino

        converted = openvino.Core().read_model(target)
        # The converter also lists internal tensors of the TF graph (shape slices, masks) as
        # outputs; the first is the logits. Keep it alone, under the contract's names.
        logits = converted.output(0)
        logits.get_tensor().set_names({"logits"})
        converted.input(0).get_tensor().set_names({INPUT_NAME})
        pruned = openvino.Model([logits], converted.get_parameters(), converted.get_name())
        os.remove(target)
        os.remove(target[: -len(".xml")] + ".bin")
        openvino.save_model(pruned, target, compress_to_fp16=False)
    if format == "onnx":
        import onnx

        graph = onnx.load(target)
        onnx.checker.check_model(graph)
        # tf2onnx names the tensors after TF's graph ("Identity:0"); clients want the contract.
        old_in, old_out = graph.graph.input[0].name, graph.graph.output[0].name
        for node in graph.graph.node:
            node.input[:] = [INPUT_NAME if n == old_in else n for n in node.input]
            node.output[:] = ["logits" if n == old_out else n for n in node.output]
            node.input[:] = ["logits" if n == old_out else n for n in node.input]
        graph.graph.input[0].name, graph.graph.output[0].name = INPUT_NAME, "logits"
        onnx.checker.check_model(graph)
        onnx.save(graph, target)


def export_runtime(
    model,
    path,
    format,
    *,
    input_shape=None,
    precision="float32",
    protocol=None,
    labels=None,
    overwrite=False,
):
    """Export a Video Swin classifier to ONNX, LiteRT or OpenVINO (see the module doc).

    Args:
        model: a Video Swin classifier (`keras.Model`).
        path: the model file: `.onnx`, `.tflite` or `.xml` (OpenVINO writes a `.bin` next to
            it); the suffix is added when missing.
        format: "onnx", "litert" or "openvino".
        input_shape: `(frames, height, width, 3)` of the exported input. Default: the model's
            (dynamic where the model is, except LiteRT: the protocol's clip length and crop).
        precision: "float32"; LiteRT also "float16" or "int8" (weights only).
        protocol: the `ViewProtocol` clients cut the clip with (recorded in the sidecar).
        labels: class names (label set name, text file or sequence) for the sidecar.
        overwrite: replace an existing export.

    Returns:
        The path of the written model file.
    """
    from keras_vswin.export import _resolve_labels, model_protocol

    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    if precision not in PRECISIONS[format]:
        raise ValueError(
            f"`precision` for {format} must be one of {PRECISIONS[format]}, got {precision!r}."
        )
    require_extra(format)
    path = os.fspath(path)
    if not path.endswith(SUFFIXES[format]):
        path += SUFFIXES[format]
    stem = path[: -len(SUFFIXES[format])]
    sidecar = path + ".json"
    outputs = [path, sidecar] + ([stem + ".bin"] if format == "openvino" else [])
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite (overwrite=True).")
    if format == "litert":
        input_shape = _static_shape(model, input_shape, protocol)
    serving = serving_model(model, input_shape)
    protocol = model_protocol(model, protocol)
    classes = int(serving.outputs[0].shape[-1])
    shape = [None, *serving.input_shape[1:]] if format != "litert" else [1, *input_shape]
    metadata = {
        "format": f"keras_vswin.{format}/1",
        "model_name": model.name,
        "precision": precision,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": shape},
        "output": {"name": "logits", "dtype": "float32", "shape": [None, classes]},
        "protocol": protocol.to_dict(),
        **({"compile_config": {"INFERENCE_PRECISION_HINT": "f32"}} if format == "openvino" else {}),
        "normalisation": {"mean": list(MEAN_RGB), "std": list(STD_RGB), "inside": True},
        "labels": list(_resolve_labels(labels, classes)),
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-tmp-", dir=parent)
    try:
        base = os.path.basename(stem)
        target = os.path.join(tmp, base + SUFFIXES[format])
        _convert(serving, target, format, precision)
        with open(os.path.join(tmp, os.path.basename(sidecar)), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")
        # The sidecar last: a reader that finds it finds a complete model.
        order = sorted(outputs, key=lambda p: (p.endswith(".json"), not p.endswith(".bin")))
        for out in order:
            written = os.path.join(tmp, os.path.basename(out))
            if not os.path.exists(written) or os.path.getsize(written) == 0:
                raise OSError(f"The {format} export did not write {os.path.basename(out)}.")
            os.replace(written, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


EXPORT_FORMATS = ("saved_model", "onnx", "litert", "openvino")


def export_model(model, path, format="saved_model", **kwargs):
    """Export `model` in `format`: "saved_model" (`export_saved_model(model, path, **kwargs)`)
    or a runtime file, "onnx", "litert" or "openvino" (`keras_vswin.runtimes.export_runtime`).
    Returns the written path."""
    if format == "saved_model":
        from keras_vswin.export import export_saved_model

        return export_saved_model(model, path, **kwargs)
    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be one of {EXPORT_FORMATS}, got {format!r}.")
    return export_runtime(model, path, format, **kwargs)
