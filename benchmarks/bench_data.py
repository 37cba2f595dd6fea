"""Input pipeline benchmark: training clips/s from TFRecord shards vs decoding the mp4 files.

```
python benchmarks/bench_data.py                   # defaults: 16 videos of 10 s, 640x360, 30 fps
python benchmarks/bench_data.py --videos 32 --clips 128 --json bench_results/data.json
```

What it measures, in one run on this machine:
1. writer: `keras-vswin write-shards` (PyAV decode, short side 256, JPEG q90) over the videos,
   videos/s;
2. shards: `keras_vswin.data.train_dataset` producing 32x224x224 normalised training clips
   (dense sampling 32x2, RandomResizedCrop, flip), clips/s after a warm-up batch;
3. direct: the same kind of clips decoded straight from the mp4 files with PyAV, the way most
   Video Swin users load data today (an mmaction-style loader: decode the file up to the last
   sampled frame, keep the sampled frames, scale the short side to 256 on the fly,
   RandomResizedCrop, resize to 224, flip, normalise), in a process pool with one worker per core,
   clips/s.
The two loaders are timed in alternating rounds, so that both see the same machine load; both
are timed in their steady state (after start-up), and no prefetching runs in the background while
the other loader is timed.

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

from benchmarks import write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

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


class ShardLoader:
    """`keras_vswin.data.train_dataset` over the shards."""

    def __init__(self, shard_dir, batch_size, clip_len, frame_interval, crop):
        from keras_vswin import data

        dataset = data.train_dataset(
            shard_dir,
            batch_size,
            num_classes=4,
            clip_len=clip_len,
            frame_interval=frame_interval,
            crop_size=crop,
            seed=0,
        )
        self.dataset, self.batch_size = dataset, batch_size
        clips, _ = next(iter(dataset))  # tracing
        assert clips.shape == (batch_size, clip_len, crop, crop, 3), clips.shape

    def run(self, num_clips, warmup_batches=2):
        """Steady-state timing: a fresh iterator, `warmup_batches` untimed (they include filling
        the shuffle buffers), then `num_clips` timed; the iterator is then deleted, so no
        background prefetching runs while the other loader is timed."""
        steps = max(1, num_clips // self.batch_size)
        iterator = iter(self.dataset)
        for _ in range(warmup_batches):
            next(iterator)[0].numpy()
        started = time.perf_counter()
        for _ in range(steps):
            clips, labels = next(iterator)
            clips.numpy()
        elapsed = time.perf_counter() - started
        del iterator
        return elapsed, steps * self.batch_size


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

        # Alternate the two loaders in rounds so that both see the same machine load.
        shard_loader = ShardLoader(shard_dir, args.batch_size, clip_len, frame_interval, crop)
        direct_loader = DirectLoader(
            videos, args.workers, clip_len, frame_interval, crop, short_side
        )
        shard_seconds = direct_seconds = 0.0
        shard_clips = direct_clips = 0
        per_round = max(args.batch_size, args.clips // args.rounds)
        try:
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}: {per_round} clips per loader")
                seconds, clips = shard_loader.run(per_round)
                shard_seconds += seconds
                shard_clips += clips
                direct_seconds += direct_loader.run(per_round)
                direct_clips += per_round
        finally:
            direct_loader.close()
        shard_rate = shard_clips / shard_seconds
        direct_rate = direct_clips / direct_seconds
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

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
            "shards": round(shard_rate, 3),
            "direct_pyav": round(direct_rate, 3),
            "speedup": round(shard_rate / direct_rate, 2),
            "shards_batch_size": args.batch_size,
            "direct_workers": args.workers,
            "clips_timed": [shard_clips, direct_clips],
            "rounds": args.rounds,
        },
    }
    rows = [
        ("writer (videos/s)", f"{results['writer']['videos_per_s']:.2f}"),
        ("writer (videos/s, no process start-up)", f"{args.videos / busiest:.2f}"),
        ("writer (frames/s)", f"{results['writer']['frames_per_s']:.0f}"),
        ("train clips/s, shards (tf.data)", f"{shard_rate:.2f}"),
        ("train clips/s, direct PyAV decode", f"{direct_rate:.2f}"),
        ("speed-up shards / direct", f"{shard_rate / direct_rate:.2f}x"),
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
