"""Look at TFRecord video shards: counts, label histogram, frame statistics, contact sheet.

```
keras-vswin inspect-shards shards/                  # every *.tfrecord in the folder
keras-vswin inspect-shards "shards/train-*" --contact-sheet sheet.png --clips 4 --frames 8
keras-vswin inspect-shards shards/ --json           # the statistics as JSON
keras-vswin inspect-shards shards/ --verify         # also decode every frame
```

The contact sheet has one row per video (its label and file name above it) and `--frames` evenly
spaced frames across, each scaled to fit a `--cell` box (default 128x96). Its size is
`width = 4 + frames * (cell_width + 4)` and `height = 4 + clips * (18 + cell_height + 4)`.

Shards named `{name}-{index:05d}-of-{count:05d}.tfrecord` form a set: a set with absent members
(a writer killed half way) is reported with the missing files.

Exit status: 0; 1 when some records or files are corrupt or shards of a set are missing (they are
listed); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
MARGIN = 4
CAPTION = 18
_MAX_CONSECUTIVE_ERRORS = 100


def contact_sheet_size(clips, frames, cell_width=128, cell_height=96):
    """`(width, height)` in pixels of a contact sheet."""
    width = MARGIN + frames * (cell_width + MARGIN)
    height = MARGIN + clips * (CAPTION + cell_height + MARGIN)
    return width, height


def _clean(message):
    """A TF error message without the runtime's wrapping."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = message.split("\n\t [[")[0].split(" [Op:")[0]
    return re.sub(
        r"Error in user-defined function passed to \S+ transformation with iterator: "
        r"\S+: ",
        "",
        message,
    ).strip()[:300]


def _parse_context(record, verify=False):
    import tensorflow as tf

    from keras_vswin.data import schema

    context, frames = schema.parse_sequence_example(record)
    if verify:  # decode every frame: raises on an undecodable JPEG
        sizes = tf.map_fn(
            lambda jpeg: tf.shape(tf.io.decode_jpeg(jpeg, channels=3)),
            frames,
            fn_output_signature=tf.int32,
        )
        with tf.control_dependencies([sizes]):
            frames = tf.identity(frames)
    shape = tf.cond(
        tf.size(frames) > 0,
        lambda: tf.image.extract_jpeg_shape(frames[0])[:2],
        lambda: tf.zeros([2], tf.int32),
    )
    return {
        "label": context[schema.LABEL_INDEX],
        "text": context[schema.LABEL_TEXT],
        "filename": context[schema.FILENAME],
        "fps": context[schema.FPS],
        "frames": tf.size(frames),
        "height": shape[0],
        "width": shape[1],
    }


def scan_shards(files, verify=False):
    """Reads every record's context (and with `verify` decodes every frame); returns
    `(videos, problems)` (lists of dicts)."""
    import tensorflow as tf

    videos, problems = [], []
    for path in files:
        dataset = tf.data.TFRecordDataset(path).map(
            lambda record: _parse_context(record, verify),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        iterator = iter(dataset)
        index, consecutive = 0, 0
        while consecutive < _MAX_CONSECUTIVE_ERRORS:
            try:
                item = next(iterator)
            except StopIteration:
                break
            except tf.errors.DataLossError as error:
                problems.append({"file": path, "record": index, "error": _clean(error.message)})
                break
            except tf.errors.OpError as error:
                problems.append({"file": path, "record": index, "error": _clean(error.message)})
                index += 1
                consecutive += 1
                continue
            consecutive = 0
            videos.append(
                {
                    "file": path,
                    "record": index,
                    "label": int(item["label"]),
                    "text": item["text"].numpy().decode("utf-8", "replace"),
                    "filename": item["filename"].numpy().decode("utf-8", "replace"),
                    "fps": float(item["fps"]),
                    "frames": int(item["frames"]),
                    "height": int(item["height"]),
                    "width": int(item["width"]),
                }
            )
            index += 1
    return videos, problems


def missing_shards(files):
    """Problems (as `scan_shards` lists them, `record` None) for the members of the shard sets
    in `files` (`{name}-{i:05d}-of-{n:05d}.tfrecord`) that do not exist. Members that a narrower
    glob left out of `files` but that exist are not missing."""
    import tensorflow as tf

    from keras_vswin.data import schema

    sets = {}
    for path in files:
        folder, _, base = path.rpartition("/")
        parsed = schema.parse_shard_filename(base)
        if parsed is not None:
            name, index, count = parsed
            sets.setdefault((folder, name, count), set()).add(index)
    problems = []
    for (folder, name, count), indices in sorted(sets.items()):
        absent = [
            f"{folder}/{schema.shard_filename(name, index, count)}"
            for index in range(count)
            if index not in indices
        ]
        absent = [path for path in absent if not tf.io.gfile.exists(path)]
        for path in absent:
            error = (
                f"missing: only {count - len(absent)} of the {count} shards of {name!r} exist "
                "(was the writer stopped? run it again to finish the set)"
            )
            problems.append({"file": path, "record": None, "error": error})
    return problems


def summarize(files, videos, problems):
    """Statistics dict of a scan."""
    per_file = {path: 0 for path in files}
    labels, sizes = {}, {}
    for video in videos:
        per_file[video["file"]] += 1
        key = video["label"]
        text = video["text"]
        count = labels.get(key, {"text": text, "count": 0})
        count["count"] += 1
        labels[key] = count
        size = f"{video['height']}x{video['width']}"
        sizes[size] = sizes.get(size, 0) + 1
    frames = [video["frames"] for video in videos]
    fps = [video["fps"] for video in videos if video["fps"] > 0]
    return {
        "files": len(files),
        "videos": len(videos),
        "per_file": {os.path.basename(path): count for path, count in per_file.items()},
        "labels": {
            str(key): value for key, value in sorted(labels.items(), key=lambda item: item[0])
        },
        "num_labels": len(labels),
        "frames": {
            "total": sum(frames),
            "min": min(frames) if frames else 0,
            "mean": round(sum(frames) / len(frames), 2) if frames else 0.0,
            "max": max(frames) if frames else 0,
        },
        "fps": {
            "min": min(fps) if fps else 0.0,
            "mean": round(sum(fps) / len(fps), 3) if fps else 0.0,
            "max": max(fps) if fps else 0.0,
        },
        "sizes": dict(sorted(sizes.items(), key=lambda item: -item[1])),
        "problems": problems,
    }


def print_summary(stats, out=None):
    out = out or sys.stdout
    print(f"{stats['videos']} video(s) in {stats['files']} shard file(s)", file=out)
    frames = stats["frames"]
    print(
        f"frames per video: min {frames['min']}, mean {frames['mean']}, max {frames['max']} "
        f"(total {frames['total']})",
        file=out,
    )
    fps = stats["fps"]
    print(f"fps: min {fps['min']:.3g}, mean {fps['mean']:.3g}, max {fps['max']:.3g}", file=out)
    sizes = ", ".join(f"{size} ({count})" for size, count in stats["sizes"].items())
    print(f"frame sizes (height x width): {sizes}", file=out)
    print(f"labels ({stats['num_labels']}):", file=out)
    most = max((entry["count"] for entry in stats["labels"].values()), default=1)
    for key, entry in stats["labels"].items():
        bar = "#" * max(1, round(30 * entry["count"] / most))
        print(f"  {key:>5} {entry['text'][:30]:<30} {entry['count']:>7} {bar}", file=out)
    print("videos per shard:", file=out)
    for name, count in stats["per_file"].items():
        print(f"  {name}: {count}", file=out)
    if stats["problems"]:
        print(f"{len(stats['problems'])} problem(s):", file=out)
        for problem in stats["problems"]:
            where = "" if problem["record"] is None else f" record {problem['record']}"
            print(f"  {problem['file']}{where}: {problem['error']}", file=out)


def _record(path, index):
    import tensorflow as tf

    for position, record in enumerate(tf.data.TFRecordDataset(path)):
        if position == index:
            return record
    raise IndexError(index)


def write_contact_sheet(videos, output, clips=4, frames=8, cell=(128, 96)):
    """Draws `clips` videos x `frames` frames into a PNG (see the module docstring)."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image, ImageDraw

    from keras_vswin.data import sampling, schema

    chosen = videos[:clips]
    cell_width, cell_height = cell
    sheet = Image.new("RGB", contact_sheet_size(clips, frames, *cell), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for row, video in enumerate(chosen):
        top = MARGIN + row * (CAPTION + cell_height + MARGIN)
        caption = f"{video['label']} {video['text']} | {video['filename']}"
        draw.text((MARGIN, top + 3), caption[:120], fill=(235, 235, 235))
        _, jpegs = schema.parse_sequence_example(_record(video["file"], video["record"]))
        indices = sampling.uniform_sample_np(max(1, video["frames"]), frames, test_mode=True)
        for column, index in enumerate(indices):
            image = Image.fromarray(tf.io.decode_jpeg(jpegs[int(index)], channels=3).numpy())
            image.thumbnail((cell_width, cell_height))
            left = MARGIN + column * (cell_width + MARGIN) + (cell_width - image.width) // 2
            y = top + CAPTION + (cell_height - image.height) // 2
            sheet.paste(image, (left, y))
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    sheet.save(output, format="PNG")
    return np.asarray(sheet).shape


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin inspect-shards",
        description="Statistics of TFRecord video shards, and a contact sheet PNG.",
        epilog="Exit status: 0; 1 when corrupt records or files, or missing shards, were found; "
        "2 for bad arguments.",
    )
    parser.add_argument("shards", nargs="+", help="shard folder(s), glob(s) or file(s)")
    parser.add_argument("--contact-sheet", metavar="OUT.png", help="write a contact sheet")
    parser.add_argument("--clips", type=int, default=4, help="videos on the sheet (default 4)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    parser.add_argument(
        "--cell", default="128x96", metavar="WxH", help="thumbnail box (default 128x96)"
    )
    parser.add_argument(
        "--verify", action="store_true", help="decode every frame to find bad JPEGs (slow)"
    )
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    return parser


def main(argv=None):
    """Runs the command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        cell = tuple(int(v) for v in args.cell.lower().split("x"))
        if len(cell) != 2 or min(cell) < 8:
            raise ValueError
    except ValueError:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: --cell must look like 128x96", file=sys.stderr)
        return EXIT_USAGE
    if args.clips < 1 or args.frames < 1:
        print(f"{parser.prog}: error: --clips and --frames must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_vswin.data.datasets import list_shards

    try:
        files = list_shards(args.shards)
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    videos, problems = scan_shards(files, verify=args.verify)
    problems += missing_shards(files)
    stats = summarize(files, videos, problems)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_summary(stats)
    if args.contact_sheet:
        if videos:
            write_contact_sheet(videos, args.contact_sheet, args.clips, args.frames, cell)
            if not args.json:
                print(f"contact sheet: {args.contact_sheet}")
        else:
            print("no readable video: no contact sheet written", file=sys.stderr)
    return EXIT_CORRUPT if problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
