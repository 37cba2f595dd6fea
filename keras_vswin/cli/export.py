"""Export a Video Swin model as a SavedModel for TF Serving (or TF Hub-style reuse).

```
keras-vswin export model.keras --output exports --name my_model
keras-vswin export kinetics400 --variant B --output exports       # registry weights
keras-vswin export swin_tiny_patch244_window877_kinetics400_1k.pth --variant T \\
    --output exports --precision bfloat16
keras-vswin export kinetics400 --variant T --feature-vector --output exports
keras-vswin export kinetics400 --variant T --format onnx --output swin_t.onnx
keras-vswin export kinetics400 --variant T --format litert --precision float16 \\
    --input-shape 32,224,224 --output swin_t_fp16.tflite
keras-vswin export kinetics400 --variant T --format openvino --output swin_t.xml
```

SRC is a `.keras` file, a checkpoint (`.pth` or `.weights.h5`, loaded through the model
constructor's `weights=` argument, with `--variant`) or a pretrained registry name. The
SavedModel is written to `<output>/<name>/<version>/` (the next version unless `--version`),
through a temporary folder renamed when complete, so TF Serving never sees a partial export.
See `keras_vswin.export` for the signatures; `saved_model_cli show --all --dir <path>` lists
them.

`--format onnx|litert|openvino` writes that runtime's model file at `--output` instead (see
`keras_vswin.runtimes`): input a uint8 centre-view clip, output float32 logits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from keras_vswin.data import views


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin export",
        description="Export a Video Swin model as a versioned SavedModel (TF Serving layout) or "
        "an ONNX, LiteRT or OpenVINO model file (--format).",
    )
    parser.add_argument(
        "source",
        metavar="SRC",
        help=".keras file, .pth/.weights.h5 checkpoint or registry name (e.g. kinetics400)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output",
        help="base folder (TF Serving model root); for --format onnx|litert|openvino the file",
    )
    where.add_argument(
        "--collection",
        metavar="DIR",
        help="write a model collection instead: a classifier and a feature-vector export, each "
        "versioned with a model card (card.json, README.md), indexed in DIR/collection.json",
    )
    parser.add_argument(
        "--name", default=None, help="model folder name (default: the model's name)"
    )
    parser.add_argument(
        "--version", type=int, default=None, help="version number (default: the next one)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--variant",
        choices=("T", "S", "B", "L"),
        default="B",
        help="architecture for checkpoints and registry names (default B); ignored for .keras",
    )
    parser.add_argument(
        "--classes", type=int, default=None, help="head size for .weights.h5 checkpoints"
    )
    parser.add_argument(
        "--feature-vector",
        action="store_true",
        help="export pooled features (TF Hub style, float32 normalised clips in) instead of "
        "class scores",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="class names: a label set name or a text file (default: from the class count)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="top classes returned (default 5)")
    parser.add_argument(
        "--logits-layer",
        metavar="NAME",
        default=None,
        help="the layer whose output are the logits, for .keras models whose head is not a "
        "Dense layer (softmax or none) or a Dense followed by a softmax layer",
    )
    views.add_arguments(parser)
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16", "int8"),
        default="float32",
        help="bfloat16: mixed precision compute (float32 weights and outputs; saved_model); "
        "float16/int8: reduced-precision weights (litert)",
    )
    parser.add_argument("--jit", action="store_true", help="compile the model with XLA")
    parser.add_argument(
        "--format",
        choices=("saved_model", "onnx", "litert", "openvino"),
        default="saved_model",
        help="saved_model (default) or a runtime model file: onnx (dynamic shapes), litert "
        "(static shape, builtin ops; --precision float16|int8 for reduced-precision weights), "
        "openvino (IR .xml + .bin)",
    )
    parser.add_argument(
        "--input-shape",
        type=_input_shape,
        default=None,
        metavar="F,H,W",
        help="fixed input frames,height,width for onnx/openvino/litert (default: the model's; "
        "litert: the view protocol's clip length and crop size)",
    )
    parser.add_argument(
        "--antialias",
        action="store_true",
        help="low-pass filter when frames are shrunk (for clients sending large frames)",
    )
    return parser


def _input_shape(text):
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected three positive ints frames,height,width, got {text!r}"
        )
    return (*dims, 3)


def _export_runtime(args, model, protocol, labels):
    from keras_vswin.runtimes import export_runtime

    if args.collection or args.feature_vector:
        raise ValueError(f"--format {args.format} exports classifiers to --output only.")
    return export_runtime(
        model,
        args.output,
        args.format,
        input_shape=args.input_shape,
        precision=args.precision,
        protocol=protocol,
        labels=args.labels or labels,
        overwrite=args.overwrite,
    )


def load_model(source, variant="B", classes=None, feature_vector=False):
    """The Keras model named by SRC (see the module doc)."""
    import keras

    import keras_vswin

    if str(source).endswith(".keras"):
        if not os.path.exists(source):
            raise ValueError(f"SRC {source!r}: no such file.")
        return keras.saving.load_model(source, compile=False)
    kwargs = {}
    if feature_vector:
        kwargs.update(include_top=False, pooling="avg")
    elif classes is not None:
        kwargs["classes"] = classes
    builder = getattr(keras_vswin, f"VideoSwin{variant}")
    return builder(weights=source, **kwargs)


def _folder_size(path):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from keras_vswin.export import export_saved_model, preset_protocol

        start = time.perf_counter()
        model = load_model(args.source, args.variant, args.classes, args.feature_vector)
        loaded = time.perf_counter()
        name = args.name or model.name + ("_feature_vector" if args.feature_vector else "")
        # Registry weights bring their test protocol and labels; flags win.
        protocol, labels = preset_protocol(args.source, args.variant) or (views.KINETICS, None)
        if args.format != "saved_model":
            path = _export_runtime(args, model, views.from_arguments(args, protocol), labels)
            files = [path] + ([path[: -len(".xml")] + ".bin"] if args.format == "openvino" else [])
            size = sum(os.path.getsize(p) for p in files)
            print(f"Exported {path} ({size / 2**20:.1f} MiB) and its sidecar {path}.json.")
            return 0
        if args.input_shape is not None or args.precision in ("float16", "int8"):
            raise ValueError(
                "--input-shape and --precision float16|int8 apply to --format litert|onnx|openvino."
            )
        if args.collection:
            from keras_vswin.collection import write_collection

            cards = write_collection(
                model,
                args.collection,
                weights=args.source,
                variant=args.variant,
                handle=args.name,
                version=args.version,
                overwrite=args.overwrite,
                labels=args.labels or labels,
                top_k=args.top_k,
                protocol=views.from_arguments(args, protocol),
                antialias=args.antialias,
                precision=args.precision,
                jit_compile=args.jit,
            )
            for card in cards:
                print(
                    f"Exported {args.collection}/{card['handle']}/{card['version']} with its card"
                )
            return 0
        path = export_saved_model(
            model,
            args.output,
            name=name,
            version=args.version,
            overwrite=args.overwrite,
            feature_vector=args.feature_vector,
            labels=args.labels or (None if args.feature_vector else labels),
            top_k=args.top_k,
            protocol=views.from_arguments(args, protocol),
            antialias=args.antialias,
            precision=args.precision,
            jit_compile=args.jit,
            logits_layer=args.logits_layer,
        )
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    done = time.perf_counter()
    size = _folder_size(path) / 2**20
    print(
        f"Exported {path} ({size:.1f} MiB; model loaded in {loaded - start:.1f} s, exported in "
        f"{done - loaded:.1f} s).\nInspect it with: saved_model_cli show --all --dir {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
