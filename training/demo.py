"""The end-to-end demo (`make demo`): data -> shards -> fine-tuning -> evaluation -> SavedModel ->
classifying a video file, on a CPU in a few minutes.

```
python -m training.demo                      # everything under demo_output/
python -m training.demo --output /tmp/demo --epochs 10
```

1. generates the synthetic moving-shapes dataset (`keras_vswin.data.synthetic`: 8 classes that
   are time reversals of each other in pairs, so only the order of the frames tells them apart)
   as mp4 files, and shards it with `keras-vswin write-shards` (sizes: the config's
   `data.synthetic`; the config's `seed` also seeds the videos);
2. trains a small Video Swin with `keras-vswin train --config demo` (the paper's recipe,
   scaled down: AdamW with parameter groups, warmup + cosine, stochastic depth, label
   smoothing);
3. evaluates it on held-out videos (`training.evaluate`: single view and 2-clip multi-view) and
   checks that the accuracy is clearly above chance (exit status 1 otherwise);
4. exports a SavedModel (`keras_vswin.export`) and classifies one held-out mp4 file with it
   (`python -m keras_vswin.predict`);
5. prints where everything is (also in `<output>/demo_summary.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

DEFAULT_OUTPUT = "demo_output"


def _banner(text):
    print(f"\n== {text}", flush=True)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m training.demo",
        description="Synthetic action dataset -> TFRecord shards -> Video Swin fine-tuning -> "
        "evaluation -> SavedModel -> classify a video, on the CPU.",
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for everything")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="fail below this held-out top-1 accuracy (default: 3 x chance)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted demo run instead of training from scratch",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def dataset_spec(config):
    """What the demo's dataset is made of: `config["data"]["synthetic"]` and `config["seed"]`."""
    spec = config["data"]["synthetic"]
    return {
        "train_per_class": spec["train_per_class"],
        "eval_per_class": spec["eval_per_class"],
        "num_frames": spec["num_frames"],
        "size": spec["size"],
        "classes": spec["classes"],
        "seed": config["seed"],
    }


def shard_patterns(folder):
    return {
        split: os.path.join(folder, "shards", f"{split}-*.tfrecord") for split in ("train", "eval")
    }


def make_dataset(folder, spec):
    """Videos + shards of `spec` (see `dataset_spec`) under `folder`, reused when a complete
    dataset of the same spec is there. Returns the shard globs."""
    from keras_vswin import atomic
    from keras_vswin.data import synthetic

    patterns = shard_patterns(folder)
    spec_path = os.path.join(folder, "dataset.json")
    manifests = [os.path.join(folder, "shards", f"{split}.manifest.json") for split in patterns]
    if all(os.path.exists(m) for m in manifests) and _read_json(spec_path) == spec:
        print(f"reusing the dataset in {folder}")
        return patterns
    for stale in ("videos", "shards"):  # of another spec or an interrupted run
        shutil.rmtree(os.path.join(folder, stale), ignore_errors=True)
    lists = synthetic.write_videos(
        folder,
        {"train": spec["train_per_class"], "eval": spec["eval_per_class"]},
        num_frames=spec["num_frames"],
        size=spec["size"],
        classes=spec["classes"],
        seed=spec["seed"],
    )
    synthetic.write_shards(folder, lists, num_shards=2, workers=1)
    atomic.write_json(spec_path, spec)  # last: marks the dataset complete
    return patterns


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    args = build_parser().parse_args(argv)
    started = time.time()
    output = args.output
    data_dir = os.path.join(output, "data")
    run_dir = os.path.join(output, "run")

    from keras_vswin.finetune.configs import ConfigError, load_config

    patterns = shard_patterns(data_dir)
    overrides = [
        f"output_dir={run_dir!r}",
        f"data.train={patterns['train']!r}",
        f"data.eval={patterns['eval']!r}",
        f"data.labels={os.path.join(data_dir, 'labels.txt')!r}",
        *args.overrides,
    ]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    try:
        config = load_config("demo", overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    _banner("1/5 synthetic dataset: mp4 videos -> TFRecord shards")
    make_dataset(data_dir, dataset_spec(config))

    _banner("2/5 fine-tuning a Video Swin (keras-vswin train --config demo)")
    if os.path.exists(run_dir) and not args.resume:
        shutil.rmtree(run_dir)
    from keras_vswin.finetune import train

    train_started = time.time()
    result = train.run(config, log=lambda *a: print(*a, flush=True))
    train_seconds = time.time() - train_started

    _banner("3/5 evaluation on held-out videos (keras-vswin evaluate)")
    import keras

    import keras_vswin  # noqa: F401  (registers the layers)
    from keras_vswin.finetune import evaluate

    model = keras.saving.load_model(result.model_path, compile=False)
    report = evaluate.evaluate(
        model, config, os.path.join(run_dir, "evaluation"), log=lambda *a: print(*a, flush=True)
    )
    results = report["results"]
    accuracy = results.get("multi_view", results.get("single_view"))["top1"]
    chance = report["chance_top1"]
    threshold = args.min_accuracy if args.min_accuracy is not None else 3 * chance
    print(f"held-out top-1 accuracy {accuracy:.1%} (chance {chance:.1%}, required {threshold:.1%})")
    if accuracy < threshold:
        print(
            f"error: the demo model reached only {accuracy:.1%} on held-out videos, below "
            f"{threshold:.1%}: training did not work as expected.",
            file=sys.stderr,
        )
        return 1

    _banner("4/5 SavedModel export (keras_vswin.export)")
    from keras_vswin.export import export_saved_model
    from keras_vswin.finetune import recipe

    export_dir = export_saved_model(
        model,
        os.path.join(output, "export"),
        name="demo",
        version=1,
        overwrite=True,
        labels=report["classes"],
        protocol=recipe.view_protocol(config, "test"),
    )
    print(f"SavedModel: {export_dir}")

    _banner(
        "5/5 classify a held-out video file with the SavedModel (python -m keras_vswin.predict)"
    )
    from keras_vswin import predict

    example = _held_out_video(data_dir)
    print(f"video: {example} (true class: {os.path.basename(os.path.dirname(example))})")
    status = predict.main(
        [example, "--saved-model", export_dir, "--top", "3", "--decode-short-side", "0"]
    )
    if status != 0:
        print("error: classifying the video failed", file=sys.stderr)
        return 1

    seconds = time.time() - started
    summary = {
        "seconds": round(seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "accuracy": {k: v["top1"] for k, v in results.items()},
        "mean_class_accuracy": {k: v["mean_class_accuracy"] for k, v in results.items()},
        "chance": chance,
        "dataset": data_dir,
        "run": run_dir,
        "model": result.model_path,
        "history": os.path.join(run_dir, "history.csv"),
        "curves": os.path.join(run_dir, "training_curves.png"),
        "tensorboard": os.path.join(run_dir, "logs"),
        "evaluation": os.path.join(run_dir, "evaluation", "evaluation.json"),
        "confusion_matrix": report["confusion_matrix_png"],
        "saved_model": export_dir,
        "classified_video": example,
    }
    with open(os.path.join(output, "demo_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    _banner(f"done in {seconds / 60:.1f} min (training {train_seconds / 60:.1f} min)")
    width = max(len(k) for k in summary)
    for key in ("dataset", "run", "model", "history", "curves", "tensorboard", "evaluation",
                "confusion_matrix", "saved_model"):  # fmt: skip
        print(f"  {key:<{width}}  {summary[key]}")
    print(f"  {'summary':<{width}}  {os.path.join(output, 'demo_summary.json')}")
    print(
        "accuracy on held-out videos: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in summary["accuracy"].items())
        + f" (chance {chance:.1%})"
    )
    return 0


def _held_out_video(data_dir):
    """The first held-out video of the second class (a time-reversed one)."""
    folder = os.path.join(data_dir, "videos", "eval")
    classes = sorted(os.listdir(folder))
    name = classes[1 % len(classes)]
    videos = sorted(os.listdir(os.path.join(folder, name)))
    return os.path.join(folder, name, videos[0])


if __name__ == "__main__":
    sys.exit(main())
