"""Reusable SavedModel exports: export time and size per variant, and what fine-tuning through
the loaders costs against the native Keras model.

1. For each `--variants` (random weights), `keras_vswin.export_saved_model` of the classifier:
   seconds and MiB on disk.
2. A fine-tuning step (forward + backward + Adam, whole backbone trainable, a new 10-class head)
   on `--batch` clips of `--frames`x`--size`x`--size` (Swin-T 8x112x112, batch 2 by default),
   three ways, each in its own process, round-robin over `--rounds` so that other load on the
   machine affects them alike, each timed two ways: a step of `fit` over a repeated tf.data
   dataset (how one fine-tunes; timed by a callback, the first two steps left out) and
   `train_on_batch` on NumPy arrays (tf_keras turns each call's arrays into a new tf.data
   iterator, which Keras 3 does not):
   - `native`: the Keras 3 model with the head, `model.fit`-compiled `train_on_batch`;
   - `hub`: `hub.KerasLayer(export, trainable=True)` in tf_keras (no keras_vswin imported);
   - `reusable`: `keras_vswin.export.ReusableLayer(export)` in Keras 3.
   The wrapper's cost is the ratio of median step times to `native` in the same run.

    python -m benchmarks.bench_hub [--variants T B] [--frames 8] [--size 112] [--batch 2]

Prints a table and writes `bench_results/hub.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from benchmarks import write_results

STEP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    kind, path, batch, frames, size, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    if kind == "hub":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    x = np.random.default_rng(0).uniform(0, 1, (batch, frames, size, size, 3)).astype("float32")
    y = np.arange(batch) % 10
    if kind == "hub":
        import tensorflow_hub as hub, tf_keras as K
        layer = hub.KerasLayer(path, trainable=True)
        model = K.Sequential([K.Input(x.shape[1:]), layer, K.layers.Dense(10)])
        loss = K.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(K.optimizers.Adam(1e-4), loss)
    else:
        import keras
        import keras_vswin
        from keras_vswin import export
        if kind == "native":
            backbone = keras_vswin.VideoSwinT(include_top=False, pooling="avg")
            inputs = keras.Input(x.shape[1:])
            scaled = keras.layers.Rescaling(1.0, name="identity")(inputs)
            model = keras.Model(inputs, keras.layers.Dense(10)(backbone(scaled)))
        else:
            layer = export.ReusableLayer(path, trainable=True)
            inputs = keras.Input(x.shape[1:])
            model = keras.Model(inputs, keras.layers.Dense(10)(layer(inputs)))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.Adam(1e-4), loss)
    Callback = K.callbacks.Callback if kind == "hub" else keras.callbacks.Callback

    class StepTimes(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            fit_times.append(time.perf_counter() - self.start)

    fit_times = []
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(dataset, steps_per_epoch=steps + 2, verbose=0, callbacks=[StepTimes()])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"fit": fit_times[2:], "train_on_batch": times}))
    """
)


def folder_mib(path):
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return total / 2**20


def export_variants(variants, root):
    import keras_vswin

    rows = []
    for variant in variants:
        model = getattr(keras_vswin, f"VideoSwin{variant}")(classes=400)
        start = time.perf_counter()
        path = keras_vswin.export_saved_model(model, root, name=f"swin_{variant.lower()}")
        rows.append(
            {
                "variant": variant,
                "export_s": round(time.perf_counter() - start, 1),
                "size_mib": round(folder_mib(path), 1),
                "parameters": int(model.count_params()),
            }
        )
        print(f"export Swin-{variant}: {rows[-1]['export_s']} s, {rows[-1]['size_mib']} MiB")
    return rows


def step_times(kind, path, args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", STEP_SCRIPT, kind, path, str(args.batch), str(args.frames),
         str(args.size), str(args.steps)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"{kind} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_hub")
    parser.add_argument("--variants", nargs="+", default=["T", "B"], choices=["T", "S", "B", "L"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per kind, interleaved")
    parser.add_argument("--json", default=os.path.join("bench_results", "hub.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_vswin

    with tempfile.TemporaryDirectory() as root:
        exports = export_variants(args.variants, root)
        features = keras_vswin.VideoSwinT(include_top=False, pooling="avg")
        path = keras_vswin.export_saved_model(features, root, name="t_fv", feature_vector=True)
        kinds, modes = ("native", "hub", "reusable"), ("fit", "train_on_batch")
        times = {mode: {kind: [] for kind in kinds} for mode in modes}
        for _ in range(args.rounds):
            for kind in kinds:
                for mode, values in step_times(kind, path, args).items():
                    times[mode][kind] += values
    medians = {
        mode: {kind: statistics.median(values) for kind, values in by_kind.items()}
        for mode, by_kind in times.items()
    }
    print(f"\nfine-tuning step, Swin-T {args.batch}x{args.frames}x{args.size}x{args.size}:")
    for mode, by_kind in medians.items():
        print(f"  {mode}:")
        for kind, median in by_kind.items():
            ratio = median / by_kind["native"]
            print(f"    {kind:<9} median {median:.3f} s  ({ratio:.2f}x native)")
    write_results(
        args.json,
        {"exports": exports, "step_seconds": times, "median": medians, "args": vars(args)},
    )


if __name__ == "__main__":
    main()
