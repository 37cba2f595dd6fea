"""`keras-vswin <command>`: every workflow of the library from one console script.

Each command is a module with `build_parser()` and `main(argv) -> exit status`; this file only
dispatches, so `keras-vswin --help` imports nothing heavy. The repo's `python -m training.train`
(and friends) call the same `main` functions.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line summary). The order is the order of `--help`.
COMMANDS = {
    "predict": ("keras_vswin.predict", "classify video files with a model or a SavedModel"),
    "convert": ("keras_vswin.cli.convert", "PyTorch checkpoint -> .keras, .weights.h5, SavedModel"),
    "export": ("keras_vswin.cli.export", "model or weights -> versioned SavedModel for serving"),
    "verify": ("keras_vswin.cli.verify", "compare converted logits with PyTorch (needs [torch])"),
    "write-shards": ("keras_vswin.data.write_shards", "video files -> TFRecord shards"),
    "inspect-shards": ("keras_vswin.data.inspect_shards", "counts, statistics, contact sheet"),
    "synthetic": ("keras_vswin.data.synthetic", "generate the synthetic moving-shapes dataset"),
    "train": ("keras_vswin.finetune.train", "fine-tune with model.fit and the paper's recipe"),
    "evaluate": ("keras_vswin.finetune.evaluate", "top-1/top-5/mean class accuracy of a run"),
}


def add_checkpoint_arguments(parser):
    """The flags of commands that read PyTorch checkpoints (convert, verify)."""
    parser.add_argument(
        "--allow-unknown-globals",
        action="store_true",
        help="read a checkpoint whose metadata references classes outside the weights (e.g. "
        "a training config object) as inert placeholders, with a warning naming them; by "
        "default such a file is refused (nothing is ever imported or executed either way)",
    )


def usage():
    width = max(map(len, COMMANDS))
    lines = [
        "usage: keras-vswin <command> [options]   (keras-vswin <command> --help for its options)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
    ]
    return "\n".join(lines)


def main(argv=None):
    """Runs `keras-vswin <command> ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from keras_vswin import __version__

        print(f"keras-vswin {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"keras-vswin: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
