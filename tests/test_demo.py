"""The synthetic moving-shapes dataset and the `make demo` job (`training.demo`)."""

import csv
import json
import math
import os

import numpy as np
import pytest

from keras_vswin.data import synthetic
from training import demo


@pytest.mark.parametrize("size", [16, 32, 64])
def test_every_class_renders_inside_frames_of_any_allowed_size(size):
    videos, labels = synthetic.generate_arrays(3, num_frames=8, size=size, seed=0)
    assert videos.shape == (3 * len(synthetic.CLASSES), 8, size, size, 3)
    assert np.bincount(labels).tolist() == [3] * len(synthetic.CLASSES)
    # Every video has its shapes (bright pixels) in every frame.
    assert (videos.max(axis=(2, 3, 4)) >= 150).all()


def test_pairs_are_time_reversals_of_each_other():
    for name, (forward, reverse) in synthetic._PAIRS.items():
        video = synthetic.render_video(name, np.random.default_rng(5), num_frames=10, size=32)
        original = synthetic.render_video(forward, np.random.default_rng(5), num_frames=10, size=32)
        np.testing.assert_array_equal(video, original[::-1] if reverse else original)


def test_clock_hands_sweep_over_the_top_of_their_dial():
    rng = np.random.default_rng(0)
    for _ in range(50):
        centres, lengths, angles = synthetic._forward_trajectory("rotating_clockwise", rng, 20, 32)
        assert (np.diff(angles) > 0).all()  # clockwise on screen (y points down)
        # Tips stay above their pivots: sin(angle) < 0, the tips move right at the top.
        assert (angles > -math.pi).all() and (angles < 0).all()
        tips = centres + lengths[:, None] * np.stack([np.sin(angles), np.cos(angles)], axis=1)
        assert tips[-1, 1] > tips[0, 1]
        assert (tips >= 0).all() and (tips <= 32).all()


def _spec(**changes):
    spec = {
        "train_per_class": 2,
        "eval_per_class": 1,
        "num_frames": 10,
        "size": 32,
        "classes": None,
        "seed": 0,
    }
    return {**spec, **changes}


def test_demo_dataset_is_reused_only_for_the_same_spec(tmp_path, capsys):
    folder = str(tmp_path / "data")
    patterns = demo.make_dataset(folder, _spec())
    shards = sorted(os.listdir(os.path.join(folder, "shards")))
    with open(os.path.join(folder, "train.csv"), newline="") as handle:
        first = list(csv.DictReader(handle))
    stamp = os.path.getmtime(os.path.join(folder, "dataset.json"))
    capsys.readouterr()

    assert demo.make_dataset(folder, _spec()) == patterns
    assert "reusing the dataset" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(folder, "dataset.json")) == stamp

    with open(os.path.join(folder, "notes.txt"), "w") as handle:
        handle.write("not the demo's")
    demo.make_dataset(folder, _spec(seed=1, train_per_class=3))
    assert os.path.isfile(os.path.join(folder, "notes.txt"))
    assert "reusing" not in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(folder, "shards"))) == shards
    with open(os.path.join(folder, "train.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(first) == 2 * len(synthetic.CLASSES) and len(rows) == 3 * len(synthetic.CLASSES)
    assert len(os.listdir(os.path.join(folder, "videos", "train", "growing"))) == 3

    # The showcase: a held-out file, fixed by rule (the first of the second class).
    path, label = demo.held_out_video(folder)
    assert label == synthetic.CLASSES[1]
    assert path == os.path.join(folder, "videos", "eval", label, f"{label}_0000.mp4")
    assert os.path.isfile(path)


TINY_DEMO = [
    "--epochs", "1",
    "data.synthetic.train_per_class=2",
    "data.synthetic.eval_per_class=1",
    "data.synthetic.num_frames=10",
    "data.clip_len=4",
    "model.embed_dim=8",
    "model.depths=[1, 1]",
    "model.num_heads=[1, 2]",
    "train.verbose=0",
]  # fmt: skip


def test_demo_fails_loudly_below_its_bar(tmp_path, capsys):
    """One update of a tiny model cannot reach 95%: exit status 1, a message, no export."""
    output = str(tmp_path / "demo")
    status = demo.main(["--output", output, *TINY_DEMO])
    captured = capsys.readouterr()
    assert status == 1
    assert "below the demo's bar of 95%" in captured.err
    assert "required 95%" in captured.out
    assert not os.path.exists(os.path.join(output, "export"))
    assert not os.path.exists(os.path.join(output, "demo_summary.json"))


def test_demo_rejects_a_bad_bar_and_a_bad_override(tmp_path, capsys):
    assert demo.main(["--output", str(tmp_path), "--min-accuracy", "95"]) == 2
    assert "--min-accuracy must be in [0, 1]" in capsys.readouterr().err
    assert demo.main(["--output", str(tmp_path), "trian.epochs=1"]) == 2
    assert "trian.epochs" in capsys.readouterr().err
    assert demo.main(["--output", str(tmp_path), "data.synthetic.eval_per_class=0"]) == 2
    assert "data.synthetic.eval_per_class must be >= 1" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_demo_checks_the_class_the_saved_model_gives_its_showcase(tmp_path, capsys, monkeypatch):
    """The real export and `keras-vswin predict` run; the answer decides the exit status."""
    output = str(tmp_path / "demo")
    real_predict, answers = demo._predict, []

    def predict(argv):
        result = real_predict(argv)
        assert result["top"][0]["label"] in synthetic.CLASSES  # the SavedModel answered
        result["top"][0]["label"] = answers.pop()
        return result

    monkeypatch.setattr(demo, "_predict", predict)
    answers.append("moving_right")  # the showcase is a moving_left video
    assert demo.main(["--output", output, "--min-accuracy", "0", *TINY_DEMO]) == 1
    captured = capsys.readouterr()
    assert "as 'moving_right', but it is a 'moving_left' video" in captured.err
    assert "keras-vswin predict " in captured.out and "probability" in captured.out
    assert os.path.isdir(os.path.join(output, "export", "demo", "1"))
    assert not os.path.exists(os.path.join(output, "demo_summary.json"))

    answers.append("moving_left")
    assert demo.main(["--output", output, "--min-accuracy", "0", "--resume", *TINY_DEMO]) == 0
    out = capsys.readouterr().out
    assert "reusing the dataset" in out and "correct: moving_left" in out
    assert f"tensorboard --logdir {os.path.join(output, 'run', 'logs')}" in out
    assert os.listdir(os.path.join(output, "run", "logs", "train"))  # the scalars it shows
    with open(os.path.join(output, "demo_summary.json")) as handle:
        summary = json.load(handle)
    assert summary["classified_video"].endswith(
        os.path.join("eval", "moving_left", "moving_left_0000.mp4")
    )
    assert set(summary["stage_seconds"]) == {
        "dataset",
        "training",
        "evaluation",
        "export",
        "predict",
    }
