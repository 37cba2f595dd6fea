"""`python -m keras_vswin.predict` on real encoded files, and `keras-vswin export`.

A tiny classifier is saved to `.keras` and exported once with the conversion CLI; videos are
encoded in the test (H.264 mp4, lossless gray/RGBA/RGB), plus a very short, a corrupt and a
truncated file.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vswin
from keras_vswin import export, predict, video

TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), classes=5)
LABELS = ["walking", "running", "jumping", "sitting", "waving"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
PROTOCOL_FLAGS = [
    "--clip-len",
    "4",
    "--frame-interval",
    "2",
    "--num-clips",
    "2",
    "--crop-size",
    "32",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(0)
    model = keras_vswin.VideoSwin(**TINY)
    head = model.get_layer("predictions")
    head.kernel.assign(head.kernel * 100.0)  # confident, well separated predictions
    model.save(root / "tiny.keras")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    frames[:, 10:30, 20:40] = 255  # some structure on top of the noise
    video.write_video(root / "clip.mp4", frames, fps=10)
    video.write_video(root / "short.mp4", frames[:3], fps=10)  # shorter than a clip (8 frames)
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    data = (root / "clip.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    gray = rng.integers(0, 256, (12, 40, 56), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    alpha = rng.integers(0, 256, (12, 40, 56, 1), dtype=np.uint8)
    video.write_video(root / "gray.mkv", gray, codec="ffv1", pix_fmt="gray")
    video.write_video(
        root / "rgba.mov", np.concatenate([rgb, alpha], -1), codec="png", pix_fmt="rgba"
    )
    video.write_video(root / "rgb.mov", rgb, codec="png", pix_fmt="rgb24")

    proc = run_module(
        "conversion.export", root / "tiny.keras", "--output", root / "exports", "--name", "tiny",
        "--labels", root / "labels.txt", "--clip-len", "4", "--frame-interval", "2",
        "--num-clips", "2", "--crop-size", "32",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Exported" in proc.stdout
    return root


def run_module(module, *argv):
    """`python -m module argv...` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=REPO,
    )  # fmt: skip


def run_predict(capsys, *argv):
    status = predict.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def predict_json(capsys, *argv):
    status, out, err = run_predict(capsys, *argv, "--json")
    assert out, err
    return status, json.loads(out), err


def probabilities(result):
    scores = np.zeros(len(LABELS))
    for entry in result["top"]:
        scores[entry["index"]] = entry["probability"]
    return scores


def test_conversion_cli_writes_a_versioned_export(workdir):
    path = workdir / "exports" / "tiny" / "1"
    assert (path / "saved_model.pb").exists() and export.non_core_ops(path) == []
    metadata, labels = export.read_export_metadata(workdir / "exports" / "tiny")
    assert labels == tuple(LABELS) and metadata["protocol"]["clip_len"] == 4
    proc = run_module(
        "conversion.export", workdir / "tiny.keras", "--output", workdir / "exports",
        "--name", "tiny", "--version", "1",
    )  # fmt: skip
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert sorted(os.listdir(workdir / "exports" / "tiny")) == ["1"]


def test_keras_and_saved_model_agree_and_bad_files_are_reported(workdir, capsys):
    files = [workdir / n for n in ("clip.mp4", "corrupt.mp4", "short.mp4", "truncated.mp4")]
    keras_status, keras_doc, err = predict_json(
        capsys, *files, "--weights", workdir / "tiny.keras", "--labels", workdir / "labels.txt",
        *PROTOCOL_FLAGS,
    )  # fmt: skip
    assert keras_status == 1  # some files failed, the others were classified
    for name in ("corrupt.mp4", "truncated.mp4"):
        assert name in err
    results = {os.path.basename(r["file"]): r for r in keras_doc["results"]}
    assert "error" in results["corrupt.mp4"] and "error" in results["truncated.mp4"]
    clip, short = results["clip.mp4"], results["short.mp4"]
    assert (clip["num_frames"], clip["views"], clip["looped"]) == (20, 6, False)
    assert (short["num_frames"], short["looped"]) == (3, True)
    assert [t["rank"] for t in clip["top"]] == [1, 2, 3, 4, 5]
    assert {t["label"] for t in clip["top"]} == set(LABELS)
    assert clip["top"][0]["probability"] >= clip["top"][1]["probability"]

    # The SavedModel brings its protocol and labels: no flags needed, same numbers.
    saved_status, saved_doc, _ = predict_json(
        capsys, *files, "--saved-model", workdir / "exports" / "tiny"
    )
    assert saved_status == 1
    assert saved_doc["protocol"] == keras_doc["protocol"]
    for keras_result, saved_result in zip(keras_doc["results"], saved_doc["results"]):
        assert ("error" in keras_result) == ("error" in saved_result)
        if "error" not in keras_result:
            assert [t["label"] for t in keras_result["top"]] == [
                t["label"] for t in saved_result["top"]
            ]
            np.testing.assert_allclose(
                probabilities(keras_result), probabilities(saved_result), atol=1e-5
            )


def test_predict_equals_the_multiview_signature(workdir, capsys):
    status, doc, _ = predict_json(
        capsys, workdir / "clip.mp4", "--saved-model", workdir / "exports" / "tiny"
    )
    assert status == 0
    frames = video.read_video(workdir / "clip.mp4", short_side=256).frames
    loaded = tf.saved_model.load(str(workdir / "exports" / "tiny" / "1"))
    served = loaded.signatures["serve_multiview"](video=tf.constant(frames[None]))
    np.testing.assert_allclose(
        probabilities(doc["results"][0]), served["probabilities"].numpy()[0], atol=1e-5
    )
    assert doc["results"][0]["top"][0]["label"] == served["top_k_labels"].numpy()[0, 0].decode()


def test_grayscale_and_alpha_videos_are_classified_as_rgb(workdir, capsys):
    files = [workdir / n for n in ("gray.mkv", "rgba.mov", "rgb.mov")]
    status, doc, _ = predict_json(
        capsys, *files, "--weights", workdir / "tiny.keras", "--labels", workdir / "labels.txt",
        "--decode-short-side", "0", *PROTOCOL_FLAGS,
    )  # fmt: skip
    assert status == 0
    gray, rgba, rgb = (probabilities(r) for r in doc["results"])
    np.testing.assert_allclose(gray, rgb, atol=1e-6)
    np.testing.assert_allclose(rgba, rgb, atol=1e-6)
    assert doc["results"][0]["num_frames"] == 12  # mkv declares no frame count: counted


def test_table_output_and_usage_errors(workdir, capsys):
    status, out, _ = run_predict(
        capsys, workdir / "short.mp4", "--saved-model", workdir / "exports" / "tiny", "--top", "2"
    )
    assert status == 0
    assert "short.mp4: 3 frames, 64x48, 2 clip(s) x 3 crop(s)" in out
    assert "looped" in out and "probability" in out
    assert len([line for line in out.splitlines() if line.strip()[:2] in ("1 ", "2 ")]) == 2

    weights = ["--weights", workdir / "tiny.keras"]
    assert run_predict(capsys, workdir / "clip.mp4", "--weights", workdir / "nope.keras")[0] == 2
    status, _, err = run_predict(capsys, workdir / "clip.mp4", *weights, "--labels", "kinetics400")
    assert status == 2 and "400 names" in err
    status, _, err = run_predict(
        capsys, workdir / "clip.mp4", *weights, "--sampling", "uniform", "--num-clips", "4"
    )
    assert status == 2 and "num_clips" in err
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(workdir / "clip.mp4")])  # neither --weights nor --saved-model
    assert exit_info.value.code == 2


def test_command_line_entry_point(workdir):
    proc = run_module(
        "keras_vswin.predict", workdir / "clip.mp4", workdir / "missing.mp4",
        "--weights", workdir / "tiny.keras", "--labels", workdir / "labels.txt", *PROTOCOL_FLAGS,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "clip.mp4: 20 frames" in proc.stdout
    assert "missing.mp4" in proc.stderr and "file not found" in proc.stderr
