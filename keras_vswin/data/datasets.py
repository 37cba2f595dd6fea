"""tf.data pipelines from TFRecord shards to `(clips, labels)` batches.

```python
from keras_vswin import data

train = data.train_dataset("shards/train-*.tfrecord", batch_size=8, num_classes=400)
clips, labels = next(iter(train))      # (8, 32, 224, 224, 3) uint8, (8, 400) float32
val = data.eval_dataset("shards/val-*", batch_size=8, num_classes=400)
test = data.test_dataset("shards/val-*", batch_size=1, num_classes=400)  # (1, 12, 32, 224, 224, 3)
model = keras_vswin.preprocessing.with_clip_normalization(keras_vswin.VideoSwinT(...))
```

Clips are RGB 0-255 uint8 by default: the model normalises them on the accelerator with a
`keras_vswin.preprocessing.ClipNormalization` first layer (4x less host memory traffic and
host-to-device transfer than float32). `normalize=True` gives float32 clips normalised with the
model's mean/std (`keras_vswin.preprocessing.MEAN_RGB`, `STD_RGB`) for a model without it.

How a shard is read: the shard files are listed, sharded per input pipeline
(`tf.distribute.InputContext`), shuffled (training) and read `cycle_length` at a time by an
interleave. Within a file, records go through a seeded shuffle buffer (training), are parsed with
`tf.io.parse_single_sequence_example`, the frame indices of the clip are computed
(`keras_vswin.data.sampling`) and only those frames' JPEGs are decoded, each distinct frame once.
In training the RandomResizedCrop box is drawn from the stored frame size (the shard context)
before decoding, `tf.image.decode_and_crop_jpeg` decodes just that box (the same for every
frame), then one bilinear resize per frame, the flip, and the clip stays uint8. Evaluation
decodes only the centre crop when the frames already have the protocol's short side; multi-view
testing decodes and resizes each frame once for all its crops.

To feed more accelerators than one host's cores can, run the same pipeline on other machines
with tf.data service (`from_data_service`).

Randomness is stateless: every shard visit gets a seed from `seed` and every record a seed derived
from it, so with `deterministic=True` and a `seed` the batches are reproducible, whatever the
parallelism.

Corrupt data (a damaged or truncated shard, a record that is not a SequenceExample, a JPEG that
does not decode) never yields garbage. By default the pipeline raises
`tf.errors.InvalidArgumentError` whose message names the shard and says what is wrong (the
original decoding error is logged just before). So does a label outside `[0, num_classes)`
(naming the shard, the video and the label). With `skip_corrupt=True` (or a `CorruptRecords`
instance) the bad records are dropped, logged and counted.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading

import tensorflow as tf

from keras_vswin.data import augment, sampling, schema
from keras_vswin.data import views as view_protocol
from keras_vswin.data.views import KINETICS, KINETICS_VALIDATION, ViewProtocol, normalize
from keras_vswin.preprocessing import MEAN_RGB, STD_RGB

AUTOTUNE = tf.data.AUTOTUNE
_LOG = logging.getLogger("keras_vswin.data")
_RECORD_OVERHEAD = 16  # TFRecord framing: length (8) + length CRC (4) + data CRC (4)

__all__ = [
    "CorruptRecords",
    "distribute_dataset",
    "eval_dataset",
    "from_data_service",
    "list_shards",
    "normalize",
    "test_dataset",
    "train_dataset",
]


# --------------------------------------------------------------------------------------------
# Files


def list_shards(file_pattern):
    """Sorted shard files for a glob, a folder (its `*.tfrecord` files), a file, or a list of
    these (partial `.tmp-` files, JSON files and hidden files are left out). Raises `ValueError`
    when nothing matches."""
    patterns = [file_pattern] if isinstance(file_pattern, str | bytes) else list(file_pattern)
    files = []
    for pattern in patterns:
        pattern = pattern.decode() if isinstance(pattern, bytes) else str(pattern)
        if tf.io.gfile.isdir(pattern):
            pattern = pattern.rstrip("/") + "/*" + schema.SHARD_SUFFIX
        files.extend(m for m in tf.io.gfile.glob(pattern) if _is_shard(m))
    files = sorted(set(files))
    if not files:
        raise ValueError(f"file_pattern={file_pattern!r} matches no shard files")
    return files


def _is_shard(path):
    """Skips what a writer leaves next to shards: partial `.tmp-*` files, the manifest, hidden
    progress records and folders."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith(".") or ".tmp-" in name or name.endswith(".json"):
        return False
    return not tf.io.gfile.isdir(path)


def _file_sizes(files):
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(files))) as pool:
        return list(pool.map(lambda f: int(tf.io.gfile.stat(f).length), files))


# --------------------------------------------------------------------------------------------
# Corrupt records


class CorruptRecords:
    """Counts what `skip_corrupt` dropped. Pass an instance as `skip_corrupt=` to read it.

    Attributes:
        records: records that did not parse or decode.
        damaged_files: shards whose end could not be read (truncated or corrupted framing),
            with the number of records read before the damage.
        bad_labels: `(shard, video, label)` of records whose label is outside
            `[0, num_classes)`.
        by_file: `{shard: number of problems}`.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.records = 0
        self.damaged_files = []
        self.bad_labels = []
        self.by_file = {}

    @property
    def total(self):
        """Bad records, records with bad labels, damaged shard tails (each counted once)."""
        return self.records + len(self.bad_labels) + len(self.damaged_files)

    def _report_label(self, shard, video, label):
        shard = shard.numpy().decode("utf-8", "replace")
        video, label = video.numpy().decode("utf-8", "replace"), int(label.numpy())
        with self._lock:
            self.bad_labels.append((shard, video, label))
            self.by_file[shard] = self.by_file.get(shard, 0) + 1
        _LOG.warning("skipped video %s of %s: label %d is outside the classes", video, shard, label)
        return True

    def _report(self, filename, read, survivors, bytes_read, size):
        filename = filename.numpy().decode("utf-8", "replace")
        read, survivors = int(read.numpy()), int(survivors.numpy())
        bytes_read, size = int(bytes_read.numpy()), int(size.numpy())
        bad = read - survivors
        truncated = bytes_read != size
        with self._lock:
            self.records += bad
            self.by_file[filename] = self.by_file.get(filename, 0) + bad + int(truncated)
            if truncated:
                self.damaged_files.append((filename, read))
        if bad:
            _LOG.warning("skipped %d corrupt record(s) of %d in %s", bad, read, filename)
        if truncated:
            _LOG.warning(
                "%s is damaged or truncated after record %d (byte %d of %d); skipped the rest",
                filename,
                read,
                bytes_read,
                size,
            )
        return True

    def __repr__(self):
        return (
            f"CorruptRecords(records={self.records}, bad_labels={len(self.bad_labels)}, "
            f"damaged_files={len(self.damaged_files)})"
        )


def _corrupt_message(filename, read, survivors, bytes_read, size):
    as_text = tf.strings.as_string
    truncated = tf.strings.join(
        [
            "the file is damaged or truncated after record ",
            as_text(read),
            " (read ",
            as_text(bytes_read),
            " of ",
            as_text(size),
            " bytes); ",
        ]
    )
    bad = tf.strings.join(
        [
            as_text(read - survivors),
            " of ",
            as_text(read),
            " record(s) could not be parsed or decoded (not a SequenceExample, or an "
            "undecodable JPEG; the decoding error is logged above); ",
        ]
    )
    return tf.strings.join(
        [
            "keras_vswin.data: corrupt TFRecord shard ",
            filename,
            ": ",
            tf.where(bytes_read != size, truncated, ""),
            tf.where(survivors != read, bad, ""),
            "pass skip_corrupt=True to skip corrupt records",
        ]
    )


def _read_shard(filename, size, file_seed, decode, placeholder, config):
    """One shard -> decoded elements, with the bookkeeping that catches corrupt data.

    A sentinel follows the records. A scan counts the records and bytes the reader delivered; the
    decoded stream drops failures (`ignore_errors`), a second scan counts survivors, and at the
    sentinel a shortfall (bytes < file size: damaged file; survivors < records: bad records)
    raises with the file name or is reported to the `CorruptRecords`.
    """
    records = tf.data.TFRecordDataset(filename)
    if config["shuffle_buffer"] > 1:
        # int64: with a global seed set, tf.data mixes the op seed with it as int64.
        records = records.shuffle(config["shuffle_buffer"], seed=tf.cast(file_seed[0], tf.int64))
    records = records.map(lambda record: (record, False))
    sentinel = tf.data.Dataset.from_tensors((tf.constant(b""), True))
    stream = records.concatenate(sentinel)

    def count_read(state, item):
        record, is_sentinel = item
        read, bytes_read = state
        step = tf.where(is_sentinel, tf.constant(0, tf.int64), 1)
        length = tf.cast(tf.strings.length(record), tf.int64) + _RECORD_OVERHEAD
        new_state = (read + step, bytes_read + step * length)
        return new_state, (record, is_sentinel, read, new_state[0], new_state[1])

    zero = tf.constant(0, tf.int64)
    stream = stream.scan((zero, zero), count_read)

    def decode_item(record, is_sentinel, position, read, bytes_read):
        seed = tf.random.experimental.stateless_fold_in(file_seed, position)
        name = tf.strings.join([filename, ":record@", tf.strings.as_string(position)])
        element = tf.cond(is_sentinel, placeholder, lambda: decode(record, seed, name))
        return element, is_sentinel, read, bytes_read

    stream = stream.map(
        decode_item, num_parallel_calls=config["parallel_decode"], deterministic=True
    )
    stream = stream.ignore_errors(log_warning=True)

    def count_survivors(survivors, item):
        element, is_sentinel, read, bytes_read = item
        survivors = survivors + tf.where(is_sentinel, tf.constant(0, tf.int64), 1)
        return survivors, (element, is_sentinel, read, bytes_read, survivors)

    stream = stream.scan(zero, count_survivors)
    size = tf.cast(size, tf.int64)
    counter = config["counter"]
    # On tf.data service workers there is no Python to count with: skip and log there.
    log_only = config.get("skip_corrupt_on_workers", False)

    def check(element, is_sentinel, read, bytes_read, survivors):
        problem = is_sentinel & ((bytes_read != size) | (survivors != read))
        if log_only:
            guard = tf.cond(
                problem,
                lambda: _log_corrupt(filename, read, survivors, bytes_read, size),
                lambda: tf.constant(True),
            )
        elif counter is None:
            message = _corrupt_message(filename, read, survivors, bytes_read, size)
            guard = tf.debugging.Assert(tf.logical_not(problem), [message], summarize=1)
        else:
            guard = tf.cond(
                problem,
                lambda: tf.py_function(
                    counter._report, [filename, read, survivors, bytes_read, size], tf.bool
                ),
                lambda: tf.constant(True),
            )
        with tf.control_dependencies([guard]):
            return tf.identity(is_sentinel), element

    stream = stream.map(check)
    stream = stream.filter(lambda is_sentinel, element: tf.logical_not(is_sentinel))
    return _check_labels(stream.map(lambda is_sentinel, element: element), filename, config)


def _check_labels(elements, filename, config):
    """Fails on a label outside `[0, num_classes)` (one_hot would make it an all-zero target),
    naming the shard, the video and the label; with `skip_corrupt` drops and counts it."""
    num_classes, counter = config["num_classes"], config["counter"]

    def valid(element):
        label = element["label"]
        return (label >= 0) & (label < num_classes) if num_classes else label >= 0

    if counter is not None:

        def keep(element):
            ok = valid(element)
            report = [filename, element["filename"], element["label"]]
            reported = tf.cond(
                ok,
                lambda: tf.constant(True),
                lambda: tf.py_function(counter._report_label, report, tf.bool),
            )
            with tf.control_dependencies([reported]):
                return tf.identity(ok)

        return elements.filter(keep)

    def assert_valid(element):
        ok = valid(element)

        def fail():  # the message is built only for a bad label
            message = tf.strings.join(
                [
                    "keras_vswin.data: shard ",
                    filename,
                    ", video ",
                    element["filename"],
                    ": label ",
                    tf.strings.as_string(element["label"]),
                    f" is outside [0, {num_classes or 'inf'})",
                    tf.where(element["label"] == -1, " (-1: the video has no label)", ""),
                    "; fix the shards (or num_classes), or pass skip_corrupt=True to skip such "
                    "records",
                ]
            )
            with tf.control_dependencies([tf.debugging.Assert(ok, [message], summarize=1)]):
                return tf.identity(ok)

        checked = tf.cond(ok, lambda: ok, fail)
        with tf.control_dependencies([checked]):
            return {key: tf.identity(value) for key, value in element.items()}

    return elements.map(assert_valid)


def _log_corrupt(filename, read, survivors, bytes_read, size):
    message = tf.strings.join(
        [
            "keras_vswin.data: skipped corrupt data in ",
            filename,
            ": ",
            tf.strings.as_string(read - survivors),
            " bad record(s) of ",
            tf.strings.as_string(read),
            tf.where(bytes_read != size, ", and the file is damaged after the last one", ""),
        ]
    )
    with tf.control_dependencies([tf.print(message, output_stream=sys.stderr)]):
        return tf.constant(True)


def _worker_random_seeds():
    """An endless dataset of `(2,)` int64 stateless seeds from a base drawn when the pipeline
    starts on the machine that runs it: every tf.data service worker gets its own stream, whatever
    the seeds (or global seed) of the machine that built the pipeline."""
    # A raw op with seed=seed2=0 seeds itself at random when it runs (the Python random
    # functions would derive a fixed seed from a global seed, the same on every worker).
    base = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: tf.raw_ops.RandomUniformInt(
            shape=[2],
            minval=tf.constant(0, tf.int64),
            maxval=tf.constant(2**62, tf.int64),
            seed=0,
            seed2=0,
        )
    )
    return base.flat_map(
        lambda seed: tf.data.Dataset.counter().map(
            lambda step: tf.random.experimental.stateless_fold_in(seed, step)
        )
    )


def _worker_random_visits(files, sizes):
    """Endless `(filename, size, seed)` shard visits for a tf.data service worker: each pass over
    the files in an order of its own (`index_shuffle`), each visit with a seed of its own."""
    files = tf.constant(files)
    sizes = tf.constant(sizes, tf.int64)
    count = tf.constant(len(files), tf.int64)

    def visit(seed_and_step):
        seed, step = seed_and_step
        order = tf.random.experimental.stateless_fold_in(seed, step // count)
        index = tf.random.experimental.index_shuffle(step % count, order, count - 1)
        return files[index], sizes[index], tf.random.experimental.stateless_fold_in(seed, step)

    bases = _worker_random_seeds().take(1)
    return bases.flat_map(
        lambda seed: tf.data.Dataset.counter().map(lambda step: visit((seed, step)))
    )


def _files_dataset(files, input_context, training, seed, worker_random=False):
    sizes = _file_sizes(files)
    sharded = input_context is not None and input_context.num_input_pipelines > 1
    if sharded and len(files) < input_context.num_input_pipelines:
        raise ValueError(
            f"{len(files)} shard file(s) for {input_context.num_input_pipelines} input "
            "pipelines: write at least one shard per worker"
        )
    if worker_random and training:
        if sharded:  # as Dataset.shard
            step, first = input_context.num_input_pipelines, input_context.input_pipeline_id
            files, sizes = files[first::step], sizes[first::step]
        return _worker_random_visits(files, sizes)
    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    if sharded:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
        pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
        random_seed = None if seed is None else seed * 1_000_003 + pipeline_id
        seeds = tf.data.Dataset.random(seed=random_seed, rerandomize_each_iteration=True)
        seeds = seeds.batch(2, drop_remainder=True)
    else:
        seeds = tf.data.Dataset.from_tensors(tf.zeros([2], tf.int64)).repeat()
    return tf.data.Dataset.zip((dataset, seeds)).map(lambda pair, seed: (*pair, seed))


def _read_all(files, decode, placeholder, *, training, seed, input_context, config):
    worker_random = config.get("data_service") is not None
    files_ds = _files_dataset(files, input_context, training, seed, worker_random)
    cycle_length = config["cycle_length"] or 8
    cycle_length = max(1, min(cycle_length, len(files)))
    return files_ds.interleave(
        lambda filename, size, file_seed: _read_shard(
            filename, size, file_seed, decode, placeholder, config
        ),
        cycle_length=cycle_length,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=config["deterministic"],
    )


# --------------------------------------------------------------------------------------------
# Decoding


def _stored_size(context, jpeg):
    """`(height, width)` int32 of the stored frames: from the shard's context, or from the JPEG
    header of `jpeg` for shards that do not record it (DMVR-style writers may leave it out)."""
    height = tf.cast(context[schema.HEIGHT], tf.int32)
    width = tf.cast(context[schema.WIDTH], tf.int32)
    size = tf.cond(
        (height > 0) & (width > 0),
        lambda: tf.stack([height, width]),
        lambda: tf.image.extract_jpeg_shape(jpeg)[:2],
    )
    return size[0], size[1]


def _decode_unique(frames, indices, crop_window=None):
    """Decodes the JPEGs `frames[indices]`, each distinct frame once.

    Args:
        frames: 1-D string tensor, one JPEG per stored frame.
        indices: 1-D int64 frame indices (a looped short video repeats some).
        crop_window: optional `[y, x, height, width]`: only that box is decoded.

    Returns:
        `(decoded, inverse)`: `(distinct frames, h, w, 3)` uint8 and the position of every
        index in it (see `_repeat_frames`).
    """
    unique, inverse = tf.unique(indices)

    def decode_one(jpeg):
        if crop_window is None:
            return tf.io.decode_jpeg(jpeg, channels=3)
        return tf.image.decode_and_crop_jpeg(jpeg, crop_window, channels=3)

    decoded = tf.map_fn(
        decode_one,
        tf.gather(frames, unique),
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        parallel_iterations=8,
    )
    return decoded, inverse


def _repeat_frames(decoded, inverse):
    """`decoded[inverse]`: the clip's frames in order; no copy when no frame repeats."""
    repeats = tf.shape(decoded)[0] < tf.size(inverse)
    return tf.cond(repeats, lambda: tf.gather(decoded, inverse), lambda: decoded)


def _resize_uint8(frames, size):
    """One bilinear resize of uint8 frames, rounded back to uint8 (the official pipeline's
    frames are uint8 after every step)."""
    # From float32: TensorFlow's bilinear kernel runs about twice as fast on float32 as on uint8
    # input, with bitwise the same values. A bilinear mix of values in [0, 255] stays in it, so
    # no clipping is needed before the cast.
    resized = tf.image.resize(tf.cast(frames, tf.float32), size, method="bilinear")
    return tf.cast(tf.round(resized), tf.uint8)


def _sample(num_frames, config, training, seed, num_clips=1):
    if config["sampling"] == "uniform":
        indices = sampling.uniform_sample_tf(
            num_frames, config["clip_len"], test_mode=not training, seed=seed
        )
        return indices[None, :]  # one clip (test_dataset refuses more)
    return sampling.dense_sample_tf(
        num_frames,
        config["clip_len"],
        config["frame_interval"],
        num_clips=num_clips,
        test_mode=not training,
        seed=seed,
    )


def _parse(record, name):
    context, frames = schema.parse_sequence_example(record, example_name=name)
    num_frames = tf.shape(frames, out_type=tf.int64)[0]
    check = tf.debugging.assert_positive(
        num_frames, message="SequenceExample without frames (image/encoded is empty)"
    )
    with tf.control_dependencies([check]):
        frames = tf.identity(frames)
    return context, frames, num_frames


def _outputs(context, clip):
    return {
        "clip": clip,
        "label": context[schema.LABEL_INDEX],
        "filename": context[schema.FILENAME],
    }


def _placeholder(clip_shape):
    def make():
        return {
            "clip": tf.zeros(clip_shape, tf.uint8),
            "label": tf.constant(-1, tf.int64),
            "filename": tf.constant(""),
        }

    return make


def _train_decoder(config):
    clip_len, crop = config["clip_len"], config["crop_size"]
    rand_augment = config["rand_augment"]

    def decode(record, seed, name):
        context, frames, num_frames = _parse(record, name)
        seeds = tf.random.experimental.stateless_split(seed, 4)
        indices = _sample(num_frames, config, True, seeds[0])[0]
        # The box is drawn from the stored frame size before any decoding, and only the box is
        # decoded, resized once, flipped and kept uint8.
        height, width = _stored_size(context, frames[indices[0]])
        window = augment.random_resized_crop_window(
            height,
            width,
            seeds[1],
            area_range=config["area_range"],
            aspect_ratio_range=config["aspect_ratio_range"],
        )
        decoded, inverse = _decode_unique(frames, indices, window)
        clip = _resize_uint8(decoded, [crop, crop])
        if config["flip"]:
            clip = augment.flip_clip(clip, seeds[2])
        clip = _repeat_frames(clip, inverse)
        if rand_augment is not None:  # after the repeats: equalize uses the clip's histogram
            clip = rand_augment(clip, seeds[3])
            clip = tf.cast(tf.round(clip), tf.uint8)
        clip = tf.ensure_shape(clip, [clip_len, crop, crop, 3])
        return _outputs(context, clip)

    return decode, _placeholder([clip_len, crop, crop, 3])


def _eval_decoder(config):
    clip_len, crop, short_side = config["clip_len"], config["crop_size"], config["short_side"]

    def decode(record, seed, name):
        del seed
        context, frames, num_frames = _parse(record, name)
        indices = _sample(num_frames, config, False, None)[0]
        height, width = _stored_size(context, frames[indices[0]])
        already_scaled = tf.equal(tf.minimum(height, width), short_side)

        def crop_while_decoding():  # frames already have the short side: decode the crop only
            y, x = augment.centre_crop_offsets(height, width, crop)
            decoded, inverse = _decode_unique(frames, indices, tf.stack([y, x, crop, crop]))
            return _repeat_frames(decoded, inverse)

        def resize_then_crop():
            decoded, inverse = _decode_unique(frames, indices)
            shape = tf.shape(decoded)
            size = augment.short_side_size(shape[1], shape[2], short_side)
            resized = _resize_uint8(decoded, size)
            y, x = augment.centre_crop_offsets(size[0], size[1], crop)
            return _repeat_frames(resized[:, y : y + crop, x : x + crop], inverse)

        clip = tf.cond(already_scaled, crop_while_decoding, resize_then_crop)
        clip = tf.ensure_shape(clip, [clip_len, crop, crop, 3])
        return _outputs(context, clip)

    return decode, _placeholder([clip_len, crop, crop, 3])


def _test_decoder(config):
    clip_len, crop, short_side = config["clip_len"], config["crop_size"], config["short_side"]
    protocol = config["protocol"]
    views = protocol.num_views

    def decode(record, seed, name):
        del seed
        context, frames, num_frames = _parse(record, name)
        indices = tf.reshape(view_protocol.clip_indices(num_frames, protocol), [-1])
        # Every frame is decoded (and resized) once, then cut into all the crops.
        decoded, inverse = _decode_unique(frames, indices)
        shape = tf.shape(decoded)[1:3]
        size = augment.short_side_size(shape[0], shape[1], short_side)
        decoded = tf.cond(
            tf.reduce_all(tf.equal(size, shape)),
            lambda: decoded,
            lambda: _resize_uint8(decoded, size),
        )
        clips = _repeat_frames(decoded, inverse)
        return _outputs(context, view_protocol.crop_views(clips[None], protocol)[0])

    return decode, _placeholder([views, clip_len, crop, crop, 3])


# --------------------------------------------------------------------------------------------
# Batches


def _labels(label_index, config):
    if config["label_mode"] == "int":
        return tf.cast(label_index, tf.int32)
    return augment.one_hot_labels(label_index, config["num_classes"], config["label_smoothing"])


def _check_common(
    batch_size, clip_len, frame_interval, crop_size, sampling_name, label_mode, num_classes
):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if clip_len < 1 or frame_interval < 1 or crop_size < 1:
        raise ValueError(
            "clip_len, frame_interval and crop_size must be >= 1, got "
            f"{clip_len}, {frame_interval}, {crop_size}"
        )
    if sampling_name not in ("dense", "uniform"):
        raise ValueError(f"sampling must be 'dense' or 'uniform', got {sampling_name!r}")
    if label_mode not in ("one_hot", "int"):
        raise ValueError(f"label_mode must be 'one_hot' or 'int', got {label_mode!r}")
    if label_mode == "one_hot" and not num_classes:
        raise ValueError("num_classes is required for label_mode='one_hot'")


def _counter(skip_corrupt):
    if isinstance(skip_corrupt, CorruptRecords):
        return skip_corrupt
    return CorruptRecords() if skip_corrupt else None


def _per_replica_batch(batch_size, input_context):
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _options(deterministic, input_context):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    if input_context is not None:
        policy = tf.data.experimental.AutoShardPolicy.OFF  # already sharded by files
        options.experimental_distribute.auto_shard_policy = policy
    return options


def _finish(dataset, counter, deterministic, input_context):
    dataset = dataset.prefetch(AUTOTUNE).with_options(_options(deterministic, input_context))
    if counter is not None:
        try:
            dataset.corrupt_records = counter
        except AttributeError:  # pragma: no cover - depends on the tf.data class
            pass
    return dataset


def train_dataset(
    file_pattern,
    batch_size,
    *,
    num_classes=None,
    clip_len=32,
    frame_interval=2,
    sampling="dense",
    crop_size=224,
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
    flip=True,
    rand_augment=None,
    random_erasing=0.0,
    mixup=0.0,
    cutmix=0.0,
    mix_switch_prob=0.5,
    label_smoothing=0.0,
    label_mode="one_hot",
    normalize=False,
    shuffle_buffer=64,
    cycle_length=None,
    seed=None,
    deterministic=False,
    skip_corrupt=False,
    input_context=None,
    data_service=None,
):
    """Training batches, repeated forever (set `steps_per_epoch` in `fit`).

    Per video: a random clip (`sampling="dense"`: `clip_len` frames every `frame_interval`
    frames from a random offset, looping short videos; `"uniform"`: one random frame in each of
    `clip_len` equal segments, the SSv2 recipe), a RandomResizedCrop box (`area_range`,
    `aspect_ratio_range`) decoded straight from the JPEGs and resized to `crop_size`, a left-right
    flip with probability 0.5 (`flip=False` for SSv2), then optional RandAugment; per batch:
    optional normalisation, random erasing and MixUp/CutMix. Every random choice is made once per
    clip and applied to all its frames.

    Clips stay uint8 from decoding to the model (`normalize=False`, the default): the model
    normalises them on the accelerator with a `keras_vswin.preprocessing.ClipNormalization`
    first layer (`with_clip_normalization(model)`), which moves 4x fewer bytes through host
    memory and to the device than float32 clips. `normalize=True` gives float32 clips
    normalised like `keras_vswin.preprocess_input`, for a model without that layer.

    Args:
        file_pattern: shard glob, folder, file or list (see `list_shards`).
        batch_size: global batch size (divided by the replicas when `input_context` is given).
        num_classes: classes of the one-hot labels (required for `label_mode="one_hot"`).
        clip_len, frame_interval, sampling: frame sampling (Kinetics: 32, 2, "dense").
        crop_size: output height and width.
        area_range, aspect_ratio_range: RandomResizedCrop parameters.
        flip: random horizontal flip.
        rand_augment: None, `(num_ops, magnitude)` on timm's 0-10 scale (SSv2: `(4, 7)`), or an
            `augment.ClipRandAugment`.
        random_erasing: probability of erasing a box per clip (SSv2: 0.25).
        mixup, cutmix: Beta alphas (0 disables; timm's usual values are 0.8 and 1.0).
        mix_switch_prob: chance of CutMix rather than MixUp per batch when both are on.
        label_smoothing: epsilon of label smoothing (SSv2: 0.1).
        label_mode: `"one_hot"` (float32 `(batch, num_classes)`) or `"int"` (int32 `(batch,)`;
            not with MixUp/CutMix/smoothing).
        normalize: False: clips in RGB 0-255 units, uint8 (float32 when random erasing or
            MixUp/CutMix are on: their values are fractional), for a model with a
            `ClipNormalization` first layer; True: float32 normalised with the official mean/std.
        shuffle_buffer: records held for shuffling, spread over the files read at once.
        cycle_length: shards read at once (default 8, at most the number of shards).
        seed: int for reproducible randomness (None: different every run).
        deterministic: keep the element order fixed (slower); with `seed`, batches repeat
            exactly.
        skip_corrupt: False raises on corrupt data; True or a `CorruptRecords` drops, logs and
            counts it (also exposed as `dataset.corrupt_records`).
        input_context: a `tf.distribute.InputContext`: read only this pipeline's share of the
            files and return per-replica batches (see `distribute_dataset`).
        data_service: the address of a tf.data service dispatcher (`"grpc://host:port"`): the
            pipeline runs on the service's workers, this dataset reads their batches (see
            `from_data_service`). Every worker runs the whole pipeline with random draws of its
            own, so `seed` must be None; `skip_corrupt` records are skipped and logged by the
            workers, not counted.

    Returns:
        A `tf.data.Dataset` of `(clips, labels)`: clips `(batch, clip_len, crop_size, crop_size,
        3)`, uint8 0-255 (see `normalize`).
    """
    _check_common(
        batch_size, clip_len, frame_interval, crop_size, sampling, label_mode, num_classes
    )
    if label_mode == "int" and (mixup or cutmix or label_smoothing):
        raise ValueError("MixUp/CutMix and label smoothing need label_mode='one_hot'")
    if rand_augment is not None and not isinstance(rand_augment, augment.ClipRandAugment):
        num_ops, magnitude = rand_augment
        rand_augment = augment.ClipRandAugment(num_ops=num_ops, magnitude=magnitude)
    if data_service is not None and seed is not None:
        raise ValueError(
            "train_dataset: seed must be None with data_service: every tf.data service worker "
            "runs the whole pipeline, and one seed would make them all produce the same clips"
        )
    files = list_shards(file_pattern)
    counter = _counter(skip_corrupt)
    skip_corrupt_on_workers = data_service is not None and counter is not None
    if skip_corrupt_on_workers:
        counter = None
    cycle = max(1, min(cycle_length or 8, len(files)))
    config = {
        "clip_len": clip_len,
        "frame_interval": frame_interval,
        "sampling": sampling,
        "crop_size": crop_size,
        "area_range": tuple(area_range),
        "aspect_ratio_range": tuple(aspect_ratio_range),
        "flip": flip,
        "rand_augment": rand_augment,
        "shuffle_buffer": max(1, shuffle_buffer // cycle),
        "cycle_length": cycle,
        "deterministic": deterministic,
        "counter": counter,
        "parallel_decode": AUTOTUNE,
        "label_mode": label_mode,
        "num_classes": num_classes,
        "label_smoothing": label_smoothing,
        "data_service": data_service,
        "skip_corrupt_on_workers": skip_corrupt_on_workers,
    }
    decode, placeholder = _train_decoder(config)
    dataset = _read_all(
        files,
        decode,
        placeholder,
        training=True,
        seed=seed,
        input_context=input_context,
        config=config,
    )
    dataset = dataset.map(
        lambda element: (element["clip"], _labels(element["label"], config)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.batch(
        _per_replica_batch(batch_size, input_context),
        drop_remainder=True,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = _batch_augment(
        dataset,
        normalize=normalize,
        seed=seed,
        random_erasing=random_erasing,
        mixup=mixup,
        cutmix=cutmix,
        mix_switch_prob=mix_switch_prob,
        deterministic=deterministic,
        worker_random=data_service is not None,
    )
    if data_service is not None:
        return from_data_service(_finish(dataset, None, deterministic, input_context), data_service)
    return _finish(dataset, counter, deterministic, input_context)


def _batch_augment(
    dataset,
    *,
    normalize,
    seed,
    random_erasing,
    mixup,
    cutmix,
    mix_switch_prob,
    deterministic,
    worker_random=False,
):
    """The per-batch steps of training: normalisation (`normalize=True`), random erasing and
    MixUp/CutMix. Raw clips stay uint8 unless erasing or mixing makes them fractional."""
    if not (normalize or random_erasing > 0 or mixup > 0 or cutmix > 0):
        return dataset
    if worker_random:
        batch_seeds = _worker_random_seeds()
    else:
        batch_seed = None if seed is None else seed * 1_000_003 + 17
        batch_seeds = tf.data.Dataset.random(seed=batch_seed, rerandomize_each_iteration=True)
        batch_seeds = batch_seeds.batch(2, drop_remainder=True)
    dataset = tf.data.Dataset.zip((dataset, batch_seeds))
    if normalize:
        clip_units = {}
    else:  # 0-255 units: erasing noise is drawn in normalised units, then mapped back
        clip_units = {"mean": MEAN_RGB, "std": STD_RGB}

    def batch_augment(batch, seed_pair):
        clips, labels = batch
        seeds = tf.random.experimental.stateless_split(seed_pair, 2)
        if normalize:
            clips = view_protocol.normalize(clips)
        else:
            clips = tf.cast(clips, tf.float32)
        clips = augment.random_erasing(clips, seeds[0], probability=random_erasing, **clip_units)
        clips, labels = augment.mixup_cutmix(
            clips,
            labels,
            seeds[1],
            mixup_alpha=mixup,
            cutmix_alpha=cutmix,
            switch_prob=mix_switch_prob,
        )
        return clips, labels

    return dataset.map(batch_augment, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _evaluation_dataset(
    file_pattern, batch_size, config, decoder, *, with_filenames, input_context
):
    files = list_shards(file_pattern)
    counter = config["counter"]
    decode, placeholder = decoder(config)
    dataset = _read_all(
        files,
        decode,
        placeholder,
        training=False,
        seed=None,
        input_context=input_context,
        config=config,
    )

    def outputs(element):
        labels = _labels(element["label"], config)
        if with_filenames:
            return element["clip"], labels, element["filename"]
        return element["clip"], labels

    dataset = dataset.map(outputs, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(
        _per_replica_batch(batch_size, input_context),
        drop_remainder=False,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if config["normalize"]:
        dataset = dataset.map(
            lambda clips, *rest: (view_protocol.normalize(clips), *rest),
            num_parallel_calls=AUTOTUNE,
        )
    return _finish(dataset, counter, config["deterministic"], input_context)


def eval_dataset(
    file_pattern,
    batch_size,
    *,
    num_classes=None,
    protocol=None,
    label_mode="one_hot",
    normalize=False,
    cycle_length=None,
    deterministic=True,
    skip_corrupt=False,
    with_filenames=False,
    input_context=None,
):
    """Validation batches: one pass, one deterministic centre clip and centre crop per video.

    Args:
        protocol: a `ViewProtocol` (or a dict of its fields), reduced to its single view: the
            test-mode clip with `num_clips=1` (centred in time, or segment middles for
            `sampling="uniform"`), frames scaled to `short_side` (skipped when the shards
            already have it) and centre-cropped to `crop_size`. Default `KINETICS_VALIDATION`
            (32x2 frames, short side 256, 224 crop: mmaction's validation pipeline).

        normalize: False: uint8 RGB 0-255 clips, for a model with a `ClipNormalization` first
            layer; True: float32 normalised like `keras_vswin.preprocess_input`.

    Returns:
        `(clips, labels)` or, with `with_filenames`, `(clips, labels, filenames)`; clips
        `(batch, clip_len, crop_size, crop_size, 3)` (uint8, or float32 normalised), the last
        batch possibly smaller. Other arguments as in `train_dataset`.
    """
    protocol = ViewProtocol.from_dict(protocol or KINETICS_VALIDATION, "protocol").single_view()
    return _evaluation_dataset(
        file_pattern,
        batch_size,
        _evaluation_config(
            protocol,
            batch_size,
            label_mode,
            num_classes,
            normalize,
            cycle_length,
            deterministic,
            skip_corrupt,
        ),  # fmt: skip
        _eval_decoder,
        with_filenames=with_filenames,
        input_context=input_context,
    )


def test_dataset(
    file_pattern,
    batch_size,
    *,
    num_classes=None,
    protocol=None,
    label_mode="one_hot",
    normalize=False,
    cycle_length=None,
    deterministic=True,
    skip_corrupt=False,
    with_filenames=False,
    input_context=None,
):
    """Multi-view test batches: every view of each video, for averaging softmax over views.

    Args:
        protocol: a `ViewProtocol` (or a dict of its fields); default `KINETICS`: 4 evenly
            spaced clips (test-mode dense sampling) x 3 crops (start, centre and end of the long
            side after scaling the short side to `short_side`, the official ThreeCrop).
            `SSV2`: uniform sampling, 1 clip x 3 crops.

    Returns:
        `(clips, labels)` (or with filenames), clips of shape
        `(batch, num_clips * num_crops, clip_len, crop_size, crop_size, 3)` uint8 (float32
        normalised with `normalize=True`), where view `v = clip * num_crops + crop`. A 4x3 batch
        of one 32x224x224 video is 58 MB as uint8 (231 MB as float32). Every sampled frame is
        decoded and resized once for all its crops. Other arguments as in `eval_dataset`.
    """
    protocol = ViewProtocol.from_dict(protocol or KINETICS, "protocol")
    return _evaluation_dataset(
        file_pattern,
        batch_size,
        _evaluation_config(
            protocol,
            batch_size,
            label_mode,
            num_classes,
            normalize,
            cycle_length,
            deterministic,
            skip_corrupt,
        ),  # fmt: skip
        _test_decoder,
        with_filenames=with_filenames,
        input_context=input_context,
    )


def _evaluation_config(
    protocol,
    batch_size,
    label_mode,
    num_classes,
    normalize,
    cycle_length,
    deterministic,
    skip_corrupt,
):
    """The pipeline config shared by `eval_dataset` and `test_dataset`."""
    _check_common(
        batch_size,
        protocol.clip_len,
        protocol.frame_interval,
        protocol.crop_size,
        protocol.sampling,
        label_mode,
        num_classes,
    )
    return {
        "protocol": protocol,
        "clip_len": protocol.clip_len,
        "frame_interval": protocol.frame_interval,
        "sampling": protocol.sampling,
        "crop_size": protocol.crop_size,
        "short_side": protocol.resize_to,
        "num_clips": protocol.num_clips,
        "num_crops": protocol.num_crops,
        "shuffle_buffer": 1,
        "parallel_decode": AUTOTUNE,
        "label_mode": label_mode,
        "num_classes": num_classes,
        "label_smoothing": 0.0,
        "normalize": normalize,
        "cycle_length": cycle_length or 8,
        "deterministic": deterministic,
        "counter": _counter(skip_corrupt),
    }


def from_data_service(dataset, service, *, job_name=None):
    """Runs `dataset` on a tf.data service and returns the dataset that reads its elements.

    Use it when one host's cores cannot decode as fast as its accelerators train: start a
    dispatcher and workers on other machines (each has TensorFlow and can read the shards; the
    pipeline travels as a graph, so they need no keras_vswin), then pass its address. For
    training, `train_dataset(..., data_service=address)` builds the pipeline for it (every
    worker runs all of it with its own random draws, `processing_mode="parallel_epochs"`) and
    calls this. Only uint8 clips cross the network with the default `normalize=False`.

    ```python
    # on the dispatcher machine:
    tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=5050)).join()
    # on each worker machine:
    tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
        dispatcher_address="dispatcher:5050", worker_address="worker-1:5051", port=5051)).join()
    # on the training machine:
    train = data.train_dataset("gs://bucket/train-*", 64, num_classes=400,
                               data_service="grpc://dispatcher:5050")
    ```

    Args:
        dataset: a `tf.data.Dataset` made of TensorFlow ops only (no `py_function`).
        service: the dispatcher's address, `"grpc://host:port"`.
        job_name: share one job (one stream of elements) between the trainers that pass the
            same name; None gives this dataset a job of its own.

    Returns:
        The dataset of the elements the workers produce (in no fixed order).
    """
    if not isinstance(service, str) or not service:
        raise ValueError(
            f"data_service must be a dispatcher address such as 'grpc://host:5050', got {service!r}"
        )
    distributed = dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
            service=service,
            job_name=job_name,
        )
    )
    return distributed.prefetch(AUTOTUNE)


def distribute_dataset(strategy, dataset_fn, file_pattern, global_batch_size, **kwargs):
    """`strategy.distribute_datasets_from_function` over one of the builders above.

    Each input pipeline (one per worker) reads its own subset of the shard files and produces
    per-replica batches of `global_batch_size / strategy.num_replicas_in_sync`.

    Example:
        `dist = distribute_dataset(strategy, train_dataset, "shards/train-*", 64, num_classes=400)`
    """

    def make(input_context):
        return dataset_fn(file_pattern, global_batch_size, input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(make)
