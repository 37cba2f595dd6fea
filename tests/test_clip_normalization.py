"""ClipNormalization: the model normalises raw RGB clips itself (uint8 from the pipelines)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vswin
from keras_vswin.data import views
from keras_vswin.preprocessing import (
    ClipNormalization,
    preprocess_input,
    with_clip_normalization,
    without_clip_normalization,
)

CONFIG = dict(
    embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5,
    drop_path_rate=0.0,
)  # fmt: skip


def raw_clips(shape=(2, 4, 30, 41, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_layer_is_preprocess_input_for_uint8_and_float_clips():
    layer = ClipNormalization()
    clips = raw_clips()
    for x in (clips, clips.astype(np.float32)):
        np.testing.assert_array_equal(np.asarray(layer(x)), preprocess_input(clips))
    assert layer(clips).dtype == "float32"
    half = ClipNormalization(dtype="mixed_bfloat16")
    assert half(clips).dtype == "bfloat16"  # what the next layer computes in
    custom = ClipNormalization(mean=(1, 2, 3), std=(2, 2, 2))
    np.testing.assert_allclose(np.asarray(custom(np.ones((1, 3)))), [[0.0, -0.5, -1.0]])
    assert ClipNormalization.from_config(custom.get_config()).std == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="3 channels"):
        layer(np.zeros((1, 4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="`std` must be 3 numbers"):
        ClipNormalization(std=(1, 2))


def test_models_with_the_layer_give_the_logits_of_normalised_input(tmp_path):
    plain = keras_vswin.VideoSwin(**CONFIG)
    clips = raw_clips()
    expected = np.asarray(plain(preprocess_input(clips)))
    # 1. a wrapper around an existing model: a flat model sharing its weights
    front = with_clip_normalization(plain)
    assert [layer.name for layer in front.layers[:3]] == ["video", "clip_normalization",
                                                          "patch_embedding"]  # fmt: skip
    assert front.layers[2] is plain.layers[1] and with_clip_normalization(front) is front
    np.testing.assert_allclose(np.asarray(front(clips)), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(front(clips.astype("float32"))), expected, atol=1e-6)
    # 2. composed through input_tensor, loading weights as any Video Swin model does
    plain.save_weights(tmp_path / "plain.weights.h5")
    inputs = keras.Input((None, None, None, 3), dtype="uint8")
    composed = keras_vswin.VideoSwin(
        **CONFIG, weights=str(tmp_path / "plain.weights.h5"),
        input_tensor=ClipNormalization()(inputs),
    )  # fmt: skip
    assert composed.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(np.asarray(composed(clips)), expected, rtol=0, atol=1e-6)
    # 3. saved and loaded as .keras with no custom_objects
    front.save(tmp_path / "front.keras")
    loaded = keras.models.load_model(tmp_path / "front.keras")
    assert isinstance(loaded.layers[1], ClipNormalization)
    np.testing.assert_allclose(np.asarray(loaded(clips)), expected, rtol=0, atol=1e-6)
    # 4. and back: a copy that takes normalised clips
    for model in (front, composed, loaded):
        inner = without_clip_normalization(model)
        assert not any(isinstance(layer, ClipNormalization) for layer in inner.layers)
        assert inner.inputs[0].dtype == "float32"
        logits = np.asarray(inner(preprocess_input(clips)))
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)
    assert without_clip_normalization(plain) is plain
    with pytest.raises(ValueError, match="functional keras.Model"):
        with_clip_normalization(ClipNormalization())


def test_export_of_a_model_with_clip_normalization(tmp_path):
    # export_saved_model feeds the model normalised clips: export the model without its
    # normalisation layer; the SavedModel's uint8 and float signatures then give the logits of
    # the model with it.
    plain = keras_vswin.VideoSwin(**CONFIG)
    front = with_clip_normalization(plain)
    protocol = views.ViewProtocol(clip_len=4, frame_interval=1, num_clips=1, crop_size=28,
                                  num_crops=1)  # fmt: skip
    path = keras_vswin.export_saved_model(
        without_clip_normalization(front), tmp_path / "export", versioned=False, protocol=protocol
    )
    loaded = tf.saved_model.load(path)
    video = raw_clips((1, 7, 30, 41, 3), seed=1)
    served = loaded.signatures["serving_default"](video=tf.constant(video))
    single = protocol.single_view()
    frames = views.clip_frames(video, single)
    flat = tf.reshape(frames, [-1, 30, 41, 3])
    resized = views.resize_short_side(flat, single.resize_to, dtype="uint8")
    resized = tf.reshape(resized, [1, 4, *resized.shape[1:]])
    uint8_view = views.crop_views(resized, single)[:, 0]
    assert uint8_view.dtype == tf.uint8
    np.testing.assert_allclose(
        np.asarray(served["probabilities"]), np.asarray(front(uint8_view)), atol=1e-6
    )
    clips = raw_clips((2, 4, 28, 28, 3), seed=2)
    floats = loaded.signatures["serve_float"](clips=preprocess_input(clips))
    np.testing.assert_allclose(
        np.asarray(floats["probabilities"]), np.asarray(front(clips)), atol=1e-6
    )


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_layer_on_other_backends(backend, tmp_path):
    pytest.importorskip(backend)
    plain = keras_vswin.VideoSwin(**CONFIG)
    plain.save_weights(tmp_path / "plain.weights.h5")
    clips = raw_clips()
    np.save(tmp_path / "clips.npy", clips)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, keras_vswin
        from keras_vswin.preprocessing import ClipNormalization, with_clip_normalization
        assert keras.backend.backend() == {backend!r}
        plain = keras_vswin.VideoSwin(**{CONFIG!r}, weights={str(tmp_path / "plain.weights.h5")!r})
        front = with_clip_normalization(plain)
        clips = np.load({str(tmp_path / "clips.npy")!r})
        np.save({str(tmp_path / "out.npy")!r}, keras.ops.convert_to_numpy(front(clips)))
        front.save({str(tmp_path / "front.keras")!r})
        loaded = keras.models.load_model({str(tmp_path / "front.keras")!r})
        again = keras.ops.convert_to_numpy(loaded(clips))
        np.testing.assert_allclose(again, np.load({str(tmp_path / "out.npy")!r}), atol=1e-6)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = np.asarray(plain(preprocess_input(clips)))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
