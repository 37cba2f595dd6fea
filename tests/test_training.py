"""Fine-tuning: parameter groups, schedule, accumulation, distribution, fault tolerance, demo parts.

The distributed runs use `optimizer.epsilon=1`: Adam is then close to linear in the gradient, so
a gradient summed instead of averaged (or computed on the wrong examples) changes the weights
by ~1e-3, far beyond the 1e-5 tolerance. With the usual epsilon Adam normalises the gradient
away and such bugs would go unnoticed.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_vswin
from keras_vswin import finetune as vt
from keras_vswin.data import KINETICS, SSV2
from keras_vswin.finetune import evaluate as evaluation
from keras_vswin.finetune import recipe, train
from keras_vswin.finetune.configs import (
    ConfigError,
    available_configs,
    load_config,
    parse_overrides,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3))


def tiny_model(classes=3, **kwargs):
    arguments = {**TINY, "drop_path_rate": 0.0, "head_dropout_rate": 0.0, **kwargs}
    return keras_vswin.VideoSwin(classes=classes, **arguments)


def tiny_config(tmp_path, name="run", **changes):
    """A tiny synthetic run: 32 clips of 4x32x32, batch 8, 3 epochs of 4 updates."""
    config = {
        "name": name,
        "output_dir": str(tmp_path / name),
        "seed": 3,
        "model": {
            "variant": None,
            "embed_dim": 16,
            "depths": [2, 2],
            "num_heads": [1, 2],
            "window_size": [2, 3, 3],
            "drop_path_rate": 0.0,
            "head_dropout_rate": 0.0,
            "num_classes": 8,
        },
        "data": {
            "source": "synthetic",
            "clip_len": 4,
            "frame_interval": 2,
            "crop_size": 32,
            "synthetic": {"train_per_class": 4, "eval_per_class": 1, "num_frames": 8, "size": 32},
        },
        "optimizer": {"lr": 0.05, "epsilon": 1.0, "scale_lr": False},
        "schedule": {"warmup_epochs": 1.0, "by_epoch": False},
        "train": {"epochs": 3, "batch_size": 8, "backup_every": 0, "verbose": 0},
        "distribution": {"strategy": "default"},
    }
    for section, values in changes.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    config[section].setdefault(key, {}).update(value)
                else:
                    config[section][key] = value
        else:
            config[section] = values
    return load_config(None, config)


def write_config(path, config):
    path.write_text(json.dumps(config))
    return str(path)


def final_weights(run_dir):
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    return model.get_weights()


def assert_same_weights(actual, expected, atol=1e-5):
    """Float32 sums in another order differ by ~1e-9 after these 12 steps; a wrongly scaled or
    wrongly sharded gradient moves weights by ~lr x gradient ~ 1e-3."""
    assert len(actual) == len(expected)
    worst = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    assert worst <= atol, f"max |difference| {worst:.3g} > {atol}"


def _env():
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES=""
    )
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory):
    """One initialisation shared by every run that is compared (in and across processes)."""
    folder = tmp_path_factory.mktemp("init")
    config = tiny_config(folder)
    keras.utils.set_random_seed(0)
    path = str(folder / "init.weights.h5")
    recipe.build_model(config, load_pretrained=False).save_weights(path)
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, initial_weights):
    """The reference: one replica, batch 8, no accumulation, uninterrupted."""
    folder = tmp_path_factory.mktemp("baseline")
    config = tiny_config(folder, name="baseline", model={"weights": initial_weights})
    result = train.run(config, log=lambda *a: None)
    return result, final_weights(result.run_dir)


# --------------------------------------------------------------------------------------------
# Parameter groups and the optimizer


def _expected_groups(path, style):
    table = "relative_position_bias_table" in path
    norm = any(f"/{n}/" in f"/{path}" for n in ("norm", "norm1", "norm2"))
    head = path.startswith("predictions/")
    if style == "paper":
        return (1.0 if head else 0.1), (0.0 if table or norm else 1.0)
    # mmcv: the longest matching key only: tables keep lr x1; backbone norms are decayed.
    if table:
        return 1.0, 0.0
    return (1.0 if head else 0.1), 1.0


@pytest.mark.parametrize("style", ["paper", "mmcv"])
def test_param_groups_on_a_real_model(style):
    model = tiny_model()
    rules = vt.recipe_param_rules(0.1, style)
    optimizer = vt.ParamGroupAdamW(1e-3, weight_decay=0.05, param_rules=rules)
    norms = {
        v.path
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.LayerNormalization)
        for v in layer.weights
    }
    assert len(norms) == 2 * (1 + 4 * 2 + 1 + 1)  # patch, 4 blocks x 2, merging, final norm
    for variable in model.trainable_variables:
        assert optimizer.multipliers(variable) == _expected_groups(variable.path, style), (
            variable.path
        )
        if style == "paper":
            no_decay = variable.path in norms or variable.path.endswith(
                "relative_position_bias_table"
            )
            assert (optimizer.multipliers(variable)[1] == 0.0) == no_decay
    # Biases are decayed, as in the official config (only tables and norms are excluded).
    assert optimizer.multipliers(model.get_layer("predictions").bias) == (1.0, 1.0)
    qkv_bias = next(v for v in model.trainable_variables if v.path.endswith("attn/qkv/bias"))
    assert optimizer.multipliers(qkv_bias) == (0.1, 1.0)
    groups = vt.describe_param_groups(model.trainable_variables, rules, 0.05)
    assert sum(g["parameters"] for g in groups) == model.count_params()


def test_each_variable_moves_by_its_own_learning_rate_and_decay():
    """One AdamW step with unit gradients: `var <- var (1 - lr m_lr wd m_wd) - lr m_lr`."""
    model = tiny_model()
    lr, wd = 1e-2, 0.1
    optimizer = vt.ParamGroupAdamW(lr, weight_decay=wd, param_rules=vt.recipe_param_rules())
    variables = model.trainable_variables
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply([np.ones(v.shape, "float32") for v in variables], variables)
    for variable, old in zip(variables, before):
        lr_mult, decay_mult = optimizer.multipliers(variable)
        rate = lr * lr_mult
        expected = old * (1 - rate * wd * decay_mult) - rate / (1 + 1e-8)
        np.testing.assert_allclose(
            variable.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=variable.path
        )


def test_optimizer_and_schedule_serialize():
    schedule = vt.WarmupCosineDecay(1e-3, 100, 10, warmup_ratio=0.2, steps_per_epoch=5)
    optimizer = vt.ParamGroupAdamW(
        schedule, weight_decay=0.02, param_rules=vt.recipe_param_rules(0.1, "mmcv")
    )
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, vt.ParamGroupAdamW)
    assert clone.param_rules == optimizer.param_rules
    assert clone._learning_rate.get_config() == schedule.get_config()
    assert float(clone._learning_rate(7)) == pytest.approx(float(schedule(7)))
    with pytest.raises(ValueError, match="pattern"):
        vt.ParamGroupAdamW(1e-3, param_rules=[{"lr_mult": 2}])
    with pytest.raises(ValueError, match="lr_mult"):
        vt.ParamGroupAdamW(1e-3, param_rules=[{"pattern": "x", "lr_mult": -1}])


# --------------------------------------------------------------------------------------------
# Schedule


def _cosine(peak, progress, minimum=0.0):
    return minimum + (peak - minimum) * 0.5 * (1 + math.cos(math.pi * progress))


def test_schedule_values_at_warmup_start_end_and_training_end():
    peak, total, warmup = 1e-3, 100, 10
    schedule = vt.WarmupCosineDecay(peak, total, warmup, warmup_ratio=0.1)
    assert float(schedule(0)) == pytest.approx(0.1 * peak)  # warmup starts at 0.1 x lr
    halfway = _cosine(peak, 5 / total) * (1 - 0.5 * 0.9)
    assert float(schedule(5)) == pytest.approx(halfway, rel=1e-5)
    assert float(schedule(warmup)) == pytest.approx(_cosine(peak, warmup / total), rel=1e-5)
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-12)
    assert float(schedule(total + 50)) == pytest.approx(0.0, abs=1e-12)
    # 2.5 epochs of warmup in updates, cosine once per epoch (mmcv's by_epoch, the official).
    per_epoch, epochs = 8, 30
    by_epoch = vt.WarmupCosineDecay(
        peak, epochs * per_epoch, 2.5 * per_epoch, steps_per_epoch=per_epoch, min_lr=1e-6
    )
    assert float(by_epoch(0)) == pytest.approx(0.1 * peak)
    assert float(by_epoch(20)) == pytest.approx(_cosine(peak, 2 / epochs, 1e-6), rel=1e-5)
    assert float(by_epoch(23)) == pytest.approx(_cosine(peak, 2 / epochs, 1e-6), rel=1e-5)
    last = epochs * per_epoch - 1
    assert float(by_epoch(last)) == pytest.approx(
        _cosine(peak, (epochs - 1) / epochs, 1e-6), rel=1e-5
    )
    with pytest.raises(ValueError, match="warmup_steps"):
        vt.WarmupCosineDecay(peak, 10, 20)


def test_accumulation_counts_optimizer_steps_and_averages_gradients():
    schedule = vt.WarmupCosineDecay(0.1, 10, 2, warmup_ratio=0.5)
    accumulating = vt.ParamGroupAdamW(schedule, weight_decay=0.0, gradient_accumulation_steps=2)
    plain = vt.ParamGroupAdamW(schedule, weight_decay=0.0)
    a = keras.Variable(np.ones(3, "float32"))
    b = keras.Variable(np.ones(3, "float32"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        g1, g2 = (rng.standard_normal(3).astype("float32") for _ in range(2))
        accumulating.apply([g1], [a])
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # no update mid-accumulation
        accumulating.apply([g2], [a])
        plain.apply([(g1 + g2) / 2], [b])
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert int(accumulating.iterations) == 3
    assert float(accumulating.learning_rate) == pytest.approx(float(schedule(3)))


def test_keras_accumulation_schedule_counts_micro_batches():
    """Pins why ParamGroupAdamW counts updates itself: with Keras' own
    `gradient_accumulation_steps` a schedule gets the micro-batch counter, so a recipe written
    in optimizer updates (warmup epochs, cosine length) would run N times too fast."""
    schedule = vt.WarmupCosineDecay(0.1, 10, 4, warmup_ratio=0.5)
    keras_adamw = keras.optimizers.AdamW(schedule, weight_decay=0.0, gradient_accumulation_steps=2)
    ours = vt.ParamGroupAdamW(schedule, weight_decay=0.0, gradient_accumulation_steps=2)
    a, b = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    for _ in range(4):  # two optimizer updates
        keras_adamw.apply([np.ones(3, "float32")], [a])
        ours.apply([np.ones(3, "float32")], [b])
    assert int(keras_adamw.iterations) == int(ours.iterations) == 2
    assert float(ours.learning_rate) == pytest.approx(float(schedule(2)))
    assert float(keras_adamw.learning_rate) == pytest.approx(float(schedule(4))), (
        "Keras' accumulation now feeds its schedule the update count: ParamGroupAdamW's own "
        "update counter (`micro_steps`) may be replaceable by Keras' accumulation."
    )


# --------------------------------------------------------------------------------------------
# Batch, configs, command line


def test_resolve_batch_and_lr_scaling():
    plan = vt.resolve_batch(2, batch_size=64, per_replica_batch_size=8)
    assert (plan.accumulation_steps, plan.micro_batch_size) == (4, 16)
    assert vt.resolve_batch(4, batch_size=64) == vt.BatchPlan(64, 16, 4, 1)
    assert (
        vt.resolve_batch(3, per_replica_batch_size=2, accumulation_steps=5).global_batch_size == 30
    )
    assert vt.resolve_batch(2, batch_size=64, accumulation_steps=8).per_replica_batch_size == 4
    with pytest.raises(ValueError, match="train.batch_size=64 is not a multiple"):
        vt.resolve_batch(3, batch_size=64, per_replica_batch_size=8)
    with pytest.raises(ValueError, match="train.per_replica_batch_size"):
        vt.resolve_batch(2, batch_size=64, per_replica_batch_size=0)
    assert vt.scaled_learning_rate(1e-3, 16) == pytest.approx(2.5e-4)


def test_paper_configs_hold_the_recipe():
    assert {
        "demo",
        "swin_t_k400",
        "swin_s_k400",
        "swin_b_k400",
        "swin_b_k600_22k",
        "swin_b_ssv2",
    } <= set(available_configs())
    t = load_config("swin_t_k400")
    assert (t["optimizer"]["lr"], t["optimizer"]["weight_decay"], t["model"]["drop_path_rate"]) == (
        1e-3,
        0.02,
        0.1,
    )
    assert (
        t["optimizer"]["beta_1"],
        t["optimizer"]["beta_2"],
        t["optimizer"]["backbone_lr_mult"],
    ) == (0.9, 0.999, 0.1)
    assert (t["schedule"]["warmup_epochs"], t["train"]["epochs"], t["train"]["batch_size"]) == (
        2.5,
        30,
        64,
    )
    assert t["model"]["head_dropout_rate"] == 0.5
    b = load_config("swin_b_k600_22k")
    assert (b["model"]["variant"], b["model"]["num_classes"], b["optimizer"]["lr"]) == (
        "B",
        600,
        3e-4,
    )
    ssv2 = load_config("swin_b_ssv2")
    assert ssv2["model"]["window_size"] == [16, 7, 7] and ssv2["train"]["epochs"] == 60
    assert (
        ssv2["data"]["label_smoothing"],
        ssv2["data"]["flip"],
        ssv2["data"]["rand_augment"],
    ) == (0.1, False, [4, 7])
    assert (ssv2["model"]["drop_path_rate"], ssv2["data"]["sampling"]) == (0.4, "uniform")
    # The test views are the official SSv2 protocol: 1 clip x 3 crops of segment-uniform frames.
    assert recipe.view_protocol(ssv2, "test") == SSV2.replace(short_side=224)
    assert recipe.view_protocol(load_config("swin_t_k400"), "test") == KINETICS.replace(
        short_side=224
    )
    for name in available_configs():
        load_config(name)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.learning_rate=1", "Unknown config key 'optimizer.learning_rate'.*optimizer.lr"),
        ("train.epochs='ten'", "'train.epochs' must be int"),
        ("train.mixed_precision=float16", "'train.mixed_precision' must be one of"),
        ("data.label_smoothing=1.5", "'data.label_smoothing' must be in"),
        ("model.window_size=[8, 7]", "'model.window_size' must be 3 positive ints"),
        ("train", "section.key=value"),
        ("model=1", "names a section"),
        ("schedule.warmup_epochs=40", "'schedule.warmup_epochs'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("swin_t_k400", [override])


def test_cli_reports_bad_config(capsys):
    assert train.main(["--config", "demo", "trian.epochs=3"]) == train.EXIT_USAGE
    assert "Unknown config key 'trian.epochs'" in capsys.readouterr().err
    assert train.main(["--config", "no_such_config"]) == train.EXIT_USAGE
    assert "not found" in capsys.readouterr().err
    assert parse_overrides(["train.epochs=3", "model.weights=null", "data.train=x*.tfrecord"]) == {
        "train": {"epochs": 3},
        "model": {"weights": None},
        "data": {"train": "x*.tfrecord"},
    }
    assert train.main(["--config", "demo", "--print-config", "train.epochs=2"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["epochs"] == 2


# --------------------------------------------------------------------------------------------
# Initialisation


def test_pretrained_keras_model_gets_a_new_head(tmp_path):
    source = tiny_model(classes=5, head_dropout_rate=0.5)
    path = str(tmp_path / "source.keras")
    source.save(path)
    config = tiny_config(
        tmp_path, model={"weights": path, "num_classes": 3}, data={"crop_size": 32}
    )
    model = recipe.build_model(config, log=lambda *a: None)
    assert model.output_shape == (None, 3)
    for variable in model.weights:
        if variable.path.startswith("predictions/"):
            assert variable.shape[-1] == 3
        else:
            np.testing.assert_array_equal(variable.numpy(), _by_path(source, variable.path))


def _by_path(model, path):
    return next(v.numpy() for v in model.weights if v.path == path)


def test_2d_imagenet_swin_is_inflated(tmp_path):
    torch = pytest.importorskip("torch")
    from keras_vswin import convert

    image_swin = tiny_model(
        classes=None, include_top=False, patch_size=(1, 4, 4), window_size=(1, 3, 3)
    )
    state = convert.model_state_dict(image_swin)
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, 0]
    path = tmp_path / "swin_2d.pth"
    torch.save(
        {"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path
    )
    config = tiny_config(tmp_path, model={"weights": str(path), "num_classes": 3})
    model = recipe.build_model(config, log=lambda *a: None)
    kernel = model.get_layer("patch_embedding").proj.kernel.numpy()
    kernel_2d = image_swin.get_layer("patch_embedding").proj.kernel.numpy()[0]
    np.testing.assert_allclose(kernel, np.stack([kernel_2d / 2] * 2), atol=1e-7)


# --------------------------------------------------------------------------------------------
# Training runs


def _scalar_tags(log_dir):
    """Tags of the TensorBoard event files in `log_dir`."""
    import tensorflow as tf

    tags = set()
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    assert train._tensorboard_callback(str(tmp_path), messages.append) is None
    assert "keras-vswin[tensorboard]" in messages[0]
    monkeypatch.undo()
    callback = train._tensorboard_callback(str(tmp_path), messages.append)
    assert isinstance(callback, keras.callbacks.TensorBoard) and len(messages) == 1


def test_run_writes_every_artifact(baseline):
    result, _ = baseline
    run_dir = result.run_dir
    for name in ["config.json", "run.json", "history.csv", "training_curves.png", "model.keras"]:
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "epoch-002.keras",
        "epoch-003.keras",
    ]
    assert _scalar_tags(os.path.join(run_dir, "logs", "train")) >= {"epoch_loss", "epoch_accuracy"}
    assert "epoch_accuracy" in _scalar_tags(os.path.join(run_dir, "logs", "validation"))
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert {"loss", "accuracy", "top5_accuracy", "learning_rate", "val_accuracy"} <= set(
        result.history[0]
    )
    info = json.load(open(os.path.join(run_dir, "run.json")))
    assert info["batch"] == {
        "global_batch_size": 8,
        "per_replica_batch_size": 8,
        "num_replicas": 1,
        "accumulation_steps": 1,
    }
    assert info["steps"]["updates_per_epoch"] == 4
    # The resolved config reproduces the run.
    assert load_config(os.path.join(run_dir, "config.json"))["output_dir"] == run_dir
    report = evaluation.evaluate(
        keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False),
        load_config(os.path.join(run_dir, "config.json")),
        os.path.join(run_dir, "evaluation"),
        log=lambda *a: None,
    )
    assert set(report["results"]) == {"single_view", "multi_view"}
    assert os.path.isfile(os.path.join(run_dir, "evaluation", "confusion_matrix.png"))
    assert report["results"]["single_view"]["num_videos"] == 8


def test_classification_metrics():
    probabilities = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]]
    )
    labels = np.array([0, 1, 1, 0, 2])
    metrics = evaluation.classification_metrics(probabilities, labels, ["a", "b", "c"])
    assert metrics["top1"] == pytest.approx(3 / 5)
    assert metrics["top5"] == 1.0 and metrics["top5_k"] == 3
    assert metrics["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert metrics["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert metrics["per_class"]["b"] == {"accuracy": 0.5, "videos": 2}


def test_overfits_a_tiny_dataset(tmp_path):
    config = tiny_config(
        tmp_path,
        model={"num_classes": 3},
        data={
            "synthetic": {
                "train_per_class": 2,
                "eval_per_class": 0,
                "classes": ["moving_right", "growing", "rotating_clockwise"],
            }
        },
        optimizer={"lr": 5e-3, "epsilon": 1e-8, "weight_decay": 0.0, "backbone_lr_mult": 1.0},
        train={"epochs": 60, "batch_size": 2, "keep_checkpoints": 0, "eval_every": 0},
        schedule={"warmup_epochs": 1.0},
    )
    result = train.run(config, log=lambda *a: None)
    clips, labels = next(iter(recipe.make_data(config).train(6)))  # all 6 training clips
    predictions = np.asarray(result.model(clips, training=False)).argmax(axis=1)
    assert (predictions == np.asarray(labels).argmax(axis=1)).all()
    assert result.history[-1]["accuracy"] == 1.0


@pytest.mark.parametrize(
    "policy, jit", [("mixed_bfloat16", True), ("mixed_float16", False)], ids=["bf16+xla", "fp16"]
)
def test_mixed_precision_and_xla_flags(tmp_path, policy, jit):
    config = tiny_config(
        tmp_path,
        train={"epochs": 1, "mixed_precision": policy, "jit_compile": jit, "keep_checkpoints": 0},
    )
    result = train.run(config, log=lambda *a: None)
    assert np.isfinite(result.history[0]["loss"])
    assert result.model.get_layer("predictions").compute_dtype == "float32"  # float32 logits
    assert result.model.get_layer("stage0_block0").compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":
        assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    final = keras.saving.load_model(result.model_path, compile=False)
    assert final.get_layer("stage0_block0").compute_dtype == "float32"  # saved for inference
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(
        tmp_path, data={"synthetic": {"poison_from_step": 6}}, train={"backup_every": 2}
    )
    with pytest.raises(train.TrainingDiverged, match=r"epoch 2, step 3.*epoch-001.keras") as error:
        train.run(config, log=lambda *a: None)
    assert "Lower optimizer.lr" in str(error.value)
    run_dir = config["output_dir"]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["epoch-001.keras"]
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))
    good = keras.saving.load_model(
        os.path.join(run_dir, "checkpoints", "epoch-001.keras"), compile=False
    )
    assert all(np.isfinite(w).all() for w in good.get_weights())
    states = sorted(n for n in os.listdir(os.path.join(run_dir, "backup")) if n.endswith(".json"))
    newest = json.load(open(os.path.join(run_dir, "backup", states[-1])))
    assert (newest["epoch"], newest["step"]) == (1, 2)  # the last finite state, before the NaN
    assert not any(n.startswith(".tmp") for n in os.listdir(os.path.join(run_dir, "backup")))


# --------------------------------------------------------------------------------------------
# Distribution and fault tolerance (subprocesses)

_TWO_REPLICAS = """
import json, sys
from keras_vswin import finetune as vt
vt.configure_cpu_replicas(2)
from keras_vswin.finetune import train
from keras_vswin.finetune.configs import load_config
for path in sys.argv[1:]:
    result = train.run(load_config(path), log=print)
    print("REPLICAS", result.info["replicas"], result.info["batch"]["accumulation_steps"])
"""


def test_two_replica_mirrored_runs_equal_one_replica(tmp_path, baseline, initial_weights):
    _, expected = baseline
    mirrored = tiny_config(
        tmp_path,
        name="mirrored",
        model={"weights": initial_weights},
        distribution={"strategy": "mirrored", "cpu_replicas": 2},
    )
    accumulated = tiny_config(
        tmp_path,
        name="accumulated",
        model={"weights": initial_weights},
        train={"per_replica_batch_size": 2},  # 8 = 2 per replica x 2 replicas x 2 micro-batches
        distribution={"strategy": "mirrored", "cpu_replicas": 2},
    )
    paths = [write_config(tmp_path / f"{c['name']}.json", c) for c in (mirrored, accumulated)]
    done = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS, *paths],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REPLICAS 2 1" in done.stdout and "REPLICAS 2 2" in done.stdout, done.stdout
    assert_same_weights(final_weights(mirrored["output_dir"]), expected)
    assert_same_weights(final_weights(accumulated["output_dir"]), expected)
    # A training checkpoint loads with its optimizer state (after `import keras_vswin`).
    checkpoint = os.path.join(accumulated["output_dir"], "checkpoints", "epoch-003.keras")
    optimizer = keras.models.load_model(checkpoint).optimizer
    assert isinstance(optimizer, vt.ParamGroupAdamW) and optimizer.accumulation_steps == 2
    assert (int(optimizer.iterations), int(optimizer._micro_steps)) == (12, 24)


_KERAS_ACCUMULATION = """
import json
import keras, numpy as np, tensorflow as tf
from keras_vswin import finetune as vt
vt.configure_cpu_replicas(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((32, 6)).astype("float32")
y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
rules = [{"pattern": "^hidden/", "lr_mult": 0.1}, {"pattern": "bias$", "decay_mult": 0.0}]

def train(strategy, optimizer, batch_size):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(hidden))
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        model.compile(optimizer(), loss=loss)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    model.fit(data, epochs=2, verbose=0, shuffle=False)
    return model.get_weights()

def worst(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
schedule = vt.WarmupCosineDecay(0.05, 8, 2)
def ours(accumulation=None):
    return lambda: vt.ParamGroupAdamW(
        schedule, 0.05, rules, epsilon=1.0, gradient_accumulation_steps=accumulation
    )
expected = train(tf.distribute.get_strategy(), ours(), 8)
result = {"ours": worst(train(mirrored, ours(2), 4), expected)}
sgd = train(tf.distribute.get_strategy(), lambda: keras.optimizers.SGD(0.05), 8)
try:
    accumulated = train(
        mirrored, lambda: keras.optimizers.SGD(0.05, gradient_accumulation_steps=2), 4
    )
    result["keras"] = worst(accumulated, sgd)
except Exception as error:
    result["keras"] = f"{type(error).__name__}: {error}"[:400]
print("RESULT " + json.dumps(result))
"""


def _result_line(output):
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_keras_accumulation_fails_under_mirrored_strategy():
    """Pins why ParamGroupAdamW accumulates in its own `apply`: Keras' own
    `gradient_accumulation_steps` puts the gradient all-reduce inside a condition, which a
    2-replica MirroredStrategy rejects (`merge_call` in a cond). The same `fit` with
    ParamGroupAdamW's accumulation equals one device without accumulation."""
    done = subprocess.run(
        [sys.executable, "-c", _KERAS_ACCUMULATION],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = _result_line(done.stdout + done.stderr)
    assert result["ours"] <= 1e-6, result
    keras_fails = isinstance(result["keras"], str) or result["keras"] > 1e-4
    assert keras_fails, (
        f"Keras' own gradient accumulation now trains correctly under MirroredStrategy "
        f"({result}): ParamGroupAdamW.apply could leave accumulation to Keras."
    )
    if isinstance(result["keras"], str):
        assert "merge_call" in result["keras"], result


_KERAS_FIT_MULTI_WORKER = """
import json
import keras, numpy as np, tensorflow as tf
from keras_vswin import finetune as vt
strategy = tf.distribute.MultiWorkerMirroredStrategy()
total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 6)).astype("float32")
y = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]

def dataset_fn(context):
    data = tf.data.Dataset.from_tensor_slices((x, y))
    data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
    return data.batch(context.get_per_replica_batch_size(8)).repeat()

def model():
    keras.utils.set_random_seed(1)
    with strategy.scope():
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.AdamW(0.01), loss=loss)
    return model

result = {"replicas": float(total)}
try:
    history = model().fit(
        strategy.distribute_datasets_from_function(dataset_fn), epochs=2, steps_per_epoch=3,
        verbose=0,
    )
    result["fit"] = history.history["loss"]
except Exception as error:
    result["fit"] = f"{type(error).__name__}: {error}"[:400]
history = vt.StrategyLoop(model(), strategy).fit(dataset_fn, epochs=2, steps_per_epoch=3)
result["loop"] = history.history["loss"]
print("RESULT " + json.dumps(result))
"""


def test_keras_fit_fails_under_multi_worker_strategy(tmp_path):
    """Pins why `keras-vswin train` runs its own loop (`finetune.StrategyLoop`): Keras' `fit`
    under a real 2-worker MultiWorkerMirroredStrategy fails before its first step (Keras 3.15
    averages the first input batch with `strategy.reduce`, which that strategy cannot do for
    input batches, and then averages scalar metrics along an axis they do not have). The loop
    trains on the same cluster."""
    outputs = _run_workers([sys.executable, "-c", _KERAS_FIT_MULTI_WORKER], timeout=300)
    results = [_result_line(output) for output in outputs]
    for result in results:
        assert result["replicas"] == 2.0, result  # the cluster works
        assert len(result["loop"]) == 2 and all(np.isfinite(result["loop"])), result
        assert isinstance(result["fit"], str), (
            f"Keras' fit now trains under MultiWorkerMirroredStrategy ({result}): "
            "keras-vswin train could use fit again instead of StrategyLoop."
        )
        assert "PerReplica" in result["fit"], f"fit fails differently now, re-check: {result}"
    assert results[0]["loop"] == pytest.approx(results[1]["loop"])  # one global loss


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(command, timeout=300):
    """Runs `command` as the two workers of a TF_CONFIG cluster on 127.0.0.1; their outputs."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[-1][-3000:]
    return outputs


def test_two_worker_run_equals_one_process(tmp_path, baseline, initial_weights):
    _, expected = baseline
    config = tiny_config(
        tmp_path,
        name="workers",
        model={"weights": initial_weights},
        distribution={"strategy": "multi_worker"},
    )
    path = write_config(tmp_path / "workers.json", config)
    outputs = _run_workers([sys.executable, "-m", "training.train", "--config", path])
    assert "MultiWorkerMirroredStrategy with 2 replica(s): batch 8 = 4 per replica" in outputs[0]
    assert_same_weights(final_weights(config["output_dir"]), expected)
    # The logged metrics are averaged over both workers, as one process computes them.
    logged = train_history(config["output_dir"])
    for got, want in zip(logged, baseline[0].history):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["accuracy"] == pytest.approx(want["accuracy"])


def _newest_state(backup_dir):
    if not os.path.isdir(backup_dir):
        return None
    states = sorted(
        n for n in os.listdir(backup_dir) if n.startswith("state-") and n.endswith(".json")
    )
    if not states:
        return None
    try:
        return json.load(open(os.path.join(backup_dir, states[-1])))
    except (OSError, json.JSONDecodeError):
        return None


def test_killed_run_resumes_where_it_stopped(tmp_path, baseline, initial_weights):
    _, expected = baseline
    config = tiny_config(
        tmp_path, name="killed", model={"weights": initial_weights}, train={"backup_every": 2}
    )
    path = write_config(tmp_path / "killed.json", config)
    command = [sys.executable, "-m", "training.train", "--config", path]
    env = _env()
    env[train.TEST_DELAY_ENV] = "0.4"
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    backup_dir = os.path.join(config["output_dir"], "backup")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            state = _newest_state(backup_dir)
            if state and (state["epoch"], state["step"]) >= (1, 2):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)  # mid-way through the second epoch
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    state = _newest_state(backup_dir)
    assert (state["epoch"], state["step"]) == (1, 2), state
    assert not os.path.exists(os.path.join(config["output_dir"], "model.keras"))

    done = subprocess.run(
        command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "resuming from" in done.stdout and "epoch 2, step 2 of 4" in done.stdout, done.stdout
    with open(os.path.join(config["output_dir"], "history.csv")) as handle:
        epochs = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]  # no epoch lost, none repeated
    assert_same_weights(final_weights(config["output_dir"]), expected)
    baseline_history = baseline[0].history
    resumed_history = train_history(config["output_dir"])
    # The resumed epoch's train loss covers all its steps (merged across the restart).
    assert resumed_history[1]["loss"] == pytest.approx(baseline_history[1]["loss"], rel=1e-4)


def train_history(run_dir):
    import csv

    with open(os.path.join(run_dir, "history.csv")) as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]


BACKUP_RUN = """
import json, os, sys, time
import keras
import numpy as np
from keras_vswin import finetune as vt


class HangsOnSecondSave(keras.Sequential):
    saves = 0

    def save_weights(self, filepath, **kwargs):
        super().save_weights(filepath, **kwargs)
        HangsOnSecondSave.saves += 1
        if HangsOnSecondSave.saves == 2 and sys.argv[2] == "kill":  # written, not yet renamed
            print(filepath, flush=True)
            time.sleep(600)


keras.utils.set_random_seed(0)
kind = HangsOnSecondSave if sys.argv[2] == "kill" else keras.Sequential
model = kind([keras.Input((4,)), keras.layers.Dense(2)])
model.compile(optimizer="sgd", loss="mse")
backup = vt.TrainingBackup(sys.argv[1], steps_per_epoch=4, save_freq=1)
if sys.argv[2] == "kill":
    x = np.ones((8, 4), "float32")
    model.fit(x, x[:, :2], batch_size=2, epochs=1, callbacks=[backup], verbose=0)
else:
    point = backup.restore(model)
    print(json.dumps({"step": point.step, "files": sorted(os.listdir(sys.argv[1]))}))
"""


def test_killed_backup_leaves_no_temporary_for_the_next_run(tmp_path):
    backup_dir = str(tmp_path / "backup")
    killed = subprocess.Popen(
        [sys.executable, "-c", BACKUP_RUN, backup_dir, "kill"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        temporary = killed.stdout.readline().strip()
        assert os.path.basename(temporary).startswith(".state-000000002.tmp-"), temporary
        killed.send_signal(signal.SIGKILL)  # while the second state is being written
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.stdout.close()
    assert os.path.exists(temporary)
    time.sleep(0.05)  # the next run starts later (its start is known to a clock tick)
    restarted = subprocess.run(
        [sys.executable, "-c", BACKUP_RUN, backup_dir, "restore"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    result = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert result == {
        "step": 1,  # the last complete state
        "files": ["state-000000001.json", "state-000000001.weights.h5"],
    }
