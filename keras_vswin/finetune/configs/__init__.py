"""Training configurations: defaults, config files, command-line overrides, validation.

A config file is a Python file defining `CONFIG`, a nested dict of the keys it changes from
`DEFAULTS`, and optionally `BASE`, the name (or path) of the config it extends:

```python
# keras_vswin/finetune/configs/swin_s_k400.py
BASE = "swin_t_k400"
CONFIG = {"model": {"variant": "S"}}
```

Overrides on the command line are `section.key=value` with Python literals (`1e-4`, `[2, 4, 4]`,
`None`, `'text'`; `true`/`false`/`null` also work, bare words are strings):
`keras-vswin train --config demo train.epochs=3 optimizer.lr=1e-3`.

Every key is checked: an unknown key, a value of the wrong type or outside its choices raises a
`ConfigError` naming the key (with the closest known keys).
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import json
import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


class ConfigError(ValueError):
    """A config file or override is not valid; the message names the key."""


# The one table of every setting: default values. Keys whose default is None list their allowed
# types in `_NULLABLE`; keys with a fixed set of values list them in `CHOICES`.
DEFAULTS = {
    "name": "run",
    # Where the run writes (config, checkpoints, logs, model); "{name}" is replaced.
    "output_dir": "runs/{name}",
    "seed": 0,
    "model": {
        # "T", "S", "B", "L" (keras_vswin.VARIANTS) or None for a fully custom architecture.
        "variant": "T",
        # Architecture overrides (None: the variant's value).
        "embed_dim": None,
        "depths": None,
        "num_heads": None,
        "patch_size": [2, 4, 4],
        "window_size": [8, 7, 7],
        "drop_path_rate": None,
        "head_dropout_rate": 0.5,
        # Recompute block activations in the backward pass (less memory, ~1/3 more compute).
        "remat": False,
        "num_classes": 400,
        # Initialisation: a registry name ("kinetics400", ...), a Video Swin .pth/.keras/
        # .weights.h5 file (a new head when the class count differs), or a 2D ImageNet Swin
        # .pth, inflated to 3D (paper section 3.4).
        "weights": None,
        # Load weights trained with another window by resizing the bias tables.
        "resize_window": False,
        # Build with a fixed input shape (clip_len, crop_size, crop_size, 3): faster.
        "static_shape": True,
    },
    "data": {
        # "tfrecord": shards written by `keras-vswin write-shards`; "synthetic": moving-shape
        # clips generated in memory (tests, debugging; see tfrecords.synthetic).
        "source": "tfrecord",
        "train": None,  # shard glob / folder / file
        "eval": None,  # validation shards (single view); None: no validation
        "test": None,  # test shards (multi-view); None: use `eval`
        "num_train_examples": None,  # None: from the shards' manifests (or by counting)
        "labels": None,  # class names file; None: from the manifests
        "clip_len": 32,
        "frame_interval": 2,
        "sampling": "dense",
        "crop_size": 224,
        # The views of validation (single view) and of the multi-view test: the fields of
        # `keras_vswin.data.ViewProtocol` that differ between the two; clip_len,
        # frame_interval, sampling and crop_size above apply to both.
        "eval_views": {"num_clips": 1, "num_crops": 1, "short_side": 256},
        "test_views": {"num_clips": 4, "num_crops": 3, "short_side": 224},
        "area_range": [0.08, 1.0],
        "aspect_ratio_range": [0.75, 1.3333333333333333],
        "flip": True,
        "rand_augment": None,  # [num_ops, magnitude], e.g. [4, 7] for SSv2
        "random_erasing": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
        "label_smoothing": 0.0,
        "shuffle_buffer": 64,
        "deterministic": False,
        "skip_corrupt": False,
        "synthetic": {
            "train_per_class": 16,
            "eval_per_class": 8,
            "num_frames": 16,
            "size": 64,
            "classes": None,  # subset of keras_vswin.data.synthetic.CLASSES; None: all
            # Test hook: from this global micro-batch on, training clips are NaN.
            "poison_from_step": None,
        },
    },
    "optimizer": {
        "lr": 1e-3,  # for `reference_batch_size` examples per update
        "reference_batch_size": 64,
        "scale_lr": True,  # linear scaling with train.batch_size
        "weight_decay": 0.02,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-8,
        "backbone_lr_mult": 0.1,
        # "paper": no decay on bias tables and norms, backbone lr x0.1 (as documented);
        # "mmcv": the official code's first-match behaviour (see keras_vswin.finetune.optimizer).
        "param_groups": "paper",
    },
    "schedule": {
        "warmup_epochs": 2.5,
        "warmup_ratio": 0.1,  # mmcv's default: warmup starts at 0.1 x lr
        "min_lr": 0.0,
        "by_epoch": True,  # cosine steps once per epoch (mmcv's default, the official setting)
    },
    "train": {
        "epochs": 30,
        "batch_size": 64,  # examples per optimizer update (all replicas, all micro-batches)
        "per_replica_batch_size": None,  # None: batch_size / (replicas x accumulation)
        "accumulation_steps": None,  # None: derived from the two above
        "steps_per_epoch": None,  # optimizer updates per epoch; None: examples // batch_size
        "mixed_precision": None,  # None, "mixed_bfloat16" or "mixed_float16"
        "jit_compile": False,  # XLA
        "eval_every": 1,  # epochs between validations (0: never)
        "eval_steps": None,  # None: the whole validation set
        "backup_every": 200,  # micro-batches between mid-epoch backups (0: epoch ends only)
        "keep_checkpoints": 2,  # newest epoch checkpoints kept (0: none written)
        "verbose": "auto",  # "auto" (progress bar on a terminal), 0, 1 or 2
    },
    "distribution": {
        # "auto": MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, else
        # MirroredStrategy on all local GPUs; "mirrored", "multi_worker", "default".
        "strategy": "auto",
        # Without GPUs: mirror over this many logical CPU devices (tests, debugging).
        "cpu_replicas": 1,
    },
    "evaluate": {
        "batch_size": 8,  # single-view clips per batch (test: videos per batch)
        "multi_view": True,
    },
}

CHOICES = {
    "model.variant": ("T", "S", "B", "L", None),
    "data.source": ("tfrecord", "synthetic"),
    "data.sampling": ("dense", "uniform"),
    "data.eval_views.num_crops": (1, 3),
    "data.test_views.num_crops": (1, 3),
    "optimizer.param_groups": ("paper", "mmcv"),
    "train.mixed_precision": (None, "mixed_bfloat16", "mixed_float16"),
    "train.verbose": ("auto", 0, 1, 2),
    "distribution.strategy": ("auto", "mirrored", "multi_worker", "default"),
}

_NULLABLE = {
    "model.embed_dim": (int,),
    "model.depths": (list,),
    "model.num_heads": (list,),
    "model.drop_path_rate": (float,),
    "model.weights": (str,),
    "data.train": (str, list),
    "data.eval": (str, list),
    "data.test": (str, list),
    "data.num_train_examples": (int,),
    "data.labels": (str,),
    "data.rand_augment": (list,),
    "data.synthetic.classes": (list,),
    "data.synthetic.poison_from_step": (int,),
    "train.batch_size": (int,),
    "train.per_replica_batch_size": (int,),
    "train.accumulation_steps": (int,),
    "train.steps_per_epoch": (int,),
    "train.eval_steps": (int,),
}

_POSITIVE = {
    "model.num_classes",
    "data.clip_len",
    "data.frame_interval",
    "data.crop_size",
    "data.eval_views.num_clips",
    "data.eval_views.short_side",
    "data.test_views.num_clips",
    "data.test_views.short_side",
    "data.synthetic.train_per_class",
    "data.synthetic.num_frames",
    "data.synthetic.size",
    "optimizer.lr",
    "optimizer.reference_batch_size",
    "optimizer.epsilon",
    "train.epochs",
    "train.batch_size",
    "train.per_replica_batch_size",
    "train.accumulation_steps",
    "train.steps_per_epoch",
    "distribution.cpu_replicas",
    "evaluate.batch_size",
}


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def _all_keys():
    return [path for path, _ in _flatten(DEFAULTS)]


def _unknown_key(path, section_keys):
    close = difflib.get_close_matches(path, _all_keys(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"Unknown config key {path!r}.{hint} Keys here: {', '.join(sorted(section_keys))}."
    )


def merge(base, changes, prefix=""):
    """Deep-merges `changes` into a copy of `base`; unknown keys raise `ConfigError`."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        path = f"{prefix}{key}"
        if key not in merged:
            raise _unknown_key(path, merged.keys())
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key {path!r} is a section: give a dict, got {value!r}.")
            merged[key] = merge(merged[key], value, path + ".")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _normalise(value):
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _type_ok(value, default, path):
    if path in CHOICES:
        return True  # checked against the choices
    if value is None:
        return default is None or path in _NULLABLE or None in CHOICES.get(path, ())
    if path in _NULLABLE and default is None:
        allowed = _NULLABLE[path]
    else:
        allowed = (type(default),)
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def validate(config):
    """Checks every key, type and value range; returns the config (ints become floats where
    the default is a float). Raises `ConfigError` naming the first bad key."""
    config = copy.deepcopy(config)
    defaults = dict(_flatten(DEFAULTS))
    for path, value in list(_flatten(config)):
        if path not in defaults:
            raise _unknown_key(path, [k.split(".")[-1] for k in defaults])
        value = _normalise(value)
        default = defaults[path]
        if not _type_ok(value, default, path):
            expected = _NULLABLE.get(path, (type(default),))
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(
                f"Config key {path!r} must be {names}"
                f"{' or None' if path in _NULLABLE else ''}, got {value!r} "
                f"({type(value).__name__})."
            )
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"Config key {path!r} must be one of {CHOICES[path]}, got {value!r}.")
        if path in _POSITIVE and value is not None and not value > 0:
            raise ConfigError(f"Config key {path!r} must be positive, got {value!r}.")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _set(config, path, value)
    _check_ranges(config)
    return config


def _check_ranges(config):
    data, train = config["data"], config["train"]
    for path in ("data.random_erasing", "data.label_smoothing"):
        value = get(config, path)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"Config key {path!r} must be in [0, 1], got {value!r}.")
    for path in ("data.area_range", "data.aspect_ratio_range"):
        value = get(config, path)
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            raise ConfigError(f"Config key {path!r} must be [low, high] with 0 < low <= high.")
    for path in ("model.patch_size", "model.window_size"):
        value = get(config, path)
        if len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
            raise ConfigError(f"Config key {path!r} must be 3 positive ints, got {value!r}.")
    rate = config["model"]["drop_path_rate"]
    if rate is not None and not 0.0 <= rate < 1.0:
        raise ConfigError(f"Config key 'model.drop_path_rate' must be in [0, 1), got {rate!r}.")
    if not 0.0 <= config["model"]["head_dropout_rate"] < 1.0:
        raise ConfigError("Config key 'model.head_dropout_rate' must be in [0, 1).")
    schedule = config["schedule"]
    if schedule["warmup_epochs"] < 0 or schedule["warmup_epochs"] > train["epochs"]:
        raise ConfigError(
            f"Config key 'schedule.warmup_epochs' must be in [0, train.epochs={train['epochs']}],"
            f" got {schedule['warmup_epochs']!r}."
        )
    if not 0.0 < schedule["warmup_ratio"] <= 1.0:
        raise ConfigError("Config key 'schedule.warmup_ratio' must be in (0, 1].")
    if data["rand_augment"] is not None and len(data["rand_augment"]) != 2:
        raise ConfigError("Config key 'data.rand_augment' must be [num_ops, magnitude] or None.")
    if data["source"] == "tfrecord" and not data["train"]:
        raise ConfigError(
            "Config key 'data.train' must name the training shards (a glob such as "
            "'shards/train-*.tfrecord') when data.source='tfrecord'."
        )
    if config["model"]["variant"] is None:
        for key in ("embed_dim", "depths", "num_heads"):
            if config["model"][key] is None:
                raise ConfigError(f"Config key 'model.{key}' is required when model.variant=None.")
    if train["backup_every"] < 0 or train["eval_every"] < 0 or train["keep_checkpoints"] < 0:
        raise ConfigError(
            "train.backup_every, train.eval_every and train.keep_checkpoints must be >= 0."
        )


def get(config, path):
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def _set(config, path, value):
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def parse_value(text):
    """An override's value: a Python literal, true/false/null, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items):
    """`["a.b=1", ...]` -> nested dict of changes. Raises `ConfigError` for bad items/keys."""
    changes = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like section.key=value.")
        path, text = item.split("=", 1)
        path = path.strip().removeprefix("--")
        node, parts = changes, path.split(".")
        defaults = DEFAULTS
        for depth, part in enumerate(parts):
            if not isinstance(defaults, dict) or part not in defaults:
                raise _unknown_key(path, defaults.keys() if isinstance(defaults, dict) else [])
            defaults = defaults[part]
            if depth == len(parts) - 1:
                if isinstance(defaults, dict):
                    raise ConfigError(f"Override {path!r} names a section, not a key.")
                node[part] = parse_value(text)
            else:
                node = node.setdefault(part, {})
    return changes


def config_path(name_or_path):
    """A config file path from a path or a name of a file in `keras_vswin/finetune/configs/`."""
    candidates = [name_or_path, os.path.join(CONFIG_DIR, name_or_path)]
    if not name_or_path.endswith(".py"):
        candidates.append(os.path.join(CONFIG_DIR, name_or_path + ".py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    available = ", ".join(available_configs())
    raise ConfigError(f"Config {name_or_path!r} not found. Available: {available}.")


def available_configs():
    return sorted(
        n[:-3] for n in os.listdir(CONFIG_DIR) if n.endswith(".py") and not n.startswith("_")
    )


def _read_file(path, seen=()):
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"Config {path} extends itself (BASE cycle).")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    spec = importlib.util.spec_from_file_location(f"_vswin_config_{len(seen)}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a config file is user code: report which file failed
        raise ConfigError(f"Cannot read config {path}: {type(error).__name__}: {error}") from error
    changes = getattr(module, "CONFIG", None)
    if not isinstance(changes, dict):
        raise ConfigError(f"Config {path} must define CONFIG = {{...}} (a dict).")
    base = getattr(module, "BASE", None)
    if base is None:
        return copy.deepcopy(changes)
    return _deep_update(_read_file(config_path(base), (*seen, path)), changes)


def _deep_update(base, changes):
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(name_or_path=None, overrides=()):
    """DEFAULTS <- config file (and its BASE chain) <- overrides, validated.

    Args:
        name_or_path: a config file (`.py` with CONFIG, or a resolved `config.json`), a name in
            `keras_vswin/finetune/configs/`, or None (the defaults).
        overrides: `["section.key=value", ...]` or a dict of changes.
    """
    config = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        config = merge(config, _read_file(config_path(name_or_path)))
    if overrides:
        changes = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        config = merge(config, changes)
    return validate(config)


def dumps(config):
    return json.dumps(config, indent=2, sort_keys=False) + "\n"
