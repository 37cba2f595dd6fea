"""Shard writer benchmark: the local process pool vs Apache Beam (FnApiRunner) vs decode-only.

```
python -m benchmarks.bench_writer                 # 12 videos of 10 s, 640x360, 30 fps, 2 workers
python -m benchmarks.bench_writer --videos 24 --workers 2 --json bench_results/writer.json
```

What it measures, in one run on this machine, over the same videos (H.264 like
`bench_data.synthetic_video`), writing with the default settings (short side 256, JPEG q90):
1. one core, CPU time per frame of each stage of the per-video work (`encode_video`): decode,
   scale to YUV 4:2:0, JPEG from the planes (simplejpeg), SequenceExample; next to the stages
   of the path the writer used before (scale to planar RGB, PIL JPEG), with each path's JPEG
   error against the uncompressed RGB frames; and the whole `encode_video` in videos/s/core
   against decode-only (the limit: decoding has to happen anyway);
2. `--workers` cores, wall clock, in alternating rounds so that all see the same machine load:
   decode-only on a pool of `--workers` processes (started before timing), the local writer
   (`--workers` processes) and the Beam writer (FnApiRunner, `--workers` worker processes),
   end to end (process start-up included) and from the writers' own per-shard busy time.
Prints a table and writes JSON. This machine is shared: compare the ratios, not the times.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time

from benchmarks import write_results
from benchmarks.bench_data import synthetic_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def av_open(path):
    import av

    return av.open(path)


def decode_only(path):
    """Decodes every frame of `path` on one thread, converting nothing; returns the count."""
    with av_open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.thread_type = "SLICE"
        return sum(1 for _ in container.decode(stream))


def _cpu(fn):
    started = time.process_time()
    result = fn()
    return time.process_time() - started, result


def stage_profile(path, short_side=256, quality=90, reps=3):
    """CPU ms/frame of each stage on one thread (best of `reps`): the writer's stages, and the
    stages of the path it replaced (planar RGB + PIL) for comparison."""
    import numpy as np
    from PIL import Image

    from keras_vswin import video
    from keras_vswin.data import schema

    interpolation = video._interpolation()
    with av_open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = list(container.decode(stream))
    height, width = video.resized_shape(frames[0].height, frames[0].width, short_side)
    scale = dict(width=width, height=height, interpolation=interpolation, threads=1)

    def before_jpeg(frame):  # PIL from the gbrp planes
        green, blue, red = (
            Image.frombuffer("L", (p.width, p.height), p, "raw", "L", p.line_size, 1)
            for p in frame.planes
        )
        buffer = io.BytesIO()
        Image.merge("RGB", (red, green, blue)).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    yuv = [frame.reformat(**video._JPEG_TARGET, **scale) for frame in frames]
    planar = [frame.reformat(format="gbrp", **scale) for frame in frames]
    jpegs = [video._yuv420_to_jpeg(frame, quality) for frame in yuv]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])
    before = np.stack(
        [np.asarray(Image.open(io.BytesIO(before_jpeg(f))).convert("RGB")) for f in planar]
    )
    reference = np.stack([f.to_ndarray() for f in planar])  # the RGB frames, uncompressed
    stages = {
        "decode": lambda: decode_only(path),
        "scale to YUV 4:2:0 (yuvj420p)": lambda: [
            f.reformat(**video._JPEG_TARGET, **scale) for f in frames
        ],
        "JPEG from the YUV planes": lambda: [video._yuv420_to_jpeg(f, quality) for f in yuv],
        "SequenceExample": lambda: schema.make_sequence_example(
            jpegs, fps=30, height=height, width=width
        ).SerializeToString(deterministic=True),
        "before: scale to planar RGB (gbrp)": lambda: [
            f.reformat(format="gbrp", **scale) for f in frames
        ],
        "before: PIL JPEG from the RGB planes": lambda: [before_jpeg(f) for f in planar],
    }
    best = {name: min(_cpu(fn)[0] for _ in range(reps)) for name, fn in stages.items()}
    profile = {name: round(1000 * seconds / len(frames), 4) for name, seconds in best.items()}

    def error(images):
        return round(float(np.abs(images.astype(np.int32) - reference).mean()), 3)

    # Mean |difference| in levels from the uncompressed RGB frames, of each path's JPEGs.
    accuracy = {"yuv_path_vs_rgb": error(decoded), "before_path_vs_rgb": error(before)}
    return profile, accuracy


def per_core_rates(videos, reps=2):
    """videos/s on one core (CPU time, one thread): decode-only vs `encode_video`."""
    from keras_vswin.data import write_shards as write

    settings = write.WriterSettings()
    decode = encode = 0.0
    for _ in range(reps):  # interleaved, so that both see the same load
        for entry in videos:
            decode += _cpu(lambda e=entry: decode_only(e.path))[0]
            encode += _cpu(lambda e=entry: write.encode_video(e, settings, threads=1))[0]
    count = reps * len(videos)
    return {"decode_only": count / decode, "encode_video": count / encode}


def run_writer(entries, output, workers, runner):
    from keras_vswin.data import write_shards as write

    shutil.rmtree(output, ignore_errors=True)
    beam_args = ["--direct_num_workers", str(workers), "--direct_running_mode"]
    started = time.perf_counter()
    manifest = write.write_shards(
        entries,
        output,
        "bench",
        num_shards=4 * workers,
        settings=write.WriterSettings(),
        workers=workers,
        class_names=[f"class{i}" for i in range(4)],
        show_progress=False,
        log=lambda *a: None,
        runner=runner,
        pipeline_args=[*beam_args, "multi_processing"] if runner != "local" else (),
    )
    wall = time.perf_counter() - started
    assert manifest["totals"]["videos_written"] == len(entries), manifest["skipped"]
    busy = sum(shard["seconds"] for shard in manifest["shards"]) / workers
    return wall, busy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=12, help="number of synthetic videos")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="processes / Beam workers")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench_results", "writer.json"))
    parser.add_argument("--workdir", default=None, help="keep (and reuse) videos here")
    args = parser.parse_args(argv)

    from keras_vswin.data import write_shards as write

    try:
        import apache_beam  # noqa: F401
    except ImportError:
        print("the Beam column needs the [beam] extra: pip install 'keras-vswin[beam]'")
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_writer_")
    try:
        print(
            f"generating {args.videos} videos ({args.size}, {args.seconds:g} s, {args.fps:g} fps)"
        )
        entries = []
        for i in range(args.videos):
            path = os.path.join(workdir, "videos", f"video{i:03d}.mp4")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                synthetic_video(path, args.seconds, width, height, args.fps, seed=i)
            entries.append(write.VideoEntry(path, os.path.basename(path), i % 4, f"class{i % 4}"))
        frames = [decode_only(e.path) for e in entries]

        print("one core: stage profile and per-core rates")
        stages, accuracy = stage_profile(entries[0].path)
        core = per_core_rates(entries[: min(4, len(entries))])

        print(f"{args.workers} cores: decode-only vs local vs Beam FnApiRunner")
        context = multiprocessing.get_context("spawn")
        totals = {"decode_only": 0.0, "local": 0.0, "beam": 0.0}
        busy = {"local": 0.0, "beam": 0.0}
        with context.Pool(args.workers) as pool:
            pool.map(decode_only, [e.path for e in entries[: args.workers]])  # warm-up
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}")
                started = time.perf_counter()
                pool.map(decode_only, [e.path for e in entries], chunksize=1)
                totals["decode_only"] += time.perf_counter() - started
                for runner, key in (("local", "local"), ("FnApiRunner", "beam")):
                    output = os.path.join(workdir, f"shards_{key}")
                    wall, work = run_writer(entries, output, args.workers, runner)
                    totals[key] += wall
                    busy[key] += work
        count = args.rounds * args.videos
        rate = {key: count / seconds for key, seconds in totals.items()}
        work_rate = {key: count / seconds for key, seconds in busy.items()}
        same = all(
            open(os.path.join(workdir, "shards_local", name), "rb").read()
            == open(os.path.join(workdir, "shards_beam", name), "rb").read()
            for name in sorted(os.listdir(os.path.join(workdir, "shards_local")))
            if name.endswith(".tfrecord") and not name.startswith(".")
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    import tensorflow as tf

    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "apache_beam": apache_beam.__version__,
        },
        "videos": {
            "count": args.videos,
            "size": [width, height],
            "seconds": args.seconds,
            "fps": args.fps,
            "frames": int(sum(frames)),
            "codec": "h264 crf23",
        },
        "one_core": {
            "cpu_ms_per_frame": stages,
            "jpeg_mean_abs_error_levels": accuracy,
            "videos_per_s_per_core": {k: round(v, 3) for k, v in core.items()},
            "writer_fraction_of_decode_only": round(core["encode_video"] / core["decode_only"], 3),
            "core_hours_per_1000_videos": round(1000 / core["encode_video"] / 3600, 4),
        },
        "parallel": {
            "workers": args.workers,
            "rounds": args.rounds,
            "videos_per_s_end_to_end": {k: round(v, 3) for k, v in rate.items()},
            "videos_per_s_busy_time": {k: round(v, 3) for k, v in work_rate.items()},
            "beam_vs_local_end_to_end": round(rate["beam"] / rate["local"], 3),
            "beam_vs_local_busy_time": round(work_rate["beam"] / work_rate["local"], 3),
            "local_fraction_of_decode_only": round(rate["local"] / rate["decode_only"], 3),
            "local_busy_fraction_of_decode_only": round(
                work_rate["local"] / rate["decode_only"], 3
            ),
            "shards_byte_identical": same,
        },
    }
    print()
    print(
        f"{args.videos} videos {width}x{height} {args.seconds:g}s @{args.fps:g}fps, "
        f"{os.cpu_count()} CPU cores, load {results['machine']['load_average_1min_at_end']}"
    )
    print("one core, CPU ms per frame:")
    for name, value in stages.items():
        print(f"  {name:<38} {value:7.3f}")
    print(
        f"JPEG vs the RGB frames, mean |difference|: {accuracy['yuv_path_vs_rgb']:.2f} levels "
        f"(before: {accuracy['before_path_vs_rgb']:.2f})"
    )
    print(
        f"one core: encode_video {core['encode_video']:.2f} videos/s vs decode-only "
        f"{core['decode_only']:.2f} ({results['one_core']['writer_fraction_of_decode_only']:.0%})"
        f"; {results['one_core']['core_hours_per_1000_videos']:.3f} core-hours per 1,000 videos"
    )
    print(f"{args.workers} workers, videos/s (end to end | from busy time):")
    for key in ("decode_only", "local", "beam"):
        extra = f" | {work_rate[key]:6.2f}" if key in work_rate else ""
        print(f"  {key:<12} {rate[key]:6.2f}{extra}")
    print(
        f"  Beam / local: {rate['beam'] / rate['local']:.2f} end to end, "
        f"{work_rate['beam'] / work_rate['local']:.2f} busy; local / decode-only: "
        f"{rate['local'] / rate['decode_only']:.2f}; shards byte-identical: {same}"
    )
    write_results(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
