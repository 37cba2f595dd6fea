"""A synthetic action dataset whose classes need the order of the frames: moving shapes.

```
keras-vswin synthetic --output demo_data --train-per-class 32 --eval-per-class 12
```

Classes come in pairs that are time reversals of each other: `moving_right` / `moving_left`,
`moving_down` / `moving_up`, `growing` / `shrinking`, `rotating_clockwise` /
`rotating_counterclockwise`. A video of the second class of a pair is a video of the first class
played backwards, drawn from the same distribution, so every single frame (and the unordered set
of frames) is equally likely under both classes: a model that ignores temporal order cannot beat
50% within a pair (chance is 1 / number of classes overall).

Each video: a dark random background colour with a fixed noise texture, 2 to 4 bright shapes
(discs, squares, triangles or, for rotations, clock hands) in random colours, each with its own
random position, size, speed and extent of the class's motion, and a little per-frame noise.
Moving shapes travel 60-90% of the way from one edge of the frame to the other, at any size.
Clock hands sweep 90 to 144 degrees over the top of their dial (about 10 to 2 o'clock), so the
direction of rotation shows in the direction their tips move. (From random start angles, a small
model must relate each tip's motion to its pivot; the demo's two minutes of training left that
pair at chance.)

The command writes `<output>/videos/<split>/<class>/<class>_<i>.mp4`, a CSV per split
(`<output>/<split>.csv`, columns `path,label`) and `<output>/labels.txt`, then (unless
`--no-shards`) TFRecord shards `<output>/shards/<split>-*.tfrecord` with `python -m
tfrecords.write`. `generate_arrays` gives the same videos as NumPy arrays for tests.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

CLASSES = (
    "moving_right",
    "moving_left",
    "moving_down",
    "moving_up",
    "growing",
    "shrinking",
    "rotating_clockwise",
    "rotating_counterclockwise",
)
# class -> (the forward class of its pair, whether its frames are reversed)
_PAIRS = {
    "moving_right": ("moving_right", False),
    "moving_left": ("moving_right", True),
    "moving_down": ("moving_down", False),
    "moving_up": ("moving_down", True),
    "growing": ("growing", False),
    "shrinking": ("growing", True),
    "rotating_clockwise": ("rotating_clockwise", False),
    "rotating_counterclockwise": ("rotating_clockwise", True),
}
SHAPES = ("disc", "square", "triangle")
# Shapes per video (fewest, most), all doing the class's motion: several shapes make the motion
# cue strong enough for a small transformer trained from scratch in minutes.
OBJECTS = (2, 4)
TEXTURE_NOISE = 6.0  # std of the static background texture
FRAME_NOISE = 3.0  # std of the per-frame noise


def _colours(rng):
    """A dark background and a bright shape colour (strong, consistent contrast)."""
    background = rng.integers(0, 70, size=3)
    foreground = rng.integers(150, 256, size=3)
    foreground[rng.integers(3)] = 255
    return background.astype(np.uint8), foreground.astype(np.uint8)


def _polygon(shape, centre, radius, angle=0.0):
    cy, cx = centre
    if shape == "square":
        corners = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
    elif shape == "triangle":
        corners = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    else:
        corners = [k * 2 * math.pi / 24 for k in range(24)]
    return [(cx + radius * math.cos(a + angle), cy + radius * math.sin(a + angle)) for a in corners]


def _hand(centre, length, width, angle):
    """A clock hand from `centre`, pointing at `angle` (radians, clockwise on screen)."""
    cy, cx = centre
    dx, dy = math.cos(angle), math.sin(angle)
    px, py = -dy * width / 2, dx * width / 2
    tip = (cx + dx * length, cy + dy * length)
    tail = (cx - dx * length * 0.15, cy - dy * length * 0.15)
    return [
        (tail[0] + px, tail[1] + py),
        (tip[0] + px * 0.4, tip[1] + py * 0.4),
        (tip[0] - px * 0.4, tip[1] - py * 0.4),
        (tail[0] - px, tail[1] - py),
    ]


def _forward_trajectory(kind, rng, num_frames, size):
    """Per-frame `(centre, radius, angle)` of the forward class of a pair."""
    t = np.linspace(0.0, 1.0, num_frames)
    radius = rng.uniform(0.1, 0.15) * size
    if kind in ("moving_right", "moving_down"):
        room = size - 2 * (radius + 1)  # centre positions that keep the shape inside
        travel = rng.uniform(0.6, 0.9) * room
        start = radius + 1 + rng.uniform(0, room - travel)
        along = start + travel * t
        across = np.full(num_frames, rng.uniform(radius + 1, size - radius - 1))
        if kind == "moving_right":
            centres = np.stack([across, along], axis=1)
        else:
            centres = np.stack([along, across], axis=1)
        return centres, np.full(num_frames, radius), np.full(num_frames, rng.uniform(0, math.pi))
    if kind == "growing":
        small, large = rng.uniform(0.05, 0.09) * size, rng.uniform(0.2, 0.3) * size
        radii = small + (large - small) * t
        centre = rng.uniform(large + 1, size - large - 1, size=2)
        return np.tile(centre, (num_frames, 1)), radii, np.full(num_frames, rng.uniform(0, math.pi))
    if kind == "rotating_clockwise":
        length = rng.uniform(0.25, 0.35) * size
        centre = rng.uniform(length + 1, size - length - 1, size=2)
        sweep = rng.uniform(0.5, 0.8) * math.pi
        # Centred on "up" (-pi/2 on screen) +-18 degrees: see the module docstring.
        start = -math.pi / 2 - sweep / 2 + rng.uniform(-0.1, 0.1) * math.pi
        return np.tile(centre, (num_frames, 1)), np.full(num_frames, length), start + sweep * t
    raise ValueError(f"unknown class {kind!r}")


def render_video(label, rng, num_frames=20, size=64):
    """One video of class `label` (a name of `CLASSES`): uint8 `(num_frames, size, size, 3)`."""
    from PIL import Image, ImageDraw

    if label not in _PAIRS:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    forward, reverse = _PAIRS[label]
    background, _ = _colours(rng)
    texture = rng.normal(0.0, TEXTURE_NOISE, size=(size, size, 1))
    base = np.clip(background[None, None, :] + texture, 0, 255).astype(np.uint8)
    objects = []
    for _ in range(rng.integers(OBJECTS[0], OBJECTS[1] + 1)):
        shape = "hand" if forward == "rotating_clockwise" else SHAPES[rng.integers(len(SHAPES))]
        fill = tuple(int(c) for c in _colours(rng)[1])
        objects.append((shape, fill, *_forward_trajectory(forward, rng, num_frames, size)))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        image = Image.fromarray(base)
        draw = ImageDraw.Draw(image)
        for shape, fill, centres, radii, angles in objects:
            if shape == "hand":
                width = max(4.0, 0.2 * radii[i])
                draw.polygon(_hand(centres[i], radii[i], width, angles[i]), fill=fill)
            else:
                draw.polygon(_polygon(shape, centres[i], radii[i], angles[i]), fill=fill)
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, FRAME_NOISE, size=(size, size, 1))
        frames[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames[::-1].copy() if reverse else frames


def _check_classes(classes):
    classes = tuple(CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {CLASSES}, got {classes!r}")
    return classes


def generate_arrays(per_class, num_frames=20, size=64, classes=None, seed=0):
    """Videos as arrays: `(videos uint8 (N, num_frames, size, size, 3), labels int32 (N,))`.

    Videos are ordered class by class (`per_class` each); `labels` index `classes`.
    """
    classes = _check_classes(classes)
    rng = np.random.default_rng(seed)
    videos, labels = [], []
    for index, name in enumerate(classes):
        for _ in range(per_class):
            videos.append(render_video(name, rng, num_frames, size))
            labels.append(index)
    return np.stack(videos), np.asarray(labels, np.int32)


def write_videos(
    output, splits, num_frames=20, size=64, fps=12, classes=None, seed=0, progress=True
):
    """Writes the mp4 files and the CSV lists.

    Args:
        output: the dataset folder.
        splits: `{split_name: videos_per_class}`, e.g. `{"train": 32, "eval": 12}`.
        num_frames, size, fps: video length, frame size (square) and rate.
        classes: subset of `CLASSES` (default all), in label order.
        seed: base seed; every split draws from its own stream.

    Returns:
        `{split_name: csv_path}`.
    """
    from tqdm import tqdm

    from keras_vswin import video

    classes = _check_classes(classes)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "labels.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(classes) + "\n")
    lists = {}
    total = sum(splits.values()) * len(classes)
    bar = tqdm(
        total=total, unit="video", desc="synthetic videos", disable=not progress, file=sys.stderr
    )
    for split_index, (split, per_class) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index])
        rows = []
        for name in classes:
            folder = os.path.join(output, "videos", split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                path = os.path.join(folder, f"{name}_{i:04d}.mp4")
                video.write_video(path, render_video(name, rng, num_frames, size), fps=fps)
                rows.append((os.path.relpath(path, output), name))
                bar.update(1)
        csv_path = os.path.join(output, f"{split}.csv")
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
        lists[split] = csv_path
    bar.close()
    return lists


def write_shards(output, lists, num_shards=2, workers=1, quiet=False):
    """Shards every split's CSV with `keras-vswin write-shards` (frames kept at their size).

    Returns `{split_name: shard_glob}`.
    """
    from keras_vswin.data import write_shards as write

    labels = os.path.join(output, "labels.txt")
    patterns = {}
    for split, csv_path in lists.items():
        argv = [
            "--videos", csv_path,
            "--output", os.path.join(output, "shards"),
            "--name", split,
            "--num-shards", str(num_shards),
            "--labels", labels,
            "--short-side", "0",
            "--workers", str(workers),
        ]  # fmt: skip
        if quiet:
            argv.append("--quiet")
        status = write.main(argv)
        if status != 0:
            raise RuntimeError(f"keras-vswin write-shards {' '.join(argv)} failed ({status})")
        patterns[split] = os.path.join(output, "shards", f"{split}-*.tfrecord")
    return patterns


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin synthetic",
        description="Generate the synthetic moving-shapes action dataset (mp4 files, CSV lists "
        "and TFRecord shards). Classes: " + ", ".join(CLASSES) + ".",
    )
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--train-per-class", type=int, default=32, metavar="N")
    parser.add_argument("--eval-per-class", type=int, default=12, metavar="N")
    parser.add_argument("--frames", type=int, default=20, help="frames per video (default 20)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width (even)")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument(
        "--classes", default=None, help="comma-separated subset of the classes (default all)"
    )
    parser.add_argument("--num-shards", type=int, default=2, help="shards per split")
    parser.add_argument("--workers", type=int, default=1, help="shard writer processes")
    parser.add_argument("--no-shards", action="store_true", help="write only the videos")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.size < 16 or args.size % 2:
        print("error: --size must be an even number >= 16", file=sys.stderr)
        return 2
    if args.frames < 2 or args.train_per_class < 1 or args.eval_per_class < 0:
        print("error: --frames must be >= 2 and --train-per-class >= 1", file=sys.stderr)
        return 2
    try:
        classes = _check_classes(args.classes.split(",") if args.classes else None)
    except ValueError as error:
        print(f"error: --classes: {error}", file=sys.stderr)
        return 2
    splits = {"train": args.train_per_class}
    if args.eval_per_class:
        splits["eval"] = args.eval_per_class
    lists = write_videos(args.output, splits, args.frames, args.size, args.fps, classes, args.seed)
    if not args.no_shards:
        patterns = write_shards(args.output, lists, args.num_shards, args.workers)
        for split, pattern in patterns.items():
            print(f"{split}: {pattern}")
    print(f"videos and lists under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
