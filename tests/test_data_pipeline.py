"""keras_vswin.data: frame sampling, clip augmentations and the tf.data pipelines."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from _video_fixtures import frame_index, write_moving_video

from keras_vswin import data, video
from keras_vswin.data import augment, sampling
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # the CLI packages live at the repository root
    sys.path.insert(0, REPO)

from keras_vswin.data import write_shards as write_cli  # noqa: E402

FRAME_COUNTS = {"v0": 40, "v1": 12, "v2": 30, "v3": 48, "v4": 25, "v5": 21}


def protocol_of(**fields):
    """A `ViewProtocol` with `fields` (the rest: the Kinetics defaults)."""
    return data.ViewProtocol(**fields)


def to_pixels(clips):
    """Normalised float clips -> 0-255 values (undoing MEAN_RGB / STD_RGB)."""
    return np.asarray(clips) * np.asarray(STD_RGB, np.float32) + np.asarray(MEAN_RGB, np.float32)


def _write(entries, output, name, num_shards):
    write_cli.write_shards(
        entries,
        str(output),
        name,
        num_shards,
        settings=write_cli.WriterSettings(short_side=None),
        workers=1,
        show_progress=False,
        log=lambda *args: None,
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Six 64x80 videos with readable frame indices (one shorter than a 16-frame span) in three
    shards, stored at their native size."""
    root = tmp_path_factory.mktemp("pipeline")
    entries = []
    for i, (name, n) in enumerate(FRAME_COUNTS.items()):
        path = write_moving_video(str(root / "videos" / f"{name}.mp4"), n, 64, 80, fps=25)
        entries.append(write_cli.VideoEntry(path, name, i % 2, f"class{i % 2}"))
    _write(entries, root / "shards", "clips", 3)
    return root / "shards"


@pytest.fixture(scope="module")
def static_shards(tmp_path_factory):
    """Videos whose frames are all identical (random texture): after clip-consistent
    augmentation, every frame of a clip must still be identical."""
    root = tmp_path_factory.mktemp("static")
    entries = []
    for i in range(3):
        texture = np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)
        path = str(root / f"static{i}.mp4")
        video.write_video(path, np.repeat(texture[None], 20, 0), fps=25, options={"crf": "0"})
        entries.append(write_cli.VideoEntry(path, f"static{i}", i, f"class{i}"))
    _write(entries, root / "shards", "static", 2)
    return root / "shards"


# --------------------------------------------------------------------------------------------
# Sampling


def test_dense_sampling_hand_computed_cases():
    # test mode, 4 clips of 8x2 in 100 frames: average interval (100 - 16 + 1) / 4 = 21.25,
    # offsets floor(21.25 * i + 10.625) = 10, 31, 53, 74
    expected = np.array([10, 31, 53, 74])[:, None] + np.arange(0, 16, 2)[None, :]
    np.testing.assert_array_equal(sampling.dense_sample_np(100, 8, 2, 4, test_mode=True), expected)
    # evaluation = the centre clip: (40 - 16 + 1) / 1 = 25 -> offset 12
    np.testing.assert_array_equal(
        sampling.dense_sample_np(40, 8, 2, test_mode=True), [np.arange(12, 28, 2)]
    )
    # a video shorter than the span loops: 10 frames, 8x2 -> offset 0, indices mod 10
    looped = [[0, 2, 4, 6, 8, 0, 2, 4]]
    np.testing.assert_array_equal(sampling.dense_sample_np(10, 8, 2, test_mode=True), looped)
    np.testing.assert_array_equal(
        sampling.dense_sample_np(10, 8, 2, rng=np.random.default_rng()), looped
    )
    # training with several clips, every branch of SampleFrames:
    rng = np.random.default_rng(0)
    assert sampling.dense_offsets_np(16, 8, 2, 3, rng=rng).tolist() == [0, 0, 1]  # spread
    assert sampling.dense_offsets_np(10, 8, 2, 3, rng=rng).tolist() == [0, 0, 0]  # too short
    for _ in range(20):
        offsets = sampling.dense_offsets_np(17, 8, 2, 3, rng=rng)  # anywhere, sorted
        assert sorted(offsets) == list(offsets) and set(offsets) <= {0, 1}
        offsets = sampling.dense_offsets_np(64, 8, 2, 3, rng=rng)  # one per part of 16
        assert [o // 16 for o in offsets] == [0, 1, 2]


def test_dense_sampling_tf_matches_numpy():
    for n in (1, 5, 15, 16, 17, 40, 100, 301):
        for clip_len, interval, clips in ((8, 2, 1), (8, 2, 4), (32, 2, 4), (4, 1, 3)):
            expected = sampling.dense_sample_np(n, clip_len, interval, clips, test_mode=True)
            actual = sampling.dense_sample_tf(n, clip_len, interval, clips, test_mode=True)
            np.testing.assert_array_equal(actual.numpy(), expected, err_msg=f"n={n}")
    # training: the same support per clip (every allowed offset, nothing else), same structure
    for n, clips in ((20, 1), (64, 3), (17, 3), (16, 3), (10, 1)):
        rng = np.random.default_rng(0)
        draw = tf.function(
            lambda seed, n=n, clips=clips: sampling.dense_sample_tf(n, 4, 2, clips, seed=seed)
        )
        numpy_offsets = np.stack(
            [sampling.dense_offsets_np(n, 4, 2, clips, rng=rng) for _ in range(200)]
        )
        tf_offsets = []
        for seed in range(200):
            indices = draw(tf.constant([seed, 7], tf.int64)).numpy()
            offsets = indices[:, 0]
            np.testing.assert_array_equal(indices, (offsets[:, None] + [0, 2, 4, 6]) % n)
            tf_offsets.append(offsets)
        tf_offsets = np.stack(tf_offsets)
        for k in range(clips):
            assert set(numpy_offsets[:, k]) == set(tf_offsets[:, k]), (n, clips, k)
        assert (np.diff(tf_offsets, axis=1) >= 0).all()
    assert set(tf_offsets[:, 0]) == {0, 1, 2}  # n=10, span 8: offsets in [0, 3)
    span_20 = {
        int(sampling.dense_offsets_tf(20, 4, 2, seed=tf.constant([s, 0]))[0]) for s in range(200)
    }
    assert span_20 == set(range(13))  # uniform in [0, 20 - 8 + 1)


def test_uniform_sampling_hand_computed_and_tf_matches_numpy():
    # 10 frames, 4 segments: bounds round(2.25 * k) = 0, 2, 4 (4.5 rounds to even), 7, 9
    np.testing.assert_array_equal(sampling.uniform_sample_np(10, 4, test_mode=True), [1, 3, 5, 8])
    np.testing.assert_array_equal(sampling.uniform_sample_tf(10, 4, test_mode=True), [1, 3, 5, 8])
    for n in (1, 3, 8, 31, 32, 33, 100, 257):
        expected = sampling.uniform_sample_np(n, 8, test_mode=True)
        np.testing.assert_array_equal(sampling.uniform_sample_tf(n, 8, test_mode=True), expected)
    rng = np.random.default_rng(0)
    draws_np = np.stack([sampling.uniform_sample_np(10, 4, rng=rng) for _ in range(400)])
    draws_tf = np.stack(
        [sampling.uniform_sample_tf(10, 4, seed=tf.constant([s, 1])).numpy() for s in range(400)]
    )
    for draws in (draws_np, draws_tf):
        for k, (low, high) in enumerate([(0, 2), (2, 4), (4, 7), (7, 9)]):
            assert set(draws[:, k]) == set(range(low, high + 1))


def test_random_resized_crop_window_properties():
    areas = []
    for s in range(200):
        y, x, h, w = augment.random_resized_crop_window(256, 340, tf.constant([s, 3])).numpy()
        assert 0 <= y <= 256 - h and 0 <= x <= 340 - w and h >= 1 and w >= 1
        area = h * w / (256 * 340)
        assert 0.07 <= area <= 1.0
        if area < 0.999 and min(h, w) > 20:
            assert 3 / 4 - 0.06 <= w / h <= 4 / 3 + 0.06
        areas.append(area)
    assert min(areas) < 0.2 and max(areas) > 0.7
    # a box never fits a 1:10 strip at small areas with this aspect ratio: the centre square
    y, x, h, w = augment.random_resized_crop_window(
        10, 100, tf.constant([0, 0]), area_range=(0.9, 1.0)
    ).numpy()
    assert (y, x, h, w) == (0, 45, 10, 10)


# --------------------------------------------------------------------------------------------
# Pipelines


def test_eval_dataset_gives_the_centre_clip_normalised(shards):
    dataset = data.eval_dataset(
        str(shards),
        4,
        num_classes=2,
        protocol=protocol_of(clip_len=8, short_side=64, crop_size=56),
        with_filenames=True,
        normalize=True,
    )
    seen = {}
    for clips, labels, names in dataset:
        assert clips.dtype == tf.float32 and clips.shape[1:] == (8, 56, 56, 3)
        pixels = to_pixels(clips)
        assert pixels.min() > -0.5 and pixels.max() < 255.5
        for clip, label, name in zip(pixels, labels.numpy(), names.numpy(), strict=True):
            name = name.decode()
            expected = sampling.dense_sample_np(FRAME_COUNTS[name], 8, 2, test_mode=True)[0]
            np.testing.assert_array_equal(frame_index(clip), expected, err_msg=name)
            index = int(name[1:]) % 2
            np.testing.assert_array_equal(label, np.eye(2)[index])
            seen[name] = True
    assert sorted(seen) == sorted(FRAME_COUNTS)


def test_test_dataset_returns_all_views_in_documented_order(shards):
    dataset = data.test_dataset(
        str(shards),
        2,
        num_classes=2,
        protocol=protocol_of(clip_len=8, num_clips=2, num_crops=3, short_side=64, crop_size=56),
        with_filenames=True,
        label_mode="int",
    )
    plain = {}  # the stored frames, decoded with plain TensorFlow
    for record in tf.data.TFRecordDataset(data.list_shards(str(shards))):
        context, frames = data.schema.parse_sequence_example(record)
        name = context["video/filename"].numpy().decode()
        plain[name] = np.stack([tf.io.decode_jpeg(j).numpy() for j in frames])
    count = 0
    for clips, labels, names in dataset:
        assert clips.shape[1:] == (6, 8, 56, 56, 3) and labels.dtype == tf.int32
        assert clips.dtype == tf.uint8  # the default: the model normalises
        for views, name in zip(clips.numpy(), names.numpy(), strict=True):
            name = name.decode()
            starts = sampling.dense_sample_np(FRAME_COUNTS[name], 8, 2, 2, test_mode=True)
            for view in range(6):
                clip_index, crop_index = divmod(view, 3)
                x = (0, 12, 24)[crop_index]  # start, centre, end of the 80-pixel side
                expected = plain[name][starts[clip_index]][:, 4:60, x : x + 56]
                np.testing.assert_array_equal(views[view], expected, err_msg=name)
            count += 1
    assert count == len(FRAME_COUNTS)
    # Frames stored larger than the protocol's short side: each decoded frame is resized once
    # (bilinear, rounded), then cut into its crops.
    protocol = protocol_of(clip_len=8, num_clips=2, num_crops=3, short_side=48, crop_size=40)
    dataset = data.test_dataset(
        str(shards), 3, protocol=protocol, with_filenames=True, label_mode="int"
    )
    for clips, _, names in dataset:
        for views, name in zip(clips.numpy(), names.numpy(), strict=True):
            name = name.decode()
            starts = sampling.dense_sample_np(FRAME_COUNTS[name], 8, 2, 2, test_mode=True)
            resized = tf.image.resize(plain[name], (48, 60)).numpy().round().astype(np.uint8)
            for view in range(6):
                clip_index, crop_index = divmod(view, 3)
                x = (0, 10, 20)[crop_index]  # 60 - 40 = 20 pixels of room
                expected = resized[starts[clip_index]][:, 4:44, x : x + 40]
                np.testing.assert_array_equal(views[view], expected, err_msg=name)


def test_train_clips_follow_sample_frames(shards):
    dataset = data.train_dataset(
        str(shards), 4, clip_len=8, frame_interval=2, crop_size=48, seed=3, label_mode="int"
    )
    counts_by_label = {0: [40, 30, 25], 1: [12, 48, 21]}
    for clips, labels in dataset.take(6):
        assert clips.shape == (4, 8, 48, 48, 3) and clips.dtype == tf.uint8
        for clip, label in zip(clips.numpy(), labels.numpy(), strict=True):
            indices = frame_index(clip)
            matches = []
            for n in counts_by_label[int(label)]:
                offset = indices[0]
                expected = (offset + np.arange(0, 16, 2)) % n
                if np.array_equal(indices, expected) and offset < max(n - 16 + 1, 1):
                    matches.append(n)
            assert matches, f"{indices} is no SampleFrames clip of a class-{label} video"


def test_train_augmentation_is_identical_on_every_frame(static_shards):
    first = None
    for options in ({}, {"rand_augment": (2, 9), "random_erasing": 1.0}):
        dataset = data.train_dataset(
            str(static_shards), 3, num_classes=3, clip_len=6, crop_size=40, seed=5, **options
        )
        for clips, _ in dataset.take(2):
            clips = clips.numpy()
            spread = np.abs(clips - clips[:, :1]).max(axis=(1, 2, 3, 4))
            np.testing.assert_array_equal(spread, 0)  # crop, flip, RandAugment, erasing
            if first is None:
                first = clips[0, 0]
            else:  # and the random parameters do change between clips
                assert np.abs(clips[:, 0] - first).max() > 0.5


def test_flip_and_rand_augment_draw_once_per_clip():
    clip = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 24, 32, 3)), tf.uint8)
    flips = 0
    for s in range(12):
        out = augment.flip_clip(clip, tf.constant([s, 0])).numpy()
        flipped = np.array_equal(out, clip.numpy()[:, :, ::-1])
        assert flipped or np.array_equal(out, clip.numpy())
        flips += flipped
    assert 0 < flips < 12
    static = tf.repeat(clip[:1], 5, axis=0)
    rand_augment = augment.ClipRandAugment(num_ops=2, magnitude=9)
    outputs = [rand_augment(static, tf.constant([s, 1])).numpy() for s in range(8)]
    for out in outputs:
        assert out.shape == (5, 24, 32, 3) and 0 <= out.min() and out.max() <= 255
        np.testing.assert_array_equal(out, np.repeat(out[:1], 5, axis=0))
    assert any(np.abs(out - static.numpy()).max() > 1 for out in outputs)
    np.testing.assert_array_equal(rand_augment(static, tf.constant([3, 1])), outputs[3])


def test_random_erasing_and_mixup_cutmix_use_one_box_per_clip():
    clips = tf.zeros([3, 4, 20, 24, 3])
    erased = augment.random_erasing(clips, tf.constant([1, 2]), probability=1.0).numpy()
    for clip in erased:
        mask = clip != 0
        assert mask.any() and mask.mean() < 0.4
        np.testing.assert_array_equal(clip, np.repeat(clip[:1], 4, axis=0))

    clips = tf.concat([tf.ones([1, 4, 20, 24, 3]), tf.zeros([1, 4, 20, 24, 3])], axis=0)
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    for s in range(5):
        mixed, mixed_labels = augment.mixup_cutmix(
            clips, labels, tf.constant([s, 9]), cutmix_alpha=1.0
        )
        mixed, mixed_labels = mixed.numpy(), mixed_labels.numpy()
        np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(mixed[0], np.repeat(mixed[0][:1], 4, axis=0))
        kept = mixed[0].mean()  # the fraction of clip 0 that is still clip 0
        np.testing.assert_allclose(mixed_labels[0, 0], kept, atol=1e-6)
        mixed, mixed_labels = augment.mixup_cutmix(
            clips, labels, tf.constant([s, 9]), mixup_alpha=0.8
        )
        lam = mixed_labels.numpy()[0, 0]
        np.testing.assert_allclose(mixed.numpy()[0], lam, atol=1e-6)


def test_labels_smoothing_and_int_mode(shards):
    smoothed = augment.one_hot_labels(tf.constant([1, 0]), 4, label_smoothing=0.1).numpy()
    np.testing.assert_allclose(smoothed, [[0.025, 0.925, 0.025, 0.025], [0.925] + [0.025] * 3])
    _, labels = next(
        iter(data.train_dataset(str(shards), 2, num_classes=2, clip_len=4, crop_size=32,
                                label_smoothing=0.2, seed=0))
    )  # fmt: skip
    values = labels.numpy().ravel()
    assert np.all(np.isclose(values, 0.1) | np.isclose(values, 0.9))
    with pytest.raises(ValueError, match="num_classes"):
        data.train_dataset(str(shards), 2)
    with pytest.raises(ValueError, match="one_hot"):
        data.train_dataset(str(shards), 2, label_mode="int", mixup=0.8)
    with pytest.raises(ValueError, match="sampling"):
        data.eval_dataset(str(shards), 2, num_classes=2, protocol={"sampling": "random"})
    with pytest.raises(ValueError, match="matches no shard"):
        data.eval_dataset(str(shards / "nothing-*.tfrecord"), 2, num_classes=2)


def test_uniform_sampling_pipeline_and_determinism(shards):
    def batches(seed):
        dataset = data.train_dataset(
            str(shards), 3, num_classes=2, clip_len=4, sampling="uniform", crop_size=32,
            seed=seed, deterministic=True, flip=False, mixup=0.8, cutmix=1.0,
        )  # fmt: skip
        return [(c.numpy(), lab.numpy()) for c, lab in dataset.take(2)]

    first, again, other = batches(11), batches(11), batches(12)
    for (clips_a, labels_a), (clips_b, labels_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(clips_a, clips_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    evaluation = data.eval_dataset(
        str(shards), 6, protocol=data.SSV2.replace(clip_len=4, short_side=64, crop_size=64),
        label_mode="int", with_filenames=True,
    )  # fmt: skip
    clips, _, names = next(iter(evaluation))
    for clip, name in zip(clips.numpy(), names.numpy(), strict=True):
        expected = sampling.uniform_sample_np(FRAME_COUNTS[name.decode()], 4, test_mode=True)
        np.testing.assert_array_equal(frame_index(clip), expected)


@pytest.fixture(scope="module")
def corrupt_shards(shards, tmp_path_factory):
    """One shard with a record that is no SequenceExample, one whose sampled JPEGs do not
    decode, and one cut short."""
    root = tmp_path_factory.mktemp("corrupt")
    source = data.list_shards(str(shards))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(source)]
    assert len(records) == 2
    example = tf.train.SequenceExample.FromString(records[1])
    for feature in example.feature_lists.feature_list["image/encoded"].feature:
        feature.bytes_list.value[0] = b"\xff\xd8\xff\xe0 not a jpeg"
    paths = {}
    for name, content in (
        ("proto", [records[0], b"\x0a\xffnot a protobuf", records[1]]),
        ("jpeg", [records[0], example.SerializeToString()]),
    ):
        paths[name] = str(root / f"{name}.tfrecord")
        with tf.io.TFRecordWriter(paths[name]) as writer:
            for record in content:
                writer.write(record)
    blob = open(source, "rb").read()
    paths["cut"] = str(root / "cut.tfrecord")
    open(paths["cut"], "wb").write(blob[: len(blob) - 100])
    return paths


@pytest.mark.parametrize("kind, reason", [("proto", "1 of 3 record"), ("jpeg", "1 of 2 record"),
                                          ("cut", "truncated after record 1")])  # fmt: skip
def test_corrupt_records_raise_naming_the_file(corrupt_shards, kind, reason):
    path = corrupt_shards[kind]
    dataset = data.eval_dataset(
        path, 1, num_classes=2, protocol=protocol_of(clip_len=4, short_side=64, crop_size=48)
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in dataset:
            pass
    assert path in info.value.message and reason in info.value.message
    assert "skip_corrupt=True" in info.value.message


def test_corrupt_records_are_skipped_and_counted(corrupt_shards):
    counter = data.CorruptRecords()
    dataset = data.eval_dataset(
        list(corrupt_shards.values()), 1, num_classes=2,
        protocol=protocol_of(clip_len=4, short_side=64, crop_size=48), skip_corrupt=counter,
    )  # fmt: skip
    clips = [c.numpy() for c, _ in dataset]
    assert len(clips) == 2 + 1 + 1  # proto: 2 good, jpeg: 1 good, cut: 1 complete record
    assert counter.records == 2 and len(counter.damaged_files) == 1 and counter.total == 3
    assert counter.by_file[corrupt_shards["cut"]] == 1
    train = data.train_dataset(
        corrupt_shards["jpeg"], 2, num_classes=2, clip_len=4, crop_size=32, skip_corrupt=True
    )
    for clips, _ in train.take(2):
        assert np.isfinite(clips.numpy()).all()
    assert train.corrupt_records.records >= 1


@pytest.fixture(scope="module")
def mislabelled_shard(shards, tmp_path_factory):
    """A shard of four videos for two classes: labels 0, 2 (too large), -1 (none) and 1."""
    root = tmp_path_factory.mktemp("labels")
    videos = shards.parent / "videos"
    entries = [
        write_cli.VideoEntry(str(videos / f"{name}.mp4"), name, label, f"class{label}")
        for name, label in (("v0", 0), ("v1", 2), ("v2", -1), ("v3", 1))
    ]
    _write(entries, root, "labels", 1)
    (path,) = data.list_shards(str(root))
    return path


EVAL_PROTOCOL = dict(clip_len=4, short_side=64, crop_size=48)


@pytest.mark.parametrize("mode", ["eval one_hot", "train one_hot", "train int"])
def test_labels_outside_the_classes_raise_naming_shard_video_and_label(mislabelled_shard, mode):
    if mode.startswith("eval"):
        dataset = data.eval_dataset(
            mislabelled_shard, 1, num_classes=2, protocol=protocol_of(**EVAL_PROTOCOL)
        )
    else:
        dataset = data.train_dataset(
            mislabelled_shard, 2, num_classes=2, clip_len=4, crop_size=32,
            label_mode=mode.split()[1],
        )  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in dataset.take(8):
            pass
    message = info.value.message
    assert mislabelled_shard in message and "skip_corrupt=True" in message
    found = re.search(r"video (v\d): label (-?\d+) is outside \[0, 2\)", message)
    assert found and (found[1], found[2]) in {("v1", "2"), ("v2", "-1")}, message


def test_labels_outside_the_classes_are_skipped_and_counted(mislabelled_shard):
    counter = data.CorruptRecords()
    dataset = data.eval_dataset(
        mislabelled_shard, 1, num_classes=2, protocol=protocol_of(**EVAL_PROTOCOL),
        skip_corrupt=counter, with_filenames=True,
    )  # fmt: skip
    kept = {name.numpy().decode(): int(np.argmax(label)) for _, (label,), (name,) in dataset}
    assert kept == {"v0": 0, "v3": 1}
    assert sorted(counter.bad_labels) == [
        (mislabelled_shard, "v1", 2),
        (mislabelled_shard, "v2", -1),
    ]
    assert counter.total == 2 and counter.records == 0
    assert counter.by_file == {mislabelled_shard: 2}


def test_input_context_gives_each_pipeline_its_own_files(shards):
    names = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        dataset = data.eval_dataset(
            str(shards), 4, num_classes=2,
            protocol=protocol_of(clip_len=4, short_side=64, crop_size=32),
            with_filenames=True, input_context=context,
        )  # fmt: skip
        mine = []
        for clips, _, batch_names in dataset:
            assert clips.shape[0] <= 2  # per-replica batch = 4 / 2
            mine += [n.decode() for n in batch_names.numpy()]
        names.append(set(mine))
    assert not names[0] & names[1] and names[0] | names[1] == set(FRAME_COUNTS)
    context = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=0)
    with pytest.raises(ValueError, match="at least one shard per worker"):
        data.eval_dataset(str(shards), 4, num_classes=2, input_context=context)


def test_mirrored_strategy_two_replicas(shards):
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
        from keras_vswin import data
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = data.distribute_dataset(
            strategy, data.train_dataset, {str(shards)!r}, 4, num_classes=2, clip_len=4,
            crop_size=32, seed=0)
        clips, labels = next(iter(dist))
        shapes = [tuple(c.shape) for c in strategy.experimental_local_results(clips)]
        assert shapes == [(2, 4, 32, 32, 3)] * 2, shapes
        print("OK")
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_three_crop_offsets_follow_mmaction():
    from keras_vswin.data.augment import three_crop_offsets

    # Landscape, odd room 75: left, centre 75 // 2, right at 2 * (75 // 2) (mmaction ThreeCrop).
    np.testing.assert_array_equal(three_crop_offsets(224, 299, 224), [[0, 0], [0, 37], [0, 74]])
    # Portrait, even room: top, centre, bottom edge.
    np.testing.assert_array_equal(three_crop_offsets(300, 224, 224), [[0, 0], [38, 0], [76, 0]])


def test_train_dataset_works_with_a_global_seed(shards):
    # Training scripts often call keras.utils.set_random_seed; the pipeline must still build.
    tf.random.set_seed(1234)
    dataset = data.train_dataset(str(shards), 2, clip_len=4, crop_size=32, seed=3, num_classes=2)
    clips, labels = next(iter(dataset))
    assert clips.shape == (2, 4, 32, 32, 3) and labels.shape[0] == 2


# --------------------------------------------------------------------------------------------
# Decoding only what a clip needs (issue 16): the same clips as before, uint8 until the model


def reference_train_decoder(clip_len, crop):
    """The training decoder as it was before issue 16, step by step: the RandomResizedCrop box
    drawn from the first sampled frame's JPEG header, every sampled JPEG decoded (the box only),
    a bilinear resize from uint8, round and clip, a flip of the width axis."""

    def decode(record, seed, name):
        context, frames = data.schema.parse_sequence_example(record)
        num_frames = tf.shape(frames, out_type=tf.int64)[0]
        seeds = tf.random.experimental.stateless_split(seed, 4)
        indices = sampling.dense_sample_tf(num_frames, clip_len, 2, seed=seeds[0])[0]
        jpegs = tf.gather(frames, indices)
        shape = tf.image.extract_jpeg_shape(jpegs[0])
        window = augment.random_resized_crop_window(shape[0], shape[1], seeds[1])
        decoded = tf.map_fn(
            lambda jpeg: tf.image.decode_and_crop_jpeg(jpeg, window, channels=3),
            jpegs,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )
        resized = tf.image.resize(decoded, [crop, crop])
        clip = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
        clip = tf.cond(flip, lambda: tf.reverse(clip, axis=[-2]), lambda: clip)
        clip = tf.ensure_shape(clip, [clip_len, crop, crop, 3])
        return {"clip": clip, "label": context["clip/label/index"], "filename": name}

    return decode


def reference_train_clips(files, seed, count, clip_len, crop, shuffle_buffer, cycle_length):
    """`count` clips of the reference decoder, read through the pipeline's own shard reader
    (which hands every record the same seed as in `train_dataset`)."""
    from keras_vswin.data import datasets

    config = {
        "shuffle_buffer": max(1, shuffle_buffer // cycle_length),
        "cycle_length": cycle_length,
        "deterministic": True,
        "counter": None,
        "parallel_decode": 1,
        "num_classes": 2,
        "label_mode": "one_hot",
    }
    stream = datasets._read_all(
        files,
        reference_train_decoder(clip_len, crop),
        datasets._placeholder([clip_len, crop, crop, 3]),
        training=True,
        seed=seed,
        input_context=None,
        config=config,
    )
    return np.stack([element["clip"].numpy() for element in stream.take(count)])


@pytest.fixture(scope="module")
def sizeless_shards(shards, tmp_path_factory):
    """The `shards` records without `image/height` and `image/width` in their context, as
    writers that do not record the frame size leave them."""
    root = tmp_path_factory.mktemp("sizeless")
    for source in data.list_shards(str(shards)):
        with tf.io.TFRecordWriter(str(root / os.path.basename(source))) as writer:
            for record in tf.data.TFRecordDataset(source):
                example = tf.train.SequenceExample.FromString(record.numpy())
                del example.context.feature["image/height"]
                del example.context.feature["image/width"]
                writer.write(example.SerializeToString())
    return root


@pytest.mark.parametrize("which", ["shards", "sizeless_shards"])
def test_train_clips_are_the_clips_of_the_pipeline_before(which, request):
    # Same seed -> the same frames, RandomResizedCrop box and flip for every record as the
    # decoder before issue 16 (box from the stored size, or the JPEG header without one), and
    # bitwise the same pixels; the uint8 clips normalised are the `normalize=True` clips.
    files = data.list_shards(str(request.getfixturevalue(which)))
    options = dict(clip_len=8, crop_size=40, seed=21, deterministic=True, shuffle_buffer=4)
    raw = data.train_dataset(files, 4, num_classes=2, cycle_length=2, **options)
    clips = np.concatenate([c.numpy() for c, _ in raw.take(3)])
    assert clips.dtype == np.uint8
    expected = reference_train_clips(files, 21, len(clips), 8, 40, 4, 2)
    np.testing.assert_array_equal(clips, expected)
    assert len({c.tobytes() for c in clips}) == len(clips)  # different boxes and frames
    normalised = data.train_dataset(files, 4, num_classes=2, cycle_length=2, normalize=True,
                                    **options)  # fmt: skip
    floats = np.concatenate([c.numpy() for c, _ in normalised.take(3)])
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, to_normalised(expected))


def to_normalised(pixels):
    """The official normalisation, as the pipeline did it before issue 16."""
    return (pixels.astype(np.float32) - np.float32(MEAN_RGB)) / np.float32(STD_RGB)


def test_normalize_is_the_official_formula_bitwise():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(data.normalize(pixels).numpy(), to_normalised(pixels))
    np.testing.assert_array_equal(data.normalize(pixels[0, 0, 0]).numpy(), to_normalised(
        pixels[0, 0, 0]))  # fmt: skip
    with pytest.raises(ValueError, match="RGB"):
        data.normalize(np.zeros((2, 4, 4), np.uint8))


def test_raw_clips_with_erasing_and_mixing_are_the_normalised_clips_in_pixel_units(shards):
    # MixUp/CutMix and random erasing make raw clips fractional: float32 in 0-255 units, which
    # the model's normalisation turns into the `normalize=True` clips.
    options = dict(clip_len=4, crop_size=32, seed=4, deterministic=True, num_classes=2,
                   random_erasing=1.0, mixup=0.8, cutmix=1.0)  # fmt: skip
    raw = data.train_dataset(str(shards), 3, **options)
    normalised = data.train_dataset(str(shards), 3, normalize=True, **options)
    for (a, labels_a), (b, labels_b) in zip(raw.take(3), normalised.take(3), strict=True):
        assert a.dtype == tf.float32
        np.testing.assert_allclose(to_normalised(a.numpy()), b.numpy(), atol=2e-5)
        np.testing.assert_array_equal(labels_a, labels_b)


TINY_MODEL = dict(
    embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=(2, 4, 4), classes=2,
    drop_path_rate=0.0, head_dropout_rate=0.0,
)  # fmt: skip


def test_uint8_clips_give_the_logits_of_normalised_clips(shards):
    import keras_vswin
    from keras_vswin.preprocessing import with_clip_normalization

    plain = keras_vswin.VideoSwin(**TINY_MODEL, classifier_activation=None)
    front = with_clip_normalization(plain)
    train = dict(clip_len=4, crop_size=32, seed=8, deterministic=True, num_classes=2)
    evaluation = dict(num_classes=2, protocol=protocol_of(clip_len=4, crop_size=32, num_clips=2))
    pairs = [
        (data.train_dataset(str(shards), 3, **train),
         data.train_dataset(str(shards), 3, normalize=True, **train)),
        (data.eval_dataset(str(shards), 3, **evaluation),
         data.eval_dataset(str(shards), 3, normalize=True, **evaluation)),
        (data.test_dataset(str(shards), 1, **evaluation),
         data.test_dataset(str(shards), 1, normalize=True, **evaluation)),
    ]  # fmt: skip
    for raw_dataset, normalised_dataset in pairs:
        raw, _ = next(iter(raw_dataset))
        normalised, _ = next(iter(normalised_dataset))
        assert raw.dtype == tf.uint8 and normalised.dtype == tf.float32
        raw = tf.reshape(raw, [-1, *raw.shape[-4:]])  # test views -> clips
        normalised = tf.reshape(normalised, [-1, *normalised.shape[-4:]])
        np.testing.assert_allclose(
            np.asarray(front(raw)), np.asarray(plain(normalised)), rtol=0, atol=1e-6
        )


WORKER = """
import sys
import tensorflow as tf
service = tf.data.experimental.service
config = service.WorkerConfig(
    dispatcher_address=sys.argv[1], worker_address="127.0.0.1:%port%", port=0)
worker = service.WorkerServer(config)
print("worker ready", flush=True)
worker.join()
"""


def wait_for_service_workers(service_address, count, timeout=240):
    """Returns once `count` workers serve new jobs (workers register with the dispatcher a
    little after they start): each worker repeats a random number of its own."""
    import time

    draw = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: tf.raw_ops.RandomUniformInt(
            shape=tf.constant([], tf.int32),
            minval=tf.constant(0, tf.int64),
            maxval=tf.constant(2**62, tf.int64),
            seed=0,
            seed2=0,
        )  # fmt: skip
    )
    probe = (
        draw.cache()
        .repeat()
        .apply(tf.data.experimental.service.distribute("parallel_epochs", service_address))
    )
    deadline = time.monotonic() + timeout
    while len({int(x) for x in probe.take(4 * count)}) < count:
        assert time.monotonic() < deadline, f"{count} tf.data service workers did not start"
        time.sleep(0.5)


def test_train_two_steps_from_tf_data_service_workers(shards, corrupt_shards, tmp_path):
    # A dispatcher and two worker processes on 127.0.0.1. The workers import TensorFlow only:
    # the pipeline reaches them as a graph. Each runs the whole training pipeline with its own
    # random draws, so no clip comes twice.
    import keras_vswin
    from keras_vswin.preprocessing import with_clip_normalization

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = "127.0.0.1:" + dispatcher.target.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, address],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "worker ready"
        wait_for_service_workers(f"grpc://{address}", 2)
        tf.random.set_seed(3)  # a global seed must not make the workers draw alike
        dataset = data.train_dataset(
            str(shards), 2, num_classes=2, clip_len=4, crop_size=32, skip_corrupt=True,
            data_service=f"grpc://{address}",
        )  # fmt: skip
        model = with_clip_normalization(keras_vswin.VideoSwin(**TINY_MODEL))
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        clips = np.concatenate([c.numpy() for c, _ in dataset.take(8)])
        assert clips.dtype == np.uint8 and clips.shape == (16, 4, 32, 32, 3)
        assert len({clip.tobytes() for clip in clips}) == len(clips)
        assert all(worker.poll() is None for worker in workers)
        # skip_corrupt: the workers drop the bad records (and log them there)
        skipping = data.train_dataset(
            corrupt_shards["jpeg"], 2, num_classes=2, clip_len=4, crop_size=32,
            skip_corrupt=True, data_service=f"grpc://{address}",
        )  # fmt: skip
        for clips, _ in skipping.take(2):
            assert clips.shape == (2, 4, 32, 32, 3)
        with pytest.raises(ValueError, match="seed must be None"):
            data.train_dataset(str(shards), 2, num_classes=2, seed=1, data_service=address)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=60)
