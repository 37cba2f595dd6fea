"""Training step time and peak memory (float32 vs mixed bfloat16 vs XLA), and the demo.

Each mode runs in a fresh process: a randomly initialised Video Swin (T by default) compiled as
`keras-vswin train` compiles it (`ParamGroupAdamW` with the recipe's parameter groups,
categorical cross-entropy, top-1/top-5 metrics; `jit_compile` for XLA), then `train_on_batch`
on random clips. The first step (tracing, XLA compilation) is reported on its own; the step time
is the median (and minimum) of `--steps` further steps. Peak memory is the process high-water
mark (`ru_maxrss`), next to the resident memory after building the model (the difference is
what training adds: activations, gradients, optimizer state, compilation).

    python -m benchmarks.bench_training [--variant T] [--batch 2] [--frames 16] [--size 112]
        [--steps 5] [--modes float32,bfloat16,float32+xla,bfloat16+xla] [--demo]

`--demo` also times `python -m training.demo` (the `make demo` job) in a fresh output folder and
reads its held-out accuracy. Prints a table and writes `bench_results/training.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from benchmarks import write_results

MODES = {
    "float32": dict(policy=None, jit=False),
    "bfloat16": dict(policy="mixed_bfloat16", jit=False),
    "float32+xla": dict(policy=None, jit=True),
    "bfloat16+xla": dict(policy="mixed_bfloat16", jit=True),
}

_CHILD = r"""
import json, os, resource, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np
import keras_vswin
from keras_vswin import finetune as vt

args = json.loads(sys.argv[1])

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

if args["policy"]:
    keras.mixed_precision.set_global_policy(args["policy"])
shape = (args["frames"], args["size"], args["size"], 3)
model = getattr(keras_vswin, "VideoSwin" + args["variant"])(input_shape=shape, classes=400)
optimizer = vt.ParamGroupAdamW(1e-3, weight_decay=0.02, param_rules=vt.recipe_param_rules())
model.compile(
    optimizer,
    loss=keras.losses.CategoricalCrossentropy(),
    metrics=[keras.metrics.CategoricalAccuracy(), keras.metrics.TopKCategoricalAccuracy(5)],
    jit_compile=args["jit"],
)
rng = np.random.default_rng(0)
x = rng.standard_normal((args["batch"], *shape)).astype("float32")
y = np.eye(400, dtype="float32")[rng.integers(0, 400, args["batch"])]
built = rss_mib()
start = time.perf_counter()
model.train_on_batch(x, y)
first = time.perf_counter() - start
model.train_on_batch(x, y)
times = []
for _ in range(args["steps"]):
    start = time.perf_counter()
    loss = model.train_on_batch(x, y)
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({
    "first_step_s": first,
    "step_s": statistics.median(times),
    "step_min_s": min(times),
    "rss_after_build_mib": built,
    "peak_rss_mib": peak,
    "parameters": int(model.count_params()),
    "finite_loss": bool(np.isfinite(np.asarray(loss[0] if isinstance(loss, list) else loss))),
}))
"""


def run_mode(name, variant, batch, frames, size, steps):
    settings = {**MODES[name], "variant": variant, "batch": batch, "frames": frames, "size": size}
    settings["steps"] = steps
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": (done.stderr or done.stdout)[-1500:]}


def run_demo():
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "demo")
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "training.demo", "--output", output],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
        )
        seconds = time.perf_counter() - start
        summary_path = os.path.join(output, "demo_summary.json")
        if done.returncode != 0 or not os.path.exists(summary_path):
            return {"error": done.stderr[-1500:], "seconds": seconds, "status": done.returncode}
        with open(summary_path) as handle:
            summary = json.load(handle)
        return {
            "seconds": round(seconds, 1),
            "train_seconds": summary["train_seconds"],
            "accuracy": summary["accuracy"],
            "mean_class_accuracy": summary["mean_class_accuracy"],
            "chance": summary["chance"],
        }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_training", description=__doc__
    )
    parser.add_argument("--variant", default="T", choices=("T", "S", "B", "L"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--demo", action="store_true", help="also time `python -m training.demo`")
    parser.add_argument("--json", default="bench_results/training.json")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")

    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "setup": vars(args),
        "modes": {},
    }
    clip = f"{args.batch}x{args.frames}x{args.size}x{args.size}"
    print(f"Video Swin-{args.variant} training step, clips {clip}, {os.cpu_count()} CPU(s)")
    columns = [("first step", 11), ("step (median)", 14), ("step (min)", 11)]
    columns += [("RSS built", 10), ("peak RSS", 9)]
    print(f"{'mode':<14} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for mode in modes:
        result = run_mode(mode, args.variant, args.batch, args.frames, args.size, args.steps)
        results["modes"][mode] = result
        if "error" in result:
            print(
                f"{mode:<14} failed: {result['error'].splitlines()[-1] if result['error'] else ''}"
            )
            continue
        print(
            f"{mode:<14} {result['first_step_s']:>10.1f}s {result['step_s']:>13.2f}s "
            f"{result['step_min_s']:>10.2f}s {result['rss_after_build_mib']:>8.0f}Mi "
            f"{result['peak_rss_mib']:>7.0f}Mi",
            flush=True,
        )
    if args.demo:
        demo = run_demo()
        results["demo"] = demo
        if "error" in demo:
            print(f"demo failed ({demo.get('status')}): {demo['error'].splitlines()[-1:]}")
        else:
            accuracy = ", ".join(f"{k} {v:.1%}" for k, v in demo["accuracy"].items())
            print(
                f"demo: {demo['seconds'] / 60:.1f} min wall ({demo['train_seconds'] / 60:.1f} min "
                f"training); held-out top-1 {accuracy} (chance {demo['chance']:.1%})"
            )
    results["machine"]["load_average_end"] = os.getloadavg()
    write_results(args.json, results)
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
