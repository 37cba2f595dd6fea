"""SavedModel export: signatures, fresh-process serving, core ops, versions, precision, TF Hub use.

One tiny classifier is exported once for the module; a fresh Python process that never imports
keras_vswin (and `saved_model_cli`) runs it on two clip sizes and the outputs are compared with
the Keras model and an independent NumPy transcription of the official test pipeline.
"""

import json
import os
import stat
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vswin
from keras_vswin import data, export
from keras_vswin.data import ViewProtocol, views

TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5)
LABELS = ["walking", "running", "jumping", "sitting", "waving"]
CLIP_LEN, INTERVAL, NUM_CLIPS, CROP = 4, 2, 2, 32
# Two video sizes: landscape (crops along the width) and portrait, shorter than a clip (loops).
VIDEO_A = (2, 9, 48, 72)
VIDEO_B = (1, 5, 80, 40)
CLIPS_A = (2, 4, 32, 32)
CLIPS_B = (1, 6, 40, 52)


def tiny_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = keras_vswin.VideoSwin(**{**TINY, **kwargs})
    head = model.get_layer("predictions")
    head.kernel.assign(head.kernel * 100.0)  # confident predictions: a stable top-k order
    return model


def logits_model(model):
    """An independent logits model: the same architecture without the softmax."""
    twin = keras_vswin.VideoSwin(**TINY, classifier_activation=None)
    twin.set_weights(model.get_weights())
    return twin


def reference_views(video, num_clips, num_crops):
    """The official test pipeline in NumPy (mmaction SampleFrames test mode + Resize(-1, CROP) +
    CenterCrop / ThreeCrop), the resize itself by tf.image.resize: `(B, views, T, C, C, 3)`."""
    batch, frames, height, width = video.shape[:4]
    span = CLIP_LEN * INTERVAL
    if frames > span - 1:
        average = (frames - span + 1) / num_clips
        offsets = (np.arange(num_clips) * average + average / 2.0).astype(int)
    else:
        offsets = np.zeros(num_clips, int)
    indices = (offsets[:, None] + np.arange(CLIP_LEN)[None] * INTERVAL) % frames
    clips = video[:, indices.reshape(-1)].reshape(-1, height, width, 3)
    scale = CROP / min(height, width)
    size = (CROP, round(width * scale)) if height <= width else (round(height * scale), CROP)
    resized = tf.image.resize(clips.astype("float32"), size).numpy()
    resized = np.clip(np.round(resized), 0, 255)  # the official pipeline keeps uint8 frames
    long_room = max(size) - CROP
    steps = [long_room // 2] if num_crops == 1 else [0, long_room // 2, long_room]
    crops = []
    for step in steps:
        y, x = (0, step) if height <= width else (step, 0)
        crops.append(resized[:, y : y + CROP, x : x + CROP])
    views = np.stack(crops, 1).reshape(batch, num_clips, CLIP_LEN, num_crops, CROP, CROP, 3)
    views = views.transpose(0, 1, 3, 2, 4, 5, 6).reshape(batch, -1, CLIP_LEN, CROP, CROP, 3)
    return keras_vswin.preprocess_input(views)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    path, inputs, out = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    data = dict(np.load(inputs))
    results = {}
    for key, array in data.items():
        signature, _ = key.split(":")
        fn = loaded.signatures[signature]
        name = list(fn.structured_input_signature[1])[0]
        for output, value in fn(**{name: tf.constant(array)}).items():
            results[f"{key}:{output}"] = value.numpy()
    np.savez(out + ".npz", **results)

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(path + "/saved_model.pb", "rb").read())
    graph = proto.meta_graphs[0].graph_def
    functions = {f.signature.name for f in graph.library.function}
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    ops -= functions
    bad = sorted(o for o in ops if op_def_registry.get(o) is None or not hasattr(tf.raw_ops, o))
    signatures = {
        name: {
            "inputs": {k: [v.dtype.name, v.shape.as_list()]
                       for k, v in fn.structured_input_signature[1].items()},
            "outputs": {k: [v.dtype.name, v.shape.as_list()]
                        for k, v in fn.structured_outputs.items()},
        }
        for name, fn in loaded.signatures.items()
    }
    json.dump(
        {
            "keras_vswin_imported": "keras_vswin" in sys.modules,
            "ops": sorted(ops),
            "non_core": bad,
            "python_ops": sorted(ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}),
            "signatures": signatures,
        },
        open(out + ".json", "w"),
    )
    """
)


def run_fresh_process(tmp_path, path, inputs):
    """Run `inputs` ({"signature:tag": array}) through the SavedModel in a new interpreter."""
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)
    out = str(tmp_path / "outputs")
    proc = subprocess.run(
        [sys.executable, str(script), path, str(tmp_path / "inputs.npz"), out],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),  # not the repository root: keras_vswin must not be importable by path
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out + ".json") as f:
        report = json.load(f)
    return dict(np.load(out + ".npz", allow_pickle=True)), report


def saved_model_cli(*args):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([cli, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def classifier():
    return tiny_model()


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    path = export.export_saved_model(
        classifier,
        base,
        name="tiny",
        labels=LABELS,
        protocol=ViewProtocol(
            clip_len=CLIP_LEN, frame_interval=INTERVAL, num_clips=NUM_CLIPS, crop_size=CROP
        ),
    )
    return base, path


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(1)
    return {
        "a": rng.integers(0, 256, (*VIDEO_A, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (*VIDEO_B, 3), dtype=np.uint8),
        "clips_a": rng.standard_normal((*CLIPS_A, 3)).astype("float32"),
        "clips_b": rng.standard_normal((*CLIPS_B, 3)).astype("float32"),
    }


@pytest.fixture(scope="module")
def fresh_outputs(exported, videos, tmp_path_factory):
    inputs = {
        "serving_default:a": videos["a"],
        "serving_default:b": videos["b"],
        "serve_float:a": videos["clips_a"],
        "serve_float:b": videos["clips_b"],
        "serve_multiview:a": videos["a"],
        "serve_multiview:b": videos["b"],
    }
    return run_fresh_process(tmp_path_factory.mktemp("fresh"), exported[1], inputs)


def test_versioned_layout_and_metadata(exported):
    base, path = exported
    assert path == os.path.join(base, "tiny", "1")
    assert sorted(os.listdir(os.path.join(base, "tiny"))) == ["1"]  # no temporary folder left
    metadata, labels = export.read_export_metadata(os.path.join(base, "tiny"))
    assert labels == tuple(LABELS)
    assert metadata["protocol"] == dict(
        clip_len=CLIP_LEN,
        frame_interval=INTERVAL,
        num_clips=NUM_CLIPS,
        crop_size=CROP,
        num_crops=3,
        sampling="dense",
        short_side=None,
        fps=None,
    )
    assert metadata["signatures"] == ["serving_default", "serve_float", "serve_multiview"]


def test_fresh_process_serves_without_keras_vswin(fresh_outputs):
    _, report = fresh_outputs
    assert report["keras_vswin_imported"] is False
    assert report["non_core"] == [] and report["python_ops"] == []
    assert {"Conv3D", "ResizeBilinear", "TopKV2", "GatherV2"} <= set(report["ops"])


def test_signature_shapes_and_dtypes(fresh_outputs):
    signatures = fresh_outputs[1]["signatures"]
    any_clip = [None, None, None, None, 3]
    assert signatures["serving_default"]["inputs"] == {"video": ["uint8", any_clip]}
    assert signatures["serve_float"]["inputs"] == {"clips": ["float32", any_clip]}
    assert signatures["serve_multiview"]["inputs"] == {"video": ["uint8", any_clip]}
    expected = {
        "probabilities": ["float32", [None, 5]],
        "logits": ["float32", [None, 5]],
        "top_k_indices": ["int32", [None, 5]],
        "top_k_labels": ["string", [None, 5]],
        "top_k_probabilities": ["float32", [None, 5]],
    }
    assert signatures["serving_default"]["outputs"] == expected
    assert signatures["serve_float"]["outputs"] == expected
    multiview = dict(expected, view_logits=["float32", [None, NUM_CLIPS * 3, 5]])
    del multiview["logits"]
    assert signatures["serve_multiview"]["outputs"] == multiview


def test_serve_float_matches_keras_for_two_clip_sizes(fresh_outputs, classifier, videos):
    outputs, _ = fresh_outputs
    twin = logits_model(classifier)
    for tag in ("a", "b"):
        clips = videos[f"clips_{tag}"]
        logits = np.asarray(twin(clips))
        np.testing.assert_allclose(outputs[f"serve_float:{tag}:logits"], logits, atol=1e-4)
        np.testing.assert_allclose(
            outputs[f"serve_float:{tag}:probabilities"], np.asarray(classifier(clips)), atol=1e-5
        )


def test_serving_default_is_the_centre_view(fresh_outputs, classifier, videos):
    outputs, _ = fresh_outputs
    twin = logits_model(classifier)
    for tag in ("a", "b"):
        views = reference_views(videos[tag], num_clips=1, num_crops=1)[:, 0]
        logits = np.asarray(twin(views))
        got = {
            k.split(":")[2]: v for k, v in outputs.items() if k.startswith(f"serving_default:{tag}")
        }
        np.testing.assert_allclose(got["logits"], logits, atol=1e-4)
        np.testing.assert_allclose(got["probabilities"], softmax(logits), atol=1e-5)
        order = np.argsort(-got["probabilities"], axis=1, kind="stable")
        np.testing.assert_array_equal(got["top_k_indices"], order)
        names = np.array(LABELS, dtype=object)[order]
        assert [[s.decode() for s in row] for row in got["top_k_labels"]] == names.tolist()
        np.testing.assert_allclose(
            got["top_k_probabilities"], np.take_along_axis(got["probabilities"], order, 1)
        )


def test_multiview_averages_softmax_over_clips_and_crops(fresh_outputs, classifier, videos):
    outputs, _ = fresh_outputs
    twin = logits_model(classifier)
    for tag in ("a", "b"):
        views = reference_views(videos[tag], num_clips=NUM_CLIPS, num_crops=3)
        batch, num_views = views.shape[:2]
        logits = np.asarray(twin(views.reshape(-1, *views.shape[2:]))).reshape(batch, num_views, 5)
        np.testing.assert_allclose(outputs[f"serve_multiview:{tag}:view_logits"], logits, atol=1e-4)
        np.testing.assert_allclose(
            outputs[f"serve_multiview:{tag}:probabilities"], softmax(logits).mean(1), atol=1e-5
        )


def test_saved_model_cli_show_and_run(exported, videos, classifier, tmp_path):
    path = exported[1]
    shown = saved_model_cli("show", "--all", "--dir", path)
    assert "signature_def['serving_default']" in shown
    assert "signature_def['serve_multiview']" in shown
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert (
        "inputs['video'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, -1, -1, -1, 3)"
        in default
    )
    assert "outputs['top_k_labels'] tensor_info:\n        dtype: DT_STRING" in default
    np.save(tmp_path / "video.npy", videos["b"])
    saved_model_cli(
        "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
        "--inputs", f"video={tmp_path / 'video.npy'}", "--outdir", str(tmp_path / "out"),
    )  # fmt: skip
    views = reference_views(videos["b"], num_clips=1, num_crops=1)[:, 0]
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "probabilities.npy"), np.asarray(classifier(views)), atol=1e-5
    )
    labels = np.load(tmp_path / "out" / "top_k_labels.npy", allow_pickle=True)
    assert labels.shape == (1, 5) and labels[0, 0].decode() in LABELS


def test_core_op_check_flags_python_callbacks(tmp_path):
    module = tf.Module()
    module.f = tf.function(
        lambda x: tf.py_function(np.square, [x], tf.float32),
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "py"), signatures=module.f)
    assert "EagerPyFunc" in export.non_core_ops(tmp_path / "py")


class _FakeArchive:
    """Writes a stand-in SavedModel instantly (the layout logic needs no real graph)."""

    def __init__(self, fail=False):
        self.fail = fail

    def write_out(self, path, verbose=False):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "w") as f:
            f.write("stub")
        if self.fail:
            raise RuntimeError("disk full")


def test_versions_are_atomic_numbered_and_protected(classifier, tmp_path, monkeypatch):
    info = {"signatures": [], "classes": 5, "labels": tuple(LABELS), "top_k": 5}
    monkeypatch.setattr(export, "_build_archive", lambda *a, **k: (_FakeArchive(), info))
    first = export.export_saved_model(classifier, tmp_path, name="m")
    os.makedirs(tmp_path / "m" / "7")  # TF Serving versions need not be contiguous
    assert export.export_saved_model(classifier, tmp_path, name="m") == str(tmp_path / "m" / "8")
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_saved_model(classifier, tmp_path, name="m", version=1)
    marker = tmp_path / "m" / "1" / "old"
    marker.write_text("x")
    assert export.export_saved_model(classifier, tmp_path, name="m", version=1, overwrite=True)
    assert first == str(tmp_path / "m" / "1") and not marker.exists()
    monkeypatch.setattr(export, "_build_archive", lambda *a, **k: (_FakeArchive(True), info))
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(classifier, tmp_path, name="m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "7", "8"]  # the failed one left nothing
    assert export.latest_version_dir(tmp_path / "m") == str(tmp_path / "m" / "8")


def test_bad_export_arguments_raise_named_errors(classifier, tmp_path):
    with pytest.raises(ValueError, match="labels"):
        export.export_saved_model(classifier, tmp_path, labels=["a", "b"])
    with pytest.raises(ValueError, match="feature_vector"):
        export.export_saved_model(keras_vswin.VideoSwin(**TINY, include_top=False), tmp_path)
    with pytest.raises(ValueError, match="softmax"):
        export.logits_function(keras_vswin.VideoSwin(**TINY, classifier_activation="sigmoid"))
    with pytest.raises(ValueError, match="precision"):
        export.export_saved_model(classifier, tmp_path, precision="float16")
    with pytest.raises(ValueError, match="num_clips"):
        export.export_saved_model(classifier, tmp_path, protocol={"sampling": "uniform"})
    assert not os.listdir(tmp_path)


def test_uniform_sampling_matches_the_ssv2_rule():
    protocol = data.SSV2.replace(clip_len=8)
    assert (protocol.sampling, protocol.num_clips, protocol.num_crops) == ("uniform", 1, 3)
    for num_frames in (3, 8, 50):
        segment = (num_frames - 1) / 8
        starts = np.round(segment * np.arange(8)).astype(int)
        ends = np.round(segment * np.arange(1, 9)).astype(int)
        video = np.arange(num_frames, dtype="float32")[None, :, None, None, None]
        frames = views.clip_frames(np.broadcast_to(video, (1, num_frames, 2, 2, 3)), protocol)
        np.testing.assert_array_equal(frames.numpy()[0, :, 0, 0, 0], (starts + ends) // 2)


def test_bfloat16_xla_export_matches_float32(classifier, exported, videos, tmp_path):
    path = export.export_saved_model(
        classifier,
        tmp_path,
        name="fast",
        labels=LABELS,
        protocol=ViewProtocol(clip_len=CLIP_LEN, num_clips=NUM_CLIPS, crop_size=CROP),
        precision="bfloat16",
        jit_compile=True,
    )
    graph = open(os.path.join(path, "saved_model.pb"), "rb").read()
    assert b"_XlaMustCompile" in graph
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(graph)
    dtypes = {
        attr.type
        for f in proto.meta_graphs[0].graph_def.library.function
        for node in f.node_def
        if node.op == "BatchMatMulV2"
        for attr in [node.attr["T"]]
    }
    assert tf.bfloat16.as_datatype_enum in dtypes
    assert export.non_core_ops(path) == []
    fast = tf.saved_model.load(path).signatures
    reference = tf.saved_model.load(exported[1]).signatures
    for tag in ("a", "b"):  # dynamic shapes under XLA: one compilation per clip size
        clips = tf.constant(videos[f"clips_{tag}"])
        got = fast["serve_float"](clips=clips)
        want = reference["serve_float"](clips=clips)
        assert got["probabilities"].dtype == tf.float32
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=0.05, atol=0.5)
        np.testing.assert_array_equal(
            got["top_k_indices"][:, 0].numpy(), want["top_k_indices"][:, 0].numpy()
        )


def test_feature_vector_export_trains_a_head_through_tfsmlayer(classifier, tmp_path):
    path = export.export_saved_model(classifier, tmp_path, name="features", feature_vector=True)
    metadata, labels = export.read_export_metadata(path)
    assert metadata["flavour"] == "feature_vector" and metadata["feature_dim"] == 32
    assert labels is None and export.non_core_ops(path) == []
    # Every weight is stored once, and TF Hub's `trainable_variables` are the ones served.
    backbone_bytes = 4 * (classifier.count_params() - 32 * 5 - 5)
    stored = os.path.getsize(os.path.join(path, "variables", "variables.data-00000-of-00001"))
    assert backbone_bytes <= stored < 1.1 * backbone_bytes
    hub = keras.layers.TFSMLayer(path, call_endpoint="serving_default", trainable=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8, 64, 64, 3)).astype("float32")
    pooled = keras.Model(classifier.input, classifier.get_layer("avg_pool").output)
    np.testing.assert_allclose(hub(x)["features"], pooled(x), atol=1e-5)

    inputs = keras.Input((8, 64, 64, 3))
    features = hub(inputs)["features"]
    outputs = keras.layers.Dense(3, activation="softmax", name="new_head")(features)
    model = keras.Model(inputs, outputs)
    assert [w.path for w in model.trainable_weights] == ["new_head/kernel", "new_head/bias"]
    backbone_before = [np.array(w) for w in hub.non_trainable_weights]
    head_before = [np.array(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    history = model.fit(x, np.array([0, 1, 2, 0, 1, 2]), epochs=4, batch_size=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert all(np.any(a != np.array(w)) for a, w in zip(head_before, model.trainable_weights))
    assert all(
        np.array_equal(a, np.array(w)) for a, w in zip(backbone_before, hub.non_trainable_weights)
    )
    assert np.all(np.isfinite(model.predict(x, verbose=0)))


def test_registry_weights_bring_their_test_protocol():
    assert export.preset_protocol("kinetics400", "T") == (data.KINETICS, "kinetics400")
    protocol, labels = export.preset_protocol("something_something_v2", "B")
    assert protocol == data.SSV2
    assert (protocol.num_views, labels) == (3, "something_something_v2")
    protocol, _ = export.preset_protocol("kinetics400_torchvision", "T")
    assert (protocol.num_clips, protocol.num_crops, protocol.resize_to, protocol.fps) == (
        12,
        1,
        256,
        15.0,
    )
    assert export.preset_protocol("model.keras", "T") is None


def test_a_fixed_input_shape_sets_clip_length_and_crop():
    model = keras_vswin.VideoSwin(**TINY, input_shape=(6, 40, 40, 3))
    assert export.model_protocol(model) == data.KINETICS.replace(clip_len=6, crop_size=40)
    assert export.model_protocol(model, data.SSV2).sampling == "uniform"


def test_short_side_resize_then_centre_crop():
    protocol = ViewProtocol(clip_len=2, frame_interval=1, num_clips=1, crop_size=32,
                            num_crops=1, short_side=40)  # fmt: skip
    columns = np.broadcast_to(np.arange(60, dtype="float32")[None, :, None], (80, 60, 3))
    rows = np.broadcast_to(np.arange(80, dtype="float32")[:, None, None], (80, 60, 3))
    video = np.stack([columns, rows])[None]  # 2 frames of 80x60: x and y coordinates
    crops = views.spatial_views(video, protocol).numpy()[0, 0]  # (2, 32, 32, 3), normalised
    pixels = (
        crops * np.array(keras_vswin.preprocessing.STD_RGB) + keras_vswin.preprocessing.MEAN_RGB
    )
    # 80x60 -> 53x40 (shorter side 40), then the centre 32x32: rows 10-41, columns 4-35
    # (bilinear sampling of a ramp at pixel centres, rounded to integers).
    expected_columns = np.round((np.arange(4, 36) + 0.5) * 60 / 40 - 0.5)
    expected_rows = np.round((np.arange(10, 42) + 0.5) * 80 / 53 - 0.5)
    np.testing.assert_allclose(pixels[0, 0, :, 0], expected_columns, atol=1e-3)
    np.testing.assert_allclose(pixels[1, :, 0, 0], expected_rows, atol=1e-3)
    with pytest.raises(ValueError, match="short_side"):
        ViewProtocol(crop_size=224, short_side=200)


# ----------------------------------------------------------------------------------------------
# Heads: where the logits are.


def separate_softmax_classifier(*after):
    """`Dense(3, name="logits")` then `Activation("softmax")` (then the layers `after`) on a
    pooled tiny backbone: the softmax is a layer of its own, not the Dense's activation."""
    keras.utils.set_random_seed(1)
    backbone = keras_vswin.VideoSwin(**{**TINY, "include_top": False, "pooling": "avg"})
    x = keras.layers.Dense(3, name="logits", kernel_initializer="random_normal")(backbone.output)
    x = keras.layers.Activation("softmax", name="probabilities")(x)
    for layer in after:
        x = layer(x)
    model = keras.Model(backbone.input, x, name="separate_softmax")
    head = model.get_layer("logits")
    head.kernel.assign(head.kernel * 100.0)  # confident: a second softmax would show
    return model


def test_logits_of_a_separate_softmax_layer(videos, tmp_path):
    clips = videos["clips_a"]
    model = separate_softmax_classifier()
    logits = keras.Model(model.input, model.get_layer("logits").output)(clips).numpy()
    assert softmax(logits).max() > 0.9
    model.save(tmp_path / "separate.keras")
    loaded = keras.saving.load_model(tmp_path / "separate.keras")
    keras.utils.set_random_seed(1)
    softmax_layer = keras.layers.Softmax(name="softmax")
    other = keras.Model(model.input, softmax_layer(model.get_layer("logits").output))
    for candidate in (model, loaded, other):
        got = export.logits_function(candidate)(tf.constant(clips)).numpy()
        np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(softmax(got), candidate(clips), atol=1e-6)

    # A head it cannot read is refused, unless the logits layer is named.
    unreadable = separate_softmax_classifier(keras.layers.Rescaling(1.0, name="rescale"))
    with pytest.raises(ValueError, match=r"'rescale' \(Rescaling\).*logits_layer=NAME"):
        export.logits_function(unreadable)
    got = export.logits_function(unreadable, logits_layer="logits")(tf.constant(clips))
    np.testing.assert_allclose(got.numpy(), logits, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="logits_layer='nope': model 'separate_softmax' has no"):
        export.logits_function(unreadable, logits_layer="nope")
    with pytest.raises(ValueError, match=r"outputs \(None, 32\), not \(batch, 3\)"):
        export.logits_function(unreadable, logits_layer="avg_pool")
    relu = keras.layers.Dense(3, activation="relu", name="relu_scores")
    pooled = model.get_layer("avg_pool").output
    bad = keras.Model(model.input, keras.layers.Softmax()(relu(pooled)))
    with pytest.raises(ValueError, match="'relu_scores' applies 'relu' before the final softmax"):
        export.logits_function(bad)


def test_cli_exports_the_probabilities_the_model_computes(videos, tmp_path, capsys):
    from keras_vswin.cli import export as cli

    clips = videos["clips_a"]
    model = separate_softmax_classifier()
    source = str(tmp_path / "separate.keras")
    model.save(source)
    argv = [source, "--output", str(tmp_path / "exports"), "--version", "1"]
    previous = os.umask(0o002)  # outputs get the umask's permissions (TF's folders: 0755)
    try:
        assert cli.main(argv) == 0
        assert cli.main([*argv[:3], "--name", "next"]) == 0  # the next free version
    finally:
        os.umask(previous)
    for root, _, files in os.walk(tmp_path / "exports"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o775, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o664, name
    served = tf.saved_model.load(str(tmp_path / "exports" / "separate_softmax" / "1"))
    outputs = served.signatures[export.SERVE_FLOAT](clips=tf.constant(clips))
    expected = model(clips).numpy()
    assert expected.max() > 0.9  # a double softmax would flatten these towards 1/3
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    metadata, _ = export.read_export_metadata(tmp_path / "exports" / "separate_softmax")
    assert metadata["logits"] == "logits"

    keras.saving.save_model(
        separate_softmax_classifier(keras.layers.Rescaling(1.0, name="rescale")), source
    )
    capsys.readouterr()
    assert cli.main([*argv[:3], "--version", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--logits-layer NAME" in error, error
    assert not (tmp_path / "exports" / "separate_softmax" / "2").exists()
    assert cli.main([*argv[:3], "--version", "2", "--logits-layer", "logits"]) == 0
    served = tf.saved_model.load(str(tmp_path / "exports" / "separate_softmax" / "2"))
    outputs = served.signatures[export.SERVE_FLOAT](clips=tf.constant(clips))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
