"""SavedModel export: export time, size on disk and serving latency vs the Keras model.

For each configuration (float32 / bfloat16 mixed precision, with and without XLA) a randomly
initialised Video Swin (T by default) is exported with `keras_vswin.export_saved_model`, loaded
back with `tf.saved_model.load`, and timed in this process against the Keras model it came from
(called through a `tf.function`, the fastest way to run it in Keras):

- `saved_model float`: the `serve_float` signature on one normalised clip (default 1x16x224x224);
- `saved_model uint8`: `serving_default` on a uint8 video (32x256x340 -> centre clip of 16
  frames every 2nd frame, resize, crop, normalise, model);
- `keras`: the Keras model (same precision) on the same normalised clip.

The first call of each (tracing, XLA compilation) is reported on its own; latency is the median
(and the minimum) of `--reps` further calls, taken round-robin over all configurations so that
other load on the machine affects them alike.

    python -m benchmarks.bench_export [--variant T] [--frames 16] [--size 224] [--reps 5]

Prints a table and writes `bench_results/export.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from benchmarks import write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KINDS = ("saved_model_float", "saved_model_uint8", "keras")
CONFIGS = {
    "float32": dict(precision="float32", jit_compile=False),
    "bfloat16": dict(precision="bfloat16", jit_compile=False),
    "float32+xla": dict(precision="float32", jit_compile=True),
    "bfloat16+xla": dict(precision="bfloat16", jit_compile=True),
}


def folder_mib(path):
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return total / 2**20


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor()


def export_and_load(model, root, name, args):
    """Export one configuration; returns its row (export time, size) and its three runners."""
    import tensorflow as tf

    from keras_vswin import export
    from keras_vswin.data import ViewProtocol

    options = CONFIGS[name]
    start = time.perf_counter()
    path = export.export_saved_model(
        model,
        root,
        name=name.replace("+", "_"),
        protocol=ViewProtocol(clip_len=args.frames, frame_interval=2, crop_size=args.size),
        **options,
    )
    row = {
        "config": name,
        "export_s": round(time.perf_counter() - start, 1),
        "size_mib": round(folder_mib(path), 1),
    }
    loaded = tf.saved_model.load(path)
    serve_float = loaded.signatures["serve_float"]
    serve_video = loaded.signatures["serving_default"]
    keras_model = export.with_precision(model, options["precision"])
    keras_fn = tf.function(
        lambda x: keras_model(x, training=False),
        jit_compile=options["jit_compile"],
        autograph=False,
    )
    runners = {
        "saved_model_float": lambda clip, video: serve_float(clips=clip)["probabilities"],
        "saved_model_uint8": lambda clip, video: serve_video(video=video)["probabilities"],
        "keras": lambda clip, video: keras_fn(clip),
    }
    runners["_loaded"] = loaded  # keep the SavedModel alive
    return row, runners


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("T", "S", "B", "L"), default="T")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--output", default=os.path.join("bench_results", "export.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import keras_vswin

    model = getattr(keras_vswin, f"VideoSwin{args.variant}")()
    rng = np.random.default_rng(0)
    clip = tf.constant(rng.standard_normal((1, args.frames, args.size, args.size, 3)), tf.float32)
    long_side = round(args.size * 256 / 224 * 340 / 256)
    video = tf.constant(
        rng.integers(0, 256, (1, 2 * args.frames, round(args.size * 256 / 224), long_side, 3)),
        tf.uint8,
    )
    load_before = os.getloadavg()
    rows, runners = [], {}
    with tempfile.TemporaryDirectory() as root:
        for name in args.configs:
            row, runners[name] = export_and_load(model, root, name, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
        # The first call traces, compiles (XLA) and warms caches: timed on its own. Then the
        # runners are timed round-robin, so that load changes on the machine hit all alike.
        times = {(name, kind): [] for name in args.configs for kind in KINDS}
        for row in rows:
            for kind in KINDS:
                start = time.perf_counter()
                runners[row["config"]][kind](clip, video)
                row[f"{kind}_first_call_s"] = round(time.perf_counter() - start, 2)
            reference = runners[row["config"]]["keras"](clip, video).numpy()
            got = runners[row["config"]]["saved_model_float"](clip, video).numpy()
            row["max_abs_prob_diff_vs_keras"] = float(np.abs(reference - got).max())
        for _ in range(args.reps):
            for name in args.configs:
                for kind in KINDS:
                    start = time.perf_counter()
                    runners[name][kind](clip, video)
                    times[name, kind].append(time.perf_counter() - start)
        for row in rows:
            for kind in KINDS:
                row[f"{kind}_s"] = round(statistics.median(times[row["config"], kind]), 3)
                row[f"{kind}_min_s"] = round(min(times[row["config"], kind]), 3)
        runners.clear()

    header = (
        f"Video Swin-{args.variant}, clip 1x{args.frames}x{args.size}x{args.size}, "
        f"{os.cpu_count()} CPU cores ({cpu_name()}), TF {tf.__version__}"
    )
    print("\n" + header)
    print("latency per clip: median (min) seconds; first call (tracing, XLA) in the JSON")
    columns = ("config", "export s", "size MiB", "SavedModel float", "SavedModel uint8", "Keras")
    print(" | ".join(f"{c:>16}" for c in columns))
    for r in rows:
        values = (
            r["config"],
            f"{r['export_s']:.1f}",
            f"{r['size_mib']:.1f}",
            *(f"{r[k + '_s']:.3f} ({r[k + '_min_s']:.3f})" for k in KINDS),
        )
        print(" | ".join(f"{v:>16}" for v in values))
    write_results(
        args.output,
        {
            "variant": args.variant,
            "clip": [1, args.frames, args.size, args.size, 3],
            "uint8_video": list(video.shape),
            "reps": args.reps,
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "rows": rows,
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
