"""Evaluate a fine-tuned Video Swin: top-1, top-5, mean class accuracy, single and multi-view.

```
keras-vswin evaluate --run runs/swin_t_k400          # the run's model.keras and config
keras-vswin evaluate --model model.keras --config swin_t_k400 \
    data.eval='shards/k400/val-*.tfrecord'
```

- single view: the validation shards (`data.eval`), one centre clip and centre crop per video;
- multi-view: the test shards (`data.test`, else `data.eval`), `data.test_views`:
  `num_clips` x `num_crops` views per video (Kinetics 4 x 3, SSv2 1 x 3); the softmax of every
  view is averaged, as in the official test protocol.

Writes `<output>/evaluation.json` (metrics, per-class accuracy, confusion matrices, settings)
and `<output>/confusion_matrix.png` (multi-view when available); `<output>` defaults to
`<run>/evaluation`. Exit status: 0 done, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np


def softmax(x):
    x = np.asarray(x, np.float64)
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def _as_probabilities(outputs):
    """Model outputs -> probabilities (models with a softmax head pass through)."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.min() >= 0 and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return outputs
    return softmax(outputs)


def classification_metrics(probabilities, labels, class_names=None):
    """Top-1, top-5 and mean class accuracy, per-class accuracy and the confusion matrix.

    Args:
        probabilities: `(videos, classes)` scores.
        labels: `(videos,)` true class indices.
        class_names: names for the per-class table (default `class_<i>`).

    Returns:
        A dict: `top1`, `top5` (top-k with k = `top5_k` = min(5, classes)),
        `mean_class_accuracy` (the mean of the per-class recalls over classes that have videos,
        as mmaction computes it),
        `num_videos`, `per_class` (`{name: {"accuracy", "videos"}}`) and `confusion_matrix`
        (rows: true class, columns: predicted class).
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels).astype(int)
    num_classes = probabilities.shape[1]
    names = (
        list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    )
    k = min(5, num_classes)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    predicted = order[:, 0]
    top1 = predicted == labels
    topk = (order[:, :k] == labels[:, None]).any(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class, recalls = {}, []
    for index, name in enumerate(names):
        videos = int(confusion[index].sum())
        accuracy = float(confusion[index, index] / videos) if videos else None
        if videos:
            recalls.append(accuracy)
        per_class[name] = {"accuracy": accuracy, "videos": videos}
    return {
        "top1": float(top1.mean()) if len(labels) else math.nan,
        "top5": float(topk.mean()) if len(labels) else math.nan,
        "top5_k": k,
        "mean_class_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "num_videos": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def predict_dataset(model, dataset, views=False, total=None, description="evaluating"):
    """Runs `model` on `(clips, one-hot labels)` batches; returns `(probabilities, labels)`.

    With `views`, clips are `(batch, views, T, H, W, 3)` and the per-view softmax is averaged.
    """
    from tqdm import tqdm

    all_probabilities, all_labels = [], []
    bar = tqdm(total=total, unit="video", desc=description, file=sys.stderr, disable=None)
    for batch in dataset:
        clips, labels = batch[0], batch[1]
        clips = np.asarray(clips)
        if views:
            batch_size, num_views = clips.shape[:2]
            outputs = model.predict_on_batch(clips.reshape((-1,) + clips.shape[2:]))
            probabilities = (
                _as_probabilities(outputs).reshape(batch_size, num_views, -1).mean(axis=1)
            )
        else:
            probabilities = _as_probabilities(model.predict_on_batch(clips))
        labels = np.asarray(labels)
        all_probabilities.append(probabilities)
        all_labels.append(labels.argmax(axis=-1) if labels.ndim == 2 else labels)
        bar.update(len(probabilities))
    bar.close()
    if not all_probabilities:
        raise ValueError("the evaluation dataset is empty")
    return np.concatenate(all_probabilities), np.concatenate(all_labels)


def plot_confusion(confusion, class_names, path, title="confusion matrix"):
    """Saves a row-normalised confusion matrix as a PNG (counts written in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    n = len(class_names)
    size = min(4 + 0.45 * n, 30)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        axis.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        axis.set_yticks(range(n), class_names, fontsize=8)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    axis.text(
                        j,
                        i,
                        int(confusion[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)


def evaluate(model, config, output_dir, multi_view=True, batch_size=None, log=print):
    """Evaluates `model` on the data of `config`; writes the report and the plot.

    Returns the report dict (also written to `<output_dir>/evaluation.json`).
    """
    from keras_vswin import atomic
    from keras_vswin.finetune import recipe

    data = recipe.make_data(config)
    if data.eval is None and data.test is None:
        raise ValueError("Nothing to evaluate: set data.eval (and/or data.test) in the config.")
    batch_size = batch_size or config["evaluate"]["batch_size"]
    names = data.class_names
    report = {"classes": names, "settings": {}, "results": {}}
    os.makedirs(output_dir, exist_ok=True)
    total = None
    if config["data"]["source"] == "tfrecord" and config["data"]["eval"]:
        total = recipe.count_examples(config["data"]["eval"])
    elif config["data"]["source"] == "synthetic":
        total = config["data"]["synthetic"]["eval_per_class"] * len(names)
    confusion_source = None
    if data.eval is not None:
        started = time.time()
        probabilities, labels = predict_dataset(
            model, data.eval(batch_size), total=total, description="single view"
        )
        metrics = classification_metrics(probabilities, labels, names)
        metrics["seconds"] = round(time.time() - started, 2)
        report["results"]["single_view"] = metrics
        report["settings"]["single_view"] = {
            "clip_len": config["data"]["clip_len"],
            "frame_interval": config["data"]["frame_interval"],
            "crop_size": config["data"]["crop_size"],
            "views": 1,
        }
        confusion_source = "single_view"
        log(_summary("single view", metrics))
    if multi_view and data.test is not None:
        protocol = recipe.view_protocol(config, "test")
        views = protocol.num_views
        if config["data"]["source"] == "synthetic":
            views = 1
        started = time.time()
        test_total = total
        if config["data"]["source"] == "tfrecord" and config["data"]["test"]:
            test_total = recipe.count_examples(config["data"]["test"])
        probabilities, labels = predict_dataset(
            model,
            data.test(max(1, batch_size // views)),
            views=True,
            total=test_total,
            description=f"{views} views",
        )
        metrics = classification_metrics(probabilities, labels, names)
        metrics["seconds"] = round(time.time() - started, 2)
        report["results"]["multi_view"] = metrics
        report["settings"]["multi_view"] = {
            "num_clips": protocol.num_clips if views > 1 else 1,
            "num_crops": protocol.num_crops if views > 1 else 1,
            "views": views,
        }
        confusion_source = "multi_view"
        log(_summary(f"multi-view ({views} views)", metrics))
    plot_path = os.path.join(output_dir, "confusion_matrix.png")
    with atomic.atomic_path(plot_path) as tmp:
        plot_confusion(
            report["results"][confusion_source]["confusion_matrix"],
            names,
            tmp,
            title=f"confusion matrix ({confusion_source.replace('_', ' ')})",
        )
    report["confusion_matrix_png"] = plot_path
    report["chance_top1"] = 1.0 / len(names)
    atomic.write_json(os.path.join(output_dir, "evaluation.json"), report)
    return report


def _summary(title, metrics):
    return (
        f"{title}: top-1 {metrics['top1']:.2%}, top-{metrics['top5_k']} "
        f"{metrics['top5']:.2%}, mean class accuracy {metrics['mean_class_accuracy']:.2%} "
        f"({metrics['num_videos']} videos)"
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin evaluate",
        description="Top-1/top-5/mean class accuracy of a fine-tuned Video Swin, single view "
        "and multi-view (softmax averaged over views), with a confusion matrix.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run folder (its model.keras and config.json)")
    source.add_argument("--model", help="a .keras model (then --config is required)")
    parser.add_argument("--config", help="config file or name (default: the run's config.json)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--output", help="report folder (default <run>/evaluation)")
    parser.add_argument("--batch-size", type=int, help="clips per forward pass")
    parser.add_argument("--single-view-only", action="store_true", help="skip the multi-view test")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_vswin.finetune.configs import ConfigError, load_config

    config_path = args.config
    model_path = args.model
    if args.run:
        config_path = config_path or os.path.join(args.run, "config.json")
        model_path = os.path.join(args.run, "model.keras")
    if not config_path:
        parser.error("--model needs --config")
    if not os.path.isfile(model_path):
        print(f"{parser.prog}: error: no model at {model_path}", file=sys.stderr)
        return 2
    try:
        config = load_config(config_path, args.overrides)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    import keras

    import keras_vswin  # noqa: F401  (registers the layers)

    model = keras.saving.load_model(model_path, compile=False)
    output = args.output or os.path.join(args.run or os.path.dirname(model_path), "evaluation")
    try:
        report = evaluate(
            model,
            config,
            output,
            multi_view=not args.single_view_only,
            batch_size=args.batch_size,
            log=lambda *a: print(*a, flush=True),
        )
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(
        f"report: {os.path.join(output, 'evaluation.json')}; plot: {report['confusion_matrix_png']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
