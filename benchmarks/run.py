"""`make bench`: keras-vswin next to keras-cv's VideoSwin and torchvision's Swin3D.

Same clips, same thread count, same process; implementations are interleaved within every
repetition and medians reported. Peak memory is measured in a fresh process per implementation.

    python -m benchmarks.run [--reps 3] [--quick] [--json bench_results/bench.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

from benchmarks import write_results

# torch and torchvision must be imported before TensorFlow (the other order crashes).
try:
    import torch
    import torchvision.models.video as tv_video
except ImportError:  # pragma: no cover - the [torch] extra is optional for users
    torch = tv_video = None

import keras
import numpy as np
import tensorflow as tf

import keras_vswin
from keras_vswin.flops import count_macs

THREADS = os.cpu_count()
VARIANTS = {"T": (keras_vswin.VideoSwinT, "swin3d_t"), "B": (keras_vswin.VideoSwinB, "swin3d_b")}


def _kerascv_backbone():
    try:
        from keras_cv.models import VideoSwinBackbone
    except Exception:  # noqa: BLE001 - keras-cv is an optional peer ([bench] extra)
        return None
    return VideoSwinBackbone


# ----------------------------------------------------------------------------------------------
# Model builders: each returns (forward_fn(x_numpy) -> numpy, train_step_fn or None).


def build_ours(variant, clip, precision="float32", jit=False, static=True):
    builder = VARIANTS[variant][0]
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32"
    )
    try:
        model = builder(input_shape=(*clip, 3) if static else None, classifier_activation=None)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit)
    return model, (lambda x: forward(x).numpy())


def build_kerascv(variant, clip):
    backbone_cls = _kerascv_backbone()
    if backbone_cls is None:
        return None, None
    config = keras_vswin.VARIANTS[variant]
    backbone = backbone_cls(
        input_shape=(*clip, 3),
        embed_dim=config["embed_dim"],
        depths=list(config["depths"]),
        num_heads=list(config["num_heads"]),
    )
    pooled = keras.layers.GlobalAveragePooling3D()(backbone.output)
    model = keras.Model(backbone.input, keras.layers.Dense(400)(pooled))
    forward = tf.function(lambda x: model(x, training=False))
    return model, (lambda x: forward(x).numpy())


def build_torchvision(variant):
    if torch is None:
        return None, None
    model = getattr(tv_video, VARIANTS[variant][1])(weights=None).eval()

    def forward(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()

    return model, forward


def keras_train_step(model):
    optimizer = keras.optimizers.AdamW(1e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
        )
        return loss

    return lambda x, y: float(step(x, y))


def torch_train_step(model):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x).permute(0, 4, 1, 2, 3)), torch.from_numpy(y)
        )
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


# ----------------------------------------------------------------------------------------------


def matmul_peak(dtype=tf.float32, n=2048, reps=10):
    """Achievable matmul throughput (GFLOP/s) of this machine through TensorFlow."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda a: tf.matmul(a, a))
    f(a).numpy()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a).numpy()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def interleaved(fns, args, reps):
    """Median seconds per call of each fn, calling them in turn within every repetition.

    An implementation that fails (e.g. keras-cv on sizes it cannot pad) is reported and left out.
    """
    working = {}
    for name, fn in fns.items():
        try:
            fn(*args)  # warm-up / tracing
            working[name] = fn
        except Exception as error:  # noqa: BLE001 - a peer's failure must not end the run
            print(f"  {name} failed on this case: {str(error).splitlines()[0][:160]}")
    times = {name: [] for name in working}
    for _ in range(reps):
        for name, fn in working.items():
            t = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_case(variant, batch, clip, reps, extra=True):
    """Forward timings of every implementation on the same clip."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *clip, 3)).astype("float32")
    ours, fns = None, {}
    ours, fns["keras-vswin"] = build_ours(variant, clip)
    if extra:
        _, fns["keras-vswin dynamic"] = build_ours(variant, clip, static=False)
        _, fns["keras-vswin XLA"] = build_ours(variant, clip, jit=True)
        bf16_model, fns["keras-vswin bf16"] = build_ours(variant, clip, precision="bfloat16")
        bf16_model.set_weights(ours.get_weights())
    kcv, kcv_fn = build_kerascv(variant, clip)
    if kcv_fn:
        fns["keras-cv 0.9"] = kcv_fn
    tv, tv_fn = build_torchvision(variant)
    if tv_fn:
        fns["torchvision"] = tv_fn
    result = interleaved(fns, (x,), reps)
    macs = count_macs(ours, clip)["total"] * batch
    row = {
        "case": f"Swin-{variant} fwd {batch}x{clip[0]}x{clip[1]}x{clip[2]}",
        "gmacs": macs / 1e9,
        "seconds": result,
    }
    if extra:
        fp32 = fns["keras-vswin"](x)
        row["bf16_max_abs_logit_diff"] = float(np.abs(fns["keras-vswin bf16"](x) - fp32).max())
    return row


def train_case(variant, batch, clip, reps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *clip, 3)).astype("float32")
    y = rng.integers(0, 400, batch)
    fns = {}
    ours, _ = build_ours(variant, clip)
    fns["keras-vswin"] = keras_train_step(ours)
    kcv, _ = build_kerascv(variant, clip)
    if kcv is not None:
        fns["keras-cv 0.9"] = keras_train_step(kcv)
    tv, _ = build_torchvision(variant)
    if tv is not None:
        fns["torchvision"] = torch_train_step(tv)
    result = interleaved(fns, (x, y), reps)
    macs = 3 * count_macs(ours, clip)["total"] * batch  # forward + backward ~ 3x forward
    return {
        "case": f"Swin-{variant} train step {batch}x{clip[0]}x{clip[1]}x{clip[2]}",
        "gmacs": macs / 1e9,
        "seconds": result,
    }


def high_water_mib():
    """Peak resident memory of this process image (VmHWM), MiB.

    Unlike `ru_maxrss`, it is not inherited from the parent across fork + exec, so a fresh
    process measures itself only.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not found in /proc/self/status")


def peak_memory(impl, variant, frames):
    """Peak resident memory (MiB) of one forward pass, in a fresh process."""
    code = f"""
import sys
sys.argv = ['memory']
from benchmarks.run import build_ours, build_kerascv, build_torchvision
import numpy as np
clip = ({frames}, 224, 224)
x = np.random.default_rng(0).standard_normal((1, *clip, 3)).astype('float32')
impl = {impl!r}
model, fn = {{'keras-vswin': lambda: build_ours({variant!r}, clip),
             'keras-cv 0.9': lambda: build_kerascv({variant!r}, clip),
             'torchvision': lambda: build_torchvision({variant!r})}}[impl]()
if fn is None:
    print('nan nan'); sys.exit(0)
from benchmarks.run import high_water_mib
before = high_water_mib()
fn(x)
after = high_water_mib()
print(after, after - before)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=os.getcwd()
    )
    try:
        peak, delta = (float(v) for v in out.stdout.split()[-2:])
    except ValueError:
        sys.stderr.write(out.stderr[-2000:])
        peak = delta = float("nan")
    return {"peak_mib": peak, "forward_increase_mib": delta}


def train_memory(remat, variant="T", frames=16):
    """Peak resident memory (MiB) and seconds of one training step, with or without remat."""
    code = f"""
import time
import numpy as np
from benchmarks.run import VARIANTS, keras_train_step  # imports torch before TensorFlow
model = VARIANTS[{variant!r}][0](input_shape=({frames}, 224, 224, 3), remat={remat},
                                 classifier_activation=None)
step = keras_train_step(model)
x = np.random.default_rng(0).standard_normal((1, {frames}, 224, 224, 3)).astype('float32')
y = np.zeros((1,), 'int64')
from benchmarks.run import high_water_mib
before = high_water_mib()
step(x, y)
t = time.perf_counter(); step(x, y); seconds = time.perf_counter() - t
after = high_water_mib()
print(after, after - before, seconds)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    try:
        peak, delta, seconds = (float(v) for v in out.stdout.split()[-3:])
    except ValueError:
        sys.stderr.write(out.stderr[-2000:])
        peak = delta = seconds = float("nan")
    return {"peak_mib": peak, "step_increase_mib": delta, "step_seconds": seconds}


def print_table(rows, peak_gflops):
    names = sorted(
        {name for row in rows for name in row["seconds"]}, key=lambda n: (n != "keras-vswin", n)
    )
    print(f"\nthreads: {THREADS}; float32 matmul peak: {peak_gflops:.0f} GFLOP/s (2 FLOPs per MAC)")
    header = f"{'case':<38}{'GMACs':>8}" + "".join(f"{n:>22}" for n in names)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for name in names:
            sec = row["seconds"].get(name)
            if sec is None:
                cells.append(f"{'-':>22}")
            else:
                gflops = 2 * row["gmacs"] / sec
                cells.append(f"{sec:8.3f}s {gflops:5.0f}GF/s {100 * gflops / peak_gflops:3.0f}%")
        print(f"{row['case']:<38}{row['gmacs']:8.1f}" + "".join(f"{c:>22}" for c in cells))
    for row in rows:
        base = row["seconds"].get("keras-vswin")
        ratios = ", ".join(
            f"{base and row['seconds'][n] / base:.2f}x vs {n}"
            for n in names
            if n != "keras-vswin" and n in row["seconds"]
        )
        extra = (
            f"; bf16 max|logit diff| {row['bf16_max_abs_logit_diff']:.2e}"
            if "bf16_max_abs_logit_diff" in row
            else ""
        )
        print(f"{row['case']}: keras-vswin speedup {ratios}{extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reps", type=int, default=3, help="interleaved repetitions per case (median)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the Swin-T 16x224x224 forward case"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory subprocesses"
    )
    parser.add_argument(
        "--json", default="bench_results/bench.json", help="where to write the results"
    )
    parser.add_argument(
        "--no-runtimes",
        action="store_true",
        help="skip the inference runtimes (benchmarks.bench_runtimes: ONNX Runtime, OpenVINO, "
        "LiteRT, JAX)",
    )
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(THREADS)

    peak = matmul_peak()
    peak_bf16 = matmul_peak(tf.bfloat16)
    cases = [lambda: forward_case("T", 1, (16, 224, 224), args.reps)]
    if not args.quick:
        cases += [
            lambda: forward_case("T", 1, (32, 224, 224), args.reps, extra=False),
            lambda: forward_case("B", 1, (16, 224, 224), args.reps, extra=False),
            lambda: forward_case("B", 1, (32, 224, 224), max(1, args.reps - 1), extra=False),
            lambda: forward_case("T", 4, (16, 224, 224), max(1, args.reps - 1), extra=False),
            lambda: train_case("T", 1, (16, 224, 224), args.reps),
        ]
    rows = []
    for case in cases:
        rows.append(case())
        print(
            f"{rows[-1]['case']}: "
            + ", ".join(f"{k} {v:.3f}s" for k, v in rows[-1]["seconds"].items()),
            flush=True,
        )
    print_table(rows, peak)
    memory = {}
    if not args.no_memory:
        for impl in ("keras-vswin", "keras-cv 0.9", "torchvision"):
            memory[impl] = peak_memory(impl, "B", 32)
        print("\nPeak memory, Swin-B 1x32x224x224 inference (fresh process each):")
        for impl, m in memory.items():
            added = m["forward_increase_mib"]
            rss = m["peak_mib"]
            print(f"  {impl:<14} peak RSS {rss:8.0f} MiB (forward added {added:6.0f} MiB)")
    remat = {}
    if not args.no_memory and not args.quick:
        print("\nTraining step, Swin-T 1x16x224x224 (fresh process each):")
        for flag in (False, True):
            remat[str(flag)] = m = train_memory(flag)
            print(
                f"  remat={flag!s:<5} peak RSS {m['peak_mib']:8.0f} MiB "
                f"(step added {m['step_increase_mib']:6.0f} MiB), {m['step_seconds']:.2f} s/step"
            )
    result = {
        "training_memory_remat": remat,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": THREADS,
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "torch": getattr(torch, "__version__", None),
        },
        "matmul_peak_gflops": {"float32": peak, "bfloat16": peak_bf16},
        "rows": rows,
        "peak_memory_swin_b_32x224": memory,
    }
    write_results(args.json, result)
    print(f"\nwrote {args.json}")
    if not args.no_runtimes:
        from benchmarks import bench_runtimes

        runtime_args = ["--reps", str(args.reps), "--variants", "T", *([] if args.quick else ["B"])]
        bench_runtimes.main(runtime_args + (["--no-memory"] if args.no_memory else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
