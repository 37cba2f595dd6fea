"""Video decoding (keras_vswin.video), the shard writer and the shard inspector.

Shards are read back with plain `tf.io.parse_single_sequence_example`, not with our reader.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from _video_fixtures import frame_index, moving_frames, write_moving_video
from PIL import Image

from keras_vswin import video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # the CLI packages live at the repository root
    sys.path.insert(0, REPO)

from keras_vswin.data import inspect_shards as inspect_cli  # noqa: E402
from keras_vswin.data import write_shards as write_cli  # noqa: E402

# Spec for reading shards back independently of keras_vswin.data.
CONTEXT = {
    "clip/label/index": tf.io.FixedLenFeature([], tf.int64),
    "clip/label/text": tf.io.FixedLenFeature([], tf.string),
    "video/filename": tf.io.FixedLenFeature([], tf.string),
    "video/fps": tf.io.FixedLenFeature([], tf.float32),
    "video/num_frames": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "clip/start/timestamp": tf.io.FixedLenFeature([], tf.int64),
    "clip/end/timestamp": tf.io.FixedLenFeature([], tf.int64),
}
SEQUENCE = {"image/encoded": tf.io.FixedLenSequenceFeature([], tf.string)}


def read_shard(path):
    """Plain-TF reader: list of (context dict of numpy values, decoded frames)."""
    out = []
    for record in tf.data.TFRecordDataset(path):
        context, sequence = tf.io.parse_single_sequence_example(
            record, context_features=CONTEXT, sequence_features=SEQUENCE
        )
        frames = np.stack([tf.io.decode_jpeg(j).numpy() for j in sequence["image/encoded"]])
        out.append(({k: v.numpy() for k, v in context.items()}, frames))
    return out


# --------------------------------------------------------------------------------------------
# keras_vswin.video


def test_read_video_frames_order_size_and_fps(tmp_path):
    path = write_moving_video(str(tmp_path / "a.mp4"), 40, 64, 80, fps=25)
    info = video.probe_video(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (80, 64, 40, "h264")
    assert info.fps == pytest.approx(25)

    clip = video.read_video(path)
    assert clip.frames.shape == (40, 64, 80, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(40))

    half = video.read_video(path, fps=12.5, short_side=32)
    assert half.frames.shape == (20, 32, 40, 3) and half.fps == 12.5
    np.testing.assert_array_equal(frame_index(half.frames), np.arange(0, 40, 2))
    double = video.read_video(path, fps=50)
    np.testing.assert_array_equal(frame_index(double.frames), np.repeat(np.arange(40), 2))
    assert video.resized_shape(360, 640, 256) == (256, 455)
    assert video.resized_shape(640, 360, 256) == (455, 256)


@pytest.mark.parametrize(
    "codec, pix_fmt, suffix, channels",
    [
        ("ffv1", "gray", ".mkv", 0),
        ("png", "rgba", ".mov", 4),
        ("libvpx-vp9", "yuv420p", ".webm", 3),
    ],
)
def test_other_formats_decode_to_rgb(tmp_path, codec, pix_fmt, suffix, channels):
    frames = moving_frames(6, 32, 48)
    if channels == 0:
        frames = frames[..., 0]
    elif channels == 4:
        frames = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 99, np.uint8)], -1)
    path = str(tmp_path / f"v{suffix}")
    video.write_video(path, frames, fps=10, codec=codec, pix_fmt=pix_fmt)
    decoded = video.read_video(path).frames
    assert decoded.shape == (6, 32, 48, 3)
    np.testing.assert_array_equal(frame_index(decoded), np.arange(6))


def _pil_jpeg(array, quality):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode_jpeg(data):
    return tf.io.decode_jpeg(data, channels=3).numpy().astype(np.int32)


def test_fast_paths_give_the_reference_pixels_and_jpeg_frames(tmp_path):
    """The planar-RGB scaler path equals FFmpeg's packed RGB conversion; the JPEG frames of
    `iter_jpeg_frames` (scaled straight to YUV 4:2:0) decode as close to the `iter_frames`
    arrays as PIL's JPEG of those arrays does."""
    import av

    from keras_vswin.video import _interpolation

    rng = np.random.default_rng(0)
    frames = moving_frames(8, 72, 96)
    frames[:, ::2] = rng.integers(0, 256, frames[:, ::2].shape, dtype=np.uint8)  # colour detail
    path = str(tmp_path / "c.webm")
    video.write_video(path, frames, fps=10, codec="libvpx-vp9")
    with av.open(path) as container:
        reference = [
            f.reformat(
                width=53, height=40, format="rgb24", interpolation=_interpolation()
            ).to_ndarray()
            for f in container.decode(video=0)
        ]
    arrays = list(video.iter_frames(path, short_side=40))
    np.testing.assert_array_equal(np.stack(arrays), np.stack(reference))

    jpegs = list(video.iter_jpeg_frames(path, quality=87, short_side=40, fps=15))
    arrays = np.stack(list(video.iter_frames(path, short_side=40, fps=15))).astype(np.int32)
    assert len(jpegs) == len(arrays) == 12  # 8 frames at 10 fps resampled to 15 fps
    decoded = np.stack([_decode_jpeg(j) for j in jpegs])
    pil = np.stack([_decode_jpeg(_pil_jpeg(a.astype(np.uint8), 87)) for a in arrays])
    assert decoded.shape == arrays.shape == (12, 40, 53, 3)
    ours, theirs = np.abs(decoded - arrays).mean(), np.abs(pil - arrays).mean()
    assert ours <= theirs + 0.5, (ours, theirs)  # measured: 8.85 vs 8.63 levels
    assert list(video.iter_jpeg_frames(path, quality=87, short_side=40, fps=15)) == jpegs


def test_jpeg_bytes_do_not_depend_on_line_padding():
    """libjpeg-turbo reads 4:2:0 luma rounded up to even rows and columns: at an odd size the
    JPEG must come from the frame's pixels alone, not from the bytes past them."""
    import av

    from keras_vswin.video import _yuv420_to_jpeg

    rng = np.random.default_rng(3)
    jpegs = []
    for fill in (0, 255, None):
        frame = av.VideoFrame(47, 33, "yuvj420p")
        for index, plane in enumerate(frame.planes):
            rows = plane.buffer_size // plane.line_size
            data = np.full((rows, plane.line_size), fill or 0, np.uint8)
            if fill is None:
                data[:] = rng.integers(0, 256, data.shape, dtype=np.uint8)
            data[: plane.height, : plane.width] = 60 + 50 * index  # the pixels: all equal
            plane.update(data.tobytes())
        jpegs.append(_yuv420_to_jpeg(frame, 90))
    assert jpegs[0] == jpegs[1] == jpegs[2]
    assert _decode_jpeg(jpegs[0]).shape == (33, 47, 3)


# One colour per quadrant; every frame a different set, and black, white, grey and saturated.
COLOURS = np.array(
    [(200, 30, 40), (20, 180, 60), (30, 60, 220), (128, 128, 128), (250, 250, 20), (16, 16, 16),
     (235, 235, 235), (90, 200, 210)],
    np.uint8,
)  # fmt: skip


def quadrant_frames(num_frames, height, width):
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        for q in range(4):
            y, x = divmod(q, 2)
            frames[t, y * height // 2 : (y + 1) * height // 2, x * width // 2 :][
                :, : (width // 2 if x == 0 else None)
            ] = COLOURS[(2 * t + q) % len(COLOURS)]
    return frames


def quadrant_points(frame):
    """The centre of each quadrant, and the corners of the frame (its edge rows and columns)."""
    h, w = frame.shape[:2]
    centres = [frame[(2 * y + 1) * h // 4, (2 * x + 1) * w // 4] for y in (0, 1) for x in (0, 1)]
    corners = [frame[0, 0], frame[0, w - 1], frame[h - 1, 0], frame[h - 1, w - 1]]
    return np.array(centres + corners, np.int32)


def write_tagged_video(path, frames, fps, codec, pix_fmt, colorspace, color_range, options):
    """Like `video.write_video`, but converts RGB with the given matrix and range (the
    reformatter's names) and tags the stream with them, as HD cameras and encoders do."""
    import av

    container = av.open(path, mode="w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
    stream.options = options
    tags = {"ITU709": 1, "ITU601": 6}, {"MPEG": 1, "JPEG": 2}
    stream.codec_context.colorspace = tags[0][colorspace]
    stream.codec_context.color_range = tags[1][color_range]
    for array in frames:
        frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
            format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range
        )
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


LOSSLESS_X264 = {"crf": "0", "preset": "veryfast"}


# BT.709 sources are converted to JPEG's BT.601 matrix: one more rounding of 8-bit chroma (a
# level), worth up to 2 more levels of RGB. Without that conversion they are off by 25 levels.
@pytest.mark.parametrize(
    "name, codec, pix_fmt, options, tolerance",
    [
        ("h264.mp4", "libx264", "yuv420p", LOSSLESS_X264, 3),  # limited range, untagged
        ("h264_444.mp4", "libx264", "yuv444p", LOSSLESS_X264, 3),
        ("h264_10bit.mkv", "libx264", "yuv420p10le", LOSSLESS_X264, 3),
        ("h264_709.mp4", "libx264", ("yuv420p", "ITU709", "MPEG"), LOSSLESS_X264, 5),
        ("h264_709_full.mp4", "libx264", ("yuvj420p", "ITU709", "JPEG"), LOSSLESS_X264, 5),
        ("vp9.webm", "libvpx-vp9", "yuv420p", {"lossless": "1"}, 3),
        ("gray.mkv", "ffv1", "gray", {}, 3),
        ("rgb.mkv", "ffv1", "bgr0", {}, 3),
    ],
)
def test_shard_frames_have_the_source_colours(tmp_path, name, codec, pix_fmt, options, tolerance):
    """Solid colours survive every source pixel format, range and matrix into the shard's JPEGs
    (decoded with plain TensorFlow) within a few levels (JPEG q90 alone costs up to 3 here),
    also at an odd target size (67x95: 4:2:0 chroma covers a last column and row of its own)."""
    frames = quadrant_frames(4, 90, 128)
    path = str(tmp_path / name)
    if isinstance(pix_fmt, tuple):
        write_tagged_video(path, frames, 10, codec, *pix_fmt, options)
    else:
        video.write_video(path, frames, fps=10, codec=codec, pix_fmt=pix_fmt, options=options)
    expected = np.stack([quadrant_points(f) for f in frames])
    if pix_fmt == "gray":
        luma = np.round(expected @ np.array([0.299, 0.587, 0.114]))
        expected = np.repeat(luma[..., None], 3, axis=-1)
    for short_side in (None, 67):
        entry = write_cli.VideoEntry(path, name, 0, "")
        settings = write_cli.WriterSettings(short_side=short_side)
        record, count = write_cli.encode_video(entry, settings, threads=1)
        context, sequence = tf.io.parse_single_sequence_example(
            record, context_features=CONTEXT, sequence_features=SEQUENCE
        )
        decoded = np.stack([_decode_jpeg(j) for j in sequence["image/encoded"]])
        size = (90, 128) if short_side is None else (67, 95)
        assert count == 4 and decoded.shape == (4, *size, 3)
        assert (context["image/height"], context["image/width"]) == size
        points = np.stack([quadrant_points(f) for f in decoded])
        error = np.abs(points - expected).max()
        assert error <= tolerance, (short_side, error, points, expected)
        assert write_cli.encode_video(entry, settings, threads=1)[0] == record


def test_bad_videos_raise_errors_naming_the_file(tmp_path):
    good = write_moving_video(str(tmp_path / "good.mp4"), 30)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    cases = {
        str(empty): "empty",
        str(garbage): "FFmpeg",
        str(truncated): "FFmpeg|truncated",
        str(tmp_path / "missing.mp4"): "not found",
    }
    for path, reason in cases.items():
        with pytest.raises(video.VideoDecodeError, match=reason) as info:
            video.read_video(path)
        assert path in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="even"):
        video.write_video(str(tmp_path / "odd.mp4"), moving_frames(2, 31, 40))


# --------------------------------------------------------------------------------------------
# Writer


@pytest.fixture(scope="module")
def csv_job(tmp_path_factory):
    """Six good videos, one corrupt and one empty, listed in a CSV with text labels; written
    with two worker processes."""
    root = tmp_path_factory.mktemp("csv_job")
    counts = {"walk": [40, 24], "jump": [48, 20], "swim": [33, 36]}
    rows, frames_by_name = [], {}
    for label, frame_counts in counts.items():
        for i, n in enumerate(frame_counts):
            name = f"videos/{label}_{i}.mp4"
            write_moving_video(str(root / name), n, 64, 80, fps=25)
            rows.append(f"{name},{label}")
            frames_by_name[name] = (n, label)
    (root / "videos" / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    (root / "videos" / "empty.mp4").write_bytes(b"")
    rows += ["videos/broken.mp4,walk", "videos/empty.mp4,jump"]
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (root / "labels.txt").write_text("swim\nwalk\njump\n")
    output = root / "shards"
    code = write_cli.main(
        [
            "--videos", str(root / "list.csv"),
            "--labels", str(root / "labels.txt"),
            "--output", str(output),
            "--name", "train",
            "--num-shards", "3",
            "--workers", "2",
            "--short-side", "48",
            "--jpeg-quality", "95",
            "--quiet",
        ]
    )  # fmt: skip
    manifest = json.loads((output / "train.manifest.json").read_text())
    return {"code": code, "output": output, "manifest": manifest, "frames": frames_by_name}


def test_writer_shards_read_back_with_plain_tensorflow(csv_job):
    output, manifest = csv_job["output"], csv_job["manifest"]
    files = sorted(p.name for p in output.glob("*.tfrecord"))
    assert files == [f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert not list(output.glob("*.tmp-*"))
    classes = ["swim", "walk", "jump"]  # the labels file fixes the order
    seen = {}
    for shard in manifest["shards"]:
        records = read_shard(output / shard["file"])
        assert len(records) == shard["num_videos"]
        assert sum(int(c["video/num_frames"]) for c, _ in records) == shard["num_frames"]
        for context, frames in records:
            name = context["video/filename"].decode()
            num_frames, label = csv_job["frames"][name]
            assert int(context["video/num_frames"]) == num_frames == len(frames)
            assert frames.shape == (num_frames, 48, 60, 3)
            assert (context["image/height"], context["image/width"]) == (48, 60)
            assert context["clip/label/text"].decode() == label
            assert context["clip/label/index"] == classes.index(label)
            assert context["video/fps"] == pytest.approx(25)
            assert context["clip/end/timestamp"] == round(num_frames / 25 * 1e6)
            np.testing.assert_array_equal(frame_index(frames), np.arange(num_frames))
            seen[name] = True
    assert sorted(seen) == sorted(csv_job["frames"])


def test_writer_manifest_lists_skipped_videos_and_exits_1(csv_job):
    manifest = csv_job["manifest"]
    assert csv_job["code"] == write_cli.EXIT_SKIPPED
    assert manifest["label_map"] == {"0": "swim", "1": "walk", "2": "jump"}
    assert manifest["num_classes"] == 3 and manifest["num_shards"] == 3
    assert manifest["totals"]["videos_listed"] == 8
    assert manifest["totals"]["videos_written"] == 6
    assert manifest["label_counts"] == {"0": 2, "1": 2, "2": 2}
    assert manifest["settings"]["short_side"] == 48
    assert manifest["settings"]["jpeg_quality"] == 95
    skipped = {os.path.basename(item["path"]): item["error"] for item in manifest["skipped"]}
    assert set(skipped) == {"broken.mp4", "empty.mp4"}
    assert "empty" in skipped["empty.mp4"] and "FFmpeg" in skipped["broken.mp4"]
    assert sum(s["num_videos"] for s in manifest["shards"]) == 6


def test_writer_video_dir_integer_order_and_fps(tmp_path):
    for name, n in [("b_class/v0.mp4", 20), ("a_class/v0.mp4", 30), ("b_class/v1.mp4", 26)]:
        write_moving_video(str(tmp_path / "videos" / name), n, 32, 40)
    (tmp_path / "videos" / "b_class" / "notes.txt").write_text("not a video")
    code = write_cli.main(
        [
            "--video-dir", str(tmp_path / "videos"),
            "--output", str(tmp_path / "out"),
            "--name", "val",
            "--num-shards", "2",
            "--workers", "1",
            "--fps", "12.5",
            "--short-side", "0",
            "--no-shuffle",
            "--quiet",
        ]
    )  # fmt: skip
    assert code == write_cli.EXIT_OK
    manifest = json.loads((tmp_path / "out" / "val.manifest.json").read_text())
    assert manifest["label_map"] == {"0": "a_class", "1": "b_class"}
    records = read_shard(tmp_path / "out" / "val-00000-of-00002.tfrecord")
    records += read_shard(tmp_path / "out" / "val-00001-of-00002.tfrecord")
    by_name = {c["video/filename"].decode(): (c, f) for c, f in records}
    assert sorted(by_name) == ["a_class/v0.mp4", "b_class/v0.mp4", "b_class/v1.mp4"]
    context, frames = by_name["a_class/v0.mp4"]
    assert frames.shape == (15, 32, 40, 3)  # 30 frames at 25 fps -> 15 at 12.5 fps
    assert context["video/fps"] == pytest.approx(12.5)
    np.testing.assert_array_equal(frame_index(frames), np.arange(0, 30, 2))
    assert context["clip/label/index"] == 0


def test_writer_bad_arguments_exit_2(tmp_path, capsys):
    assert write_cli.main(["--help"]) == 0
    assert "Exit status" in capsys.readouterr().out
    common = ["--output", str(tmp_path / "o"), "--name", "x", "--num-shards", "1", "--quiet"]
    assert write_cli.main(["--videos", str(tmp_path / "missing.csv"), *common]) == 2
    (tmp_path / "bad.csv").write_text("file,label\na.mp4,1\n")
    assert write_cli.main(["--videos", str(tmp_path / "bad.csv"), *common]) == 2
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "unknown.csv").write_text("path,label\na.mp4,zebra\n")
    argv = ["--videos", str(tmp_path / "unknown.csv"), "--labels", str(tmp_path / "labels.txt")]
    assert write_cli.main([*argv, *common]) == 2
    assert "zebra" in capsys.readouterr().err
    assert write_cli.main(["--videos", "x.csv"]) == 2  # missing --output etc.
    (tmp_path / "ok.csv").write_text("path,label\na.mp4,0\n")
    ok = ["--videos", str(tmp_path / "ok.csv"), *common]
    assert write_cli.main([*ok, "--direct_num_workers", "2"]) == 2  # Beam option, local runner
    assert "need --runner" in capsys.readouterr().err
    assert write_cli.main([*ok, "--runner", "FnApiRunner", "--workers", "2"]) == 2
    assert "--workers is for --runner local" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert write_cli.main([*ok[:2], "--output", str(tmp_path / "file" / "o"), *common[2:]]) == 2
    assert "cannot create the folder" in capsys.readouterr().err


def test_writer_videos_must_be_a_csv_list(tmp_path, capsys):
    common = ["--output", str(tmp_path / "o"), "--name", "x", "--num-shards", "1", "--quiet"]
    clip = write_moving_video(str(tmp_path / "clip.mp4"), 4, 32, 32, fps=25)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\ncaf\xe9.mp4,1\n".encode("latin-1"))
    for given, reason in (
        (tmp_path, "is a folder"),
        (clip, "is a binary file (a video?)"),
        (latin, "is not UTF-8 text (byte 14)"),
    ):
        assert write_cli.main(["--videos", str(given), *common]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"keras-vswin write-shards: error: --videos {str(given)!r}: ")
        assert reason in error and "expected a CSV file" in error


def test_label_resolution_rules(tmp_path):
    (tmp_path / "ints.csv").write_text("path,label\na.mp4,3\nb.mp4,0\nc.mp4,\n")
    entries, names = write_cli.read_video_list(str(tmp_path / "ints.csv"))
    assert names is None
    assert [(e.label_index, e.label_text) for e in entries] == [(3, "3"), (0, "0"), (-1, "")]
    assert entries[0].path == os.path.join(str(tmp_path), "a.mp4")
    entries, _ = write_cli.read_video_list(str(tmp_path / "ints.csv"), ["x", "y", "z", "w"])
    assert [(e.label_index, e.label_text) for e in entries][:2] == [(3, "w"), (0, "x")]
    (tmp_path / "twice.csv").write_text("path,label\na.mp4,1\nb.mp4,1\na.mp4,0\n")
    with pytest.raises(write_cli.InputError, match="line 4: 'a.mp4' is already listed on line 2"):
        write_cli.read_video_list(str(tmp_path / "twice.csv"))


def test_shard_assignment_follows_a_hash_of_the_path():
    entries = [write_cli.VideoEntry(f"/v/{i}.mp4", f"{i}.mp4", i % 3, "") for i in range(10)]
    shards = write_cli.assign_shards(entries, 3, seed=0)
    assert sorted(sum(shards, []), key=entries.index) == entries
    assert [len(s) for s in shards] == [4, 3, 3]  # dealt round-robin: sizes differ by <= 1
    # The list's order does not matter, only the hash of each listed path (and the seed).
    assert write_cli.assign_shards(entries[::-1], 3, seed=0) == shards
    by_hash = sorted(entries, key=lambda e: write_cli.shard_order_key(e.name, 0))
    assert shards == [by_hash[k::3] for k in range(3)]
    assert write_cli.assign_shards(entries, 3, seed=1) != shards
    # --no-shuffle: list order, round-robin.
    assert write_cli.assign_shards(entries, 3, seed=None)[1] == entries[1::3]


def test_writer_killed_midway_resumes_from_finished_shards(tmp_path):
    videos = tmp_path / "videos"
    rows = []
    for i in range(8):
        write_moving_video(str(videos / f"v{i}.mp4"), 12 + i, 32, 40)
        rows.append(f"videos/v{i}.mp4,{i % 2}")
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    output = tmp_path / "shards"
    argv = [
        "--videos", str(tmp_path / "list.csv"),
        "--output", str(output),
        "--name", "k",
        "--num-shards", "4",
        "--workers", "1",
        "--short-side", "0",
        "--quiet",
    ]  # fmt: skip
    env = dict(os.environ, **{write_cli.TEST_DELAY_ENV: "0.6", "PYTHONPATH": REPO})
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrecords.write", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = output / "k-00000-of-00004.tfrecord"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), "the writer did not finish a shard in time"
    finished = {  # final names only: the shard being written has a hidden temporary name
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in output.glob("k-*.tfrecord")
    }
    assert len(finished) < 4, "the writer finished before it was killed"
    for name in finished:  # a file with a final name is always complete
        assert len(read_shard(output / name)) == 2
    assert not (output / "k.manifest.json").exists()

    code = write_cli.main(argv)
    assert code == write_cli.EXIT_OK
    manifest = json.loads((output / "k.manifest.json").read_text())
    assert manifest["totals"]["shards_written_this_run"] == 4 - len(finished)
    assert manifest["totals"]["videos_written"] == 8
    for name, (inode, mtime) in finished.items():
        stat = (output / name).stat()
        assert (stat.st_ino, stat.st_mtime_ns) == (inode, mtime), f"{name} was rewritten"
    assert not list(output.glob("*.tmp-*"))
    names = []
    for shard in manifest["shards"]:
        records = read_shard(output / shard["file"])
        assert len(records) == shard["num_videos"] == 2
        names += [c["video/filename"].decode() for c, _ in records]
    assert sorted(names) == [f"videos/v{i}.mp4" for i in range(8)]


# --------------------------------------------------------------------------------------------
# Inspector


def test_inspect_prints_statistics_and_writes_contact_sheet(csv_job, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    argv = [str(csv_job["output"]), "--contact-sheet", str(sheet), "--clips", "3"]
    code = inspect_cli.main([*argv, "--frames", "5", "--cell", "64x48"])
    out = capsys.readouterr().out
    assert code == 0
    assert "6 video(s) in 3 shard file(s)" in out
    assert "frames per video: min 20, mean 33.5, max 48" in out
    assert "48x60 (6)" in out and "swim" in out and "jump" in out
    image = Image.open(sheet)
    assert image.size == inspect_cli.contact_sheet_size(3, 5, 64, 48) == (4 + 5 * 68, 4 + 3 * 70)
    assert np.asarray(image).std() > 10  # frames were drawn

    assert inspect_cli.main([str(csv_job["output"]), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["videos"] == 6 and stats["frames"]["total"] == 201
    assert {k: v["count"] for k, v in stats["labels"].items()} == {"0": 2, "1": 2, "2": 2}


def test_inspect_reports_corrupt_shards(csv_job, tmp_path, capsys):
    source = csv_job["output"] / "train-00000-of-00003.tfrecord"
    data = source.read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[: len(data) * 2 // 3])
    assert inspect_cli.main([str(tmp_path)]) == inspect_cli.EXIT_CORRUPT
    assert "truncated record" in capsys.readouterr().out
    assert inspect_cli.main([str(tmp_path / "nothing-*.tfrecord")]) == inspect_cli.EXIT_USAGE


def test_inspect_reports_missing_shards(csv_job, tmp_path, capsys):
    # What a killed writer leaves: shards 0 and 2 of 3, no shard 1.
    complete = csv_job["output"]
    for index in (0, 2):
        name = f"train-{index:05d}-of-00003.tfrecord"
        (tmp_path / name).write_bytes((complete / name).read_bytes())
    assert inspect_cli.main([str(tmp_path)]) == inspect_cli.EXIT_CORRUPT
    out = capsys.readouterr().out
    missing = f"{tmp_path}/train-00001-of-00003.tfrecord"
    assert f"{missing}: missing: only 2 of the 3 shards of 'train' exist" in out
    assert inspect_cli.main([str(tmp_path), "--json"]) == inspect_cli.EXIT_CORRUPT
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["file"], p["record"]) for p in problems] == [(missing, None)]
    # A glob that picks part of a complete set misses nothing.
    assert inspect_cli.main([str(complete / "train-00000-*"), "--json"]) == inspect_cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["problems"] == []
