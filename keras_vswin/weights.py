"""Pretrained weights: the registry, downloads, the conversion cache and `load_weights`.

`weights=` of the model constructors accepts:

- a registry name (`keras_vswin.presets.PRESETS`: "kinetics400", "kinetics400_imagenet22k",
  "kinetics600_imagenet22k", "something_something_v2", and torchvision's ports). The official
  `.pth` is downloaded once into the cache directory, converted strictly, checked against the
  architecture the registry promises and stored as `<name>.weights.h5` with a JSON sidecar
  holding the architecture and the SHA-256 of the converted file. Later calls verify that hash
  before loading (a corrupted file is rebuilt from the `.pth`, or downloaded again).
- a local `.pth`/`.pt` checkpoint of any supported layout (read without unpickling code), an
  image Swin `.pth` (inflated to 3D, paper section 3.4), a `.keras` model or a `.weights.h5`.

Cache directory: `$KERAS_VSWIN_CACHE`, else `$KERAS_HOME/models/keras_vswin` (`KERAS_HOME`
defaults to `~/.keras`). `$KERAS_VSWIN_WEIGHTS_URL` replaces the base URL of every registry file
(a mirror; the file names stay). Downloads go to a temporary `.part` file in the cache directory,
resume with HTTP Range requests after a dropped connection, retry with exponential backoff, and
are renamed into place only when complete: an interrupted download leaves no file behind.

Fine-tuning with another class count is explicit: build the model with `classes=N` and no
weights, then `load_weights(model, "kinetics400", skip_head=True)` loads everything but the head
and logs what it skipped. `VideoSwinB(weights="kinetics400", classes=10)` raises instead, as in
`keras.applications`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

from keras_vswin import convert
from keras_vswin.presets import PRESETS

logger = logging.getLogger("keras_vswin")

CACHE_ENV = "KERAS_VSWIN_CACHE"
URL_ENV = "KERAS_VSWIN_WEIGHTS_URL"
DOWNLOAD_RETRIES = 4  # attempts after the first one
RETRY_BACKOFF_S = 2.0  # doubled after every failed attempt
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_SIDECAR_FORMAT = 1
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt")


class WeightsDownloadError(OSError):
    """A registry file could not be downloaded; nothing was left in the cache."""


class HeadMismatchError(ValueError):
    """The weights' classification head does not fit the model's (another class count, or no
    head at all); `load_weights(..., skip_head=True)` loads everything else."""


# ----------------------------------------------------------------------------------------------
# Registry


def list_weights():
    """Registry names accepted by `weights=`."""
    return sorted(PRESETS)


def weights_info(name, variant):
    """Everything known about registry weights `name` for model size `variant`.

    Returns a dict: `name`, `variant`, `url` (`$KERAS_VSWIN_WEIGHTS_URL` applied), `filename`,
    `architecture` (the `VideoSwin` arguments the checkpoint must have, `classes` included),
    `classes`, `labels`, `window_size`, `views`, `preprocessing`, `pretrain`, `top1`, `top5`,
    `sha256`, `description`.
    """
    from keras_vswin.model import VARIANTS

    entry = _entry(name)
    if variant not in entry["variants"]:
        raise ValueError(
            f"weights={name!r} exist for Video Swin {', '.join(entry['variants'])}, not "
            f"{variant!r}. Use one of: "
            + ", ".join(f"VideoSwin{v}(weights={name!r})" for v in entry["variants"])
            + "."
        )
    info = {k: v for k, v in entry.items() if k != "variants"}
    info.update(entry["variants"][variant], name=name, variant=variant)
    info["filename"] = info["url"].rsplit("/", 1)[-1]
    mirror = os.environ.get(URL_ENV)
    if mirror:
        info["url"] = mirror.rstrip("/") + "/" + info["filename"]
    backbone = VARIANTS[variant]
    info["architecture"] = dict(
        embed_dim=backbone["embed_dim"],
        depths=tuple(backbone["depths"]),
        num_heads=tuple(backbone["num_heads"]),
        patch_size=(2, 4, 4),
        window_size=tuple(entry["window_size"]),
        mlp_ratio=4.0,
        qkv_bias=True,
        patch_norm=True,
        classes=entry["classes"],
    )
    return info


def _entry(name):
    if name not in PRESETS:
        raise ValueError(
            f"weights={name!r} is neither a registry name ({', '.join(list_weights())}) nor an "
            "existing .pth, .keras or .weights.h5 file."
        )
    return PRESETS[name]


def _is_checkpoint_path(path):
    return path.lower().endswith(_CHECKPOINT_SUFFIXES)


def pretrained_overrides(variant, weights):
    """Architecture settings that `weights` fix for the model size `variant`.

    Registry names: checks the size exists for that name (a `ValueError` lists the sizes that
    do) and returns `{"window_size": ...}` (e.g. (16, 7, 7) for "something_something_v2").
    Local `.pth` files: returns the checkpoint's window (the file is read once; `load_weights`
    reuses what was read). Other values: `{}`.
    """
    if weights is None:
        return {}
    path = os.fspath(weights)
    if path in PRESETS:
        return {"window_size": weights_info(path, variant)["window_size"]}
    if not os.path.exists(path):
        _entry(path)  # raises the "not a registry name" error
    if os.path.isfile(path) and _is_checkpoint_path(path):
        state_dict = _read_checkpoint(path, keep=True)
        if convert.is_2d_state_dict(state_dict):
            return {}
        arch = convert.infer_architecture(state_dict)
        found = convert.variant_of(arch)
        if found is not None and found != variant:
            raise ValueError(
                f"weights={path!r} is a Video Swin-{found} checkpoint; build it with "
                f"VideoSwin{found}(weights=...), not VideoSwin{variant}."
            )
        return {"window_size": arch["window_size"]}
    return {}


# A checkpoint read by `pretrained_overrides`, reused by the `load_weights` call that follows in
# the same model constructor (one slot: a state dict can be hundreds of MB).
_READ_AHEAD = {}


def _file_key(path):
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def _read_checkpoint(path, keep=False):
    key = _file_key(path)
    state_dict = _READ_AHEAD.pop(key, None)
    _READ_AHEAD.clear()
    if state_dict is None:
        state_dict = convert.read_state_dict(path)
    if keep:
        _READ_AHEAD[key] = state_dict
    return state_dict


# ----------------------------------------------------------------------------------------------
# Files: cache directory, atomic writes, downloads


def cache_dir():
    """Directory of downloaded and converted weights (created if needed)."""
    directory = os.environ.get(CACHE_ENV)
    if not directory:
        keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        if os.path.isdir(keras_home) and not os.access(keras_home, os.W_OK):
            keras_home = os.path.join(tempfile.gettempdir(), ".keras")
        directory = os.path.join(keras_home, "models", "keras_vswin")
    os.makedirs(directory, exist_ok=True)
    return directory


def _fsync_directory(directory):
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; when the block succeeds, move it onto `path`.

    The temporary name keeps the suffixes Keras checks (`.weights.h5`, `.keras`). The file is
    fsynced, then renamed (atomic on POSIX), so readers see the old file or the complete new one,
    never a partial one. On error the temporary file is removed.
    """
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    suffix = next(
        (s for s in (".weights.h5", ".keras") if base.endswith(s)), os.path.splitext(base)[1]
    )
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Permanent(Exception):
    """A download failure that retrying cannot fix (e.g. HTTP 404)."""


def _content_range(header):
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _fetch(url, part, progress, timeout):
    """One attempt: resume `part` from its size; returns when the body is complete."""
    have = os.path.getsize(part)
    headers = {"User-Agent": "keras-vswin"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial file is not a prefix of theirs: start again
            os.truncate(part, 0)
            raise ConnectionError("server refused to resume; restarting the download") from None
        if 400 <= e.code < 500 and e.code not in (408, 429):
            raise _Permanent(f"HTTP {e.code} {e.reason}") from None
        raise
    with response:
        total = None
        start, range_total = _content_range(response.headers.get("Content-Range"))
        if have and response.status == 206 and start == have:
            mode, total = "ab", range_total
        else:  # the whole file (the server ignored the Range header, or a fresh start)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        from tqdm.auto import tqdm

        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=os.path.basename(url),
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")


def download(url, path, progress=True, retries=None, timeout=None):
    """Download `url` to `path` (kept if it exists already); returns `path`.

    Resumes after dropped connections (HTTP Range), retries `retries` times
    (`DOWNLOAD_RETRIES`) with exponential backoff, shows a tqdm progress bar on stderr, and
    renames the complete file into place; on failure nothing is left at or next to `path`.

    Raises:
        WeightsDownloadError: the file could not be downloaded.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        return path
    retries = DOWNLOAD_RETRIES if retries is None else retries
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".part")
    os.close(fd)
    logger.info("Downloading %s to %s", url, path)
    if progress:
        print(f"Downloading {url}", file=sys.stderr)
    try:
        for attempt in range(retries + 1):
            try:
                _fetch(url, part, progress, timeout)
                break
            except _Permanent as e:
                raise WeightsDownloadError(f"Could not download {url}: {e}.") from None
            except (OSError, http.client.HTTPException) as e:
                if attempt == retries:
                    raise WeightsDownloadError(
                        f"Could not download {url} after {attempt + 1} attempts: {e}. Nothing was "
                        f"kept in {directory}. Check the network (or set ${URL_ENV} to a mirror), "
                        "or download the file yourself and pass its path as weights=."
                    ) from e
                wait = RETRY_BACKOFF_S * 2**attempt
                logger.warning(
                    "Download of %s interrupted (%s); retrying in %.1f s from byte %d.",
                    url,
                    e,
                    wait,
                    os.path.getsize(part),
                )
                time.sleep(wait)
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return path


# ----------------------------------------------------------------------------------------------
# Registry weights: download + convert + cache


def checkpoint_path(name, variant, progress=True):
    """Local path of the registry checkpoint `name`/`variant`, downloaded if needed."""
    info = weights_info(name, variant)
    return download(info["url"], os.path.join(cache_dir(), info["filename"]), progress=progress)


def _cache_paths(info):
    stem = info["filename"]
    for suffix in _CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    directory = cache_dir()
    return (
        os.path.join(directory, info["filename"]),
        os.path.join(directory, stem + ".weights.h5"),
        os.path.join(directory, stem + ".weights.json"),
    )


def _jsonable(arch):
    return json.loads(json.dumps(arch))


def _cached_converted(info, converted, sidecar):
    """The converted file if it exists and its sidecar vouches for it; else None."""
    if not (os.path.exists(converted) and os.path.exists(sidecar)):
        return None
    try:
        with open(sidecar, encoding="utf-8") as f:
            meta = json.load(f)
        trusted = (
            meta.get("format") == _SIDECAR_FORMAT
            and meta.get("architecture") == _jsonable(info["architecture"])
            and meta.get("sha256") == sha256_of(converted)
        )
    except (OSError, ValueError):
        trusted = False
    if trusted:
        return converted
    logger.warning(
        "The cached converted weights %s do not match their record (corrupted or stale); "
        "converting the checkpoint again.",
        converted,
    )
    for stale in (converted, sidecar):
        with contextlib.suppress(OSError):
            os.remove(stale)
    return None


def _read_registry_checkpoint(info, checkpoint, progress):
    """Download (if needed) and read the registry checkpoint; a corrupt copy is fetched again."""
    from keras_vswin.checkpoint_reader import CheckpointFormatError

    for attempt in range(2):
        fresh = not os.path.exists(checkpoint)
        download(info["url"], checkpoint, progress=progress)
        try:
            return convert.read_state_dict(checkpoint)
        except CheckpointFormatError as e:
            os.remove(checkpoint)
            if fresh or attempt:
                raise WeightsDownloadError(
                    f"{info['url']} did not give a readable checkpoint ({e}); the file was "
                    "removed from the cache."
                ) from None
            logger.warning("The cached %s is corrupted (%s); downloading it again.", checkpoint, e)
    raise AssertionError("unreachable")


def fetch_converted(name, variant, progress=True):
    """Path of the verified, converted `.weights.h5` of registry weights `name`/`variant`.

    Downloads and converts on first use; afterwards checks the file's SHA-256 against its JSON
    sidecar before trusting it. The file holds a `VideoSwin(**info["architecture"])` with its
    head, for `model.load_weights`.
    """
    info = weights_info(name, variant)
    checkpoint, converted, sidecar = _cache_paths(info)
    cached = _cached_converted(info, converted, sidecar)
    if cached:
        return cached
    state_dict = _read_registry_checkpoint(info, checkpoint, progress)
    if progress:
        print(f"Converting {info['filename']} for Keras (once): {converted}", file=sys.stderr)
    started = time.perf_counter()
    arch = convert.infer_architecture(state_dict)
    differences = convert.architecture_differences(
        info["architecture"], arch, (*convert.MODEL_ARGUMENTS, "classes"), ("registry", "file")
    )
    if differences:
        raise ValueError(
            f"{checkpoint} is not the checkpoint the registry describes for {name!r} "
            f"({variant}): " + "; ".join(differences)
        )
    model, report, _ = convert.convert_state_dict(state_dict, classifier_activation=None)
    del state_dict
    with atomic_path(converted) as tmp:
        model.save_weights(tmp)
    meta = dict(
        format=_SIDECAR_FORMAT,
        weights=name,
        variant=variant,
        source=info["url"],
        source_file=info["filename"],
        source_bytes=os.path.getsize(checkpoint),
        source_sha256=sha256_of(checkpoint),
        architecture=_jsonable(info["architecture"]),
        layout=report.layout,
        tensors=len(report.loaded),
        sha256=sha256_of(converted),
    )
    with atomic_path(sidecar) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    logger.info(
        "Converted %s (%s, %d tensors) in %.1f s: %s",
        info["filename"],
        report.layout,
        len(report.loaded),
        time.perf_counter() - started,
        converted,
    )
    return converted


# ----------------------------------------------------------------------------------------------
# load_weights


def _registry_variant(name, arch):
    from keras_vswin.model import VARIANTS

    entry = _entry(name)
    for variant in entry["variants"]:
        if convert.same_backbone(VARIANTS[variant], arch):
            return variant
    raise ValueError(
        f"weights={name!r} exist for Video Swin {', '.join(entry['variants'])}; this model "
        f"(embed_dim={arch['embed_dim']}, depths={arch['depths']}, "
        f"num_heads={arch['num_heads']}) is none of them."
    )


def _head_mismatch_error(weights, checkpoint_classes, model_classes):
    return HeadMismatchError(
        f"weights={weights!r} come with a {checkpoint_classes}-class head but the model has "
        f"classes={model_classes}. Pass classes={checkpoint_classes} to use that head, "
        "include_top=False for a model without head, or skip_head=True to keep a fresh "
        f"{model_classes}-class head for fine-tuning (or call "
        f"keras_vswin.weights.load_weights(model, {weights!r}, skip_head=True))."
    )


def _log(report, loud):
    (logger.warning if loud else logger.info)("Loaded weights: %s", report.summary())


def load_weights(
    model,
    weights,
    include_top=True,
    classes=None,
    *,
    skip_head=False,
    resize_window=False,
    resize_method="bicubic",
    inflation="inflate",
    progress=True,
):
    """Load `weights` into a `keras_vswin` model.

    Args:
        model: a model from `keras_vswin.VideoSwin*`.
        weights: a registry name (`list_weights()`), or the path of a `.pth`/`.pt` checkpoint
            (Video Swin of any layout, or an image Swin to inflate), a `.keras` model or a
            `.weights.h5` file.
        include_top: whether the model has its classification head.
        classes: the model's class count (for messages; the model is authoritative).
        skip_head: do not load the checkpoint's head: the model keeps its freshly initialised
            head (fine-tuning with another class count). Reported in the log, never silent.
        resize_window: load a checkpoint trained with another window by resizing its bias
            tables (`keras_vswin.convert.resize_bias_table`, `resize_method`).
        inflation: "inflate" or "center", for image Swin checkpoints.
        progress: show download progress.

    Returns:
        The `keras_vswin.convert.LoadReport` (None for `.weights.h5` files and exact registry
        loads, which Keras checks itself).
    """
    arch = convert.model_architecture(model)
    include_top = arch["classes"] is not None
    path = os.fspath(weights)
    if path in PRESETS:
        return _load_registry(
            model, path, arch, include_top, skip_head, resize_window, resize_method, progress
        )
    if not os.path.isfile(path):
        _entry(path)
    if path.endswith(".weights.h5"):
        if skip_head:
            raise ValueError(
                f"weights={path!r}: skip_head needs a .pth, .keras or registry checkpoint; a "
                ".weights.h5 file does not record its architecture."
            )
        model.load_weights(path)
        return None
    if path.endswith(".keras"):
        import keras

        source = keras.saving.load_model(path, compile=False)
        state_dict = convert.model_state_dict(source, with_index=False)
        source_classes = convert.model_architecture(source)["classes"]
        head_skip = skip_head or not include_top
        if not head_skip and source_classes != arch["classes"]:
            raise _head_mismatch_error(path, source_classes, arch["classes"])
        report = convert.load_state_dict(
            model,
            state_dict,
            layout="backbone",
            skip_head=head_skip,
            resize_window=resize_window,
            resize_method=resize_method,
        )
        report.layout = "keras"
        _log(report, loud=skip_head)
        return report
    if _is_checkpoint_path(path):
        return _load_checkpoint_file(
            model, path, arch, include_top, skip_head, resize_window, resize_method, inflation
        )
    raise ValueError(
        f"weights={weights!r}: expected a registry name ({list_weights()}), or a .pth, .pt, "
        ".keras or .weights.h5 file."
    )


def _load_checkpoint_file(
    model, path, arch, include_top, skip_head, resize_window, resize_method, inflation
):
    state_dict = _read_checkpoint(path)
    if convert.is_2d_state_dict(state_dict):
        report = convert.load_2d_state_dict(model, state_dict, method=inflation)
        _log(report, loud=True)
        return report
    found = convert.infer_architecture(state_dict)
    keys = [k for k in convert.MODEL_ARGUMENTS if k != "window_size"]
    differences = convert.architecture_differences(found, arch, keys)
    if differences:
        raise ValueError(
            f"weights={path!r} is another architecture than the model: " + "; ".join(differences)
        )
    head_skip = skip_head or not include_top
    if not head_skip and found["classes"] != arch["classes"]:
        if found["classes"] is None:
            raise HeadMismatchError(
                f"weights={path!r} has no classification head: pass include_top=False, or "
                "skip_head=True to train a new head."
            )
        raise _head_mismatch_error(path, found["classes"], arch["classes"])
    report = convert.load_state_dict(
        model,
        state_dict,
        layout=found["layout"],
        skip_head=head_skip,
        resize_window=resize_window,
        resize_method=resize_method,
    )
    _log(report, loud=skip_head or bool(report.resized))
    return report


def _load_registry(
    model, name, arch, include_top, skip_head, resize_window, resize_method, progress
):
    variant = _registry_variant(name, arch)
    info = weights_info(name, variant)
    expected = info["architecture"]
    if include_top and not skip_head and arch["classes"] != expected["classes"]:
        raise _head_mismatch_error(name, expected["classes"], arch["classes"])
    keys = [k for k in convert.MODEL_ARGUMENTS if k not in ("window_size",)]
    differences = convert.architecture_differences(expected, arch, keys, ("registry", "model"))
    if differences:
        raise ValueError(f"weights={name!r} do not fit the model: " + "; ".join(differences))
    window_differs = tuple(arch["window_size"]) != tuple(expected["window_size"])
    if window_differs and not resize_window:
        raise ValueError(
            f"weights={name!r} ({variant}) were trained with window_size="
            f"{expected['window_size']}, the model has {arch['window_size']}: build the model "
            "with that window, or pass resize_window=True to resize the bias tables."
        )
    converted = fetch_converted(name, variant, progress=progress)
    if include_top and not skip_head and not window_differs:
        model.load_weights(converted)
        logger.info("Loaded %s (%s) from %s", name, variant, converted)
        return None
    # Anything but an exact fit goes through the state dict, which reports what it did.
    from keras_vswin.model import VideoSwin

    source = VideoSwin(
        **{k: expected[k] for k in convert.MODEL_ARGUMENTS},
        classes=expected["classes"],
        classifier_activation=None,
    )
    source.load_weights(converted)
    state_dict = convert.model_state_dict(source, with_index=False)
    del source
    report = convert.load_state_dict(
        model,
        state_dict,
        layout="backbone",
        skip_head=skip_head or not include_top,
        resize_window=window_differs,
        resize_method=resize_method,
    )
    report.layout = f"{name} ({variant})"
    _log(report, loud=(include_top and skip_head) or window_differs)
    return report
