"""Convert a PyTorch Video Swin checkpoint into a Keras model file.

```
keras-vswin convert swin_tiny_patch244_window877_kinetics400_1k.pth --output t.keras
keras-vswin convert kinetics400 --variant B --output swin_b_k400.weights.h5
keras-vswin convert mmaction2_ckpt.pth --classes 10 --skip-head --output ft.keras
keras-vswin convert swin_base_k400.pth --window 16 7 7 --output b1677.keras
keras-vswin convert swin_tiny_patch4_window7_224.pth --output t_in1k.keras   # 2D
keras-vswin convert swin3d_t-7615ae03.pth --output saved_model_dir/
```

SRC is a `.pth`/`.pt` checkpoint (official, mmaction2 1.x, torchvision or bare-backbone layout,
or an image Swin that is inflated to 3D) or a registry name (downloaded into the cache). The
architecture is inferred from the checkpoint; the weights are loaded strictly (every missing,
unexpected or mismatched tensor is reported and fails the conversion). DST ending in `.keras`
is a full Keras model, in `.weights.h5` the weights only, anything else a SavedModel directory.
Outputs are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from keras_vswin import atomic
from keras_vswin.cli import add_checkpoint_arguments

LAYOUT_CHOICES = ("auto", "official", "mmaction2", "torchvision", "backbone")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin convert",
        description="Convert a PyTorch Video Swin checkpoint (or registry weights) to Keras.",
    )
    parser.add_argument("source", metavar="SRC", help=".pth/.pt checkpoint or registry name")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DST",
        help="output: *.keras (model), *.weights.h5 (weights) or a directory (SavedModel)",
    )
    parser.add_argument(
        "--variant",
        choices=("T", "S", "B", "L"),
        help="model size, for registry names offering several",
    )
    parser.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto", help="key layout")
    parser.add_argument(
        "--classes", type=int, help="head size (default: the checkpoint's head, if any)"
    )
    parser.add_argument(
        "--skip-head",
        action="store_true",
        help="do not load the checkpoint's head: a new, random head of --classes outputs",
    )
    parser.add_argument(
        "--no-top", action="store_true", help="write the backbone only (include_top=False)"
    )
    parser.add_argument(
        "--window",
        type=int,
        nargs=3,
        metavar=("T", "H", "W"),
        help="window of the written model; the bias tables are resized if it differs",
    )
    parser.add_argument(
        "--resize-method",
        choices=("bicubic", "extend"),
        default="bicubic",
        help="how --window resizes bias tables (see keras_vswin.convert.resize_bias_table)",
    )
    parser.add_argument(
        "--patch",
        type=int,
        nargs=3,
        metavar=("T", "H", "W"),
        help="patch size for image Swin checkpoints (default 2 and the 2D patch)",
    )
    parser.add_argument(
        "--inflation",
        choices=("inflate", "center"),
        default="inflate",
        help="2D -> 3D initialisation for image Swin checkpoints (paper, section 3.4)",
    )
    parser.add_argument(
        "--labels",
        help="label set (kinetics400, kinetics600, something_something_v2) or a text file; "
        "checked against the class count and written next to DST as <DST>.labels.txt "
        "(inside DST for a SavedModel)",
    )
    parser.add_argument(
        "--classifier-activation",
        default="softmax",
        help="activation of the head in the written model (softmax, or none for logits)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_checkpoint_arguments(parser)
    return parser


def output_kind(destination):
    """ "keras", "weights" or "saved_model" for an output path."""
    if destination.endswith(".keras"):
        return "keras"
    if destination.endswith(".weights.h5"):
        return "weights"
    if destination.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"--output {destination}: Keras 3 writes weights as `*.weights.h5`; use that suffix."
        )
    return "saved_model"


def export_saved_model(model, directory):
    """Write `model` as a SavedModel into the (new) `directory`.

    The one place that knows how SavedModels are written (`model.export`), so a richer exporter
    (signatures with labels, preprocessing) can replace it.
    """
    model.export(directory, format="tf_saved_model", verbose=False)


def _write_labels(names, destination, kind):
    if kind == "saved_model":
        target = os.path.join(destination, "labels.txt")
    else:
        stem = destination[: -len(".weights.h5")] if kind == "weights" else destination[:-6]
        target = stem + ".labels.txt"
    atomic.write_text(target, "\n".join(names) + "\n")
    return target


class _Progress:
    def __init__(self, quiet, stages):
        self.quiet, self.stages, self.stage = quiet, stages, 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, title):
        self.stage += 1
        self.say(f"[{self.stage}/{self.stages}] {title} ...")
        start = time.perf_counter()
        yield
        self.say(f"      done in {time.perf_counter() - start:.2f} s")

    def say(self, text):
        if not self.quiet:
            print(text, flush=True)


def convert(args):
    """Run a conversion described by parsed `args`; returns the output path."""
    destination = os.path.abspath(args.output)
    kind = output_kind(args.output)
    if os.path.exists(destination) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it.")
    if args.skip_head and args.classes is None and not args.no_top:
        raise ValueError("--skip-head needs --classes N (the new head's size) or --no-top.")
    progress = _Progress(args.quiet, 3)

    from keras_vswin import convert as conv
    from keras_vswin import presets, weights
    from keras_vswin.preprocessing import load_labels

    source, labels, expected, state_dict = args.source, args.labels, None, None
    if source in presets.PRESETS:
        variants = list(presets.PRESETS[source]["variants"])
        variant = args.variant or (variants[0] if len(variants) == 1 else None)
        if variant is None:
            raise ValueError(f"{source} exists for {variants}: choose one with --variant.")
        info = weights.weights_info(source, variant)
        expected = info["architecture"]
        if not (args.skip_head or args.no_top):
            labels = labels or info["labels"]
        progress.say(f"registry weights {source} ({variant}): {info['url']}")
        # Downloaded (or taken from the cache) and read once, verified.
        source, state_dict = weights.registry_checkpoint(source, variant, not args.quiet)

    with progress.step(f"reading {source} ({os.path.getsize(source) / 2**20:.1f} MiB)"):
        if state_dict is None:
            state_dict = conv.read_state_dict(
                source, allow_unknown_globals=args.allow_unknown_globals
            )
        progress.say(f"      {len(state_dict)} tensors")

    with progress.step("mapping keys and building the Keras model"):
        activation = (
            None if args.classifier_activation.lower() == "none" else args.classifier_activation
        )
        model, report, arch = weights.convert_state_dict(
            state_dict,
            layout=None if args.layout == "auto" else args.layout,
            classes=args.classes,
            skip_head=args.skip_head,
            include_top=False if args.no_top else None,
            window_size=args.window,
            resize_method=args.resize_method,
            patch_size=args.patch,
            inflation=args.inflation,
            classifier_activation=activation,
        )
        del state_dict
        if expected is not None:
            differences = conv.architecture_differences(
                expected, arch, conv.MODEL_ARGUMENTS, ("registry", "file")
            )
            if differences:
                raise ValueError(
                    "The downloaded file is not what the registry describes: "
                    + "; ".join(differences)
                )
        shown = {k: arch[k] for k in (*conv.MODEL_ARGUMENTS, "classes")}
        progress.say(
            f"      architecture: {shown} (window from {arch['window_source']})"
            if "window_source" in arch
            else f"      architecture: {shown}"
        )
        for line in report.summary().splitlines():
            progress.say("      " + line)

    classes = conv.model_architecture(model)["classes"]
    names = None
    if labels:
        names = load_labels(labels)
        if classes is None or len(names) != classes:
            raise ValueError(
                f"--labels {labels} has {len(names)} names, the model {classes} classes."
            )

    with progress.step(f"writing {kind.replace('_', ' ')} {args.output}"):
        if kind == "saved_model":
            with atomic.atomic_path(destination, overwrite=args.overwrite) as tmp:
                export_saved_model(model, tmp)
                if names:
                    _write_labels(names, tmp, kind)
        else:
            with atomic.atomic_path(destination) as tmp:
                (model.save if kind == "keras" else model.save_weights)(tmp)
            if names:
                progress.say(f"      labels: {_write_labels(names, destination, kind)}")
    progress.say(f"wrote {args.output} in {time.perf_counter() - progress.started:.2f} s")
    return destination


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        convert(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
