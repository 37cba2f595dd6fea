"""Checkpoint conversion benchmark: time and peak memory for a Swin-B-sized checkpoint, and
numerical parity with PyTorch per checkpoint layout.

```
python benchmarks/bench_convert.py                     # Swin-B, writes bench_results/convert.json
python benchmarks/bench_convert.py --variant T --skip-parity
```

1. A random-weight torchvision `swin3d_b` state dict is renamed to the official layout, wrapped
   like a released file (`state_dict` + `meta`) and written with `torch.save`.
2. A fresh process converts it the way `keras-vswin convert` does and times each stage:
   read (safe reader, no unpickling of code), map (architecture inference, model build, strict
   load), write (`.weights.h5`, temporary file + rename); then loading the written file into a
   new model. Peak memory is that process's peak RSS (VmHWM), shown next to its RSS after
   importing TensorFlow and keras_vswin (the part conversion itself adds is the difference).
3. Parity: random torchvision `swin3d_t` weights written in each layout (official, mmaction2,
   torchvision, bare backbone) and the Swin-B file, converted, run on the same clip as PyTorch:
   max |logits difference| (pooled features for the bare backbone).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LAYOUTS = ("official", "mmaction2", "torchvision", "backbone")


def _status_mib(field):
    """A memory figure of this process from /proc/self/status, MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib():
    return _status_mib("VmRSS")


def _peak_rss_mib():
    # VmHWM (this process image's peak RSS), not getrusage's ru_maxrss: Linux carries the
    # parent's peak into a forked+exec'd child's ru_maxrss, which would count the parent.
    return _status_mib("VmHWM")


def child(source, destination):
    """Convert `source` to `destination` (.weights.h5) and print the figures as JSON."""
    import keras_vswin  # noqa: F401  (TensorFlow and Keras initialised before the baseline)
    from keras_vswin import convert, weights
    from keras_vswin.atomic import atomic_path
    from keras_vswin.model import VideoSwin

    baseline = _rss_mib()
    started = time.perf_counter()
    state_dict = convert.read_state_dict(source)
    read_s = time.perf_counter() - started
    after_read = _rss_mib()

    started = time.perf_counter()
    model, report, arch = weights.convert_state_dict(state_dict, classifier_activation=None)
    map_s = time.perf_counter() - started
    assert report.ok, report.summary()
    del state_dict

    started = time.perf_counter()
    with atomic_path(destination) as tmp:
        model.save_weights(tmp)
    write_s = time.perf_counter() - started
    peak_conversion = _peak_rss_mib()
    del model

    started = time.perf_counter()
    fresh = VideoSwin(**{k: arch[k] for k in convert.MODEL_ARGUMENTS}, classes=arch["classes"])
    fresh.load_weights(destination)
    load_s = time.perf_counter() - started
    print(
        json.dumps(
            dict(
                read_s=read_s,
                map_s=map_s,
                write_s=write_s,
                convert_s=read_s + map_s + write_s,
                load_converted_s=load_s,
                tensors=len(report.loaded),
                index_buffers_checked=report.checked_index,
                rss_after_imports_mib=baseline,
                rss_after_read_mib=after_read,
                peak_rss_conversion_mib=peak_conversion,
                peak_rss_with_reload_mib=_peak_rss_mib(),
            )
        )
    )


def _official_checkpoint(torch, reference, path):
    from keras_vswin import convert

    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    official = convert.from_canonical(convert.to_canonical(state, "torchvision"), "official")
    tensors = {k: torch.from_numpy(v.copy()) for k, v in official.items()}
    torch.save({"state_dict": tensors, "meta": {"note": "random weights"}}, path)


def parity(torch, video, frames, size, b_path=None, b_reference=None):
    """max |Keras - PyTorch| per layout on one random clip."""
    import numpy as np

    from keras_vswin import convert, weights

    clip = np.random.default_rng(0).standard_normal((1, frames, size, size, 3)).astype("float32")
    x = torch.from_numpy(clip).permute(0, 4, 1, 2, 3)
    torch.manual_seed(0)
    reference = video.swin3d_t(weights=None).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    canonical = convert.to_canonical(state, "torchvision")
    with torch.no_grad():
        logits = reference(x).numpy()
        features = reference.norm(reference.features(reference.patch_embed(x)))
        features = features.mean(dim=(1, 2, 3)).numpy()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in LAYOUTS:
            path = os.path.join(tmp, f"{layout}.pth")
            renamed = convert.from_canonical(canonical, layout)
            torch.save({k: torch.from_numpy(v.copy()) for k, v in renamed.items()}, path)
            model, report, arch = weights.convert_checkpoint(path, classifier_activation=None)
            out = np.asarray(model(clip))
            if arch["classes"] is None:
                diff = np.abs(out.mean(axis=(1, 2, 3)) - features).max()
            else:
                diff = np.abs(out - logits).max()
            results[f"T/{layout}"] = float(diff)
    if b_path is not None:
        model, _, _ = weights.convert_checkpoint(b_path, classifier_activation=None)
        with torch.no_grad():
            expected = b_reference(x).numpy()
        results["B/official"] = float(np.abs(np.asarray(model(clip)) - expected).max())
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("T", "S", "B"), default="B")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench_results", "convert.json"))
    parser.add_argument("--frames", type=int, default=16, help="parity clip length")
    parser.add_argument("--size", type=int, default=112, help="parity clip size")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    import torch  # before TensorFlow
    import torchvision.models.video as video

    results = dict(
        variant=args.variant,
        machine=dict(
            platform=platform.platform(), cpus=os.cpu_count(), python=sys.version.split()[0]
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "checkpoint.pth")
        torch.manual_seed(0)
        reference = getattr(video, f"swin3d_{args.variant.lower()}")(weights=None).eval()
        started = time.perf_counter()
        _official_checkpoint(torch, reference, source)
        results["checkpoint_mib"] = os.path.getsize(source) / 2**20
        results["generate_s"] = time.perf_counter() - started
        destination = os.path.join(tmp, "converted.weights.h5")
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", source, destination],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode:
            sys.stderr.write(done.stderr)
            return done.returncode
        results["conversion"] = json.loads(done.stdout.strip().splitlines()[-1])
        results["converted_mib"] = os.path.getsize(destination) / 2**20
        print(
            f"Swin-{args.variant} checkpoint {results['checkpoint_mib']:.0f} MiB -> "
            f".weights.h5 {results['converted_mib']:.0f} MiB"
        )
        c = results["conversion"]
        print(
            f"  convert {c['convert_s']:.2f} s (read {c['read_s']:.2f}, map {c['map_s']:.2f}, "
            f"write {c['write_s']:.2f}); reload {c['load_converted_s']:.2f} s"
        )
        print(
            f"  peak RSS {c['peak_rss_conversion_mib']:.0f} MiB (after imports "
            f"{c['rss_after_imports_mib']:.0f} MiB, after read {c['rss_after_read_mib']:.0f} MiB)"
        )
        if not args.skip_parity:
            results["parity"] = parity(
                torch,
                video,
                args.frames,
                args.size,
                b_path=source if args.variant == "B" else None,
                b_reference=reference,
            )
            results["parity_clip"] = [1, args.frames, args.size, args.size, 3]
            for name, diff in results["parity"].items():
                print(f"  parity {name}: max |Keras - PyTorch| = {diff:.2e}")
    write_results(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
