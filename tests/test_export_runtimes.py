"""ONNX, LiteRT and OpenVINO exports run in their own runtimes and match Keras.

The runtimes run in a fresh process that does not import keras_vswin (what a deployment has).
They are in the test extras: a missing runtime fails these tests, it does not skip them.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vswin
from keras_vswin.runtimes import export_model, export_runtime, require_extra, serving_model

SMALL = dict(
    embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5,
    drop_path_rate=0.0, head_dropout_rate=0.0,
)  # fmt: skip
SMALL_SHAPE = (4, 32, 32, 3)
SWIN_T_SHAPE = (8, 112, 112, 3)

# Runs an export in its runtime: argv = format, model file, input .npy, output .npy.
RUNNER = r"""
import sys
import numpy as np

fmt, path, inputs, outputs = sys.argv[1:]
clips = np.load(inputs)
if fmt == "onnx":
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"video": clips})[0]
elif fmt.startswith("openvino"):
    import openvino

    hint = "bf16" if fmt == "openvino-bf16" else "f32"  # the CPU default may be bf16
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    logits = np.asarray(compiled(clips)[compiled.output("logits")])
else:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)  # default delegates: XNNPACK
    interpreter.allocate_tensors()
    (tensor_in,), (tensor_out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for clip in clips:
        interpreter.set_tensor(tensor_in["index"], clip[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(tensor_out["index"]))
    logits = np.concatenate(rows)
if "keras_vswin" in sys.modules or "keras" in sys.modules:
    raise SystemExit("the runtime process imported keras")
np.save(outputs, logits)
"""


def run_in_runtime(directory, fmt, path, clips):
    directory = str(directory)
    script = os.path.join(directory, "runner.py")
    with open(script, "w") as f:
        f.write(RUNNER)
    inputs, outputs = os.path.join(directory, "in.npy"), os.path.join(directory, "out.npy")
    np.save(inputs, clips)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, script, fmt, str(path), inputs, outputs],
        capture_output=True,
        text=True,
        cwd=directory,  # not the repo root: keras_vswin is not importable by accident
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(outputs)


def random_clips(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def keras_logits(model, clips):
    # The reference: the Keras model on clips normalised by the library's preprocessing.
    x = keras_vswin.preprocess_input(clips.astype("float32"))
    logits = serving_model(model)(clips)
    probabilities = keras.ops.convert_to_numpy(model(x))
    logits = keras.ops.convert_to_numpy(logits)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probabilities, atol=1e-6
    )
    return logits


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(3)
    return keras_vswin.VideoSwin(**SMALL)


@pytest.fixture(scope="module")
def swin_t():
    keras.utils.set_random_seed(4)
    return keras_vswin.VideoSwinT(weights=None, head_dropout_rate=0.0, drop_path_rate=0.0)


def test_onnx_one_dynamic_graph_two_sizes(small, tmp_path):
    path = export_runtime(small, tmp_path / "small", "onnx")
    assert path.endswith(".onnx")
    sidecar = json.loads(open(path + ".json").read())
    assert sidecar["input"] == {"name": "video", "dtype": "uint8", "shape": [None] * 4 + [3]}
    for i, shape in enumerate([SMALL_SHAPE, (6, 48, 40, 3)]):
        clips = random_clips(2 + i, shape, seed=i)
        got = run_in_runtime(tmp_path, "onnx", path, clips)
        assert got.shape == (2 + i, 5)
        np.testing.assert_allclose(got, keras_logits(small, clips), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_small_float32(small, tmp_path, fmt):
    path = export_runtime(small, tmp_path / "small", fmt, input_shape=SMALL_SHAPE)
    clips = random_clips(3, SMALL_SHAPE, seed=7)
    got = run_in_runtime(tmp_path, fmt, path, clips)
    np.testing.assert_allclose(got, keras_logits(small, clips), atol=1e-4, rtol=0)


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_litert_reduced_precision_top1(small, tmp_path, precision):
    f32 = export_runtime(small, tmp_path / "f32", "litert", input_shape=SMALL_SHAPE)
    low = export_runtime(
        small, tmp_path / precision, "litert", input_shape=SMALL_SHAPE, precision=precision
    )
    assert os.path.getsize(low) < 0.75 * os.path.getsize(f32)  # the weights really shrank
    clips = random_clips(20, SMALL_SHAPE, seed=11)
    reference = keras_logits(small, clips)
    got = run_in_runtime(tmp_path, "litert", low, clips)
    np.testing.assert_array_equal(got.argmax(-1), reference.argmax(-1))
    assert np.abs(got - reference).max() > 0  # a different computation, not the float32 model


def test_openvino_bf16_hint_top1(small, tmp_path):
    path = export_runtime(small, tmp_path / "small", "openvino")
    clips = random_clips(20, SMALL_SHAPE, seed=12)
    reference = keras_logits(small, clips)
    got = run_in_runtime(tmp_path, "openvino-bf16", path, clips)
    np.testing.assert_array_equal(got.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_swin_t_float32(swin_t, tmp_path, fmt):
    # A static shape: the dynamic ONNX graph is tested on the small model (converting Swin-T
    # dynamically takes tf2onnx several minutes).
    path = export_runtime(swin_t, tmp_path / "swin_t", fmt, input_shape=SWIN_T_SHAPE)
    clips = random_clips(2, SWIN_T_SHAPE, seed=5)
    got = run_in_runtime(tmp_path, fmt, path, clips)
    reference = keras_logits(swin_t, clips)
    assert got.shape == (2, 400)
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0)


def openvino_layer_types(path, input_shape):
    import openvino

    core = openvino.Core()
    model = core.read_model(path)
    model.reshape({0: [1, *input_shape]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runtime = compiled.get_runtime_model()
    return [op.get_rt_info()["layerType"].astype(str) for op in runtime.get_ordered_ops()]


def test_openvino_runs_each_attention_fused(swin_t, tmp_path):
    # The CPU plugin fuses a block's attention (both matmuls, scale, bias, mask, softmax) into
    # one Subgraph; any attention left unfused shows as separate MatMul and Softmax layers.
    # At the benchmarked 16x224x224 (compiled only): at 8x112x112 the plugin leaves the stages
    # of a single window (196 and 64 tokens) unfused.
    shape = (16, 224, 224, 3)
    path = export_runtime(swin_t, tmp_path / "swin_t", "openvino", input_shape=shape)
    layers = openvino_layer_types(path, shape)
    assert "Softmax" not in layers and "MatMul" not in layers, sorted(set(layers))
    assert "Subgraph" in layers


def test_litert_has_builtin_ops_only(small, tmp_path):
    path = export_runtime(small, tmp_path / "small", "litert", input_shape=SMALL_SHAPE)
    with open(path, "rb") as f:
        data = f.read()
    assert b"Flex" not in data  # TF Select ops are stored as custom "Flex..." codes


def test_litert_needs_a_static_shape(small, tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        export_runtime(small, tmp_path / "x", "litert", input_shape=(None, 32, 32, 3))


def test_bad_arguments_and_existing_files(small, tmp_path):
    with pytest.raises(ValueError, match="format"):
        export_runtime(small, tmp_path / "x", "tensorrt")
    with pytest.raises(ValueError, match="format"):
        export_model(small, tmp_path / "x", format="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        export_runtime(small, tmp_path / "x", "onnx", precision="int8")
    with pytest.raises(ValueError, match="input_shape"):
        export_runtime(small, tmp_path / "x", "onnx", input_shape=(4, 32, 32))
    (tmp_path / "taken.onnx").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_runtime(small, tmp_path / "taken.onnx", "onnx")
    assert (tmp_path / "taken.onnx").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("fmt", "module"), [("onnx", "tf2onnx"), ("openvino", "openvino"), ("litert", "ai_edge_litert")]
)
def test_missing_runtime_names_the_extra(monkeypatch, fmt, module):
    require_extra(fmt, runtime=True)  # installed here (the test extras include the runtimes)
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without it sees
    with pytest.raises(ImportError, match=rf"keras-vswin\[{fmt}\]"):
        require_extra(fmt, runtime=True)


def test_cli_exports_onnx(small, tmp_path):
    from keras_vswin.cli.export import main

    source = tmp_path / "small.keras"
    small.save(source)
    target = tmp_path / "cli.onnx"
    assert main([str(source), "--format", "onnx", "--output", str(target)]) == 0
    clips = random_clips(1, SMALL_SHAPE, seed=2)
    got = run_in_runtime(tmp_path, "onnx", target, clips)
    np.testing.assert_allclose(got, keras_logits(small, clips), atol=1e-4, rtol=0)
    assert main([str(source), "--format", "onnx", "--output", str(target)]) == 2  # exists
    assert main([str(source), "--format", "onnx", "--output", str(target), "--precision",
                 "int8"]) == 2  # fmt: skip
