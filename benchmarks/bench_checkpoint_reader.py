"""Time and peak memory of keras_vswin.checkpoint_reader on a Swin-B-sized checkpoint.

Writes a random state dict with the shapes of the official Swin-B (window 8x7x7, 400 classes,
~88M float32 parameters plus the int64 relative_position_index buffers) in the official layout
({"meta", "state_dict"}) with torch.save, then loads it in fresh processes, each measured
on its own: the safe reader, and torch.load(weights_only=True) as the reference. Peak memory
is the process's high-water mark (VmHWM, Linux) minus the mark after the imports.
The files are written to a temporary directory that is deleted afterwards.

    python -m benchmarks.bench_checkpoint_reader [--format zip|legacy|both]

Needs torch to write the file (the reader itself does not use it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

READER = os.path.join(os.path.dirname(__file__), "..", "keras_vswin", "checkpoint_reader.py")

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


def run_child(mode, path):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path, READER],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=["zip", "legacy", "both"], default="both")
    args = parser.parse_args(argv)
    import torch

    state = swin_b_state_dict(torch)
    params = sum(v.numel() for k, v in state.items() if "relative_position_index" not in k)
    print(f"Swin-B state dict: {len(state)} tensors, {params / 1e6:.1f}M float32 parameters")
    formats = ["zip", "legacy"] if args.format == "both" else [args.format]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            path = os.path.join(tmp, f"swin_b_{fmt}.pth")
            torch.save(
                {"meta": {"epoch": 30}, "state_dict": state},
                path,
                _use_new_zipfile_serialization=fmt == "zip",
            )
            size = os.path.getsize(path) / 2**20
            for mode in ("reader", "torch"):
                r = run_child(mode, path)
                extra = r["peak_mib"] - r["before_mib"]
                print(
                    f"{fmt:6s} {mode:6s} file {size:7.1f} MiB  load {r['seconds']:6.2f} s  "
                    f"peak RSS {r['peak_mib']:7.1f} MiB (+{extra:6.1f} MiB over imports, "
                    f"{extra / size:4.2f}x file)"
                )
            os.remove(path)


if __name__ == "__main__":
    main()
