"""Checkpoint conversion: layouts, architecture inference, strict reports, window resizing,
2D -> 3D inflation and the `keras-vswin convert` / `keras-vswin verify` command lines.

Checkpoints are written by the tests with `torch.save` from random-weight torchvision
`SwinTransformer3d` models (small configurations) renamed to each layout; no downloads.
"""

import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vswin.model
from keras_vswin import VideoSwin, weights, windows
from keras_vswin import convert as conv

torch = pytest.importorskip("torch")
swin3d = pytest.importorskip("torchvision.models.video.swin_transformer")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `conversion/` is a top-level folder, not part of the package
    sys.path.insert(0, ROOT)
TOLERANCE = 2e-5
TINY = dict(embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=(2, 3, 3))
# Pads every axis (6 frames -> 3 token frames, 38 and 45 pixels) and shifts windows.
CLIP = (2, 6, 38, 45, 3)


def torchvision_model(classes=7, window=(2, 3, 3), seed=0, **overrides):
    """A small random torchvision Swin3D; every parameter perturbed so nothing is trivial."""
    torch.manual_seed(seed)
    config = {**TINY, "window_size": window, **overrides}
    model = swin3d.SwinTransformer3d(
        patch_size=[2, 4, 4],
        embed_dim=config["embed_dim"],
        depths=list(config["depths"]),
        num_heads=list(config["num_heads"]),
        window_size=list(config["window_size"]),
        stochastic_depth_prob=0.0,
        num_classes=classes,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torch_logits(model, clip):
    with torch.no_grad():
        return model(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()


def torch_features(model, clip):
    """Pooled features (before the head) of a torchvision Swin3D."""
    with torch.no_grad():
        x = model.patch_embed(torch.from_numpy(clip).permute(0, 4, 1, 2, 3))
        x = model.norm(model.features(x))
        return x.mean(dim=(1, 2, 3)).numpy()


def layout_state(state, layout):
    """A torchvision state dict renamed to `layout` (the inverse of the mapping table)."""
    return conv.from_canonical(conv.to_canonical(state, "torchvision"), layout)


def save_checkpoint(path, state, wrap=False, legacy=False):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    obj = (
        {"state_dict": tensors, "meta": {"epoch": 30}, "optimizer": {"lr": 1e-3}}
        if wrap
        else tensors
    )
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


@pytest.fixture(scope="module")
def reference():
    model = torchvision_model()
    clip = np.random.default_rng(1).standard_normal(CLIP).astype("float32")
    return model, numpy_state(model), clip


@pytest.mark.parametrize(
    "layout, wrap, legacy",
    [
        ("official", True, False),
        ("official", True, True),
        ("mmaction2", True, False),
        ("torchvision", False, False),
        ("backbone", False, False),
    ],
    ids=["official", "official-legacy-format", "mmaction2", "torchvision", "backbone"],
)
def test_round_trip_every_layout(tmp_path, reference, layout, wrap, legacy):
    model, state, clip = reference
    path = save_checkpoint(tmp_path / "ckpt.pth", layout_state(state, layout), wrap, legacy)

    keras_model, report, arch = weights.convert_checkpoint(path, classifier_activation=None)

    assert arch["layout"] == layout == conv.detect_layout(conv.read_state_dict(path))
    assert report.ok and report.checked_index == sum(TINY["depths"])
    assert arch["window_size"] == (2, 3, 3) and arch["window_source"] == "relative_position_index"
    if layout == "backbone":
        assert arch["classes"] is None and len(keras_model.output.shape) == 5
        features = np.asarray(keras_model(clip)).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(features, torch_features(model, clip), atol=TOLERANCE)
    else:
        assert arch["classes"] == 7 and len(report.loaded) == len(keras_model.weights)
        diff = np.abs(np.asarray(keras_model(clip)) - torch_logits(model, clip)).max()
        assert diff <= TOLERANCE, f"{layout}: {diff}"


def test_infer_architecture_of_a_released_size():
    state = numpy_state(swin3d.swin3d_t(weights=None))
    arch = conv.infer_architecture(state)
    assert arch == dict(
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        patch_size=(2, 4, 4),
        window_size=(8, 7, 7),
        mlp_ratio=4.0,
        qkv_bias=True,
        patch_norm=True,
        classes=400,
        layout="torchvision",
        window_source="relative_position_index",
    )
    assert keras_vswin.model.variant_of(arch) == "T"
    # Without index buffers the window comes from the 2535-row tables.
    no_index = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    no_index = layout_state(no_index, "official")
    assert conv.infer_architecture(no_index)["window_size"] == (8, 7, 7)


def test_window_from_table_rows_and_index(caplog):
    # The facts: 2535 rows -> 8x7x7, 5239 -> 16x7x7 (wh == 7 preferred over e.g. (1268, 1, 1)).
    assert conv.window_from_table_rows(2535)[0] == (8, 7, 7)
    assert conv.window_from_table_rows(5239)[0] == (16, 7, 7)
    assert (1268, 1, 1) in conv.window_from_table_rows(2535)
    for window in [(2, 3, 4), (8, 7, 7), (1, 5, 2), (3, 3, 3)]:
        index = windows.relative_position_index(window)
        assert conv.window_from_index(index, windows.bias_table_size(window)) == window
    assert conv.window_from_index(np.zeros((4, 4), "int64")) is None
    # Without index buffers an ambiguous table size is resolved and logged.
    state = layout_state(numpy_state(torchvision_model(classes=3)), "backbone")
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        arch = conv.infer_architecture(state)
    assert arch["window_size"] == (2, 3, 3) and "ambiguous" in arch["window_source"]
    assert "ambiguous" in caplog.text


def test_strict_loading_lists_every_problem(reference):
    _, state, _ = reference
    state = layout_state(state, "official")
    del state["backbone.layers.1.blocks.0.mlp.fc2.bias"]
    state["backbone.layers.0.blocks.0.attn.extra_scale"] = np.ones(3, "float32")
    state["backbone.norm.weight"] = np.ones(5, "float32")
    model = VideoSwin(**TINY, classes=7)
    with pytest.raises(ValueError) as error:
        conv.load_state_dict(model, state)
    message = str(error.value)
    # Each problem once, named as in the checkpoint.
    assert "missing in checkpoint (1): backbone.layers.1.blocks.0.mlp.fc2.bias\n" in message
    assert "unexpected in checkpoint (1): backbone.layers.0.blocks.0.attn.extra_scale" in message
    assert "shape mismatch: backbone.norm.weight: checkpoint (5,) vs model (64,)" in message
    report = conv.load_state_dict(model, state, strict=False)
    assert not report.ok and len(report.missing) == len(report.unexpected) == 1
    assert report.mismatched == [("backbone.norm.weight", (5,), (64,))]


def test_relative_position_index_is_checked_never_loaded(reference):
    _, state, _ = reference
    state = dict(state)
    key = "features.2.1.attn.relative_position_index"
    state[key] = state[key][::-1].copy()
    with pytest.raises(ValueError, match="relative_position_index"):
        conv.load_state_dict(VideoSwin(**TINY, classes=7), state)


def test_new_head_for_another_class_count(tmp_path, reference):
    model, state, clip = reference
    with pytest.raises(ValueError, match="skip_head=True"):
        conv.load_state_dict(VideoSwin(**TINY, classes=3), state)
    fresh = VideoSwin(**TINY, classes=3, classifier_activation=None)
    head_before = [w.numpy().copy() for w in fresh.get_layer("predictions").weights]
    report = conv.load_state_dict(fresh, state, skip_head=True)
    assert report.ok and report.skipped_head == ["head.weight", "head.bias"]
    assert "head not loaded" in report.summary()
    for before, after in zip(head_before, fresh.get_layer("predictions").weights):
        np.testing.assert_array_equal(before, after.numpy())
    features = keras.Model(fresh.input, fresh.get_layer("norm").output)(clip)
    np.testing.assert_allclose(
        np.asarray(features).mean(axis=(1, 2, 3)), torch_features(model, clip), atol=TOLERANCE
    )
    # The same through the converter and the command line.
    path = save_checkpoint(tmp_path / "k.pth", layout_state(state, "official"), wrap=True)
    with pytest.raises(ValueError, match="skip_head"):
        weights.convert_checkpoint(path, classes=3)
    converted, report, _ = weights.convert_checkpoint(path, classes=3, skip_head=True)
    assert converted.output.shape[-1] == 3 and report.skipped_head


def _torch_bicubic(grid, size):
    tensor = torch.from_numpy(grid)[None]
    out = torch.nn.functional.interpolate(tensor, size=size, mode="bicubic", align_corners=False)
    return out[0].numpy()


def test_resize_bias_table(rng):
    heads = 3
    table = rng.standard_normal((windows.bias_table_size((1, 4, 4)), heads)).astype("float32")
    # Spatial resizing is PyTorch's bicubic (what the official inflation code calls).
    for new in [(1, 7, 7), (1, 2, 2), (1, 4, 6)]:
        resized = conv.resize_bias_table(table, (1, 4, 4), new)
        grid = table.reshape(7, 7, heads).transpose(2, 0, 1)
        expected = _torch_bicubic(grid, (2 * new[1] - 1, 2 * new[2] - 1)).transpose(1, 2, 0)
        np.testing.assert_allclose(resized, expected.reshape(-1, heads), atol=1e-5)
    # Same window: unchanged. Temporal axis of size 1: duplicated for every temporal offset.
    np.testing.assert_allclose(conv.resize_bias_table(table, (1, 4, 4), (1, 4, 4)), table)
    tiled = conv.resize_bias_table(table, (1, 4, 4), (3, 4, 4)).reshape(5, -1, heads)
    np.testing.assert_allclose(tiled, np.broadcast_to(table, (5, *table.shape)), atol=1e-6)
    # "extend": offsets both windows have keep their values, larger ones copy the edge.
    table3d = rng.standard_normal((windows.bias_table_size((2, 2, 2)), heads)).astype("float32")
    grid = table3d.reshape(3, 3, 3, heads)
    extended = conv.resize_bias_table(table3d, (2, 2, 2), (4, 2, 2), "extend")
    extended = extended.reshape(7, 3, 3, heads)
    np.testing.assert_array_equal(extended[2:5], grid)  # offsets -1, 0, 1
    np.testing.assert_array_equal(extended[:2], np.stack([grid[0]] * 2))
    np.testing.assert_array_equal(extended[5:], np.stack([grid[2]] * 2))
    shrunk = conv.resize_bias_table(table3d, (2, 2, 2), (1, 2, 2), "extend")
    np.testing.assert_array_equal(shrunk, grid[1].reshape(-1, heads))
    with pytest.raises(ValueError, match="rows"):
        conv.resize_bias_table(table3d, (2, 3, 3), (2, 2, 2))


def test_window_change_when_fine_tuning(tmp_path, reference):
    _, state, clip = reference
    model = VideoSwin(**{**TINY, "window_size": (4, 3, 3)}, classes=7)
    with pytest.raises(ValueError, match="resize_window=True"):
        conv.load_state_dict(model, state)
    report = conv.load_state_dict(model, state, resize_window=True)
    assert report.ok and len(report.resized) == sum(TINY["depths"])
    assert report.resized[0][1:] == ((2, 3, 3), (4, 3, 3))
    canonical = conv.to_canonical(state)
    expected = conv.resize_bias_table(
        canonical["layers.1.blocks.1.attn.relative_position_bias_table"], (2, 3, 3), (4, 3, 3)
    )
    got = model.get_layer("stage1_block1").attn.relative_position_bias_table.numpy()
    np.testing.assert_allclose(got, expected)
    assert np.isfinite(np.asarray(model(clip))).all()


def export_2d_swin(model_2d):
    """The official image-Swin state dict of a keras_vswin model with patch_t = window_t = 1."""
    state = conv.model_state_dict(model_2d)  # includes relative_position_index buffers
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, 0]
    state["layers.0.blocks.1.attn_mask"] = np.zeros((4, 9, 9), "float32")
    dim = state["norm.weight"].shape[0]
    state["head.weight"] = np.ones((1000, dim), "float32")
    state["head.bias"] = np.zeros(1000, "float32")
    return state


@pytest.fixture(scope="module")
def swin_2d():
    """An image Swin: a keras_vswin model with one-frame patches and windows, random weights."""
    config = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), include_top=False)
    model = VideoSwin(patch_size=(1, 4, 4), window_size=(1, 3, 3), drop_path_rate=0.0, **config)
    rng = np.random.default_rng(3)
    for v in model.weights:
        gamma = v.path.endswith("gamma")
        v.assign((gamma + (0.1 if gamma else 0.3) * rng.standard_normal(v.shape)).astype("float32"))
    frame = rng.standard_normal((1, 1, 30, 33, 3)).astype("float32")
    return model, config, frame


@pytest.mark.parametrize("frames, window_t", [(8, 2), (12, 2), (16, 4)])
def test_inflated_model_sees_a_still_clip_as_the_image(swin_2d, frames, window_t):
    """Inflation: a clip of identical frames gives every token frame the 2D model's features.

    Patch embedding: pt copies of W/pt summed over pt identical frames = the 2D kernel. Attention:
    the bias is the same for every temporal offset, so the keys at one spatial position are
    copies with equal logits and values: softmax splits the 2D weight evenly among them and the
    output is the 2D output (also inside shifted windows, where each temporal region has the same
    number of copies for every spatial key). Padding in time would add zero tokens, so the token
    frames are a multiple of the window.
    """
    model_2d, config, frame = swin_2d
    expected = np.asarray(model_2d(frame))[:, 0]
    model = VideoSwin(patch_size=(2, 4, 4), window_size=(window_t, 3, 3), **config)
    report = conv.load_2d_state_dict(model, export_2d_swin(model_2d))
    assert report.ok and report.layout == "2d" and "method='inflate'" in report.summary()
    features = np.asarray(model(np.repeat(frame, frames, axis=1)))
    assert features.shape[1] == frames // 2
    for t in range(features.shape[1]):
        np.testing.assert_allclose(features[:, t], expected, atol=1e-4 * np.abs(expected).max())


def test_center_inflation(swin_2d):
    """Centre initialisation: the patch embedding still sees a still clip as the image, but the
    bias of other temporal offsets is zero, so attention differs unless the 2D bias is zero."""
    model_2d, config, frame = swin_2d
    clip = np.repeat(frame, 8, axis=1)
    state = export_2d_swin(model_2d)
    model = VideoSwin(patch_size=(2, 4, 4), window_size=(2, 3, 3), **config)
    conv.load_2d_state_dict(model, state, method="center")
    kernel = model.get_layer("patch_embedding").proj.kernel.numpy()
    assert not kernel[0].any() and kernel[1].any()  # all weight on the centre frame t = 1

    def embed(m, x):
        return np.asarray(m.get_layer("patch_embedding")(x))

    np.testing.assert_allclose(embed(model, clip)[:, 2], embed(model_2d, frame)[:, 0], atol=1e-5)
    expected = np.asarray(model_2d(frame))[:, 0]
    assert np.abs(np.asarray(model(clip))[:, 0] - expected).max() > 1e-3
    zero_bias = {k: (0 * v if "bias_table" in k else v) for k, v in state.items()}
    conv.load_2d_state_dict(model, zero_bias, method="center")
    for v in model_2d.weights:
        if "bias_table" in v.path:
            v.assign(np.zeros(v.shape, "float32"))
    np.testing.assert_allclose(
        np.asarray(model(clip))[:, 3], np.asarray(model_2d(frame))[:, 0], atol=1e-4
    )


def test_2d_checkpoint_file_as_weights(tmp_path, swin_2d, caplog):
    model_2d, config, frame = swin_2d
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in export_2d_swin(model_2d).items()
    }
    path = tmp_path / "swin_tiny_patch4_window3.pth"
    torch.save({"model": tensors}, path)
    # A different spatial window: the 2D tables are resized bicubically.
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        model = VideoSwin(
            patch_size=(2, 4, 4),
            window_size=(2, 5, 5),
            classes=4,
            weights=str(path),
            **{k: v for k, v in config.items() if k != "include_top"},
        )
    assert "initialised from a 2D Swin" in caplog.text
    table = model.get_layer("stage1_block0").attn.relative_position_bias_table.numpy()
    source = model_2d.get_layer("stage1_block0").attn.relative_position_bias_table.numpy()
    expected = conv.resize_bias_table(np.tile(source, (3, 1)), (2, 3, 3), (2, 5, 5))
    np.testing.assert_allclose(table, expected, atol=1e-5)
    with pytest.raises(ValueError, match="2D"):
        conv.infer_architecture(export_2d_swin(model_2d))


def test_model_state_dict_round_trip(rng):
    model = VideoSwin(**TINY, classes=5)
    state = conv.model_state_dict(model)
    assert len(conv.canonical_keys(TINY["depths"])) == len(model.weights)
    for layout in conv.EXPORT_LAYOUTS:
        renamed = conv.from_canonical(state, layout)
        assert conv.detect_layout(renamed) == layout
        if layout != "backbone":
            assert conv.to_canonical(renamed, layout) == state
    copy = VideoSwin(**TINY, classes=5)
    assert conv.load_state_dict(copy, conv.from_canonical(state, "mmaction2")).ok
    x = rng.standard_normal((1, 4, 24, 24, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(copy(x)), np.asarray(model(x)))


# ----------------------------------------------------------------------------------------------
# Command lines


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, reference):
    _, state, _ = reference
    path = tmp_path_factory.mktemp("ckpt") / "swin_tiny_test.pth"
    return save_checkpoint(path, layout_state(state, "official"), wrap=True)


def test_convert_cli_outputs(tmp_path, reference, official_file, capsys):
    import tensorflow as tf

    from keras_vswin.cli import convert as cli

    model, _, clip = reference
    expected = torch_logits(model, clip)
    keras_path, weights_path = str(tmp_path / "m.keras"), str(tmp_path / "m.weights.h5")
    saved_model = str(tmp_path / "saved")
    common = ["--classifier-activation", "none"]
    assert cli.main([official_file, "--output", keras_path, *common]) == 0
    printed = capsys.readouterr().out
    for stage in ("[1/3] reading", "[2/3] mapping", "[3/3] writing", "relative_position_index"):
        assert stage in printed
    assert cli.main([official_file, "-o", weights_path, "-q", *common]) == 0
    assert cli.main([official_file, "-o", saved_model, "-q", "--labels", "kinetics400"]) == 1
    assert "400 names, the model 7 classes" in capsys.readouterr().err
    assert cli.main([official_file, "-o", saved_model, "-q", *common]) == 0
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.weights.h5", "saved"]  # no leftovers

    restored = keras.saving.load_model(keras_path)
    np.testing.assert_allclose(np.asarray(restored(clip)), expected, atol=TOLERANCE)
    fresh = VideoSwin(**TINY, classes=7, classifier_activation=None)
    fresh.load_weights(weights_path)
    np.testing.assert_allclose(np.asarray(fresh(clip)), expected, atol=TOLERANCE)
    loaded = tf.saved_model.load(saved_model)
    np.testing.assert_allclose(loaded.serve(tf.constant(clip)).numpy(), expected, atol=TOLERANCE)

    # An existing output is kept unless --overwrite.
    before = os.path.getmtime(keras_path)
    assert cli.main([official_file, "-o", keras_path, "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err and os.path.getmtime(keras_path) == before


def test_convert_cli_fine_tuning_and_window(tmp_path, official_file):
    from keras_vswin.cli import convert as cli

    out = str(tmp_path / "ft.keras")
    assert cli.main([official_file, "-o", out, "-q", "--classes", "3"]) == 1
    args = [
        official_file,
        "-o",
        out,
        "-q",
        "--classes",
        "3",
        "--skip-head",
        "--window",
        "4",
        "3",
        "3",
    ]
    assert cli.main(args) == 0
    model = keras.saving.load_model(out)
    assert model.output.shape[-1] == 3
    assert model.get_layer("stage0_block0").window_size == (4, 3, 3)


def test_cli_help_is_fast_and_complete():
    for tool, flags in [
        ("conversion.convert", ["--output", "--layout", "--skip-head", "--window", "--labels"]),
        ("conversion.verify", ["--frames", "--size", "--converted", "--tolerance"]),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", tool, "--help"], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        for flag in flags:
            assert flag in done.stdout


def test_verify_cli(tmp_path, official_file, capsys):
    from keras_vswin.cli import verify

    assert verify.main([official_file, "--frames", "6", "--size", "40"]) == 0
    assert "max |Keras - PyTorch|" in capsys.readouterr().out
    # A converted file that does not hold the checkpoint's weights fails the check.
    wrong = VideoSwin(**TINY, classes=7)
    wrong.save_weights(tmp_path / "wrong.weights.h5")
    args = [official_file, "--frames", "6", "--size", "40", "--converted"]
    assert verify.main([*args, str(tmp_path / "wrong.weights.h5")]) == 1
    result = verify.verify(official_file, frames=4, size=32, out=lambda *_: None)
    assert result["compared"] == "logits" and result["max_abs_diff"] <= TOLERANCE


class _Payload:
    """Unpickling this would run a shell command (if the reader ever called it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_metadata_objects_are_refused_unless_allowed(tmp_path, reference, caplog):
    import argparse

    from keras_vswin.checkpoint_reader import UnsafeCheckpointError

    model, state, clip = reference
    tensors = {k: torch.from_numpy(v) for k, v in layout_state(state, "official").items()}
    marker = tmp_path / "executed"
    meta = {"args": argparse.Namespace(lr=0.1), "hook": _Payload(marker)}
    path = tmp_path / "with_meta.pth"
    torch.save({"state_dict": tensors, "meta": meta}, path)
    # Valid weights do not make a malicious global next to them acceptable.
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace") as info:
        weights.convert_checkpoint(str(path), classifier_activation=None)
    assert str(path) in str(info.value) and not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        conv.read_state_dict(str(path))
    # Explicitly allowed: a warning names both globals; they are inert placeholders.
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        state_dict = conv.read_state_dict(str(path), allow_unknown_globals=True)
    assert "argparse.Namespace" in caplog.text and "system" in caplog.text
    assert str(path) in caplog.text and not marker.exists()
    converted, report, _ = weights.convert_state_dict(state_dict, classifier_activation=None)
    assert report.ok
    with pytest.raises(ValueError, match="memory budget of 1.0 KiB"):
        conv.read_state_dict(str(path), allow_unknown_globals=True, memory_budget=1024)
    np.testing.assert_allclose(converted(clip), torch_logits(model, clip), atol=TOLERANCE)


@pytest.mark.parametrize(
    "layout, extra, other",
    [
        ("official", "norm.weight", "backbone.norm.weight"),
        ("mmaction2", "backbone.norm.bias", "backbone.norm3.bias"),
        ("torchvision", "layers.0.blocks.0.norm1.weight", "features.0.0.norm1.weight"),
    ],
)
def test_ambiguous_state_dict_names_both_keys(tmp_path, reference, layout, extra, other):
    model, state, _ = reference
    ambiguous = layout_state(state, layout)
    assert other in ambiguous and extra not in ambiguous
    ambiguous[extra] = np.zeros_like(ambiguous[other])  # the same weight under two names
    for call in (
        lambda: conv.to_canonical(ambiguous, layout),
        lambda: conv.infer_architecture(ambiguous, layout),
        lambda: weights.convert_state_dict(ambiguous, layout=layout),
        lambda: weights.convert_checkpoint(save_checkpoint(tmp_path / "amb.pth", ambiguous)),
    ):
        with pytest.raises(ValueError, match="Ambiguous state dict") as info:
            call()
        assert f"`{extra}`" in str(info.value) and f"`{other}`" in str(info.value)
    keras_model = weights.convert_state_dict(layout_state(state, layout), layout=layout)[0]
    with pytest.raises(ValueError, match="Ambiguous state dict") as info:
        conv.load_state_dict(keras_model, ambiguous, layout=layout)
    assert f"`{extra}`" in str(info.value) and f"`{other}`" in str(info.value)
