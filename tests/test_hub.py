"""Exports fine-tune where TensorFlow users load them: TF Hub's `hub.KerasLayer` in tf_keras (a
fresh process that never imports keras_vswin) and Keras 3 (`keras_vswin.export.ReusableLayer`),
through the Reusable SavedModel API (`__call__(inputs, training)`, `variables`,
`trainable_variables`, `regularization_losses`)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vswin
from keras_vswin import export

# Small enough for CI, large enough for two stages, shifted windows and a padded grid.
TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3))
CLIP = (4, 28, 28, 3)


def tiny(drop_path_rate=0.0, **kwargs):
    keras.utils.set_random_seed(0)
    return keras_vswin.VideoSwin(**TINY, drop_path_rate=drop_path_rate, **kwargs)


def reference(model, inputs):
    """What the export's `__call__` promises: inputs in [0, 1] -> normalised -> logits."""
    clips = keras_vswin.preprocess_input(inputs * 255.0)
    return np.asarray(export.logits_function(model)(tf.constant(clips)))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    classifier = tiny(drop_path_rate=0.2, classes=5, classifier_activation=None)
    features = tiny(include_top=False, pooling="avg")
    paths = {
        "classifier": export.export_saved_model(classifier, base, name="classifier"),
        "classifier_bf16": export.export_saved_model(
            classifier, base, name="classifier_bf16", precision="bfloat16"
        ),
        "features": export.export_saved_model(features, base, name="features", feature_vector=True),
    }
    return paths, {"classifier": classifier, "features": features}


HUB_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
    path, inputs_file = sys.argv[1], sys.argv[2]
    x = np.load(inputs_file)
    tf_keras.utils.set_random_seed(0)
    layer = hub.KerasLayer(path, trainable=True)
    model = tf_keras.Sequential([tf_keras.Input(x.shape[1:]), layer, tf_keras.layers.Dense(3)])
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(len(x)) % 3
    inference = layer(x, training=False).numpy()
    before = [v.numpy().copy() for v in layer.trainable_weights]
    loss_before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=len(x), epochs=3, verbose=0)
    loss_after = model.evaluate(x, y, verbose=0)
    changed = [bool(np.any(b != v.numpy())) for b, v in zip(before, layer.trainable_weights)]
    print(json.dumps({
        "keras_vswin_imported": "keras_vswin" in sys.modules,
        "trainable": len(layer.trainable_weights),
        "changed": sum(changed),
        "loss": [loss_before, loss_after],
        "inference": inference.tolist(),
    }))
    """
)


def run_hub(path, inputs, tmp_path):
    np.save(tmp_path / "x.npy", inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(path), str(tmp_path / "x.npy")],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["classifier", "classifier_bf16", "features"])
def test_hub_keras_layer_fine_tunes_every_export(exports, kind, tmp_path):
    paths, models = exports
    model = models["features" if kind == "features" else "classifier"]
    x = np.random.default_rng(1).uniform(0, 1, (4, *CLIP)).astype("float32")
    report = run_hub(paths[kind], x, tmp_path)
    assert report["keras_vswin_imported"] is False
    assert report["trainable"] == len(model.trainable_variables)
    assert report["changed"] == report["trainable"]  # gradients reached every backbone variable
    assert report["loss"][1] < report["loss"][0]
    if kind == "features":
        expected = export.features_function(model)[0](
            tf.constant(keras_vswin.preprocess_input(x * 255.0))
        )
    else:
        expected = reference(model, x)
    tolerance = 5e-2 if kind.endswith("bf16") else 1e-5
    np.testing.assert_allclose(report["inference"], expected, atol=tolerance)


def test_keras3_reusable_layer_fine_tunes_with_adamw(exports):
    paths, models = exports
    x = np.random.default_rng(2).uniform(0, 1, (4, *CLIP)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(4) % 3]
    layer = export.ReusableLayer(paths["classifier"])
    np.testing.assert_allclose(
        layer(x, training=False), reference(models["classifier"], x), atol=1e-5
    )
    inputs = keras.Input((None, None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    model.compile(keras.optimizers.AdamW(1e-3), keras.losses.CategoricalCrossentropy(True))
    before = [np.array(v) for v in layer.trainable_weights]
    loss_before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < loss_before
    assert len(before) == len(models["classifier"].trainable_variables)
    assert all(np.any(b != np.array(v)) for b, v in zip(before, layer.trainable_weights))
    frozen = export.ReusableLayer(paths["classifier"], trainable=False)
    assert frozen.trainable_weights == []
    assert len(frozen.non_trainable_weights) == len(models["classifier"].variables)


def test_keras3_tfsmlayer_fails_with_slot_optimizers(exports):
    """Why `ReusableLayer` exists: Keras' own TFSMLayer cannot train with Adam (its variables
    are named `.../kernel:0`, invalid in slot names). When this test fails, Keras has fixed
    it and ReusableLayer can become a thin alias."""
    paths, _ = exports
    x = np.random.default_rng(3).uniform(0, 1, (2, *CLIP)).astype("float32")
    layer = keras.layers.TFSMLayer(paths["features"], call_endpoint="serving_default",
                                   trainable=True)  # fmt: skip
    inputs = keras.Input((None, None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)["features"]))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    with pytest.raises(ValueError, match="scope name"):
        model.fit(x, np.zeros((2, 1)), verbose=0)


def test_training_flag_switches_dropout_and_stochastic_depth(exports, tmp_path):
    paths, _ = exports
    x = np.random.default_rng(4).uniform(0, 1, (2, *CLIP)).astype("float32")
    loaded = tf.saved_model.load(paths["classifier"])  # drop_path_rate 0.2
    inference = [loaded(x, training=False).numpy() for _ in range(2)]
    training = [loaded(x, training=True).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    assert not np.allclose(training[0], inference[0], atol=1e-4)
    assert not np.allclose(training[0], training[1], atol=1e-4)  # fresh randomness per call
    plain = tiny(classes=5, classifier_activation=None, head_dropout_rate=0.0)
    path = export.export_saved_model(plain, tmp_path, name="plain")
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(
        loaded(x, training=True), loaded(x, training=False), atol=1e-6
    )  # no dropout, no stochastic depth: the two traces agree
    assert list(loaded.regularization_losses) == []


def test_collection_writes_versioned_exports_with_cards_from_the_presets(tmp_path):
    from keras_vswin import collection, presets

    model = tiny(classes=5)
    source = tmp_path / "tiny.keras"
    model.save(source)
    proc = subprocess.run(
        [sys.executable, "-m", "keras_vswin", "export", str(source), "--collection",
         str(tmp_path / "hub"), "--name", "tiny", "--clip-len", "4", "--crop-size", "28"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((tmp_path / "hub" / "collection.json").read_text())
    assert sorted(index["models"]) == ["tiny", "tiny_feature_vector"]
    card = json.loads((tmp_path / "hub" / "tiny" / "card.json").read_text())
    assert card["version"] == 1 and card["flavour"] == "classifier"
    assert card["outputs"]["classes"] == 5 and card["protocol"]["clip_len"] == 4
    assert card["architecture"]["parameters"] == model.count_params()
    assert card["source"]["sha256"] == collection._sha256(source)
    readme = (tmp_path / "hub" / "tiny" / "README.md").read_text()
    assert "hub.KerasLayer(" in readme and "ReusableLayer(" in readme
    assert (tmp_path / "hub" / "tiny_feature_vector" / "1" / "saved_model.pb").exists()
    # Registry weights: the card's facts are the presets table's, never retyped.
    described = collection.source_description("something_something_v2", "B")
    entry = presets.PRESETS["something_something_v2"]
    assert described["metrics"]["top1"] == entry["variants"]["B"]["top1"]
    assert described["metrics"]["protocol"] == entry["protocol"].to_dict()
    assert described["licence"].startswith("Apache-2.0")
    markdown = collection.card_markdown({**card, "source": described})
    assert "69.6" in markdown and "1 clip(s) x 3 crop(s)" in markdown
