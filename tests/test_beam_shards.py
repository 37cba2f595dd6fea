"""The shard writer on Apache Beam (`write-shards --runner FnApiRunner`) against the local one.

Beam runs in-process (FnApiRunner; two worker processes where it matters): the Direct/Prism
runner would download a binary. Shards are read back with plain TensorFlow.
"""

import json
import os
import sys

import apache_beam  # noqa: F401 - the [beam] extra is part of the test environment
import numpy as np
import pytest
import tensorflow as tf
from _video_fixtures import frame_index, moving_frames, write_moving_video

import keras_vswin.data as data_package
from keras_vswin import video
from keras_vswin.data import beam_shards
from keras_vswin.data import write_shards as write_cli

TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
CONTEXT = {
    "clip/label/index": tf.io.FixedLenFeature([], tf.int64),
    "clip/label/text": tf.io.FixedLenFeature([], tf.string),
    "video/filename": tf.io.FixedLenFeature([], tf.string),
    "video/num_frames": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
}
SEQUENCE = {"image/encoded": tf.io.FixedLenSequenceFeature([], tf.string)}
# name -> (frames, label, codec)
VIDEOS = {
    "h264/walk_0.mp4": (20, "walk", "h264"),
    "h264/jump_0.mp4": (16, "jump", "h264"),
    "h264/swim_0.mp4": (24, "swim", "h264"),
    "h264/walk_1.mp4": (12, "walk", "h264"),
    "vp9/jump_1.webm": (18, "jump", "vp9"),
    "vp9/swim_1.webm": (14, "swim", "vp9"),
}
BAD = {"bad/corrupt.mp4": "walk", "bad/empty.mp4": "swim"}
NUM_SHARDS = 3


def parse_shard(path):
    """[(context as numpy values, [JPEG bytes per frame])] with plain TensorFlow."""
    records = []
    for serialized in tf.data.TFRecordDataset(str(path)):
        context, sequence = tf.io.parse_single_sequence_example(
            serialized, context_features=CONTEXT, sequence_features=SEQUENCE
        )
        jpegs = [bytes(j) for j in sequence["image/encoded"].numpy()]
        records.append(({k: v.numpy() for k, v in context.items()}, jpegs))
    return records


def shard_bytes(output):
    return {p.name: p.read_bytes() for p in sorted(output.glob("train-*.tfrecord"))}


def argv(root, output, *extra):
    return [
        "--videos", str(root / "list.csv"),
        "--labels", str(root / "labels.txt"),
        "--output", str(output),
        "--name", "train",
        "--num-shards", str(NUM_SHARDS),
        "--short-side", "48",
        "--quiet",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same list written by the local pool (2 workers) and by Beam (2 worker processes)."""
    root = tmp_path_factory.mktemp("beam")
    for name, (frames, _, codec) in VIDEOS.items():
        if codec == "h264":
            write_moving_video(str(root / name), frames, 64, 80, fps=25)
        else:
            os.makedirs(root / "vp9", exist_ok=True)
            video.write_video(  # lossless VP9, so the grey levels that encode the index survive
                str(root / name),
                moving_frames(frames, 64, 80),
                fps=25,
                codec="libvpx-vp9",
                options={"lossless": "1"},
            )
    os.makedirs(root / "bad")
    (root / "bad" / "corrupt.mp4").write_bytes(np.random.default_rng(3).bytes(5000))
    (root / "bad" / "empty.mp4").write_bytes(b"")
    rows = [f"{name},{label}" for name, (_, label, _) in VIDEOS.items()]
    rows += [f"{name},{label}" for name, label in BAD.items()]
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (root / "labels.txt").write_text("swim\nwalk\njump\n")
    local_code = write_cli.main(argv(root, root / "local", "--workers", "2"))
    beam_code = write_cli.main(argv(root, root / "beam", "--runner", "FnApiRunner", *TWO_WORKERS))
    return {"root": root, "local_code": local_code, "beam_code": beam_code}


def manifest(output):
    return json.loads((output / "train.manifest.json").read_text())


def test_beam_and_local_write_the_same_records_in_the_same_shards(runs):
    local, beam = runs["root"] / "local", runs["root"] / "beam"
    names = [f"train-{i:05d}-of-{NUM_SHARDS:05d}.tfrecord" for i in range(NUM_SHARDS)]
    assert sorted(shard_bytes(beam)) == sorted(shard_bytes(local)) == names
    seen = []
    for name, shard in zip(names, manifest(beam)["shards"]):
        local_records, beam_records = parse_shard(local / name), parse_shard(beam / name)
        assert len(local_records) == len(beam_records) == shard["num_videos"]
        for (local_context, local_jpegs), (context, jpegs) in zip(local_records, beam_records):
            assert context == local_context
            assert jpegs == local_jpegs  # byte-equal frames
            filename = context["video/filename"].decode()
            num_frames, label, _ = VIDEOS[filename]
            assert context["clip/label/text"].decode() == label
            assert context["clip/label/index"] == ["swim", "walk", "jump"].index(label)
            decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in jpegs])
            assert decoded.shape == (num_frames, 48, 60, 3)
            np.testing.assert_array_equal(frame_index(decoded), np.arange(num_frames))
            seen.append(filename)
    assert sorted(seen) == sorted(VIDEOS)
    assert shard_bytes(beam) == shard_bytes(local)  # the files themselves are identical


def test_beam_manifest_lists_the_bad_files_and_the_exit_status_says_so(runs):
    assert runs["beam_code"] == runs["local_code"] == write_cli.EXIT_SKIPPED
    beam, local = manifest(runs["root"] / "beam"), manifest(runs["root"] / "local")
    assert beam["runner"] == "FnApiRunner" and local["runner"] == "local"
    skipped = {item["name"]: item for item in beam["skipped"]}
    assert set(skipped) == set(BAD)
    assert "empty" in skipped["bad/empty.mp4"]["error"]
    assert "FFmpeg" in skipped["bad/corrupt.mp4"]["error"]
    assert beam["skipped"] == local["skipped"]
    for key in ("shards", "label_map", "label_counts", "num_classes", "settings", "labels"):
        if key == "shards":
            strip = lambda shards: [{k: v for k, v in s.items() if k != "seconds"} for s in shards]
            assert strip(beam[key]) == strip(local[key])
        else:
            assert beam[key] == local[key], key
    assert beam["label_map"] == {"0": "swim", "1": "walk", "2": "jump"}
    totals = beam["totals"]
    assert (totals["videos_listed"], totals["videos_written"], totals["videos_skipped"]) == (
        8,
        6,
        2,
    )
    assert totals["shards_written_this_run"] == NUM_SHARDS
    assert totals["videos_processed_this_run"] == 8
    assert totals["frames"] == sum(frames for frames, _, _ in VIDEOS.values())
    assert not list((runs["root"] / "beam").glob(".*.tmp-*"))


def test_beam_rerun_gives_byte_identical_shards_and_resumes_a_partial_job(runs, tmp_path):
    root, first = runs["root"], shard_bytes(runs["root"] / "beam")
    output = tmp_path / "again"
    # A fresh run with another worker layout (in-process, one worker): the same bytes.
    assert write_cli.main(argv(root, output, "--runner", "FnApiRunner")) == write_cli.EXIT_SKIPPED
    assert shard_bytes(output) == first
    # A partial job: one shard lost. The re-run writes only that one, identically.
    lost = output / f"train-00001-of-{NUM_SHARDS:05d}.tfrecord"
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in output.glob("train-*.tfrecord")}
    assert write_cli.main(argv(root, output, "--runner", "FnApiRunner")) == write_cli.EXIT_SKIPPED
    assert shard_bytes(output) == first
    assert {n: (output / n).stat().st_mtime_ns for n in kept} == kept
    again = manifest(output)
    assert again["totals"]["shards_written_this_run"] == 1
    assert again["totals"]["videos_written"] == 6  # no duplicates
    assert {item["name"] for item in again["skipped"]} == set(BAD)  # also from reused shards
    # --overwrite rewrites everything: still the same bytes.
    code = write_cli.main(argv(root, output, "--runner", "FnApiRunner", "--overwrite"))
    assert code == write_cli.EXIT_SKIPPED and shard_bytes(output) == first
    assert manifest(output)["totals"]["shards_written_this_run"] == NUM_SHARDS


def test_train_dataset_trains_from_beam_written_shards(runs):
    import keras

    import keras_vswin
    from keras_vswin import data

    dataset = data.train_dataset(
        str(runs["root"] / "beam"),
        batch_size=2,
        num_classes=3,
        clip_len=4,
        frame_interval=2,
        crop_size=32,
        seed=0,
    )
    clips, labels = next(iter(dataset))
    assert clips.shape == (2, 4, 32, 32, 3) and labels.shape == (2, 3)
    model = keras_vswin.VideoSwin(
        classes=3,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        window_size=(2, 3, 3),
        drop_path_rate=0.0,
        head_dropout_rate=0.0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _failing_write(job):
    raise OSError(f"disk full while writing {job['file']}")


def _finish(records, skipped):
    return len(records)


def test_a_failed_pipeline_is_one_clear_error(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"file": "x-00000-of-00001.tfrecord"}) + "\n")
    with pytest.raises(beam_shards.PipelineFailed, match="disk full while writing x-00000"):
        beam_shards.run(str(jobs), _failing_write, _finish, "FnApiRunner")


def test_unknown_runner_and_missing_extra_are_usage_errors(runs, tmp_path, monkeypatch, capsys):
    root = runs["root"]
    code = write_cli.main(argv(root, tmp_path / "o", "--runner", "NoSuchRunner"))
    assert code == write_cli.EXIT_USAGE
    assert "NoSuchRunner" in capsys.readouterr().err
    # Without apache_beam importable, a Beam runner names the extra to install.
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, "keras_vswin.data.beam_shards")
    monkeypatch.delattr(data_package, "beam_shards", raising=False)
    code = write_cli.main(argv(root, tmp_path / "o", "--runner", "DataflowRunner"))
    assert code == write_cli.EXIT_USAGE
    assert "pip install 'keras-vswin[beam]'" in capsys.readouterr().err
