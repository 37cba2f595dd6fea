"""Video files -> sharded TFRecords of `tf.train.SequenceExample`s (one per video).

```
keras-vswin write-shards --videos train.csv --output gs://bucket/k400 --name train \
    --num-shards 1024 --workers 16
keras-vswin write-shards --video-dir videos/ --output shards/ --name demo --num-shards 8
keras-vswin write-shards --videos train.csv --output gs://bucket/k400 --name train \
    --num-shards 4096 --runner DataflowRunner --project P --region R --temp_location gs://...
```

Input is either a CSV with a header holding a `path` column and an optional `label` column
(integer class indices or class names), or a folder with one sub-folder of videos per class.
`--labels` (a text file with one class name per line, or a known label set such as
`kinetics400`) fixes the class order; without it, text labels and class folders are indexed in
sorted order and integer labels are used as they are.

Each video is decoded with PyAV (anything FFmpeg reads), kept at its native frame rate unless
`--fps` is given, scaled so that its shorter side is `--short-side` pixels (default 256), and
stored as one JPEG per frame with the keys documented in `keras_vswin.data.schema`. Videos are
ordered by a seeded hash of their path as listed (`--seed`), then dealt to the shards round-robin:
shards mix classes, their sizes differ by at most one, and a shard's content and order follow
from the set of listed videos alone (not from the list's order), so every re-run, on any
executor, writes the same bytes. `--no-shuffle` deals the videos in list order instead.

Executors (`--runner`): `local` (default) writes the shards on a process pool on this machine;
any Apache Beam runner (`FnApiRunner`, `DirectRunner`, `DataflowRunner`, `FlinkRunner`,
`SparkRunner`, ...; needs the `[beam]` extra) writes them on that runner, with every other
argument passed to Beam as a pipeline option (see `keras_vswin.data.beam_shards`). Both run the
same per-shard function (`write_shard`, which calls `encode_video` for each video), so they write
byte-identical shards.

Robustness:
- An unreadable, truncated or empty video is skipped and listed, with its error, under
  `skipped` in the manifest; the other videos are written and the exit status is 1.
- A shard is written to a temporary name and renamed when complete (`keras_vswin.atomic`): a
  file with the final name is always a complete shard. A per-shard record in `.<name>.progress/`
  lets a re-run after a crash, kill or failed pipeline keep the finished shards and write only
  the missing ones (`--overwrite` rewrites everything). Do not run two writers on the same
  output and name at the same time.
- `<name>.manifest.json` lists the settings, the label map, per-shard files and counts, totals and
  the skipped videos.

Paths may be local or any `tf.io.gfile` URL (e.g. `gs://`), for the output and the videos.

Test hook: the environment variable `KERAS_VSWIN_WRITER_TEST_DELAY` (seconds) makes the writer
sleep after each video, so that tests can kill it mid-way.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import sys
import time

from keras_vswin import atomic

EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
LOCAL_RUNNER = "local"

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".3gp",
    ".ts",
)
TEST_DELAY_ENV = "KERAS_VSWIN_WRITER_TEST_DELAY"
BEAM_JOBS_FILE = "pending-shards.jsonl"  # in the progress folder: what a Beam run reads
MANIFEST_FORMAT = "keras_vswin.tfrecords.v1"


class InputError(ValueError):
    """The video list, folder or label file is not usable."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One input video.

    Attributes:
        path: where to read it (local path or URL).
        name: what `video/filename` stores (the path as listed, or relative to `--video-dir`).
        label_index: class index, -1 when unlabelled.
        label_text: class name ("" when unknown).
    """

    path: str
    name: str
    label_index: int
    label_text: str


@dataclasses.dataclass(frozen=True)
class WriterSettings:
    """What decides the content of a shard (a change invalidates finished shards)."""

    short_side: int | None = 256
    fps: float | None = None
    jpeg_quality: int = 90

    def as_dict(self):
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Inputs


def _join(root, path):
    if "://" in path or os.path.isabs(path) or not root:
        return path
    return root.rstrip("/") + "/" + path if "://" in root else os.path.join(root, path)


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def read_video_list(csv_path, class_names=None, root=None):
    """Reads a CSV with a `path` column and an optional `label` column.

    Args:
        csv_path: the CSV file (local or gfile URL).
        class_names: the class order (from `--labels`); None derives it from the labels.
        root: folder for relative paths; None uses the CSV's folder.

    Returns:
        `(entries, class_names)`; `class_names` is None when the labels are bare integers.
    """
    import tensorflow as tf

    if not tf.io.gfile.exists(csv_path):
        raise InputError(f"--videos {csv_path!r}: file not found")
    expected = "expected a CSV file listing the videos (a 'path' column)"
    if tf.io.gfile.isdir(csv_path):
        raise InputError(
            f"--videos {csv_path!r}: is a folder; {expected}, or pass a folder of class "
            "folders with --video-dir"
        )
    with tf.io.gfile.GFile(csv_path, "rb") as handle:
        raw = handle.read()
    if b"\0" in raw[:65536]:
        raise InputError(f"--videos {csv_path!r}: is a binary file (a video?); {expected}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"--videos {csv_path!r}: is not UTF-8 text (byte {error.start}); {expected}"
        ) from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise InputError(f"--videos {csv_path!r}: {error}; {expected}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"--videos {csv_path!r}: the file is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    if "path" not in header:
        raise InputError(
            f"--videos {csv_path!r}: the header must name a 'path' column (and optionally a "
            f"'label' column), got {rows[0]}"
        )
    path_column = header.index("path")
    label_column = header.index("label") if "label" in header else None
    if root is None:
        root = os.path.dirname(csv_path)
    listed, first_line = [], {}
    for line_number, row in enumerate(rows[1:], start=2):
        if path_column >= len(row) or not row[path_column].strip():
            raise InputError(f"--videos {csv_path!r} line {line_number}: no path")
        path = row[path_column].strip()
        if path in first_line:  # it would be written twice
            raise InputError(
                f"--videos {csv_path!r} line {line_number}: {path!r} is already listed on line "
                f"{first_line[path]}"
            )
        first_line[path] = line_number
        label = ""
        if label_column is not None and label_column < len(row):
            label = row[label_column].strip()
        listed.append((line_number, row[path_column].strip(), label))
    if not listed:
        raise InputError(f"--videos {csv_path!r}: no videos listed")

    labels = [label for _, _, label in listed if label != ""]
    integer_labels = bool(labels) and all(_parse_int(label) is not None for label in labels)
    if class_names is None and labels and not integer_labels:
        class_names = sorted(set(labels))
    lookup = {name: index for index, name in enumerate(class_names or ())}
    entries = []
    for line_number, path, label in listed:
        index, text = _resolve_label(label, class_names, lookup, integer_labels)
        if index is None:
            raise InputError(
                f"--videos {csv_path!r} line {line_number}: label {label!r} is not a class "
                f"name of --labels nor an index below {len(class_names)}"
            )
        entries.append(VideoEntry(_join(root, path), path, index, text))
    return entries, class_names


def _resolve_label(label, class_names, lookup, integer_labels):
    if label == "":
        return -1, ""
    if label in lookup:
        return lookup[label], label
    number = _parse_int(label)
    if number is None:
        return None, None
    if class_names is None:
        return (number, label) if integer_labels else (None, None)
    if 0 <= number < len(class_names):
        return number, class_names[number]
    return None, None


def scan_video_dir(video_dir, class_names=None, extensions=VIDEO_EXTENSIONS):
    """Lists `video_dir/<class>/**/<video>`; the folder name is the class.

    Returns:
        `(entries, class_names)`.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(video_dir):
        raise InputError(f"--video-dir {video_dir!r}: not a folder")
    folders = sorted(
        name.rstrip("/")
        for name in tf.io.gfile.listdir(video_dir)
        if tf.io.gfile.isdir(_join(video_dir, name.rstrip("/"))) and not name.startswith(".")
    )
    if not folders:
        raise InputError(f"--video-dir {video_dir!r}: no class folders inside")
    if class_names is None:
        class_names = folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise InputError(
            f"--video-dir {video_dir!r}: folders {unknown} are not classes of --labels"
        )
    lookup = {name: index for index, name in enumerate(class_names)}
    entries = []
    for folder in folders:
        top = _join(video_dir, folder)
        for directory, _, files in sorted(tf.io.gfile.walk(top)):
            for filename in sorted(files):
                if not filename.lower().endswith(tuple(extensions)):
                    continue
                path = _join(directory, filename)
                name = os.path.relpath(path, video_dir) if "://" not in path else path
                entries.append(VideoEntry(path, name, lookup[folder], folder))
    if not entries:
        raise InputError(
            f"--video-dir {video_dir!r}: no files ending in {', '.join(extensions)} found"
        )
    return entries, class_names


def shard_order_key(name, seed=0):
    """The seeded hash of a video's listed path that orders the videos before dealing."""
    digest = hashlib.sha256(f"{int(seed)}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big"), name


def assign_shards(entries, num_shards, seed=0):
    """Deterministic assignment: videos ordered by `shard_order_key` (seed None keeps the list
    order), then dealt round-robin; returns one list of entries per shard."""
    order = list(entries)
    if seed is not None:
        order.sort(key=lambda entry: shard_order_key(entry.name, seed))
    return [order[index::num_shards] for index in range(num_shards)]


def shard_fingerprint(entries, settings, name, num_shards, index):
    """Hash of everything that decides a shard's bytes (used to resume safely)."""
    payload = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "num_shards": num_shards,
        "index": index,
        "settings": settings.as_dict(),
        "videos": [[e.path, e.name, e.label_index, e.label_text] for e in entries],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Encoding


def encode_video(entry, settings, threads=None):
    """Decodes one video and returns `(serialized SequenceExample, number of frames)`.

    The per-video work of every executor: decode, resample, scale and JPEG-encode
    (`keras_vswin.video.iter_jpeg_frames`), then one `SequenceExample`.

    Raises:
        keras_vswin.video.VideoDecodeError: the video cannot be (completely) decoded.
    """
    from keras_vswin import video
    from keras_vswin.data import schema

    info = video.probe_video(entry.path)
    jpegs = list(
        video.iter_jpeg_frames(
            entry.path,
            quality=settings.jpeg_quality,
            fps=settings.fps,
            short_side=settings.short_side,
            threads=threads,
        )
    )
    height, width = video.resized_shape(info.height, info.width, settings.short_side)
    fps = settings.fps if settings.fps else info.fps
    example = schema.make_sequence_example(
        jpegs,
        label_index=entry.label_index,
        label_text=entry.label_text,
        filename=entry.name,
        fps=fps,
        height=height,
        width=width,
        source_fps=info.fps,
        source_height=info.height,
        source_width=info.width,
    )
    # Deterministic: the context is a map, whose order otherwise varies between processes.
    return example.SerializeToString(deterministic=True), len(jpegs)


# --------------------------------------------------------------------------------------------
# Shards


def _progress_dir(output, name):
    return _join(output, f".{name}.progress")


def _marker_path(output, name, shard_file):
    return _join(_progress_dir(output, name), shard_file + ".json")


def manifest_path(output, name):
    """Where the manifest of `name` lives: `<output>/<name>.manifest.json`."""
    return _join(output, f"{name}.manifest.json")


def _read_json(path):
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            return json.load(handle)
    except (tf.errors.NotFoundError, json.JSONDecodeError, OSError):
        return None


def finished_shard(output, name, shard_file, fingerprint):
    """The progress record of a complete shard with this fingerprint, else None."""
    import tensorflow as tf

    if not tf.io.gfile.exists(_join(output, shard_file)):
        return None
    marker = _read_json(_marker_path(output, name, shard_file))
    if marker is None or marker.get("fingerprint") != fingerprint:
        return None
    return marker


def remove_stale_temporaries(output, shard_file):
    """Removes the temporaries of `shard_file` that killed writers left (before a run)."""
    import tensorflow as tf

    stem = shard_file[: -len(".tfrecord")] if shard_file.endswith(".tfrecord") else shard_file
    for stale in tf.io.gfile.glob(_join(output, f".{stem}{atomic.TEMPORARY_MARK}*")):
        tf.io.gfile.remove(stale)


def write_shard(job, progress=None):
    """Writes one shard; returns its progress record (a dict).

    Every executor runs this (a local worker process or a Beam worker). It is idempotent: an
    attempt writes a temporary of its own and renames it onto the final name, so a retried or
    duplicated attempt leaves the same complete file.
    """
    import tensorflow as tf

    from keras_vswin.video import VideoDecodeError

    output, name, shard_file = job["output"], job["name"], job["file"]
    settings = WriterSettings(**job["settings"])
    final = _join(output, shard_file)
    temporary = atomic.temporary_name(final)
    delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
    started = time.time()
    num_videos = num_frames = 0
    label_counts = {}
    skipped = []
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for entry_fields in job["entries"]:
                entry = VideoEntry(**entry_fields)
                try:
                    record, frames = encode_video(entry, settings, threads=job["threads"])
                except VideoDecodeError as error:
                    skipped.append(_skip_record(entry, job["index"], error.reason))
                except Exception as error:  # one bad file must not stop the job
                    skipped.append(
                        _skip_record(entry, job["index"], f"{type(error).__name__}: {error}")
                    )
                else:
                    writer.write(record)
                    num_videos += 1
                    num_frames += frames
                    key = str(entry.label_index)
                    label_counts[key] = label_counts.get(key, 0) + 1
                if delay:
                    time.sleep(delay)
                if progress is not None:
                    progress(1)
    except BaseException:  # a failed attempt leaves nothing behind (a retry starts over)
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise
    marker = {
        "file": shard_file,
        "index": job["index"],
        "fingerprint": job["fingerprint"],
        "num_videos": num_videos,
        "num_frames": num_frames,
        "label_counts": label_counts,
        "skipped": skipped,
        "seconds": round(time.time() - started, 3),
    }
    # The record goes first: a shard under its final name always has one.
    atomic.write_json(_marker_path(output, name, shard_file), marker)
    atomic.move_into_place(temporary, final)
    return marker


def _skip_record(entry, shard_index, reason):
    return {
        "path": entry.path,
        "name": entry.name,
        "label_index": entry.label_index,
        "label_text": entry.label_text,
        "shard": shard_index,
        "error": reason,
    }


_WORKER_QUEUE = None


def _init_worker(queue):
    global _WORKER_QUEUE
    _WORKER_QUEUE = queue
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _worker_write_shard(job):
    queue = _WORKER_QUEUE
    return write_shard(job, progress=(lambda n: queue.put(n)) if queue is not None else None)


def write_shards(
    entries,
    output,
    name,
    num_shards,
    settings=None,
    workers=1,
    seed=0,
    class_names=None,
    overwrite=False,
    show_progress=True,
    log=print,
    runner=LOCAL_RUNNER,
    pipeline_args=(),
):
    """Writes all shards (resuming finished ones) and the manifest; returns the manifest dict.

    Args:
        runner: `"local"` (a pool of `workers` processes) or the name of an Apache Beam runner,
            which then gets `pipeline_args` (e.g. `["--direct_num_workers=2"]`) as its pipeline
            options; `workers` is for the local runner only.

    Raises:
        InputError: bad arguments.
        BeamPipelineError: the Beam pipeline did not finish (re-running resumes).
        ImportError: a Beam runner without the `[beam]` extra installed.
    """
    import tensorflow as tf
    from tqdm import tqdm

    from keras_vswin.data import schema

    settings = settings or WriterSettings()
    if num_shards < 1:
        raise InputError(f"--num-shards must be at least 1, got {num_shards}")
    beam = None
    if runner != LOCAL_RUNNER:
        from keras_vswin.data import beam_shards as beam  # the clear [beam] error comes first

        beam.check_runner(runner, pipeline_args)
    started = time.time()
    try:
        tf.io.gfile.makedirs(output)
        tf.io.gfile.makedirs(_progress_dir(output, name))
    except (tf.errors.OpError, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        raise InputError(f"--output {output!r}: cannot create the folder ({message})") from error
    assignment = assign_shards(entries, num_shards, seed)
    records, jobs = {}, []
    for index, shard_entries in enumerate(assignment):
        shard_file = schema.shard_filename(name, index, num_shards)
        fingerprint = shard_fingerprint(shard_entries, settings, name, num_shards, index)
        marker = None if overwrite else finished_shard(output, name, shard_file, fingerprint)
        if marker is not None:
            marker["reused"] = True
            records[index] = marker
            continue
        remove_stale_temporaries(output, shard_file)
        jobs.append(
            {
                "output": output,
                "name": name,
                "file": shard_file,
                "index": index,
                "fingerprint": fingerprint,
                "settings": settings.as_dict(),
                "entries": [dataclasses.asdict(entry) for entry in shard_entries],
                "threads": 1,
            }
        )
    if records:
        log(f"resuming: {len(records)} of {num_shards} shard(s) already complete")
    context = manifest_context(
        name, num_shards, settings, seed, class_names, entries, output, runner
    )
    if beam is not None:
        return _run_beam(beam, jobs, records, context, runner, pipeline_args, started, log)

    pending_videos = sum(len(job["entries"]) for job in jobs)
    workers = max(1, min(int(workers or 1), len(jobs) or 1))
    for job in jobs:  # one process per core: FFmpeg's own threads only for a single worker
        job["threads"] = 1 if workers > 1 else None
    bar = tqdm(
        total=len(entries),
        initial=len(entries) - pending_videos,
        unit="video",
        desc=name,
        disable=not show_progress,
        file=sys.stderr,
    )
    try:
        if workers == 1:
            for job in jobs:
                records[job["index"]] = write_shard(job, progress=bar.update)
        else:
            records.update(_run_pool(jobs, workers, bar))
    finally:
        bar.close()
    skipped = [item for index in sorted(records) for item in records[index]["skipped"]]
    manifest = build_manifest(context, records, skipped, time.time() - started)
    atomic.write_json(manifest_path(output, name), manifest)
    return manifest


class BeamPipelineError(RuntimeError):
    """A Beam pipeline of the writer failed or was cancelled."""


def _run_beam(beam, jobs, reused, context, runner, pipeline_args, started, log):
    output, name = context["output"], context["name"]
    jobs_file = _join(_progress_dir(output, name), BEAM_JOBS_FILE)
    atomic.write_text(jobs_file, "".join(json.dumps(job) + "\n" for job in jobs))
    reused_files = [reused[index]["file"] for index in sorted(reused)]
    finish = functools.partial(finish_beam_manifest, context, reused_files, started)
    log(f"writing {len(jobs)} shard(s) on {runner}")
    try:
        beam.run(jobs_file, write_shard, finish, runner, pipeline_args)
    except beam.PipelineFailed as error:
        raise BeamPipelineError(
            f"the Beam pipeline on {runner} failed ({error}); the finished shards are kept: "
            "run the same command again to resume"
        ) from error
    manifest = _read_json(manifest_path(output, name))
    if manifest is None:
        raise BeamPipelineError(
            f"the Beam pipeline on {runner} finished without writing {manifest_path(output, name)}"
        )
    return manifest


def finish_beam_manifest(context, reused_files, started, records, skipped):
    """Writes the manifest of a Beam run (on a worker): this run's shard records and skipped
    videos (the pipeline's two outputs) and the records of the shards earlier runs finished."""
    output, name = context["output"], context["name"]
    records = {record["index"]: record for record in records}
    skipped = list(skipped)
    for shard_file in reused_files:
        record = _read_json(_marker_path(output, name, shard_file))
        if record is None:
            raise RuntimeError(f"the progress record of the finished shard {shard_file} is gone")
        record["reused"] = True
        records[record["index"]] = record
        skipped.extend(record["skipped"])
    missing = sorted(set(range(context["num_shards"])) - set(records))
    if missing:
        raise RuntimeError(f"no record of shard(s) {missing}")
    manifest = build_manifest(context, records, skipped, time.time() - started)
    atomic.write_json(manifest_path(output, name), manifest)
    return manifest["totals"]


def _run_pool(jobs, workers, bar):
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    try:
        progress_queue = manager.Queue()
        results = {}
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(progress_queue,),
        ) as pool:
            pending = {pool.submit(_worker_write_shard, job): job["index"] for job in jobs}
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, bar, queue_module)
                for future in done:
                    index = pending.pop(future)
                    results[index] = future.result()
            _drain(progress_queue, bar, queue_module)
        return results
    finally:
        manager.shutdown()


def _drain(progress_queue, bar, queue_module):
    while True:
        try:
            bar.update(progress_queue.get_nowait())
        except queue_module.Empty:
            return


def manifest_context(name, num_shards, settings, seed, class_names, entries, output, runner):
    """What the manifest says besides the per-shard records (small: no video list)."""
    if class_names is not None:
        label_map = {str(index): text for index, text in enumerate(class_names)}
    else:
        label_map = {str(e.label_index): e.label_text for e in entries if e.label_index >= 0}
        label_map = dict(sorted(label_map.items(), key=lambda item: int(item[0])))
    return {
        "name": name,
        "output": output,
        "num_shards": num_shards,
        "runner": runner,
        "settings": {**settings.as_dict(), "shuffle_seed": seed},
        "labels": list(class_names) if class_names is not None else None,
        "label_map": label_map,
        "videos_listed": len(entries),
    }


def build_manifest(context, records, skipped, elapsed):
    """The manifest dict (see the module docstring).

    Args:
        context: `manifest_context(...)`.
        records: `{shard index: progress record}` for every shard (reused ones carry
            `"reused": True`).
        skipped: the skip records of all shards, in any order.
        elapsed: seconds this run took.
    """
    shards, label_counts = [], {}
    for index in range(context["num_shards"]):
        record = records[index]
        shards.append(
            {
                "index": index,
                "file": record["file"],
                "num_videos": record["num_videos"],
                "num_frames": record["num_frames"],
                "label_counts": record["label_counts"],
                "seconds": record.get("seconds"),
            }
        )
        for key, count in record["label_counts"].items():
            label_counts[key] = label_counts.get(key, 0) + count
    skipped = sorted(skipped, key=lambda item: (item["shard"], item["name"]))
    written = sum(shard["num_videos"] for shard in shards)
    rewritten = [record for record in records.values() if not record.get("reused")]
    processed = sum(record["num_videos"] for record in rewritten)
    processed += sum(1 for item in skipped if not records[item["shard"]].get("reused"))
    return {
        "format": MANIFEST_FORMAT,
        "name": context["name"],
        "output": context["output"],
        "num_shards": context["num_shards"],
        "runner": context["runner"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": context["settings"],
        "num_classes": len(context["label_map"]),
        "labels": context["labels"],
        "label_map": context["label_map"],
        "label_counts": dict(sorted(label_counts.items(), key=lambda item: int(item[0]))),
        "shards": shards,
        "totals": {
            "videos_listed": context["videos_listed"],
            "videos_written": written,
            "videos_skipped": len(skipped),
            "frames": sum(shard["num_frames"] for shard in shards),
            "shards_written_this_run": len(rewritten),
            "videos_processed_this_run": processed,
            "seconds_this_run": round(elapsed, 3),
        },
        "skipped": skipped,
    }


# --------------------------------------------------------------------------------------------
# Command line


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin write-shards",
        usage="%(prog)s (--videos LIST.csv | --video-dir DIR) --output DIR --name NAME "
        "--num-shards N [options] [--runner RUNNER [Beam pipeline options]]",
        description="Decode video files and write them as sharded TFRecords of "
        "tf.train.SequenceExample (one JPEG per frame), on this machine or on Apache Beam.",
        epilog="Exit status: 0 when every video was written; 1 when some videos were skipped "
        "(listed with their errors under 'skipped' in <output>/<name>.manifest.json); 2 for "
        "bad arguments or inputs; 3 when the Beam pipeline failed. Re-running the same command "
        "after an interruption or failure keeps the finished shards.",
        allow_abbrev=False,  # Beam's options pass through: no prefix matching against ours
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--videos",
        metavar="LIST.csv",
        help="CSV with a header: a 'path' column and an optional 'label' column (class index "
        "or name). Relative paths are relative to --root, or else to the CSV's folder.",
    )
    source.add_argument(
        "--video-dir", metavar="DIR", help="folder with one sub-folder of videos per class"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder or URL")
    parser.add_argument("--name", required=True, help="shard name prefix, e.g. 'train'")
    parser.add_argument(
        "--num-shards", required=True, type=int, metavar="N", help="number of shard files"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help="parallel processes of the local runner (default: CPU count, at most one per shard)",
    )
    parser.add_argument(
        "--runner",
        default=LOCAL_RUNNER,
        metavar="RUNNER",
        help="'local' (default: a process pool here) or an Apache Beam runner: FnApiRunner, "
        "DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ... (needs "
        "the [beam] extra). Arguments this command does not know are passed to Beam as "
        "pipeline options, e.g. --direct_num_workers 2 --direct_running_mode multi_processing, "
        "or --project P --region R --temp_location gs://B/tmp --sdk_container_image IMAGE",
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=256,
        metavar="PIXELS",
        help="scale frames so that the shorter side has this length (default 256; 0 keeps "
        "the size)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="resample to this frame rate (default: keep the native rate)",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=90, metavar="Q", help="1-100 (default 90)"
    )
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="class names, one per line, in index order (or a label set name: kinetics400, "
        "kinetics600, something_something_v2)",
    )
    parser.add_argument("--root", metavar="DIR", help="base folder for relative CSV paths")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the hash that orders the videos before they are dealt to the shards "
        "(default 0)",
    )
    parser.add_argument(
        "--no-shuffle", action="store_true", help="deal the videos in list order instead"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rewrite shards that are already complete"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def main(argv=None):
    """Runs the command; returns the exit status (0 ok, 1 videos skipped, 2 bad input, 3 the
    Beam pipeline failed)."""
    parser = build_parser()
    try:
        args, pipeline_args = parser.parse_known_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.runner == LOCAL_RUNNER:
        if pipeline_args:
            return _usage(
                parser,
                f"unrecognized arguments: {' '.join(pipeline_args)} (Beam pipeline options "
                "need --runner with a Beam runner)",
            )
    elif args.workers is not None:
        return _usage(
            parser,
            "--workers is for --runner local; Beam runners take their own options (e.g. "
            "--direct_num_workers for FnApiRunner, --max_num_workers for DataflowRunner)",
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = (lambda *a, **k: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if not 1 <= args.jpeg_quality <= 100:
        return _usage(parser, f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}")
    if args.short_side < 0:
        return _usage(parser, f"--short-side must be >= 0, got {args.short_side}")
    if args.fps is not None and args.fps <= 0:
        return _usage(parser, f"--fps must be positive, got {args.fps}")
    if args.num_shards < 1:
        return _usage(parser, f"--num-shards must be >= 1, got {args.num_shards}")
    try:
        class_names = None
        if args.labels:
            from keras_vswin.preprocessing import load_labels

            class_names = list(load_labels(args.labels))
        if args.videos:
            entries, class_names = read_video_list(args.videos, class_names, args.root)
        else:
            entries, class_names = scan_video_dir(args.video_dir, class_names)
    except (InputError, ValueError) as error:
        return _usage(parser, str(error))
    if args.num_shards > len(entries):
        log(f"warning: {args.num_shards} shards for {len(entries)} videos: some will be empty")
    settings = WriterSettings(
        short_side=args.short_side or None, fps=args.fps, jpeg_quality=args.jpeg_quality
    )
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    try:
        manifest = write_shards(
            entries,
            args.output,
            args.name,
            args.num_shards,
            settings=settings,
            workers=workers,
            seed=None if args.no_shuffle else args.seed,
            class_names=class_names,
            overwrite=args.overwrite,
            show_progress=not args.quiet and sys.stderr.isatty(),
            log=log,
            runner=args.runner,
            pipeline_args=pipeline_args,
        )
    except ImportError as error:  # a Beam runner without the [beam] extra
        return _usage(parser, str(error))
    except (InputError, ValueError) as error:  # e.g. an unknown Beam runner or option value
        return _usage(parser, str(error).splitlines()[0])
    except BeamPipelineError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    totals = manifest["totals"]
    seconds = totals["seconds_this_run"]
    rate = totals["videos_processed_this_run"] / seconds if seconds else 0.0
    log(
        f"{totals['videos_written']} video(s), {totals['frames']} frames in "
        f"{args.num_shards} shard(s) under {args.output} ({seconds:.1f} s this run on "
        f"{args.runner}, {rate:.2f} videos/s); manifest: {manifest_path(args.output, args.name)}"
    )
    if manifest["skipped"]:
        print(
            f"{len(manifest['skipped'])} video(s) skipped:",
            *(f"  {item['path']}: {item['error']}" for item in manifest["skipped"]),
            sep="\n",
            file=sys.stderr,
        )
        return EXIT_SKIPPED
    return EXIT_OK


def _usage(parser, message):
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
