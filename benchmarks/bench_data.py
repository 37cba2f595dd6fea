"""Input pipeline benchmark: training clips/s from TFRecord shards next to decoding alone.

```
python benchmarks/bench_data.py                   # defaults: 16 videos of 10 s, 640x360, 30 fps
python benchmarks/bench_data.py --videos 8 --before 4656c9a --no-direct   # before/after a change
python benchmarks/bench_data.py --videos 32 --clips 128 --json bench_results/data.json
```

What it measures, in one run on this machine:
1. writer: `keras-vswin write-shards` (PyAV decode, short side 256, JPEG q90) over the videos,
   videos/s;
2. train: `keras_vswin.data.train_dataset` producing 32x224x224 training clips (dense sampling
   32x2, RandomResizedCrop, flip; uint8, the default, which the model normalises; and float32
   normalised, `normalize=True`), clips/s after a warm-up;
3. decode-only: a tf.data pipeline over the same shards that only parses the records, picks the
   clip's 32 frames (the same sampling), decodes their JPEGs (whole frames) and batches them:
   the ceiling that 2. is reported as a fraction of;
4. before (`--before REF`): `train_dataset` as it was at git `REF` (its `keras_vswin/data`
   modules loaded from git next to the current ones), so that before and after share the run;
5. test: `test_dataset` with the Kinetics protocol (4 clips x 3 crops, short side 224; uint8
   and `normalize=True`), videos/s, and the same at `REF`;
6. direct: the same kind of clips decoded straight from the mp4 files with PyAV, the way most
   Video Swin users load data today (an mmaction-style loader: decode the file up to the last
   sampled frame, keep the sampled frames, scale the short side to 256 on the fly,
   RandomResizedCrop, resize to 224, flip, normalise), in a process pool with one worker per core,
   clips/s (`--no-direct` skips it).
The loaders are timed in alternating rounds, so that all see the same machine load; each is
timed in its steady state (after start-up), and no prefetching runs in the background while
another loader is timed. For the tf.data loaders the process CPU time per clip is recorded too:
on a machine shared with other work, CPU time per clip moves less than clips/s, and ratios of
either within the run are what to compare.

The synthetic videos are H.264 (libx264, yuv420p, crf 23, keyframe interval 250), with moving
gradients, shapes and texture, so both decoders do realistic work. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python benchmarks/bench_data.py` as well as `python -m`
    sys.path.insert(0, ROOT)

from benchmarks import write_results  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_video(path, seconds, width, height, fps, seed):
    """Writes an H.264 video with moving structure and texture."""
    from keras_vswin import video

    rng = np.random.default_rng(seed)
    num_frames = int(seconds * fps)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 40, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((4, 4, 1), np.float32))[:height, :width]
    colours = rng.uniform(40, 215, (4, 3))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        phase = 2 * np.pi * t / (fps * 3)
        base = 128 + 60 * np.sin(x / 37.0 + phase)[..., None] * np.cos(y / 53.0 - phase)[..., None]
        frame = base + texture * np.sin(phase + x / 90.0)[..., None]
        for k, colour in enumerate(colours):
            cx = int((width * (0.2 + 0.2 * k) + 6 * t * (k + 1)) % width)
            cy = int(height / 2 + height / 3 * np.sin(phase * (k + 1)))
            frame[max(0, cy - 30) : cy + 30, max(0, cx - 40) : cx + 40] = colour
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    video.write_video(path, frames, fps=fps, options={"crf": "23", "preset": "veryfast"})
    return num_frames


# --------------------------------------------------------------------------------------------
# Direct decoding baseline (runs in worker processes)


def _rrc_box(rng, height, width, area_range=(0.08, 1.0), ratio_range=(3 / 4, 4 / 3)):
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*area_range)
        ratio = np.exp(rng.uniform(np.log(ratio_range[0]), np.log(ratio_range[1])))
        w = int(round(np.sqrt(target * ratio)))
        h = int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def direct_clip(args):
    """One training clip straight from a video file: `(32, 224, 224, 3)` float32."""
    import av
    from PIL import Image

    from keras_vswin.data.sampling import dense_sample_np
    from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

    path, num_frames, seed, clip_len, frame_interval, crop, short_side = args
    rng = np.random.default_rng(seed)
    indices = dense_sample_np(num_frames, clip_len, frame_interval, rng=rng)[0]
    wanted = set(int(i) for i in indices)
    last = max(wanted)
    decoded = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                height, width = frame.height, frame.width
                scale = short_side / min(height, width)
                size = (int(round(width * scale)), int(round(height * scale)))
                decoded[index] = frame.reformat(
                    width=size[0], height=size[1], format="rgb24", threads=1
                ).to_ndarray()
            if index >= last:
                break
    frames = np.stack([decoded[int(i)] for i in indices])
    y, x, h, w = _rrc_box(rng, frames.shape[1], frames.shape[2])
    flip = rng.random() < 0.5
    out = np.empty((clip_len, crop, crop, 3), np.float32)
    for t, frame in enumerate(frames):
        image = Image.fromarray(frame[y : y + h, x : x + w]).resize((crop, crop), Image.BILINEAR)
        array = np.asarray(image, np.float32)
        out[t] = array[:, ::-1] if flip else array
    return (out - np.asarray(MEAN_RGB, np.float32)) / np.asarray(STD_RGB, np.float32)


class DirectLoader:
    """A pool of worker processes decoding clips from the video files (like a PyTorch
    DataLoader with one worker per core)."""

    def __init__(self, videos, workers, clip_len, frame_interval, crop, short_side):
        import multiprocessing

        self.videos, self.workers = videos, workers
        self.settings = (clip_len, frame_interval, crop, short_side)
        self.pool = multiprocessing.get_context("spawn").Pool(workers)
        self.count = 0
        self.run(workers)  # warm-up: imports and first decodes

    def _jobs(self, num_clips):
        for _ in range(num_clips):
            path, num_frames = self.videos[self.count % len(self.videos)]
            self.count += 1
            yield (path, num_frames, 1000 + self.count) + self.settings

    def run(self, num_clips):
        started = time.perf_counter()
        for clip in self.pool.imap_unordered(direct_clip, self._jobs(num_clips), chunksize=1):
            assert clip.shape == (self.settings[0], self.settings[2], self.settings[2], 3)
        return time.perf_counter() - started

    def close(self):
        self.pool.close()
        self.pool.join()


class TfDataLoader:
    """Times a `tf.data.Dataset` whose first element component is a batch of `per_batch`
    clips (or videos)."""

    def __init__(self, dataset, per_batch):
        self.dataset, self.per_batch = dataset, per_batch
        next(iter(dataset))  # tracing

    def run(self, count, warmup_batches=2):
        """Steady-state timing: a fresh iterator, `warmup_batches` untimed (they include filling
        the shuffle buffers), then about `count` clips timed; the iterator is then deleted, so no
        background prefetching runs while another loader is timed. Returns `(wall seconds,
        clips, process CPU seconds)`."""
        steps = max(1, count // self.per_batch)
        iterator = iter(self.dataset)
        for _ in range(warmup_batches):
            next(iterator)[0].numpy()
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            next(iterator)[0].numpy()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        del iterator
        return elapsed, steps * self.per_batch, cpu


def decode_only_dataset(shard_dir, batch_size, clip_len, frame_interval, seed=0):
    """Parse the records, pick the clip's frames, decode their JPEGs, batch: nothing else."""
    import tensorflow as tf

    from keras_vswin.data import list_shards, sampling, schema

    files = list_shards(shard_dir)
    records = tf.data.Dataset.from_tensor_slices(files).repeat()
    records = records.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(8, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def decode(record, seed):
        _, frames = schema.parse_sequence_example(record)
        num_frames = tf.shape(frames, out_type=tf.int64)[0]
        indices = sampling.dense_sample_tf(num_frames, clip_len, frame_interval, seed=seed)[0]
        return tf.map_fn(
            lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
            tf.gather(frames, indices),
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
            parallel_iterations=8,
        )

    clips = tf.data.Dataset.zip((records, seeds)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    return clips.batch(batch_size).map(lambda batch: (batch,)).prefetch(tf.data.AUTOTUNE)


def data_module_at(ref):
    """`keras_vswin.data.datasets` as it was at git `ref`: its `keras_vswin/data` modules are
    copied from git into a package of another name, imported next to the current ones."""
    import importlib
    import subprocess

    package = "_bench_data_" + "".join(c if c.isalnum() else "_" for c in ref)
    folder = tempfile.mkdtemp(prefix="bench_data_before_")
    os.makedirs(os.path.join(folder, package))
    open(os.path.join(folder, package, "__init__.py"), "w").close()
    for name in ("schema", "sampling", "augment", "views", "datasets"):
        shown = subprocess.run(
            ["git", "-C", ROOT, "show", f"{ref}:keras_vswin/data/{name}.py"],
            capture_output=True,
            text=True,
        )
        if shown.returncode != 0:
            raise SystemExit(f"--before {ref}: git cannot show keras_vswin/data/{name}.py there")
        source = shown.stdout.replace("from keras_vswin.data import", f"from {package} import")
        source = source.replace("keras_vswin.data.", f"{package}.")
        with open(os.path.join(folder, package, f"{name}.py"), "w") as f:
            f.write(source)
    sys.path.insert(0, folder)
    return importlib.import_module(f"{package}.datasets")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="number of synthetic videos")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--clips", type=int, default=96, help="clips timed per loader")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench_results", "data.json"))
    parser.add_argument("--workdir", default=None, help="keep videos and shards here")
    parser.add_argument(
        "--test-videos", type=int, default=8, help="videos timed per 4x3 test loader"
    )
    parser.add_argument(
        "--before", default=None, metavar="REF", help="also time the pipelines at git REF"
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the PyAV loader")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from keras_vswin.data import write_shards as write

    width, height = (int(v) for v in args.size.lower().split("x"))
    clip_len, frame_interval, crop, short_side = 32, 2, 224, 256
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_data_")
    video_dir = os.path.join(workdir, "videos")
    shard_dir = os.path.join(workdir, "shards")
    os.makedirs(video_dir, exist_ok=True)
    try:
        print(
            f"generating {args.videos} videos ({args.size}, {args.seconds:g} s, {args.fps:g} fps)"
        )
        videos, entries = [], []
        for i in range(args.videos):
            label = f"class{i % 4}"
            path = os.path.join(video_dir, label, f"video{i:03d}.mp4")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                synthetic_video(path, args.seconds, width, height, args.fps, seed=i)
            from keras_vswin.video import probe_video

            videos.append((path, probe_video(path).num_frames))
            entries.append(write.VideoEntry(path, os.path.relpath(path, video_dir), i % 4, label))
        source_bytes = sum(os.path.getsize(p) for p, _ in videos)

        print(f"writing shards with {args.workers} worker(s)")
        shutil.rmtree(shard_dir, ignore_errors=True)
        started = time.perf_counter()
        manifest = write.write_shards(
            entries,
            shard_dir,
            "bench",
            num_shards=max(2, args.workers),
            settings=write.WriterSettings(short_side=short_side, fps=None, jpeg_quality=90),
            workers=args.workers,
            class_names=[f"class{i}" for i in range(4)],
            show_progress=False,
            log=lambda *a: None,
        )
        writer_seconds = time.perf_counter() - started
        shard_bytes = sum(
            os.path.getsize(os.path.join(shard_dir, s["file"])) for s in manifest["shards"]
        )
        frames = manifest["totals"]["frames"]
        # Without process start-up: the shards run in parallel, one per worker.
        busiest = max(s["seconds"] for s in manifest["shards"])

        # All loaders alternate in rounds, so that they see the same machine load.
        from keras_vswin import data

        options = dict(num_classes=4, clip_len=clip_len, frame_interval=frame_interval,
                       crop_size=crop, seed=0)  # fmt: skip
        loaders = {
            "train": TfDataLoader(data.train_dataset(shard_dir, args.batch_size, **options),
                                  args.batch_size),
            "decode_only": TfDataLoader(
                decode_only_dataset(shard_dir, args.batch_size, clip_len, frame_interval),
                args.batch_size,
            ),
            "train_float": TfDataLoader(
                data.train_dataset(shard_dir, args.batch_size, normalize=True, **options),
                args.batch_size,
            ),
            "test_4x3": TfDataLoader(data.test_dataset(shard_dir, 1, num_classes=4).repeat(), 1),
            "test_4x3_float": TfDataLoader(
                data.test_dataset(shard_dir, 1, num_classes=4, normalize=True).repeat(), 1
            ),
        }  # fmt: skip
        if args.before:
            before = data_module_at(args.before)
            loaders["train_before"] = TfDataLoader(
                before.train_dataset(shard_dir, args.batch_size, **options), args.batch_size
            )
            loaders["test_4x3_before"] = TfDataLoader(
                before.test_dataset(shard_dir, 1, num_classes=4).repeat(), 1
            )
        direct_loader = None
        if not args.no_direct:
            direct_loader = DirectLoader(
                videos, args.workers, clip_len, frame_interval, crop, short_side
            )
        totals = {name: [0.0, 0, 0.0] for name in [*loaders, "direct"]}  # seconds, clips, cpu
        per_round = max(args.batch_size, args.clips // args.rounds)
        test_per_round = max(1, args.test_videos // args.rounds)
        try:
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}: {per_round} clips per loader")
                for name, loader in loaders.items():
                    count = test_per_round if name.startswith("test") else per_round
                    seconds, clips, cpu = loader.run(count)
                    totals[name] = [a + b for a, b in zip(totals[name], (seconds, clips, cpu))]
                if direct_loader is not None:
                    totals["direct"][0] += direct_loader.run(per_round)
                    totals["direct"][1] += per_round
        finally:
            if direct_loader is not None:
                direct_loader.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    rate = {name: clips / seconds for name, (seconds, clips, _) in totals.items() if clips}
    cpu_ms = {name: 1000 * cpu / clips for name, (_, clips, cpu) in totals.items() if clips and cpu}

    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
        },
        "videos": {
            "count": args.videos,
            "size": [width, height],
            "seconds": args.seconds,
            "fps": args.fps,
            "codec": "h264 crf23",
            "mb": round(source_bytes / 1e6, 2),
        },
        "clip": {"frames": clip_len, "frame_interval": frame_interval, "size": crop},
        "writer": {
            "workers": args.workers,
            "seconds": round(writer_seconds, 2),
            "videos_per_s": round(args.videos / writer_seconds, 3),
            "videos_per_s_without_startup": round(args.videos / busiest, 3),
            "frames_per_s": round(frames / writer_seconds, 1),
            "shard_mb": round(shard_bytes / 1e6, 2),
        },
        "train_clips_per_s": {
            "shards": round(rate["train"], 3),
            "decode_only": round(rate["decode_only"], 3),
            "fraction_of_decode_only": round(rate["train"] / rate["decode_only"], 3),
            "shards_batch_size": args.batch_size,
            "clips_timed": totals["train"][1],
            "rounds": args.rounds,
        },
        # process CPU time per clip (train, decode_only) or per video (test_4x3)
        "cpu_ms_per_element": {name: round(cpu_ms[name], 2) for name in cpu_ms},
        "test_4x3_videos_per_s": {
            "shards": round(rate["test_4x3"], 3),
            "shards_float": round(rate["test_4x3_float"], 3),
        },
    }
    train, test = results["train_clips_per_s"], results["test_4x3_videos_per_s"]
    train["cpu_fraction_of_decode_only"] = round(cpu_ms["decode_only"] / cpu_ms["train"], 3)
    train["shards_float"] = round(rate["train_float"], 3)
    train["float_fraction_of_decode_only"] = round(rate["train_float"] / rate["decode_only"], 3)
    rows = [
        ("writer (videos/s)", f"{results['writer']['videos_per_s']:.2f}"),
        ("writer (videos/s, no process start-up)", f"{args.videos / busiest:.2f}"),
        ("writer (frames/s)", f"{results['writer']['frames_per_s']:.0f}"),
        ("train clips/s, shards (tf.data, uint8)", f"{rate['train']:.2f}"),
        ("train clips/s, decode-only (tf.data)", f"{rate['decode_only']:.2f}"),
        ("  train / decode-only (clips/s)", f"{train['fraction_of_decode_only']:.3f}"),
        ("  train / decode-only (CPU per clip)", f"{train['cpu_fraction_of_decode_only']:.3f}"),
        ("train clips/s, shards (normalize=True)", f"{rate['train_float']:.2f}"),
        ("  float / decode-only (clips/s)", f"{train['float_fraction_of_decode_only']:.3f}"),
        ("test 4x3 videos/s (uint8)", f"{rate['test_4x3']:.2f}"),
        ("test 4x3 videos/s (normalize=True)", f"{rate['test_4x3_float']:.2f}"),
    ]
    if args.before:
        train.update(
            before=args.before,
            shards_before=round(rate["train_before"], 3),
            fraction_of_decode_only_before=round(rate["train_before"] / rate["decode_only"], 3),
            cpu_fraction_of_decode_only_before=round(
                cpu_ms["decode_only"] / cpu_ms["train_before"], 3
            ),
            speedup_over_before=round(rate["train"] / rate["train_before"], 2),
        )
        test.update(
            before=args.before,
            shards_before=round(rate["test_4x3_before"], 3),
            speedup_over_before=round(rate["test_4x3"] / rate["test_4x3_before"], 2),
            cpu_speedup_over_before=round(cpu_ms["test_4x3_before"] / cpu_ms["test_4x3"], 2),
        )
        rows += [
            (f"train clips/s at {args.before}", f"{rate['train_before']:.2f}"),
            ("  before / decode-only (clips/s)", f"{train['fraction_of_decode_only_before']:.3f}"),
            ("  before / decode-only (CPU per clip)",
             f"{train['cpu_fraction_of_decode_only_before']:.3f}"),
            ("  speed-up train / before", f"{train['speedup_over_before']:.2f}x"),
            (f"test 4x3 videos/s at {args.before}", f"{rate['test_4x3_before']:.2f}"),
            ("  speed-up test / before", f"{test['speedup_over_before']:.2f}x"),
            ("  speed-up test / before (CPU per video)", f"{test['cpu_speedup_over_before']:.2f}x"),
        ]  # fmt: skip
    if "direct" in rate:
        train.update(
            direct_pyav=round(rate["direct"], 3),
            speedup=round(rate["train"] / rate["direct"], 2),
            direct_workers=args.workers,
        )
        rows += [
            ("train clips/s, direct PyAV decode", f"{rate['direct']:.2f}"),
            ("speed-up shards / direct", f"{rate['train'] / rate['direct']:.2f}x"),
        ]
    print()
    print(
        f"{args.videos} videos {width}x{height} {args.seconds:g}s @{args.fps:g}fps, clips "
        f"{clip_len}x{crop}x{crop} (interval {frame_interval}), {os.cpu_count()} CPU cores"
    )
    width_col = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width_col}}  {value:>8}")
    write_results(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
