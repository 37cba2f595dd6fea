"""Fine-tune a Video Swin: the paper's recipe, `tf.distribute`, fault tolerance.

```
keras-vswin train --config swin_t_k400 \
    data.train='shards/k400/train-*.tfrecord' model.weights=swin_tiny_patch4_window7_224.pth
keras-vswin train --config demo train.epochs=3          # a name in keras_vswin/finetune/configs/
keras-vswin train --config runs/demo/config.json        # re-run a resolved config
```

A run writes into `output_dir` (default `runs/<name>`):

| file | what |
|---|---|
| `config.json` | the resolved config (give it back to `--config` to repeat the run) |
| `run.json` | derived numbers: replicas, batch split, steps, learning rate, parameter groups |
| `backup/` | the resumable training state (`state-*.weights.h5` + `.json`) |
| `checkpoints/epoch-NNN.keras` | a model checkpoint per epoch (the newest `keep_checkpoints`) |
| `logs/` | TensorBoard (with the `[tensorboard]` extra) |
| `history.csv`, `training_curves.png` | per-epoch metrics, learning rate and their plot |
| `model.keras` | the final model (float32, no optimizer) |

Distribution: `MirroredStrategy` over all local GPUs (or `distribution.cpu_replicas` logical
CPUs), or `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several tasks (start the same
command on every machine with its `TF_CONFIG`; `output_dir` must be shared storage, only the
chief writes). `train.batch_size` is the batch of one optimizer update over all replicas and
micro-batches: `batch_size = per_replica_batch_size x replicas x accumulation_steps`; the
learning rate scales linearly with it (`optimizer.reference_batch_size`, `optimizer.scale_lr`).

Fault tolerance: the training state (weights, optimizer, step, metrics so far) is backed up
every `train.backup_every` micro-batches and at every epoch end, atomically. Re-running the same
command after a crash or kill continues from the last backup: no finished epoch is lost or
repeated and the data stream continues where it stopped. A NaN or infinite loss stops the run
(exit status 3) with a message naming the last good checkpoint; nothing non-finite is saved.

Exit status: 0 done, 2 bad config or arguments, 3 the loss diverged.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DIVERGED = 3
TEST_DELAY_ENV = "KERAS_VSWIN_TRAIN_TEST_DELAY"  # seconds of sleep after each batch (tests)

# Keys that may change between a killed run and its restart without a warning.
_RESTART_SAFE = ("train.verbose", "train.eval_every", "train.eval_steps", "train.keep_checkpoints")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what was kept."""


@dataclasses.dataclass
class RunResult:
    """What a finished `run` produced.

    Attributes:
        run_dir: the output folder.
        model_path: the final `.keras` model (None on non-chief workers).
        history: per-epoch logs, `[{"epoch": e, "loss": ..., ...}, ...]`.
        resumed_from: `(epoch, step)` the run continued from, or None.
        info: the contents of `run.json`.
        model: the trained Keras model.
    """

    run_dir: str
    model_path: str | None
    history: list
    resumed_from: tuple | None
    info: dict
    model: object = None


# --------------------------------------------------------------------------------------------
# Callbacks of a run


def _keras():
    import keras

    return keras


class _LearningRateLog:
    """Adds `learning_rate` (the head's rate at the epoch end) to the epoch logs."""

    @staticmethod
    def make():
        keras = _keras()

        class LearningRateLog(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["learning_rate"] = float(self.model.optimizer.learning_rate)

        return LearningRateLog()


def _test_delay():
    keras = _keras()
    delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)

    class TestDelay(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(delay)

    return TestDelay() if delay else None


def write_history(run_dir, history, plot=True):
    """Writes `history.csv` and `training_curves.png` (atomically) from per-epoch logs."""
    from keras_vswin import atomic

    if not history:
        return
    keys = ["epoch"] + sorted({k for record in history for k in record} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for record in history:
        writer.writerow({k: record.get(k, "") for k in keys})
    atomic.write_text(os.path.join(run_dir, "history.csv"), buffer.getvalue())
    if plot:
        with atomic.atomic_path(os.path.join(run_dir, "training_curves.png")) as tmp:
            plot_history(history, tmp)


def plot_history(history, path):
    """Loss, accuracy and learning-rate curves of `history` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    panels = [("loss", "loss"), ("accuracy", "top-1 accuracy"), ("learning_rate", "learning rate")]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, (key, title) in zip(axes, panels):
        for prefix, label in (("", "train"), ("val_", "validation")):
            points = [(e, r[prefix + key]) for e, r in zip(epochs, history) if prefix + key in r]
            if points and not (prefix and key == "learning_rate"):
                axis.plot(*zip(*points), marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if key != "learning_rate":
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)


def _tensorboard_callback(log_dir, log):
    """Keras' TensorBoard callback (epoch scalars under `train/` and `validation/`), or None
    with a notice when the `[tensorboard]` extra is not installed (TensorFlow's summary ops
    come from the `tensorboard` package)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log(
            "note: no TensorBoard logs: the `tensorboard` package is missing; "
            "install the extra with `pip install 'keras-vswin[tensorboard]'`."
        )
        return None
    return _keras().callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)


def _history_callback(run_dir, backup, write, plot_every_s=30.0):
    """Rewrites `history.csv` every epoch and the plot at most every `plot_every_s` seconds
    (and at the end of the run, see `run`)."""
    keras = _keras()

    class HistoryFiles(keras.callbacks.Callback):
        last_plot = 0.0

        def on_epoch_end(self, epoch, logs=None):
            if not write:
                return
            plot = time.time() - self.last_plot >= plot_every_s
            write_history(run_dir, backup.history, plot=plot)
            if plot:
                self.last_plot = time.time()

    return HistoryFiles()


# --------------------------------------------------------------------------------------------
# The run


def _set_policy(policy):
    keras = _keras()
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy or "float32")
    return previous


def _check_restart(run_dir, config, log):
    """Warns about config changes since the run's first start."""
    import tensorflow as tf

    path = os.path.join(run_dir, "config.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path, "r") as handle:
        before = json.load(handle)
    from keras_vswin.finetune.configs import _flatten

    old, new = dict(_flatten(before)), dict(_flatten(config))
    changed = [k for k in new if old.get(k) != new[k] and k not in _RESTART_SAFE]
    if changed:
        log(
            "warning: the config differs from the one this run started with in: "
            + ", ".join(f"{k} ({old.get(k)!r} -> {new[k]!r})" for k in changed)
        )


def _strategy_name(strategy):
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    return type(strategy).__name__


def seed_everything(seed):
    """Seeds Python, NumPy and Keras (weight init, dropout, stochastic depth).

    TensorFlow's global seed is left unset: every random tf.data op of the pipelines takes an
    explicit seed, and a global seed makes `Dataset.shuffle` reject tensor-valued seeds.
    """
    import tensorflow as tf

    _keras().utils.set_random_seed(seed)
    tf.random.set_seed(None)


def _final_model(config, model):
    """A float32 copy of `model` without optimizer, for `model.keras`."""
    from keras_vswin.finetune import recipe

    keras = _keras()
    previous = _set_policy(None)
    try:
        final = recipe.build_model(config, load_pretrained=False)
        final.set_weights([keras.ops.convert_to_numpy(w) for w in model.weights])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return final


def run(config, log=print):
    """Trains as `config` (a resolved config, see `keras_vswin.finetune.configs.load_config`) says.

    Returns a `RunResult`. Raises `TrainingDiverged` when the loss becomes non-finite.
    """
    import tensorflow as tf

    from keras_vswin import atomic, finetune
    from keras_vswin.finetune import recipe
    from keras_vswin.finetune.configs import dumps

    keras = _keras()
    started = time.time()
    spec = config["train"]
    strategy = finetune.make_strategy(
        config["distribution"]["strategy"], config["distribution"]["cpu_replicas"]
    )
    chief = finetune.is_chief()
    run_dir = config["output_dir"].format(name=config["name"])
    seed_everything(config["seed"])
    previous_policy = _set_policy(spec["mixed_precision"])
    try:
        data = recipe.make_data(config)
        plan = finetune.resolve_batch(
            strategy.num_replicas_in_sync,
            spec["batch_size"],
            spec["per_replica_batch_size"],
            spec["accumulation_steps"],
        )
        steps = recipe.plan_steps(config, plan, data.num_train_examples)
        backup = finetune.TrainingBackup(
            os.path.join(run_dir, "backup"),
            steps.micro_per_epoch,
            save_freq=spec["backup_every"] or None,
            write=chief,
        )
        restoring = bool(backup.states())
        with strategy.scope():
            model = recipe.build_model(config, load_pretrained=not restoring, log=log)
            optimizer = recipe.build_optimizer(config, plan, steps)
            recipe.compile_model(model, config, optimizer)
            # `model.optimizer`: the LossScaleOptimizer wrapping `optimizer` under mixed_float16.
            model.optimizer.build(model.trainable_variables)
            loop = finetune.StrategyLoop(model, strategy, recipe.make_metrics(config))
        info = {
            "replicas": strategy.num_replicas_in_sync,
            "strategy": _strategy_name(strategy),
            "batch": dataclasses.asdict(plan),
            "steps": dataclasses.asdict(steps),
            "peak_learning_rate": recipe.learning_rate(config, plan),
            "num_train_examples": data.num_train_examples,
            "classes": data.class_names,
            "parameters": int(model.count_params()),
            "param_groups": finetune.describe_param_groups(
                model.trainable_variables,
                optimizer.param_rules,
                config["optimizer"]["weight_decay"],
            ),
        }
        if chief:
            tf.io.gfile.makedirs(run_dir)
            if restoring:
                _check_restart(run_dir, config, log)
            atomic.write_text(os.path.join(run_dir, "config.json"), dumps(config))
            atomic.write_text(os.path.join(run_dir, "run.json"), json.dumps(info, indent=2) + "\n")
        split = (
            f"batch {plan.global_batch_size} = {plan.per_replica_batch_size} per replica x "
            f"{plan.num_replicas} x {plan.accumulation_steps} accumulation"
        )
        rate = f"peak lr {info['peak_learning_rate']:.3g}"
        log(
            f"{info['strategy']} with {plan.num_replicas} replica(s): {split}; "
            f"{steps.updates_per_epoch} updates/epoch, {rate}; {info['parameters']:,} parameters"
        )

        point = backup.restore(model)
        resumed = None
        if point.path:
            resumed = (point.epoch, point.step)
            log(
                f"resuming from {point.path}: epoch {point.epoch + 1}, step {point.step} of "
                f"{steps.micro_per_epoch} ({len(point.history)} finished epoch(s))"
            )
        nan_guard = finetune.StopOnNonFiniteLoss()
        callbacks = [nan_guard, _LearningRateLog.make(), backup]
        checkpoints = finetune.AtomicModelCheckpoint(
            os.path.join(run_dir, "checkpoints"), keep=spec["keep_checkpoints"], write=chief
        )
        callbacks.append(checkpoints)
        callbacks.append(_history_callback(run_dir, backup, chief))
        if chief:
            callbacks.append(_tensorboard_callback(os.path.join(run_dir, "logs"), log))
        callbacks.append(_test_delay())
        callbacks = [c for c in callbacks if c is not None]

        validation = None
        if data.eval is not None and spec["eval_every"]:
            validation = data.eval(plan.micro_batch_size)
            if data.num_eval_examples:  # a known length: no "ran out of data" warning
                batches = -(-data.num_eval_examples // plan.micro_batch_size)
                validation = validation.apply(tf.data.experimental.assert_cardinality(batches))
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            validation = validation.with_options(options)
        verbose = spec["verbose"]
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2

        def dataset_fn(input_context):  # the stream continues where the run stopped
            return data.train(plan.micro_batch_size, input_context, point.global_step)

        if point.epoch < spec["epochs"]:
            loop.fit(
                dataset_fn,
                epochs=spec["epochs"],
                steps_per_epoch=steps.micro_per_epoch,
                initial_epoch=point.epoch,
                initial_step=point.step,
                callbacks=callbacks,
                validation_data=validation,
                validation_freq=spec["eval_every"] or 1,
                validation_steps=spec["eval_steps"],
                verbose=verbose,
            )

        if nan_guard.failed_at is not None:
            failed_epoch, failed_batch = nan_guard.failed_at
            if failed_epoch == point.epoch:
                failed_batch += point.step
            last = finetune.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
            raise TrainingDiverged(
                f"Training stopped: the loss became NaN or infinite at epoch {failed_epoch + 1}, "
                f"step {failed_batch + 1}. Nothing non-finite was saved; the last good checkpoint "
                f"is {last or 'none (no epoch finished)'} and the last good training state is in "
                f"{os.path.join(run_dir, 'backup')}. Lower optimizer.lr, check the data, or train "
                "without mixed precision; re-running the command continues from that state."
            )

        model_path = None
        if chief:
            model_path = os.path.join(run_dir, "model.keras")
            with atomic.atomic_path(model_path) as tmp:
                _final_model(config, model).save(tmp)
            write_history(run_dir, backup.history)
        info["seconds"] = round(time.time() - started, 1)
        log(f"done in {info['seconds']:.0f} s: {model_path or run_dir}")
        return RunResult(run_dir, model_path, list(backup.history), resumed, info, model)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


# --------------------------------------------------------------------------------------------
# Command line


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vswin train",
        description="Fine-tune a Video Swin Transformer (the paper's recipe, "
        "tf.distribute, resumable).",
        epilog="Overrides are section.key=value with Python literals, e.g. train.epochs=3 "
        "optimizer.lr=1e-4 model.weights=kinetics400 data.train='shards/train-*.tfrecord'. "
        "Exit status: 0 done, 2 bad config, 3 the loss diverged. Re-running the same command "
        "after an interruption resumes the run.",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a config name (swin_t_k400, demo, ...: keras_vswin/finetune/configs/), a config "
        "file, or a run's config.json",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--output", help="shortcut for output_dir=...")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_vswin.finetune.configs import ConfigError, dumps, load_config

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output_dir={args.output!r}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(dumps(config), end="")
        return EXIT_OK
    try:
        run(config, log=lambda *a: print(*a, flush=True))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except ValueError as error:  # data/model/batch settings that do not fit together
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
