"""CPU inference runtimes for the same Video Swin: TensorFlow, ONNX Runtime, OpenVINO, LiteRT, JAX.

One randomly initialised model per case (Swin-T 1x16x224x224, Swin-B 1x32x224x224) is exported
with `keras_vswin.runtimes` and run on the same uint8 clip, with the same thread count:

- `tf fp32`, `tf bf16`: the Keras model in a `tf.function` (bf16: `mixed_bfloat16` policy);
- `onnxruntime`: the ONNX export (static shape), `CPUExecutionProvider`;
- `openvino fp32`, `openvino bf16`: the IR (attention fused) with `INFERENCE_PRECISION_HINT`
  f32 / bf16, compiled at the clip's static shape, threads not pinned;
- `litert`: the float32 `.tflite` under the interpreter's default delegate (XNNPACK);
- `jax jit`: the Keras model on the JAX backend (`jax.jit` of its stateless call), in a
  subprocess (Keras' backend is per process): timed after the others, not interleaved.

Every in-process implementation is called in turn within each repetition (medians reported),
and the float32 matmul peak is measured in the same run, before and after: figures are given
as seconds and as a fraction of that peak (the slower of the two peaks, so a fraction is never
flattered by load that arrived later). Also the ceiling: the model's own matmuls, each shape
timed alone in TensorFlow, as a fraction of the same peak. Peak memory: VmHWM of a fresh process per
implementation that loads the model and runs one forward pass.

    python -m benchmarks.bench_runtimes [--reps 3] [--variants T B] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# First: benchmarks.run imports torch before TensorFlow (the other order crashes).
from benchmarks.run import interleaved, matmul_peak  # noqa: E402

THREADS = os.cpu_count()
CASES = {"T": (16, 224, 224), "B": (32, 224, 224)}

# A fresh process: loads one implementation, runs it `reps` times (or once for memory), prints
# "peak_mib median_seconds". argv: impl, model file, variant, frames, reps.
RUNNER = r"""
import os, sys, time, statistics
import numpy as np
impl, path, variant, frames, reps, threads = sys.argv[1:]
frames, reps, threads = int(frames), int(reps), int(threads)
x = np.random.default_rng(0).integers(0, 256, (1, frames, 224, 224, 3), dtype=np.uint8)
fn = None
if impl.startswith("tf") or impl.startswith("jax"):
    os.environ["KERAS_BACKEND"] = "jax" if impl.startswith("jax") else "tensorflow"
    import keras
    import keras_vswin
    from keras_vswin.runtimes import serving_model
    if impl == "tf bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    builder = getattr(keras_vswin, "VideoSwin" + variant)
    model = builder(weights=None, input_shape=(frames, 224, 224, 3))
    model.load_weights(path)
    serving = serving_model(model)
    if impl.startswith("jax"):
        import jax
        tv = [v.value for v in serving.trainable_variables]
        ntv = [v.value for v in serving.non_trainable_variables]
        run = jax.jit(lambda tv, ntv, x: serving.stateless_call(tv, ntv, x)[0])
        fn = lambda x: np.asarray(run(tv, ntv, x))
    else:
        import tensorflow as tf
        graph = tf.function(lambda x: serving(x, training=False))
        fn = lambda x: graph(x).numpy()
elif impl == "onnxruntime":
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    fn = lambda x: session.run(["logits"], {"video": x})[0]
elif impl.startswith("openvino"):
    import openvino as ov
    hint = "bf16" if impl.endswith("bf16") else "f32"
    core = ov.Core()
    ir = core.read_model(path)
    ir.reshape({0: [1, frames, 224, 224, 3]})
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                              "INFERENCE_NUM_THREADS": threads,
                                              "ENABLE_CPU_PINNING": False})
    fn = lambda x: compiled(x)[0]
elif impl == "litert":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    def fn(x):
        it.set_tensor(i, x); it.invoke(); return it.get_tensor(o)
fn(x)
times = []
for _ in range(reps):
    t = time.perf_counter(); fn(x); times.append(time.perf_counter() - t)
with open("/proc/self/status") as status:
    peak = next(int(l.split()[1]) / 1024 for l in status if l.startswith("VmHWM:"))
np.save(os.environ["BENCH_OUT"], fn(x))
print(peak, statistics.median(times) if times else float("nan"))
"""


def run_fresh(impl, path, variant, frames, reps, workdir):
    out = os.path.join(workdir, f"{impl.replace(' ', '_')}.npy")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BENCH_OUT": out}
    args = [sys.executable, "-c", RUNNER, impl, path, variant, str(frames), str(reps)]
    result = subprocess.run(
        [*args, str(THREADS)], capture_output=True, text=True, env=env, cwd=os.getcwd()
    )
    try:
        peak, seconds = (float(v) for v in result.stdout.split()[-2:])
        logits = __import__("numpy").load(out)
    except (ValueError, OSError):
        sys.stderr.write(f"{impl} failed:\n{result.stderr[-1500:]}\n")
        return float("nan"), float("nan"), None
    return peak, seconds, logits


def openvino_runner(path, hint, shape):
    """The IR compiled as the README advises: at the clip's static shape (a dynamic batch
    costs about 15%), without pinning threads to cores (on this shared 2-core machine a pinned
    thread waits for its core: 1.06x TensorFlow's speed unpinned against 0.81x pinned)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    ir = core.read_model(path)
    ir.reshape({0: [1, *shape]})
    config = {
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": THREADS,
        "ENABLE_CPU_PINNING": False,
    }
    compiled = core.compile_model(ir, "CPU", config)
    return lambda x: np.asarray(compiled(x)[0])


def in_process(impl, path, model_bf16=None, serving=None, shape=None):
    """A runner in this process, for the interleaved timings."""
    import tensorflow as tf

    if impl in ("tf fp32", "tf bf16"):
        fn = tf.function(lambda x: (serving if impl == "tf fp32" else model_bf16)(x))
        return lambda x: fn(x).numpy()
    if impl == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(["logits"], {"video": x})[0]
    if impl.startswith("openvino"):
        return openvino_runner(path, "bf16" if impl.endswith("bf16") else "f32", shape)
    if impl == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path, num_threads=THREADS)
        interpreter.allocate_tensors()
        i = interpreter.get_input_details()[0]["index"]
        o = interpreter.get_output_details()[0]["index"]

        def run(x):
            interpreter.set_tensor(i, x)
            interpreter.invoke()
            return interpreter.get_tensor(o)

        return run
    raise ValueError(impl)


def matmul_ceiling(model, clip_shape, reps=5):
    """GFLOP/s of the model's own matmuls, each shape timed alone in TensorFlow (best of `reps`):
    what a float32 forward pass could reach if everything else were free."""
    import collections

    import tensorflow as tf

    from keras_vswin.flops import matmul_shapes

    counts = collections.Counter(shape for _, shape in matmul_shapes(model, clip_shape))
    matmul = tf.function(tf.matmul)
    flops = seconds = 0.0
    for (batch, m, k, n), count in counts.items():
        lead = (batch,) if batch > 1 else ()
        a, b = tf.random.normal((*lead, m, k)), tf.random.normal((*lead, k, n))
        matmul(a, b).numpy()  # trace
        best = min(_timed(matmul, a, b) for _ in range(reps))
        flops += 2 * batch * m * k * n * count
        seconds += best * count
    return flops / seconds / 1e9


def _timed(matmul, a, b):
    start = time.perf_counter()
    matmul(a, b).numpy()
    return time.perf_counter() - start


def case(variant, reps, workdir, memory=True):

    import keras
    import numpy as np

    import keras_vswin
    from keras_vswin.flops import count_macs
    from keras_vswin.runtimes import export_runtime, serving_model

    frames = CASES[variant][0]
    shape = (frames, 224, 224, 3)
    builder = getattr(keras_vswin, f"VideoSwin{variant}")
    keras.utils.set_random_seed(0)
    model = builder(weights=None, input_shape=shape, head_dropout_rate=0.0)
    weights = os.path.join(workdir, f"swin_{variant}.weights.h5")
    model.save_weights(weights)
    serving = serving_model(model)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = builder(weights=None, input_shape=shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    bf16.set_weights(model.get_weights())
    serving_bf16 = serving_model(bf16)

    paths, export_seconds = {"tf fp32": weights, "tf bf16": weights, "jax jit": weights}, {}
    for fmt in ("onnx", "openvino", "litert"):
        t = time.perf_counter()
        path = export_runtime(
            model, os.path.join(workdir, f"swin_{variant}"), fmt, input_shape=shape
        )
        export_seconds[fmt] = time.perf_counter() - t
        paths.update({fmt: path} if fmt != "openvino" else {})
        if fmt == "openvino":
            paths["openvino fp32"] = paths["openvino bf16"] = path
    paths["onnxruntime"] = paths.pop("onnx")

    x = np.random.default_rng(0).integers(0, 256, (1, *shape), dtype=np.uint8)
    impls = ["tf fp32", "tf bf16", "onnxruntime", "openvino fp32", "openvino bf16", "litert"]
    fns = {i: in_process(i, paths[i], serving_bf16, serving, shape) for i in impls}
    peak_before = matmul_peak()
    seconds = interleaved(fns, (x,), reps)
    peak_after = matmul_peak()
    reference = fns["tf fp32"](x)
    diffs = {i: float(np.abs(np.asarray(fns[i](x), "float32") - reference).max()) for i in impls}
    del fns
    _, jax_seconds, jax_logits = run_fresh("jax jit", weights, variant, frames, reps, workdir)
    seconds["jax jit"] = jax_seconds
    if jax_logits is not None:
        diffs["jax jit"] = float(np.abs(jax_logits - reference).max())
    peak_jax = matmul_peak()
    ceiling = matmul_ceiling(model, shape[:3])
    memory_mib = {}
    if memory:
        for impl in [*impls, "jax jit"]:
            memory_mib[impl] = run_fresh(impl, paths[impl], variant, frames, 0, workdir)[0]
    return {
        "case": f"Swin-{variant} 1x{frames}x224x224",
        "gmacs": count_macs(model, shape[:3])["total"] / 1e9,
        "seconds": seconds,
        "max_abs_logit_diff_vs_tf_fp32": diffs,
        "peak_mib": memory_mib,
        "matmul_peak_gflops": {"before": peak_before, "after": peak_after, "after_jax": peak_jax},
        "matmul_ceiling_gflops": ceiling,
        "export_seconds": export_seconds,
    }


def print_case(row):
    peak = min(row["matmul_peak_gflops"].values())
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in row["matmul_peak_gflops"].items())
    print(f"\n{row['case']}: {row['gmacs']:.1f} GMACs; float32 matmul peak GFLOP/s: {peaks}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {THREADS} threads")
    ceiling = row["matmul_ceiling_gflops"]
    print(
        f"the model's matmuls timed alone in TensorFlow: {ceiling:.0f} GFLOP/s = "
        f"{100 * ceiling / peak:.0f}% of the peak (a float32 forward pass's ceiling there)"
    )
    tf32 = row["seconds"].get("tf fp32")
    print(f"{'runtime':<16}{'seconds':>9}{'% peak':>8}{'vs tf fp32':>11}", end="")
    print(f"{'peak MiB':>10}{'max|dl|':>10}")
    for impl, sec in row["seconds"].items():
        frac = 2 * row["gmacs"] / sec / peak * 100
        print(
            f"{impl:<16}{sec:9.3f}{frac:7.0f}%{tf32 / sec:10.2f}x"
            f"{row['peak_mib'].get(impl, float('nan')):10.0f}"
            f"{row['max_abs_logit_diff_vs_tf_fp32'].get(impl, float('nan')):10.1e}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=sorted(CASES), default=["T", "B"])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", default=os.path.join("bench_results", "runtimes.json"))
    args = parser.parse_args(argv)
    from benchmarks import write_results

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for variant in args.variants:
            rows.append(case(variant, args.reps, workdir, memory=not args.no_memory))
            print_case(rows[-1])
    write_results(args.json, {"threads": THREADS, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
