"""The Keras model: shapes, parameter counts, saving, training, dynamic shapes, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vswin
from keras_vswin import VideoSwin

TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3))


def tiny(**kwargs):
    return VideoSwin(**{**TINY, "drop_path_rate": 0.0, **kwargs})


@pytest.mark.parametrize(
    "builder, params, paper_gmacs",
    [
        (keras_vswin.VideoSwinT, 28_158_070, 88),
        (keras_vswin.VideoSwinS, 49_816_678, 166),
        (keras_vswin.VideoSwinB, 88_048_984, 282),
        (keras_vswin.VideoSwinL, 196_953_916, 604),
    ],
)
def test_params_and_macs_equal_the_paper(builder, params, paper_gmacs):
    from keras_vswin.flops import count_macs

    model = builder()
    assert model.count_params() == params
    macs = count_macs(model, (32, 224, 224))["total"]
    # The paper rounds to whole GMACs and its counter adds a few small ops: within 0.3%.
    assert macs / 1e9 == pytest.approx(paper_gmacs, rel=3e-3)
    # Half the frames, half the work: no temporal downsampling after the patch embedding.
    assert count_macs(model, (16, 224, 224))["total"] * 2 == pytest.approx(macs, rel=0.02)


def test_feature_map_and_pooled_outputs(rng):
    x = rng.standard_normal((2, 8, 64, 64, 3)).astype("float32")
    pooled = keras_vswin.VideoSwinT(include_top=False, pooling="avg")
    feature_model = keras.Model(pooled.input, pooled.get_layer("norm").output)
    features = np.asarray(feature_model(x))
    # 8 frames -> 4 token frames; 64 -> 16 -> 8 -> 4 -> 2 after three mergings.
    assert features.shape == (2, 4, 2, 2, 768)
    assert tuple(keras_vswin.VideoSwinT(include_top=False)(x).shape) == (2, 4, 2, 2, 768)
    np.testing.assert_allclose(pooled(x), features.mean(axis=(1, 2, 3)), atol=1e-5)
    assert tuple(keras_vswin.VideoSwinT(include_top=False, pooling="max")(x).shape) == (2, 768)


def test_head_outputs_probabilities(rng):
    model = tiny(classes=7)
    probs = np.asarray(model(rng.standard_normal((3, 5, 30, 30, 3)).astype("float32")))
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_dynamic_model_matches_static_models(rng):
    dynamic = tiny(classifier_activation=None)
    graph = tf.function(
        lambda x: dynamic(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)],
    )
    for shape in [(1, 7, 33, 45), (2, 4, 24, 24), (1, 2, 9, 13), (1, 12, 50, 36)]:
        x = rng.standard_normal((*shape, 3)).astype("float32")
        static = tiny(classifier_activation=None, input_shape=(*shape[1:], 3))
        static.set_weights(dynamic.get_weights())
        expected = np.asarray(static(x))
        np.testing.assert_allclose(graph(x).numpy(), expected, atol=1e-5, err_msg=str(shape))
        np.testing.assert_allclose(np.asarray(dynamic(x)), expected, atol=1e-5)


def test_keras_save_load_round_trip(tmp_path, rng):
    model = tiny(classes=5)
    x = rng.standard_normal((2, 4, 20, 20, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    # No custom_objects needed: every layer is registered.
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))
    weights_path = tmp_path / "model.weights.h5"
    model.save_weights(weights_path)
    fresh = tiny(classes=5, weights=str(weights_path))
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))


def test_layers_round_trip_through_config():
    for layer in [
        keras_vswin.PatchEmbedding3D((2, 4, 4), 32),
        keras_vswin.WindowAttention3D(32, 4, (2, 3, 3), qkv_bias=False, attention_dropout=0.1),
        keras_vswin.SwinBlock3D(32, 4, (2, 3, 3), (1, 1, 1), mlp_ratio=2.0, drop_path=0.2),
        keras_vswin.PatchMerging3D(32),
        keras_vswin.StochasticDepth(0.3),
    ]:
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config


def test_fit_reduces_loss(rng):
    model = tiny(classes=3, head_dropout_rate=0.0)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3), loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((6, 4, 24, 24, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    history = model.fit(x, y, epochs=10, batch_size=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradients_reach_every_weight(rng):
    # 4x12x12 tokens with a 2x3x3 window: shifted blocks run with a real shift mask.
    model = tiny(classes=3, classifier_activation=None, head_dropout_rate=0.0)
    x = tf.constant(rng.standard_normal((2, 8, 48, 48, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    empty = [v.path for v, g in zip(model.trainable_weights, grads) if g is None or not np.any(g)]
    assert not empty
    assert sum("relative_position_bias_table" in v.path for v in model.trainable_weights) == 4


def test_stochastic_depth_drops_whole_samples():
    layer = keras_vswin.StochasticDepth(0.5, seed=1)
    x = np.ones((64, 2, 3, 3, 4), "float32")
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert all(len(set(row)) == 1 for row in per_sample)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(input_shape=(16, 224, 224, 1)), "input_shape"),
        (dict(input_shape=(224, 224, 3)), "input_shape"),
        (dict(input_shape=(0, 224, 224, 3)), "input_shape"),
        (dict(input_shape=(16, -4, 224, 3)), "input_shape"),
        (dict(pooling="mean", include_top=False), "pooling"),
        (dict(classes=0), "classes"),
        (dict(patch_size=(2, 0, 4)), "patch_size"),
        (dict(window_size=(8, 7)), "window_size"),
        (dict(depths=(2, 2), num_heads=(3,)), "num_heads"),
        (dict(num_heads=(5, 6, 12, 24)), "num_heads"),
        (dict(embed_dim=-1), "embed_dim"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_bad_arguments_raise_named_errors(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        VideoSwin(**kwargs)


def test_wrong_input_rank_or_channels_is_rejected(rng):
    model = tiny()
    with pytest.raises(ValueError):
        model(rng.standard_normal((1, 4, 24, 24, 1)).astype("float32"))
    with pytest.raises(ValueError):
        model(rng.standard_normal((1, 24, 24, 3)).astype("float32"))


def test_preprocess_input_matches_official_constants():
    x = np.array([[[123.675, 116.28, 103.53], [255, 0, 0]]], "uint8")
    out = keras_vswin.preprocess_input(np.array([[[123.675, 116.28, 103.53]]]))
    np.testing.assert_allclose(out, 0.0, atol=1e-6)
    out = np.asarray(keras_vswin.preprocess_input(tf.constant(x)))
    np.testing.assert_allclose(
        out[0, 1], [(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-6
    )
    with pytest.raises(ValueError, match="3 channels"):
        keras_vswin.preprocess_input(np.zeros((2, 4)))


def test_decode_predictions_names_and_order():
    probs = np.zeros((2, 400), "float32")
    probs[0, [0, 5, 399]] = [0.2, 0.5, 0.3]
    probs[1, 1] = 1.0
    top = keras_vswin.decode_predictions(probs, top=3)
    assert [t[0] for t in top[0]] == [5, 399, 0]
    assert top[0][2] == (0, "abseiling", pytest.approx(0.2))
    assert top[1][0][:2] == (1, "air drumming")
    assert len(keras_vswin.load_labels("kinetics600")) == 600
    assert len(keras_vswin.load_labels("something_something_v2")) == 174
    with pytest.raises(ValueError, match="labels"):
        keras_vswin.decode_predictions(np.zeros((1, 174)), labels="kinetics400")
    mine = keras_vswin.decode_predictions(
        np.array([[0.1, 0.7, 0.2]]), top=2, labels=["a", "b", "c"]
    )
    assert mine == [[(1, "b", pytest.approx(0.7)), (2, "c", pytest.approx(0.2))]]
    with pytest.raises(ValueError, match="3 names"):
        keras_vswin.decode_predictions(np.zeros((1, 4)), labels=("a", "b", "c"))


def test_input_tensor_builds_on_a_given_graph():
    video = keras.Input((4, 32, 32, 3), name="raw_video")
    scaled = keras.layers.Rescaling(1.0 / 58.0, name="scale")(video)
    model = keras_vswin.VideoSwinT(input_tensor=scaled, classes=5, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2))  # fmt: skip
    assert model.inputs[0].name == video.name and model.get_layer("scale") is not None
    assert model.output_shape == (None, 5)
    clip = np.random.default_rng(0).uniform(0, 255, (1, 4, 32, 32, 3)).astype("float32")
    inner = keras_vswin.VideoSwinT(classes=5, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    inner.set_weights(model.get_weights())
    np.testing.assert_allclose(model(clip), inner(clip / 58.0), atol=1e-5)
    with pytest.raises(ValueError, match="input_tensor"):
        keras_vswin.VideoSwinT(input_tensor=np.zeros((1, 4, 32, 32, 3)))


def test_remat_gives_the_same_gradients(rng):
    x = tf.constant(rng.standard_normal((2, 4, 24, 24, 3)).astype("float32"))
    grads = []
    for remat in (False, True):
        keras.utils.set_random_seed(3)  # same weights and the same stochastic-depth draws
        model = tiny(classes=3, head_dropout_rate=0.0, drop_path_rate=0.3, remat=remat)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True)))
        grads.append(tape.gradient(loss, model.trainable_weights))
    assert len(grads[0]) == len(grads[1])
    for plain, recomputed in zip(*grads):
        np.testing.assert_allclose(
            tf.convert_to_tensor(recomputed), tf.convert_to_tensor(plain), rtol=1e-4, atol=1e-6
        )
    with pytest.raises(ValueError, match="remat"):
        tiny(remat=True, dropout_rate=0.1)


def test_mixed_bfloat16_keeps_float32_logits_close(rng):
    x = rng.standard_normal((2, 6, 40, 40, 3)).astype("float32")
    reference = tiny(classes=4, classifier_activation=None)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = tiny(classes=4, classifier_activation=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.get_layer("stage0_block1").compute_dtype == "bfloat16"
    assert mixed.get_layer("stage0_block1").attn.qkv.compute_dtype == "bfloat16"
    logits = mixed(x)
    assert logits.dtype == "float32"
    np.testing.assert_allclose(logits, reference(x), atol=2e-2)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_matches_keras_layer_normalization(rng, policy):
    x = (3.0 + 2.0 * rng.standard_normal((4, 5, 24))).astype("float32")
    ours = keras_vswin.LayerNorm(dtype=policy)
    theirs = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [rng.standard_normal(24).astype("float32") for _ in range(2)]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    got, want = ours(x), theirs(x)
    assert got.dtype == want.dtype
    tolerance = 1e-5 if policy == "float32" else 3e-2  # bfloat16 output rounding
    np.testing.assert_allclose(
        np.asarray(got, "float32"), np.asarray(want, "float32"), atol=tolerance
    )
    # Configurations outside the fast path fall back to Keras' implementation.
    for kwargs in (dict(axis=1), dict(center=False)):
        np.testing.assert_allclose(
            keras_vswin.LayerNorm(**kwargs)(x),
            keras.layers.LayerNormalization(epsilon=1e-5, **kwargs)(x),
            atol=1e-5,
        )


def test_chunked_window_attention_equals_whole(rng, monkeypatch):
    layer = keras_vswin.WindowAttention3D(16, 2, window_size=(2, 3, 3))
    windows = rng.standard_normal((2 * 6, 18, 16)).astype("float32")  # batch 2, 6 windows
    mask = np.where(rng.random((6, 18, 18)) < 0.3, -100.0, 0.0).astype("float32")
    whole = layer(windows, attention_mask=mask)
    monkeypatch.setattr(keras_vswin.layers, "ATTENTION_CHUNK_BYTES", 2 * 18 * 18 * 4)
    assert keras_vswin.layers.attention_chunks(6, 2, 18) == 6
    chunked = layer(windows, attention_mask=mask, num_windows=6)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(keras_vswin.layers, "ATTENTION_CHUNK_BYTES", 3 * 2 * 18 * 18 * 4)
    assert keras_vswin.layers.attention_chunks(6, 2, 18) == 2
    chunked = layer(windows, attention_mask=mask, num_windows=6)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [(2, 3, 3), (8, 7, 7)])
def test_full_window_bias_equals_the_official_index(rng, window):
    layer = keras_vswin.WindowAttention3D(8, 2, window_size=window)
    layer.build((None, None, 8))
    table = rng.standard_normal(layer.relative_position_bias_table.shape).astype("float32")
    layer.relative_position_bias_table.assign(table)
    tokens = int(np.prod(window))
    index = keras_vswin.windows.relative_position_index(window)
    expected = table[index].transpose(2, 0, 1)
    np.testing.assert_array_equal(layer.relative_position_bias(tokens), expected)
    # Clipped windows keep the official `index[:N, :N]`.
    np.testing.assert_array_equal(layer.relative_position_bias(5), expected[:, :5, :5])
    # Full windows give the table a dense gradient (a sparse one costs the optimizer a
    # de-duplication of N * N rows), equal to the gather's.
    upstream = tf.constant(rng.standard_normal(expected.shape).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer.relative_position_bias(tokens) * upstream)
    grad = tape.gradient(loss, layer.relative_position_bias_table)
    assert isinstance(grad, tf.Tensor)
    reference = tf.Variable(table)
    with tf.GradientTape() as tape:
        gathered = tf.reshape(tf.gather(reference, index.reshape(-1)), (tokens, tokens, 2))
        loss = tf.reduce_sum(tf.transpose(gathered, (2, 0, 1)) * upstream)
    np.testing.assert_allclose(
        grad, tf.convert_to_tensor(tape.gradient(loss, reference)), rtol=1e-5, atol=5e-5
    )


@pytest.mark.parametrize("tokens, masked", [(18, True), (18, False), (12, True), (1, False)])
def test_training_attention_gradient_equals_autodiff(rng, monkeypatch, tokens, masked):
    """Training uses a hand-written attention gradient. Without dropout its forward is the
    inference forward, whose gradient TF derives itself: both must agree."""
    layer = keras_vswin.WindowAttention3D(16, 2, window_size=(2, 3, 3))
    windows = tf.constant(rng.standard_normal((2 * 4, tokens, 16)).astype("float32"))
    mask = np.where(rng.random((4, tokens, tokens)) < 0.3, -100.0, 0.0).astype("float32")
    mask = tf.constant(mask) if masked else None
    weights = tf.constant(rng.standard_normal((2 * 4, tokens, 16)).astype("float32"))
    calls = []
    short = layer._attend_with_short_gradient
    monkeypatch.setattr(
        layer, "_attend_with_short_gradient", lambda *a: calls.append(1) or short(*a)
    )
    results = {}
    for training in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(windows)
            out = layer(windows, attention_mask=mask, training=training)
            loss = tf.reduce_sum(tf.sin(out * weights))
        grads = tape.gradient(loss, [windows, *layer.trainable_weights])
        # One-token windows: the softmax is 1, so TF gives the bias table no gradient.
        zeros = [tf.zeros_like(w) for w in [windows, *layer.trainable_weights]]
        results[training] = [
            out,
            *(tf.convert_to_tensor(g) if g is not None else z for g, z in zip(grads, zeros)),
        ]
    assert calls == [1]
    for got, want in zip(results[True], results[False], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "input_shape, spec",
    [
        ((5, 30, 41, 3), (2, 5, 30, 41, 3)),
        ((5, 30, 41, 3), (None, 5, 30, 41, 3)),
        (None, (None, None, None, None, 3)),
    ],
)
def test_graph_is_convertible(input_shape, spec):
    """What deployment converters need from the TensorFlow graph: tensors of at most 6
    dimensions (the TFLite converter's builtin transpose and reshape), static shapes for a
    model built for one clip size (only a free batch stays unknown), and erf, not erfc (which
    ONNX lacks), for the GELU."""
    model = tiny(input_shape=input_shape, drop_path_rate=0.1)
    spec = tf.TensorSpec(spec, tf.float32)
    for training in (False, True):
        forward = tf.function(lambda x, training=training: model(x, training=training))
        operations = forward.get_concrete_function(spec).graph.get_operations()
        for op in operations:
            for tensor in op.outputs:
                assert tensor.shape.rank is not None and tensor.shape.rank <= 6, (op, tensor)
                if input_shape is not None:
                    unknown = sum(d is None for d in tensor.shape.as_list())
                    assert unknown <= (spec.shape[0] is None), (op, tensor)
        types = {op.type for op in operations}
        assert "Erf" in types and "Erfc" not in types


def test_gelu_is_the_exact_erf_form(rng):
    import math

    x = np.concatenate([np.linspace(-12.0, 12.0, 2001), 3.0 * rng.standard_normal(1000)])
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    got = np.asarray(keras_vswin.layers.gelu(x.astype("float32")))
    # For x << 0, 1 + erf cancels where GELU is nearly 0: float32 round-off is absolute there.
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        got, keras.activations.gelu(x.astype("float32"), approximate=False), atol=1e-6
    )
