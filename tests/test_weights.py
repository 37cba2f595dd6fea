"""Pretrained weights: the registry table, `weights=` values, and the download/convert cache
against a local HTTP server on 127.0.0.1 (no network).

The served checkpoint is generated: a small random torchvision Swin3D saved with `torch.save` in
the official layout. The registry gets a test entry for it (and the variant table a matching
size "X") through monkeypatch.
"""

import hashlib
import http.server
import io
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

from keras_vswin import VideoSwin, atomic, model, presets, weights
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


def make_checkpoint(seed=0, classes=CLASSES):
    """(torch model, official-layout checkpoint bytes) of a small random Swin3D."""
    torch.manual_seed(seed)
    reference = swin3d.SwinTransformer3d(
        patch_size=[2, 4, 4],
        window_size=list(WINDOW),
        stochastic_depth_prob=0.0,
        num_classes=classes,
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


@pytest.fixture(scope="module")
def checkpoint():
    return make_checkpoint()


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
        if not server.no_length:  # else the body ends when the connection closes (HTTP/1.0)
            self.send_header("Content-Length", str(len(payload)))
        if start:
            total = "*" if server.no_length else len(body)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{total}")
        self.end_headers()
        if server.drops > 0:  # announce the whole file, send half, hang up (or hang)
            server.drops -= 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if server.stall is not None:
                server.stall.wait(120)
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(checkpoint):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {FILENAME: checkpoint[1]}
    httpd.requests, httpd.drops, httpd.honour_range = [], 0, True
    httpd.no_length, httpd.stall = False, None
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    if httpd.stall is not None:
        httpd.stall.set()
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
        [FILENAME, FILENAME + ".json", stem + ".weights.h5", stem + ".weights.json"]
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
    # What an offline machine (or a typo in a mirror's host) gives: a name that does not resolve.
    # getaddrinfo is replaced so that the test sends no DNS query; no retry, no backoff.
    def unresolvable(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
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


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_known_hashes_come_from_the_presets_and_torchvision_file_names():
    tiny_k400 = weights.weights_info("kinetics400", "T")
    assert weights.known_sha256(tiny_k400) == (
        presets.PRESETS["kinetics400"]["variants"]["T"]["sha256"],
        "the presets table",
    )
    assert len(weights.known_sha256(weights.weights_info("something_something_v2", "B"))[0]) == 64
    for variant, prefix in {"T": "7615ae03", "S": "da41c237", "B": "24f7c7c6"}.items():
        info = weights.weights_info("kinetics400_torchvision", variant)
        assert weights.known_sha256(info) == (prefix, "its file name")
    assert weights.known_sha256(weights.weights_info("kinetics400", "S")) == (None, None)


def test_a_half_file_without_length_is_never_cached(registry, server, checkpoint):
    server.no_length, server.drops = True, 10**6  # every response stops half way, no length
    with pytest.raises(weights.WeightsDownloadError, match="does not parse") as error:
        tiny(classes=CLASSES, weights="test_weights")
    assert "after 3 attempts" in str(error.value)
    half = len(checkpoint[1]) // 2
    three_quarters = half + (len(checkpoint[1]) - half) // 2
    # Resumed where each attempt stopped; no attempt was taken for the whole file.
    assert [r[1] for r in server.requests] == [None, f"bytes={half}-", f"bytes={three_quarters}-"]
    assert os.listdir(registry) == []
    server.drops = 0  # the next run gets the whole file (still without a length)
    model_ = tiny(classes=CLASSES, weights="test_weights")
    np.testing.assert_allclose(model_(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)
    record = json.loads((registry / (FILENAME + ".json")).read_text())
    assert record["sha256"] == sha256(checkpoint[1]) and record["bytes"] == len(checkpoint[1])
    assert record["verified_by"] == "parsed, loaded"


@pytest.mark.parametrize("cached", ["another architecture", "half a file"])
def test_a_cached_file_that_fails_to_load_is_moved_aside(registry, server, checkpoint, cached):
    # Left by an older version (no record): never reused, fetched again.
    bad = make_checkpoint(1, classes=9)[1] if cached == "another architecture" else None
    bad = bad or checkpoint[1][: len(checkpoint[1]) // 2]
    os.makedirs(registry)
    (registry / FILENAME).write_bytes(bad)
    for _ in range(2):  # the second run uses the cache as it is now
        loaded = tiny(classes=CLASSES, weights="test_weights")
        np.testing.assert_allclose(loaded(CLIP), torch_logits(checkpoint[0]), atol=TOLERANCE)
        assert len(server.requests) == 1
    assert (registry / FILENAME).read_bytes() == checkpoint[1]
    assert (registry / (FILENAME + weights.REJECTED_SUFFIX)).read_bytes() == bad


def test_every_use_is_checked_against_the_recorded_hash(registry, server, checkpoint, caplog):
    path, state_dict = weights.registry_checkpoint("test_weights", "X", progress=False)
    assert len(state_dict) == len(conv.read_state_dict(path))
    record = json.loads(open(weights.record_path(path)).read())
    assert record["sha256"] == sha256(checkpoint[1]) and record["verified_by"] == "length, loaded"
    swapped = make_checkpoint(1)[1]  # loads into the same architecture, but is another file
    with open(path, "wb") as f:
        f.write(swapped)
    with caplog.at_level(logging.WARNING, logger="keras_vswin"):
        again, _ = weights.registry_checkpoint("test_weights", "X", progress=False)
    assert f"not the recorded {record['sha256']}" in caplog.text
    assert len(server.requests) == 2 and open(again, "rb").read() == checkpoint[1]
    assert open(again + weights.REJECTED_SUFFIX, "rb").read() == swapped
    weights.registry_checkpoint("test_weights", "X", progress=False)  # matches: no request
    assert len(server.requests) == 2


@pytest.mark.parametrize("where", ["presets", "file name"])
def test_a_known_sha256_is_enforced(registry, server, checkpoint, where):
    digest = sha256(checkpoint[1])
    variant = presets.PRESETS["test_weights"]["variants"]["X"]

    def publish(filename, sha256=None):
        server.files = {filename: checkpoint[1]}
        variant.update(url=presets.OFFICIAL + filename, sha256=sha256)
        return filename

    if where == "presets":
        wrong = publish(FILENAME, sha256="0" * 64)
    else:
        wrong = publish(f"swin_x-{'0' * 8}.pth")
    with pytest.raises(weights.WeightsDownloadError, match=f"SHA-256 is {digest}, not the exp"):
        weights.registry_checkpoint("test_weights", "X", progress=False)
    assert os.listdir(registry) == [], wrong  # nothing kept

    right = publish(FILENAME, sha256=digest) if where == "presets" else None
    right = right or publish(f"swin_x-{digest[:8]}.pth")
    path, _ = weights.registry_checkpoint("test_weights", "X", progress=False)
    assert os.path.basename(path) == right
    record = json.loads(open(weights.record_path(path)).read())
    assert record["verified_by"] == "length, known SHA-256, loaded"


DOWNLOAD = "import sys; from keras_vswin import weights; weights.download(*sys.argv[1:3])"


def test_a_killed_download_is_resumed_by_the_next_process(registry, server, checkpoint):
    data = checkpoint[1]
    server.drops, server.stall = 1, threading.Event()  # sends half, then hangs
    url = f"http://127.0.0.1:{server.server_address[1]}/{FILENAME}"
    target = registry / FILENAME
    command = [sys.executable, "-c", DOWNLOAD, url, str(target)]
    first = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline, parts = time.time() + 180, []
    try:
        while time.time() < deadline and first.poll() is None:
            names = os.listdir(registry) if registry.exists() else []
            parts = [registry / n for n in names if atomic.TEMPORARY_MARK in n]
            if parts and os.path.getsize(parts[0]) == len(data) // 2:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the download ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert [p.name for p in registry.iterdir()] == [parts[0].name]  # no file, half a part
    time.sleep(0.05)  # the next run starts later (its start is known to a clock tick)
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming" in second.stderr
    assert server.requests[-1] == (f"/{FILENAME}", f"bytes={len(data) // 2}-")
    assert target.read_bytes() == data
    assert sorted(os.listdir(registry)) == [FILENAME, FILENAME + ".json"]


def test_cache_files_and_converter_outputs_get_the_umask_permissions(registry, server, tmp_path):
    from keras_vswin.cli import convert as cli

    previous = os.umask(0o002)  # group-writable: 0664 files, 0775 folders
    try:
        tiny(classes=CLASSES, weights="test_weights")
        for name in ("m.keras", "m.weights.h5", "saved_model"):
            assert cli.main(["test_weights", "-o", str(tmp_path / "out" / name), "-q"]) == 0
    finally:
        os.umask(previous)
    modes = {}
    for top in (registry, tmp_path / "out"):
        for root, folders, files in os.walk(top):
            for name in [*folders, *files, "."]:
                path = os.path.join(root, name)
                modes[path] = (os.path.isdir(path), stat.S_IMODE(os.stat(path).st_mode))
    assert len(modes) > 12
    wrong = {p: oct(m) for p, (folder, m) in modes.items() if m != (0o775 if folder else 0o664)}
    assert not wrong


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
