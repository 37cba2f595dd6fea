"""Classify video files with a Video Swin model or an exported SavedModel.

```
python -m keras_vswin.predict clip.mp4 other.mkv --weights kinetics400 --variant B
python -m keras_vswin.predict clip.mp4 --weights my_model.keras --labels classes.txt --json
python -m keras_vswin.predict clip.mp4 --saved-model exports/video_swin_b
```

Each file is decoded with PyAV (`keras_vswin.video`; grayscale, paletted and alpha videos become
RGB), at `--decode-short-side` pixels (256, like the official data preparation) and its native
frame rate (or `--fps`). Only the frames of the test-mode clips are kept. The views follow the
official test protocol: `--num-clips` evenly spaced clips of `--clip-len` frames every
`--frame-interval` frames (videos shorter than a clip loop, as mmaction's `SampleFrames` does),
the shorter side resized to `--crop-size` (or `--short-side`), `--num-crops` crops along the
longer side; softmax per view, averaged.

The view protocol (`keras_vswin.data.ViewProtocol`), most specific first: the flags (another
`--sampling` starts from that sampling's official protocol); the protocol of registry weights
(`keras_vswin.presets`) or the one a SavedModel exported by `keras_vswin.export_saved_model`
carries (`assets.extra/`); the clip size of a model with a fixed input shape; else the official
Kinetics protocol, 4 x 3 views of 32 frames every 2nd frame at 224 pixels (pass `--sampling
uniform` for Something-Something v2 models: 1 x 3 views of 32 segment-uniform frames).

`--saved-model` runs the SavedModel's `serve_float` signature on the same views, so both paths
give the same numbers for the same weights.

A file that cannot be decoded is reported (naming the file) and skipped; the other files are
still classified and the exit status is 1. Bad arguments or a model that cannot be loaded exit
with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_vswin.data import views

VARIANTS = ("T", "S", "B", "L")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin predict",
        description="Classify video files with the official multi-view test protocol.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files to classify")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights",
        help="a pretrained registry name (e.g. kinetics400) or a .keras, .pth or .weights.h5 file",
    )
    source.add_argument(
        "--saved-model",
        metavar="DIR",
        help="a SavedModel version folder, or its parent holding numbered versions (the latest "
        "is used)",
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="architecture for --weights names and .pth/.weights.h5 files (default B); "
        "ignored for .keras files",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="head size for .weights.h5 files (default: the number of --labels, else 400)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="class names: kinetics400, kinetics600, something_something_v2 or a text file "
        "with one name per line (default: from the SavedModel or the number of classes)",
    )
    parser.add_argument("--top", type=int, default=5, help="classes to show per video")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    protocol = views.add_arguments(parser)
    protocol.add_argument(
        "--decode-short-side",
        type=int,
        default=256,
        help="decode frames with this shorter side before the protocol's resize (0: native)",
    )
    protocol.add_argument(
        "--batch-size", type=int, default=3, help="views per model call (memory vs speed)"
    )
    return parser


# ----------------------------------------------------------------------------------------------
# Models: a Keras model or a SavedModel behind the same two methods.


class KerasClassifier:
    """A Keras classifier: `logits(views)` for normalised clips.

    `protocol` (a `ViewProtocol`, default Kinetics 4x3) and `labels` describe what the weights
    need (registry weights bring them, see `export.preset_protocol`).
    """

    def __init__(self, model, protocol=None, labels=None):
        from keras_vswin import export

        self.model = model
        self.classes = int(model.outputs[0].shape[-1])
        self.base_protocol = export.model_protocol(model, protocol)
        self.labels = labels
        self.antialias = False
        self.description = f"Keras model {model.name!r}"
        self._logits = export.logits_function(model)
        self._compiled = {}

    def protocol(self, args):
        """The protocol after the command line's flags (a fixed input shape still wins)."""
        protocol = views.from_arguments(args, self.base_protocol)
        return views.for_input_shape(protocol, self.model.input_shape[1:])

    def logits(self, clips):
        import tensorflow as tf

        key = tuple(clips.shape[1:])
        if key not in self._compiled:
            spec = tf.TensorSpec((None, *key), tf.float32)
            self._compiled[key] = tf.function(self._logits, input_signature=[spec], autograph=False)
        return self._compiled[key](clips).numpy()


class SavedModelClassifier:
    """A SavedModel with a `serve_float` signature (classifier exports of this package)."""

    def __init__(self, path):
        import tensorflow as tf

        from keras_vswin import export

        self.path = export.latest_version_dir(path)
        self.metadata, self.labels = export.read_export_metadata(self.path)
        loaded = tf.saved_model.load(self.path)
        if export.SERVE_FLOAT not in loaded.signatures:
            flavour = self.metadata.get("flavour", "unknown")
            raise ValueError(
                f"SavedModel {self.path!r} has no {export.SERVE_FLOAT!r} signature (export "
                f"flavour: {flavour}; signatures: {sorted(loaded.signatures)}): export a "
                "classifier with keras_vswin.export_saved_model to predict with it."
            )
        self._loaded = loaded
        self._serve = loaded.signatures[export.SERVE_FLOAT]
        self.classes = int(self._serve.structured_outputs["logits"].shape[-1])
        saved = self.metadata.get("protocol")
        self.base_protocol = (
            views.ViewProtocol.from_dict(saved, f"{self.path} protocol")
            if saved
            else views.KINETICS
        )
        self.antialias = bool(self.metadata.get("antialias", False))
        self.description = f"SavedModel {self.path!r}"

    def protocol(self, args):
        """The protocol after the command line's flags."""
        return views.from_arguments(args, self.base_protocol)

    def logits(self, clips):
        return self._serve(clips=clips)["logits"].numpy()


def load_classifier(args):
    """The classifier selected by `--weights`/`--saved-model`."""
    if args.saved_model:
        return SavedModelClassifier(args.saved_model)
    import keras

    import keras_vswin
    from keras_vswin import export
    from keras_vswin.preprocessing import load_labels

    weights = args.weights
    if str(weights).endswith(".keras"):
        if not os.path.exists(weights):
            raise ValueError(f"--weights {weights!r}: no such file.")
        model = keras.saving.load_model(weights, compile=False)
    else:
        variant = args.variant or "B"
        preset = export.preset_protocol(weights, variant)
        if preset is not None:
            protocol, labels = preset
            model = getattr(keras_vswin, f"VideoSwin{variant}")(weights=weights)
            return KerasClassifier(model, protocol, load_labels(labels))
        classes = args.classes
        if classes is None and args.labels and str(weights).endswith(".weights.h5"):
            classes = len(load_labels(args.labels))
        kwargs = {"classes": classes} if classes is not None else {}
        model = getattr(keras_vswin, f"VideoSwin{variant}")(weights=weights, **kwargs)
    return KerasClassifier(model)


# ----------------------------------------------------------------------------------------------
# One video.


def decode_clip_frames(path, protocol, short_side=256, fps=None):
    """Decode only the frames of the protocol's clips (at `fps`, None: the native rate).

    Returns:
        `(frames, num_frames, source_size)`: uint8 `(num_clips * clip_len, H, W, 3)` in clip
        order, the video's frame count and its `(height, width)`.

    Raises:
        keras_vswin.video.VideoDecodeError: the file cannot be (completely) decoded.
    """
    from keras_vswin import video

    info = video.probe_video(path)
    num_frames = None if fps else info.num_frames or None
    for _ in range(2):
        # The declared frame count decides the sampling; if the decoder finds a different
        # count (or none was declared), a second pass samples with the real count.
        wanted = (
            set()
            if num_frames is None
            else set(views.sample_indices(num_frames, protocol).reshape(-1).tolist())
        )
        kept, count = {}, 0
        for index, frame in enumerate(
            video.iter_frames(path, fps=fps, short_side=short_side or None)
        ):
            if index in wanted:
                kept[index] = frame
            count = index + 1
        if count == num_frames:
            indices = views.sample_indices(num_frames, protocol).reshape(-1)
            return np.stack([kept[i] for i in indices]), num_frames, (info.height, info.width)
        num_frames = count
    raise video.VideoDecodeError(path, "the frame count changed between two decoding passes")


def classify_video(
    path, classifier, protocol, labels, top=5, short_side=256, batch_size=3, fps=None
):
    """Classify one file; returns a JSON-ready dict (see `main`)."""
    import tensorflow as tf

    start = time.perf_counter()
    frames, num_frames, source_size = decode_clip_frames(path, protocol, short_side, fps)
    clips = views.spatial_views(
        tf.constant(frames[None]), protocol, antialias=classifier.antialias
    ).numpy()[0]
    probabilities = []
    for i in range(0, len(clips), batch_size):
        logits = classifier.logits(clips[i : i + batch_size])
        probabilities.append(tf.nn.softmax(logits, axis=-1).numpy())
    mean = np.concatenate(probabilities).mean(axis=0)
    order = np.argsort(-mean, kind="stable")[: min(top, len(mean))]
    return {
        "file": str(path),
        "num_frames": int(num_frames),
        "size": list(source_size),
        "clip_span": int(protocol.clip_span),
        "looped": bool(num_frames < protocol.clip_span),
        "views": int(len(clips)),
        "seconds": round(time.perf_counter() - start, 3),
        "top": [
            {
                "rank": rank + 1,
                "index": int(i),
                "label": labels[i],
                "probability": float(mean[i]),
            }
            for rank, i in enumerate(order)
        ],
    }


def format_result(result, protocol):
    """A readable table for one result (or its error)."""
    if "error" in result:
        return f"{result['file']}: ERROR: {result['error']}"
    height, width = result["size"]
    lines = [
        f"{result['file']}: {result['num_frames']} frames, {width}x{height}, "
        f"{protocol.num_clips} clip(s) x {protocol.num_crops} crop(s) of {protocol.clip_len} "
        f"frames at {protocol.crop_size}px ({result['seconds']:.1f} s)"
    ]
    if result["looped"]:
        lines.append(
            f"  note: the video is shorter than a clip ({result['clip_span']} frames): "
            "its frames were looped"
        )
    width = max(len("class"), *(len(t["label"]) for t in result["top"]))
    lines.append(f"  {'#':>2}  {'class':<{width}}  probability")
    for t in result["top"]:
        lines.append(f"  {t['rank']:>2}  {t['label']:<{width}}  {t['probability']:.4f}")
    return "\n".join(lines)


def _check_positive(parser, args):
    names = ("top", "clip_len", "frame_interval", "num_clips", "crop_size", "batch_size")
    for name in (*names, "short_side", "fps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.decode_short_side < 0:
        parser.error(f"--decode-short-side must be >= 0, got {args.decode_short_side}")


def main(argv=None):
    """Run the command; returns the exit status (0 ok, 1 a file failed, 2 usage/model error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_positive(parser, args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from keras_vswin import export
        from keras_vswin.preprocessing import load_labels

        classifier = load_classifier(args)
        protocol = classifier.protocol(args)
        fps = protocol.fps
        if args.labels:
            labels = load_labels(args.labels)
        else:
            labels = classifier.labels or export.default_labels(classifier.classes)
        if len(labels) != classifier.classes:
            raise ValueError(
                f"the labels have {len(labels)} names but the model has {classifier.classes} "
                "classes; pass --labels with the model's label set"
            )
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from keras_vswin.video import VideoDecodeError

    results, failed = [], 0
    for path in args.videos:
        try:
            result = classify_video(
                path,
                classifier,
                protocol,
                labels,
                top=args.top,
                short_side=args.decode_short_side,
                batch_size=args.batch_size,
                fps=fps,
            )
        except Exception as error:  # one bad file must not stop the others
            failed += 1
            if isinstance(error, VideoDecodeError):
                message = error.reason
            else:
                message = f"{type(error).__name__}: {error}"
            result = {"file": str(path), "error": message}
            print(f"error: cannot classify {str(path)!r}: {message}", file=sys.stderr)
        results.append(result)
        if not args.json:
            print(format_result(result, protocol), flush=True)
    if args.json:
        document = {
            "model": classifier.description,
            "protocol": protocol.to_dict(),
            "fps": fps,
            "results": results,
        }
        print(json.dumps(document, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
