"""Time and peak memory of keras_vswin.checkpoint_reader: a genuine checkpoint, hostile files,
and the fuzz test.

Default mode: writes a random state dict with the shapes of the official Swin-B (window 8x7x7,
400 classes, ~88M float32 parameters plus the int64 relative_position_index buffers) in the
official layout ({"meta", "state_dict"}) with torch.save, then loads it in fresh processes,
each measured on its own: the safe reader, and torch.load(weights_only=True) as the reference.
Peak memory is the process's high-water mark (VmHWM, Linux) minus the mark after the imports.
The files are written to a temporary directory that is deleted afterwards.

--bombs: the hostile files of issue 13 (tests/_hostile_checkpoints.py: deeply nested and
shared dict keys, zero-stride and overlapping views, deflate bombs in data.pkl and in a
storage, a memoised string copied 10,000 times), each loaded in a fresh process under an
address-space limit (--cap-gib) and a time limit; the outcome, peak memory and time per file.
--before REV also runs the reader of git revision REV on each (e.g. c8a9fcc, before the
hardening), for a before/after table.

--fuzz: the fuzz test's harness (tests/_checkpoint_fuzz.py): case count, time and outcomes.

    python -m benchmarks.bench_checkpoint_reader [--format zip|legacy|both] [--before REV]
    python -m benchmarks.bench_checkpoint_reader --bombs [--before REV] [--cap-gib 6]
    python -m benchmarks.bench_checkpoint_reader --fuzz [--seconds 45]

Needs torch to write the Swin-B file (the reader itself does not use it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READER = os.path.join(ROOT, "keras_vswin", "checkpoint_reader.py")
TESTS = os.path.join(ROOT, "tests")

# The child imports the reader by file path so that keras_vswin/__init__ (TensorFlow) is not
# imported and the numbers show the reader alone.
CHILD = r"""
import importlib.util, json, sys, time
import numpy as np
mode, path, reader_path = sys.argv[1:4]


def high_water_mib():  # VmHWM is per address space (ru_maxrss would include the parent's)
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


if mode == "reader":
    spec = importlib.util.spec_from_file_location("checkpoint_reader", reader_path)
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    load = reader.load_checkpoint
else:
    import torch
    load = lambda p: torch.load(p, weights_only=True, map_location="cpu")
before = high_water_mib()
start = time.perf_counter()
obj = load(path)
seconds = time.perf_counter() - start
peak = high_water_mib()
state = obj["state_dict"]
nbytes = sum(v.nbytes if hasattr(v, "nbytes") else v.numel() * v.element_size()
             for v in state.values())
print(json.dumps({"seconds": seconds, "peak_mib": peak, "before_mib": before,
                  "tensors_mib": nbytes / 2**20, "count": len(state)}))
"""


def swin_b_state_dict(torch, seed=0):
    """Random tensors with the official Swin-B (Kinetics-400) checkpoint's names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    embed, depths, heads, window, classes = 128, (2, 2, 18, 2), (4, 8, 16, 32), (8, 7, 7), 400
    table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    tokens = window[0] * window[1] * window[2]
    shapes = {
        "backbone.patch_embed.proj.weight": (embed, 3, 2, 4, 4),
        "backbone.patch_embed.proj.bias": (embed,),
        "backbone.patch_embed.norm.weight": (embed,),
        "backbone.patch_embed.norm.bias": (embed,),
    }
    state = {}
    for i, (depth, head) in enumerate(zip(depths, heads, strict=True)):
        dim = embed * 2**i
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}."
            shapes.update(
                {
                    p + "norm1.weight": (dim,),
                    p + "norm1.bias": (dim,),
                    p + "attn.relative_position_bias_table": (table, head),
                    p + "attn.qkv.weight": (3 * dim, dim),
                    p + "attn.qkv.bias": (3 * dim,),
                    p + "attn.proj.weight": (dim, dim),
                    p + "attn.proj.bias": (dim,),
                    p + "norm2.weight": (dim,),
                    p + "norm2.bias": (dim,),
                    p + "mlp.fc1.weight": (4 * dim, dim),
                    p + "mlp.fc1.bias": (4 * dim,),
                    p + "mlp.fc2.weight": (dim, 4 * dim),
                    p + "mlp.fc2.bias": (dim,),
                }
            )
            state[p + "attn.relative_position_index"] = torch.randint(
                0, table, (tokens, tokens), generator=gen
            )
        if i < 3:
            p = f"backbone.layers.{i}.downsample."
            shapes[p + "norm.weight"] = (4 * dim,)
            shapes[p + "norm.bias"] = (4 * dim,)
            shapes[p + "reduction.weight"] = (2 * dim, 4 * dim)
    final = embed * 8
    shapes.update(
        {
            "backbone.norm.weight": (final,),
            "backbone.norm.bias": (final,),
            "cls_head.fc_cls.weight": (classes, final),
            "cls_head.fc_cls.bias": (classes,),
        }
    )
    for name, shape in shapes.items():
        state[name] = torch.randn(shape, generator=gen)
    return state


def run_child(mode, path, reader=READER):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path, reader],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def reader_at(revision, directory):
    """The checkpoint_reader.py of a git revision, written into `directory`."""
    source = subprocess.run(
        ["git", "-C", ROOT, "show", f"{revision}:keras_vswin/checkpoint_reader.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = os.path.join(directory, f"checkpoint_reader_{revision}.py")
    with open(path, "w") as f:
        f.write(source)
    return path


def _helpers():
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import _checkpoint_fuzz
    import _hostile_checkpoints

    return _hostile_checkpoints, _checkpoint_fuzz


def _outcome(result):
    if result["outcome"] in ("refused", "failed"):
        return f"{result['outcome']}: {result['type']}"
    return f"{result['outcome']} {result.get('type', '')}".strip()


def bench_bombs(readers, cap_gib, timeout):
    """Each bomb under each reader; returns the rows."""
    from pathlib import Path

    hostile, _ = _helpers()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, issue_said) in hostile.BOMBS.items():
            path = build(Path(tmp) / f"{name}.pth")
            size = os.path.getsize(path)
            row = {"bomb": name, "file_bytes": size, "issue": issue_said}
            for label, reader in readers.items():
                start = time.perf_counter()
                result = hostile.load_in_child(reader, path, cap_gib << 30, timeout, walk=1)
                result.setdefault("seconds", time.perf_counter() - start)
                row[label] = {k: result.get(k) for k in ("outcome", "type", "peak_mib", "seconds")}
                row[label]["message"] = (result.get("message") or "")[:160]
                peak = result.get("peak_mib")
                peak_text = "-" if peak is None else f"{peak:8.1f} MiB"
                print(
                    f"{name:38s} {size / 1024:9.1f} KiB  {label:6s} {_outcome(result):40s} "
                    f"peak {peak_text:>12s}  {result['seconds']:7.2f} s",
                    flush=True,
                )
            os.remove(path)
            rows.append(row)
    return rows


def bench_fuzz(label, reader, seconds, cases):
    _, fuzz = _helpers()
    with tempfile.TemporaryDirectory() as tmp:
        seeds, work = os.path.join(tmp, "seeds"), os.path.join(tmp, "work")
        os.makedirs(work)
        fuzz.write_seed_files(seeds, fuzz.torch_seed_files())
        marker = os.path.join(tmp, "code-ran")
        report = fuzz.run_fuzz(reader, seeds, work, marker, 13, cases, seconds)
        report["marker_created"] = os.path.exists(marker)
    report.pop("failures", None)
    print(f"{label}: {json.dumps(report, indent=1)}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=["zip", "legacy", "both"], default="both")
    parser.add_argument("--bombs", action="store_true", help="the hostile files of issue 13")
    parser.add_argument("--fuzz", action="store_true", help="the fuzz harness")
    parser.add_argument("--before", metavar="REV", help="also run the reader of git REV")
    parser.add_argument("--cap-gib", type=int, default=6, help="address-space limit per bomb")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per bomb")
    parser.add_argument("--seconds", type=float, default=45.0, help="fuzz time budget")
    parser.add_argument("--cases", type=int, default=4000, help="fuzz cases at most")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        readers = {"after": READER}
        if args.before:
            readers = {"before": reader_at(args.before, tmp), **readers}
        if args.bombs:
            results = bench_bombs(readers, args.cap_gib, args.timeout)
        elif args.fuzz:
            results = {
                label: bench_fuzz(label, r, args.seconds, args.cases)
                for label, r in readers.items()
            }
        else:
            results = bench_swin_b(readers, args.format)
    if args.json:
        from benchmarks import write_results

        write_results(args.json, results)


def bench_swin_b(readers, format_name):
    import torch

    state = swin_b_state_dict(torch)
    params = sum(v.numel() for k, v in state.items() if "relative_position_index" not in k)
    print(f"Swin-B state dict: {len(state)} tensors, {params / 1e6:.1f}M float32 parameters")
    formats = ["zip", "legacy"] if format_name == "both" else [format_name]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            path = os.path.join(tmp, f"swin_b_{fmt}.pth")
            torch.save(
                {"meta": {"epoch": 30}, "state_dict": state},
                path,
                _use_new_zipfile_serialization=fmt == "zip",
            )
            size = os.path.getsize(path) / 2**20
            modes = [(f"reader-{label}", "reader", r) for label, r in readers.items()]
            for label, mode, reader in modes + [("torch", "torch", READER)]:
                r = run_child(mode, path, reader)
                extra = r["peak_mib"] - r["before_mib"]
                print(
                    f"{fmt:6s} {label:13s} file {size:7.1f} MiB  load {r['seconds']:6.2f} s  "
                    f"peak RSS {r['peak_mib']:7.1f} MiB (+{extra:6.1f} MiB over imports, "
                    f"{extra / size:4.2f}x file)"
                )
                rows.append({"format": fmt, "loader": label, "file_mib": size, **r})
            os.remove(path)
    return rows


if __name__ == "__main__":
    main()
