"""Pretrained weights: the registry table, `weights=` values, and the download/convert cache
against a local HTTP server on 127.0.0.1 (no network).

The served checkpoint is generated: a small random torchvision Swin3D saved with `torch.save` in
the official layout. The registry gets a test entry for it (and the variant table a matching
size "X") through monkeypatch.
"""

import http.server
import io
import json
import logging
import os
import re
import sys
import threading

import keras
import numpy as np
import pytest

from keras_vswin import VideoSwin, model, presets, weights
from keras_vswin import convert as conv
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB, load_labels

torch = pytest.importorskip("torch")
swin3d = pytest.importorskip("torchvision.models.video.swin_transformer")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `conversion/` is a top-level folder, not part of the package
    sys.path.insert(0, ROOT)
TOLERANCE = 2e-5
BACKBONE = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
WINDOW = (2, 3, 3)
CLASSES = 7
FILENAME = "swin_x_patch244_window233_test.pth"
CLIP = np.random.default_rng(5).standard_normal((1, 4, 32, 40, 3)).astype("float32")


# ----------------------------------------------------------------------------------------------
# The registry table


def test_registry_entries_are_complete():
    assert {
        "kinetics400",
        "kinetics400_imagenet22k",
        "kinetics600_imagenet22k",
        "something_something_v2",
    } <= set(weights.list_weights())
    official = presets.OFFICIAL
    assert official == "https://github.com/SwinTransformer/storage/releases/download/v1.0.4/"
    for name, entry in presets.PRESETS.items():
        assert len(load_labels(entry["labels"])) == entry["classes"], name
        assert entry["preprocessing"]["mean"] == MEAN_RGB
        assert entry["preprocessing"]["std"] == STD_RGB
        for variant in entry["variants"]:
            info = weights.weights_info(name, variant)
            assert info["url"].startswith("https://") and info["filename"].endswith(".pth")
            assert info["architecture"]["window_size"] == entry["window_size"]
            assert info["architecture"]["embed_dim"] == model.VARIANTS[variant]["embed_dim"]
            assert 0 < info["top1"] < info["top5"] < 100
    assert set(presets.PRESETS["kinetics400"]["variants"]) == {"T", "S", "B"}
    sthv2 = weights.weights_info("something_something_v2", "B")
    assert sthv2["window_size"] == (16, 7, 7) and sthv2["classes"] == 174
    assert sthv2["filename"] == "swin_base_patch244_window1677_sthv2.pth"


def test_pretrained_overrides():
    assert weights.pretrained_overrides("B", "something_something_v2") == {
        "window_size": (16, 7, 7)
    }
    assert weights.pretrained_overrides("T", "kinetics400") == {"window_size": (8, 7, 7)}
    assert weights.pretrained_overrides("T", None) == {}
    with pytest.raises(ValueError, match=r"exist for Video Swin B, not 'T'"):
        weights.pretrained_overrides("T", "kinetics600_imagenet22k")
    with pytest.raises(ValueError, match="kinetics400_imagenet22k"):
        weights.pretrained_overrides("B", "kinetics_400")


# ----------------------------------------------------------------------------------------------
# A generated checkpoint, a local server, a test registry entry


@pytest.fixture(scope="module")
def checkpoint():
    """(torch model, official-layout checkpoint bytes) of a small random Swin3D."""
    torch.manual_seed(0)
    reference = swin3d.SwinTransformer3d(
        patch_size=[2, 4, 4],
        window_size=list(WINDOW),
        stochastic_depth_prob=0.0,
        num_classes=CLASSES,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in BACKBONE.items()},
    ).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.2 * torch.randn_like(p))
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    official = conv.from_canonical(conv.to_canonical(state, "torchvision"), "official")
    buffer = io.BytesIO()
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in official.items()}}, buffer)
    return reference, buffer.getvalue()


def torch_logits(reference, clip=CLIP):
    with torch.no_grad():
        return reference(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honour_range:
            start = int(match[1])
        payload = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(payload)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if server.drops > 0:  # announce the whole file, send half, hang up
            server.drops -= 1
            self.wfile.write(payload[: len(payload) // 2])
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(checkpoint):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {FILENAME: checkpoint[1]}
    httpd.requests, httpd.drops, httpd.honour_range = [], 0, True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def registry(monkeypatch, tmp_path, server):
    """A registry entry "test_weights" for size "X", served by `server`; returns the cache dir."""
    monkeypatch.setitem(model.VARIANTS, "X", dict(**BACKBONE, drop_path_rate=0.0))
    entry = dict(
        description="test",
        labels=None,
        classes=CLASSES,
        window_size=WINDOW,
        protocol=presets.KINETICS,
        preprocessing=presets.NORMALISATION,
        variants={"X": dict(url=presets.OFFICIAL + FILENAME, pretrain="-", top1=1, top5=2)},
    )
    monkeypatch.setitem(presets.PRESETS, "test_weights", entry)
    monkeypatch.setenv(weights.URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    cache = tmp_path / "cache"
    monkeypatch.setenv(weights.CACHE_ENV, str(cache))
    monkeypatch.setattr(weights, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(weights, "DOWNLOAD_RETRIES", 2)
    return cache


def tiny(**kwargs):
    return VideoSwin(**BACKBONE, window_size=WINDOW, classifier_activation=None, **kwargs)


def test_download_convert_cache_reuse(registry, server, checkpoint):
    reference, _ = checkpoint
    first = tiny(classes=CLASSES, weights="test_weights")
    np.testing.assert_allclose(first(CLIP), torch_logits(reference), atol=TOLERANCE)
    assert len(server.requests) == 1
    stem = FILENAME[: -len(".pth")]
    assert sorted(os.listdir(registry)) == sorted(
        [FILENAME, stem + ".weights.h5", stem + ".weights.json"]
    )
    converted = registry / (stem + ".weights.h5")
    sidecar = json.loads((registry / (stem + ".weights.json")).read_text())
    assert sidecar["sha256"] == weights.sha256_of(converted)
    assert sidecar["architecture"]["window_size"] == list(WINDOW)
    built = os.path.getmtime(converted)

    second = tiny(classes=CLASSES, weights="test_weights")  # the cache: no request, no rebuild
    assert len(server.requests) == 1 and os.path.getmtime(converted) == built
    np.testing.assert_allclose(second(CLIP), torch_logits(reference), atol=TOLERANCE)

    # A backbone from the same cache.
    features = tiny(include_top=False, pooling="avg", weights="test_weights")
    with torch.no_grad():
        x = reference.patch_embed(torch.from_numpy(CLIP).permute(0, 4, 1, 2, 3))
        expected = reference.norm(reference.features(x)).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(features(CLIP), expected, atol=TOLERANCE)
    assert len(server.requests) == 1


def test_convert_cli_takes_a_registry_name(registry, server, checkpoint, tmp_path):
    from keras_vswin.cli import convert as cli

    out = str(tmp_path / "registry.keras")
    args = ["test_weights", "-o", out, "-q", "--classifier-activation", "none"]  # one variant
    assert cli.main(args) == 0
    assert len(server.requests) == 1 and FILENAME in os.listdir(registry)
    restored = keras.saving.load_model(out)
    np.testing.assert_allclose(restored(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)


def test_dropped_connection_leaves_nothing(registry, server):
    server.drops = 10**6
    with pytest.raises(weights.WeightsDownloadError) as error:
        tiny(classes=CLASSES, weights="test_weights")
    message = str(error.value)
    assert FILENAME in message and "after 3 attempts" in message
    assert len(server.requests) == 3
    assert os.listdir(registry) == []  # no partial file, no cache entry


def test_download_resumes_after_a_drop(registry, server, checkpoint, caplog):
    server.drops = 1
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        resumed = tiny(classes=CLASSES, weights="test_weights")
    assert "interrupted" in caplog.text
    size = len(checkpoint[1])
    assert server.requests[1][1] == f"bytes={size // 2}-"  # resumed where it stopped
    np.testing.assert_allclose(resumed(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)


def test_download_restarts_when_the_server_ignores_ranges(registry, server, checkpoint):
    server.drops, server.honour_range = 1, False
    restarted = tiny(classes=CLASSES, weights="test_weights")
    assert len(server.requests) == 2
    np.testing.assert_allclose(restarted(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)


def test_missing_file_fails_fast(registry, server):
    server.files = {}
    with pytest.raises(weights.WeightsDownloadError, match="HTTP 404"):
        tiny(classes=CLASSES, weights="test_weights")
    assert len(server.requests) == 1 and os.listdir(registry) == []


def test_unknown_host_fails_at_once(registry, monkeypatch):
    # `.invalid` never resolves (RFC 2606), online or offline: no retry, no backoff.
    monkeypatch.setenv(weights.URL_ENV, "http://keras-vswin-mirror.invalid/")
    monkeypatch.setattr(weights.time, "sleep", lambda s: pytest.fail(f"retried ({s} s backoff)"))
    with pytest.raises(weights.WeightsDownloadError, match="keras-vswin-mirror.invalid") as error:
        tiny(classes=CLASSES, weights="test_weights")
    assert "after" not in str(error.value)  # not "after N attempts"
    assert os.listdir(registry) == []


def test_corrupted_cache_is_detected(registry, server, checkpoint, caplog):
    tiny(classes=CLASSES, weights="test_weights")
    stem = FILENAME[: -len(".pth")]
    converted = registry / (stem + ".weights.h5")
    data = bytearray(converted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    converted.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        rebuilt = tiny(classes=CLASSES, weights="test_weights")
    assert "do not match their record" in caplog.text
    assert len(server.requests) == 1  # rebuilt from the cached checkpoint
    np.testing.assert_allclose(rebuilt(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)

    # A truncated checkpoint (and no converted file): downloaded again.
    os.remove(converted)
    original = registry / FILENAME
    original.write_bytes(original.read_bytes()[:1000])
    again = tiny(classes=CLASSES, weights="test_weights")
    assert len(server.requests) == 2
    np.testing.assert_allclose(again(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)


def test_other_class_count_needs_the_fine_tuning_path(registry, server, checkpoint, caplog):
    with pytest.raises(weights.HeadMismatchError, match=r"include_top=False.*skip_head=True"):
        tiny(classes=3, weights="test_weights")
    assert server.requests == []  # refused before downloading
    fine_tune = tiny(classes=3)
    head = [w.numpy().copy() for w in fine_tune.get_layer("predictions").weights]
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        report = weights.load_weights(fine_tune, "test_weights", skip_head=True)
    assert report.ok and len(report.skipped_head) == 2
    assert "head not loaded" in caplog.text  # reported, not silent
    for before, after in zip(head, fine_tune.get_layer("predictions").weights):
        np.testing.assert_array_equal(before, after.numpy())
    reference = tiny(classes=CLASSES, weights="test_weights")
    features = [
        keras.Model(m.input, m.get_layer("norm").output)(CLIP) for m in (fine_tune, reference)
    ]
    np.testing.assert_array_equal(*features)


def test_registry_window_change(registry, server):
    larger = VideoSwin(**BACKBONE, window_size=(4, 3, 3), classes=CLASSES)
    with pytest.raises(ValueError, match="resize_window=True"):
        weights.load_weights(larger, "test_weights")
    report = weights.load_weights(larger, "test_weights", resize_window=True)
    assert report.ok and report.resized and report.resized[0][1:] == (WINDOW, (4, 3, 3))


def test_wrong_file_behind_a_registry_url(registry, server, checkpoint):
    presets.PRESETS["test_weights"]["classes"] = 9  # the registry promises another head
    with pytest.raises(ValueError, match="not the checkpoint the registry describes"):
        tiny(classes=9, weights="test_weights")
    assert not any(name.endswith(".weights.h5") for name in os.listdir(registry))


# ----------------------------------------------------------------------------------------------
# Local files as `weights=`


def test_local_files(tmp_path, checkpoint):
    reference, data = checkpoint
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    assert weights.pretrained_overrides("X", str(path)) == {"window_size": WINDOW}
    from_pth = tiny(classes=CLASSES, weights=str(path))
    np.testing.assert_allclose(from_pth(CLIP), torch_logits(reference), atol=TOLERANCE)
    with pytest.raises(ValueError, match="skip_head=True"):
        tiny(classes=3, weights=str(path))
    with pytest.raises(ValueError, match="window_size"):
        VideoSwin(**BACKBONE, window_size=(4, 3, 3), classes=CLASSES, weights=str(path))
    with pytest.raises(ValueError, match="embed_dim: checkpoint 16, model 32"):
        VideoSwin(embed_dim=32, depths=(2, 2), num_heads=(1, 2), window_size=WINDOW,
                  classes=CLASSES, weights=str(path))  # fmt: skip

    keras_file = tmp_path / "model.keras"
    from_pth.save(keras_file)
    from_keras = tiny(classes=CLASSES, weights=str(keras_file))
    np.testing.assert_allclose(from_keras(CLIP), from_pth(CLIP), atol=1e-6)
    backbone = tiny(include_top=False, weights=str(keras_file))
    assert backbone.output.shape[-1] == 32
    with pytest.raises(ValueError, match="neither a registry name"):
        tiny(weights=str(tmp_path / "missing.pth"))


def test_constructor_takes_the_registry_class_count_and_fine_tunes(registry, server, checkpoint):
    reference, _ = checkpoint
    default = tiny(weights="test_weights")  # classes=None: the weights' own head
    assert default.output.shape[-1] == CLASSES
    np.testing.assert_allclose(default(CLIP), torch_logits(reference), atol=TOLERANCE)
    fine_tune = tiny(weights="test_weights", classes=3, skip_head=True)
    assert fine_tune.output.shape[-1] == 3
    features = [
        keras.Model(m.input, m.get_layer("norm").output)(CLIP) for m in (fine_tune, default)
    ]
    np.testing.assert_array_equal(*features)
