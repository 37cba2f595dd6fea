"""From a resolved config to the objects of a run: data, model, optimizer, schedule.

`finetune.train` wires these into `finetune.StrategyLoop`; `finetune.evaluate` reuses the data
and label helpers. The numbers of the paper's recipe live in the config files
(`keras_vswin/finetune/configs/`), the mechanics in `keras_vswin.finetune`."""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np

from keras_vswin import finetune

# --------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class TrainingData:
    """The datasets of a run.

    Attributes:
        num_classes: classes of the labels.
        class_names: their names, in index order.
        num_train_examples: videos in the training set.
        train: `train(micro_batch_size, input_context, start_step)` -> per-replica batches of
            `(clips, one-hot labels)`, repeated forever, starting at global micro-batch
            `start_step` (the same stream for any replica count, see `synthetic_train`).
        eval: `eval(batch_size)` -> one pass of single-view `(clips, labels)`, or None.
        test: `test(batch_size)` -> one pass of multi-view `(clips (B, V, T, H, W, 3), labels)`,
            or None.
        num_eval_examples: videos of `eval` (None when unknown).
    """

    num_classes: int
    class_names: list
    num_train_examples: int
    train: object
    eval: object = None
    test: object = None
    num_eval_examples: int | None = None


def _pipeline_share(input_context):
    """`(pipelines, pipeline index, replicas fed by one pipeline)`."""
    if input_context is None:
        return 1, 0, 1
    pipelines = input_context.num_input_pipelines
    return (
        pipelines,
        input_context.input_pipeline_id,
        input_context.num_replicas_in_sync // pipelines,
    )


def _per_replica(micro_batch_size, input_context):
    if input_context is None:
        return micro_batch_size
    return input_context.get_per_replica_batch_size(micro_batch_size)


def _synthetic_clips(config, split):
    from keras_vswin.data import synthetic

    data, spec = config["data"], config["data"]["synthetic"]
    per_class = spec["train_per_class"] if split == "train" else spec["eval_per_class"]
    videos, labels = synthetic.generate_arrays(
        per_class,
        num_frames=spec["num_frames"],
        size=spec["size"],
        classes=spec["classes"],
        seed=[config["seed"], 0 if split == "train" else 1],
    )
    frames = videos[:, :: data["frame_interval"]][:, : data["clip_len"]]
    if frames.shape[1] < data["clip_len"]:
        raise ValueError(
            f"data.synthetic.num_frames={spec['num_frames']} gives {frames.shape[1]} frames with "
            f"data.frame_interval={data['frame_interval']}; data.clip_len={data['clip_len']} "
            "needs more."
        )
    return frames, labels


def _to_model_input(clips, crop_size):
    import tensorflow as tf

    from keras_vswin.data import normalize

    clips = normalize(clips)
    if clips.shape[-2] != crop_size:
        shape = tf.shape(clips)
        flat = tf.reshape(clips, tf.concat([[-1], shape[-3:]], 0))
        flat = tf.image.resize(flat, (crop_size, crop_size))
        clips = tf.reshape(flat, tf.concat([shape[:-3], [crop_size, crop_size, 3]], 0))
    return clips


def synthetic_data(config):
    """In-memory moving-shape clips (`keras_vswin.data.synthetic`), a deterministic stream.

    The training stream is one stateless seeded permutation per pass over the clips, the same
    for every replica count and process: global micro-batch `g` holds stream elements
    `[g * m, (g + 1) * m)` (`m` = micro-batch size); an input pipeline keeps elements
    `pipeline_index::pipelines` and cuts per-replica batches, so the replicas of a step
    together see exactly that micro-batch.
    """
    import tensorflow as tf

    from keras_vswin.data import synthetic

    data = config["data"]
    spec = data["synthetic"]
    names = list(spec["classes"] or synthetic.CLASSES)
    num_classes = config["model"]["num_classes"]
    if num_classes != len(names):
        raise ValueError(
            f"model.num_classes={num_classes} but the synthetic data has {len(names)} classes "
            f"({names})."
        )
    train_clips, train_labels = _synthetic_clips(config, "train")
    smoothing = data["label_smoothing"]
    crop = data["crop_size"]
    poison = spec["poison_from_step"]

    def one_hot(labels):
        labels = tf.one_hot(labels, num_classes)
        return labels * (1.0 - smoothing) + smoothing / num_classes

    def train(micro_batch_size, input_context=None, start_step=0):
        pipelines, index, replicas = _pipeline_share(input_context)
        per_replica = _per_replica(micro_batch_size, input_context)
        size = len(train_labels)

        def one_pass(number):  # a stateless permutation per pass: the same in every process
            seed = tf.stack([tf.constant(config["seed"], tf.int64), number])
            order = tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed)
            return tf.data.Dataset.from_tensor_slices(order)

        stream = tf.data.Dataset.counter().flat_map(one_pass)
        stream = stream.shard(pipelines, index).batch(per_replica, drop_remainder=True)
        stream = stream.enumerate().skip(start_step * replicas)

        def load(position, indices):
            clips = _to_model_input(tf.gather(train_clips, indices), crop)
            if poison is not None:
                step = position // replicas
                clips = tf.where(step >= poison, clips * np.nan, clips)
            return clips, one_hot(tf.gather(train_labels, indices))

        return stream.map(load).prefetch(2)

    def evaluate(batch_size, views=False):
        clips, labels = _synthetic_clips(config, "eval")
        dataset = tf.data.Dataset.from_tensor_slices((clips, labels)).batch(batch_size)

        def load(batch, labels):
            batch = _to_model_input(batch, crop)
            if views:
                batch = batch[:, None]
            return batch, tf.one_hot(labels, num_classes)

        return dataset.map(load)

    has_eval = spec["eval_per_class"] > 0
    return TrainingData(
        num_classes=num_classes,
        class_names=names,
        num_train_examples=len(train_labels),
        train=train,
        eval=evaluate if has_eval else None,
        test=(lambda batch_size: evaluate(batch_size, views=True)) if has_eval else None,
        num_eval_examples=spec["eval_per_class"] * len(names),
    )


def _manifests(pattern):
    """The `keras-vswin write-shards` manifests next to the shards of `pattern`."""
    from keras_vswin.data import list_shards

    files = list_shards(pattern)
    folders = sorted({os.path.dirname(f) for f in files})
    manifests = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*.manifest.json"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    manifests.append(json.load(handle))
            except (OSError, json.JSONDecodeError):
                continue
    return files, manifests


def count_examples(pattern):
    """Videos in the shards of `pattern`: from the writer's manifests, else by counting."""
    import tensorflow as tf

    files, manifests = _manifests(pattern)
    counts = {}
    for manifest in manifests:
        for shard in manifest.get("shards", []):
            counts[os.path.basename(shard["file"])] = shard["num_videos"]
    if all(os.path.basename(f) in counts for f in files):
        return sum(counts[os.path.basename(f)] for f in files)
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def class_names(config, num_classes):
    """Class names: `data.labels` (label set or file), the shard manifests, or `class_<i>`."""
    from keras_vswin.preprocessing import load_labels

    labels = config["data"]["labels"]
    if labels:
        names = list(load_labels(labels))
    else:
        names = None
        pattern = config["data"]["train"] or config["data"]["eval"]
        if pattern and config["data"]["source"] == "tfrecord":
            for manifest in _manifests(pattern)[1]:
                if manifest.get("labels"):
                    names = list(manifest["labels"])
                    break
        if names is None:
            names = [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"model.num_classes={num_classes} but the labels ({labels or 'shard manifest'}) name "
            f"{len(names)} classes."
        )
    return names


def view_protocol(config, split):
    """The `ViewProtocol` of `split` ("eval": validation, "test": multi-view test)."""
    from keras_vswin.data import ViewProtocol

    data = config["data"]
    return ViewProtocol(
        clip_len=data["clip_len"],
        frame_interval=data["frame_interval"],
        sampling=data["sampling"],
        crop_size=data["crop_size"],
        **data[f"{split}_views"],
    )


def tfrecord_data(config):
    """Shards written by `keras-vswin write-shards`, read with `keras_vswin.data`."""
    from keras_vswin import data as vswin_data

    data = config["data"]
    num_classes = config["model"]["num_classes"]
    clip = dict(
        clip_len=data["clip_len"],
        frame_interval=data["frame_interval"],
        sampling=data["sampling"],
        crop_size=data["crop_size"],
    )
    common = dict(num_classes=num_classes, skip_corrupt=data["skip_corrupt"], normalize=True)
    num_train = data["num_train_examples"] or count_examples(data["train"])

    def train(micro_batch_size, input_context=None, start_step=0):
        _, _, replicas = _pipeline_share(input_context)
        dataset = vswin_data.train_dataset(
            data["train"],
            micro_batch_size,
            area_range=tuple(data["area_range"]),
            aspect_ratio_range=tuple(data["aspect_ratio_range"]),
            flip=data["flip"],
            rand_augment=tuple(data["rand_augment"]) if data["rand_augment"] else None,
            random_erasing=data["random_erasing"],
            mixup=data["mixup"],
            cutmix=data["cutmix"],
            label_smoothing=data["label_smoothing"],
            shuffle_buffer=data["shuffle_buffer"],
            seed=config["seed"],
            deterministic=data["deterministic"],
            input_context=input_context,
            **clip,
            **common,
        )
        return dataset.skip(start_step * replicas) if start_step else dataset

    def evaluate(batch_size):
        return vswin_data.eval_dataset(
            data["eval"], batch_size, protocol=view_protocol(config, "eval"), **common
        )

    def test(batch_size):
        return vswin_data.test_dataset(
            data["test"] or data["eval"],
            batch_size,
            protocol=view_protocol(config, "test"),
            **common,
        )

    has_eval = bool(data["eval"])
    return TrainingData(
        num_classes=num_classes,
        class_names=class_names(config, num_classes),
        num_train_examples=num_train,
        train=train,
        eval=evaluate if has_eval else None,
        test=test if (data["test"] or has_eval) else None,
        num_eval_examples=count_examples(data["eval"]) if has_eval else None,
    )


def make_data(config):
    """The `TrainingData` of `config["data"]["source"]`."""
    if config["data"]["source"] == "synthetic":
        return synthetic_data(config)
    return tfrecord_data(config)


# --------------------------------------------------------------------------------------------
# Model


def model_arguments(config):
    """`keras_vswin.VideoSwin` arguments of `config["model"]` (no weights)."""
    from keras_vswin import VARIANTS

    spec = config["model"]
    arguments = dict(VARIANTS[spec["variant"]]) if spec["variant"] else {}
    for key in ("embed_dim", "depths", "num_heads", "drop_path_rate"):
        if spec[key] is not None:
            arguments[key] = spec[key]
    for key in ("depths", "num_heads"):
        arguments[key] = tuple(arguments[key])
    arguments.update(
        patch_size=tuple(spec["patch_size"]),
        window_size=tuple(spec["window_size"]),
        head_dropout_rate=spec["head_dropout_rate"],
        classes=spec["num_classes"],
        remat=spec["remat"],
    )
    arguments.setdefault("drop_path_rate", 0.1)
    if spec["static_shape"]:
        crop = config["data"]["crop_size"]
        arguments["input_shape"] = (config["data"]["clip_len"], crop, crop, 3)
    name = f"video_swin_{spec['variant'].lower()}" if spec["variant"] else "video_swin"
    arguments["name"] = name
    return arguments


def build_model(config, load_pretrained=True, log=print):
    """The model of `config`, initialised from `model.weights` when `load_pretrained`.

    `model.weights` may be a registry name, a Video Swin `.pth` (any layout), a 2D ImageNet
    Swin `.pth` (inflated to 3D), a `.keras` model or a `.weights.h5` file. The pretrained head
    is used only when it has `model.num_classes` classes; otherwise the model keeps a new,
    randomly initialised head (`keras_vswin.weights.load_weights(skip_head=True)`).
    """
    import keras_vswin

    model = keras_vswin.VideoSwin(**model_arguments(config))
    weights = config["model"]["weights"]
    if load_pretrained and weights:
        from keras_vswin.weights import load_weights

        options = {"resize_window": config["model"]["resize_window"]}
        if str(weights).endswith(".weights.h5"):
            load_weights(model, weights)
            log(f"initialised from {weights}")
            return model
        try:
            report = load_weights(model, weights, **options)
            log(f"initialised from {weights}")
        except ValueError as error:
            if "-class head but the model has" not in str(error):
                raise
            report = load_weights(model, weights, skip_head=True, **options)
            log(f"initialised from {weights} with a new {model.output_shape[-1]}-class head")
        if report is not None and hasattr(report, "summary"):
            log("  " + report.summary().replace("\n", "\n  "))
    return model


# --------------------------------------------------------------------------------------------
# Optimisation


@dataclasses.dataclass(frozen=True)
class Steps:
    """Step counts of a run.

    Attributes:
        updates_per_epoch: optimizer updates per epoch.
        micro_per_epoch: micro-batches per epoch (`fit`'s `steps_per_epoch`).
        total_updates: optimizer updates of the whole run.
        warmup_updates: updates of the linear warmup (may be fractional).
    """

    updates_per_epoch: int
    micro_per_epoch: int
    total_updates: int
    warmup_updates: float


def plan_steps(config, plan, num_train_examples):
    train = config["train"]
    updates = train["steps_per_epoch"] or num_train_examples // plan.global_batch_size
    if updates < 1:
        raise ValueError(
            f"train.batch_size={plan.global_batch_size} is larger than the training set "
            f"({num_train_examples} videos): lower it or set train.steps_per_epoch."
        )
    return Steps(
        updates_per_epoch=updates,
        micro_per_epoch=updates * plan.accumulation_steps,
        total_updates=updates * train["epochs"],
        warmup_updates=config["schedule"]["warmup_epochs"] * updates,
    )


def learning_rate(config, plan):
    """The peak learning rate: `optimizer.lr`, scaled linearly with the batch when
    `optimizer.scale_lr` (`lr * batch_size / optimizer.reference_batch_size`)."""
    spec = config["optimizer"]
    if not spec["scale_lr"]:
        return spec["lr"]
    return finetune.scaled_learning_rate(
        spec["lr"], plan.global_batch_size, spec["reference_batch_size"]
    )


def build_schedule(config, plan, steps):
    spec = config["schedule"]
    return finetune.WarmupCosineDecay(
        learning_rate(config, plan),
        total_steps=steps.total_updates,
        warmup_steps=steps.warmup_updates,
        warmup_ratio=spec["warmup_ratio"],
        min_lr=spec["min_lr"],
        steps_per_epoch=steps.updates_per_epoch if spec["by_epoch"] else None,
    )


def build_optimizer(config, plan, steps):
    spec = config["optimizer"]
    return finetune.ParamGroupAdamW(
        build_schedule(config, plan, steps),
        weight_decay=spec["weight_decay"],
        beta_1=spec["beta_1"],
        beta_2=spec["beta_2"],
        epsilon=spec["epsilon"],
        param_rules=finetune.recipe_param_rules(spec["backbone_lr_mult"], spec["param_groups"]),
        gradient_accumulation_steps=plan.accumulation_steps
        if plan.accumulation_steps > 1
        else None,
    )


def make_metrics(config):
    """Top-1 and top-5 accuracy (new metric objects; create them under the run's strategy)."""
    import keras

    classes = config["model"]["num_classes"]
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.TopKCategoricalAccuracy(k=min(5, classes), name="top5_accuracy"),
    ]


def compile_model(model, config, optimizer):
    """Compiles with categorical cross-entropy (labels are one-hot, smoothed by the data),
    top-1 and top-5 accuracy; `train.jit_compile` turns XLA on."""
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=make_metrics(config),
        jit_compile=config["train"]["jit_compile"],
    )
    return model
