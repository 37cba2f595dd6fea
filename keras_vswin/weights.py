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
(a mirror; the file names stay). Downloads go to a temporary file in the cache directory, resume
with HTTP Range requests after a dropped connection, retry with exponential backoff, and are
renamed into place only when verified: the announced length, the SHA-256 where one is known
(the presets table, or torchvision's `name-<hash prefix>.pth` file names), and a strict read into
the architecture the registry promises. `<file>.json` records each download's SHA-256, and every
later use checks the file against it; a cached file that fails (damaged, truncated, another
architecture) is moved to `<file>.rejected` and downloaded again. A download killed half way is
resumed by the next one; other temporaries that killed processes left are removed.

Fine-tuning with another class count is explicit: build the model with `classes=N` and no
weights, then `load_weights(model, "kinetics400", skip_head=True)` loads everything but the head
and logs what it skipped. `VideoSwinB(weights="kinetics400", classes=10)` raises instead, as in
`keras.applications`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

from keras_vswin import atomic, convert
from keras_vswin.model import VARIANTS, VideoSwin, same_backbone, variant_of
from keras_vswin.presets import PRESETS

logger = logging.getLogger("keras_vswin")

CACHE_ENV = "KERAS_VSWIN_CACHE"
URL_ENV = "KERAS_VSWIN_WEIGHTS_URL"
DOWNLOAD_RETRIES = 4  # attempts after the first one
RETRY_BACKOFF_S = 2.0  # doubled after every failed attempt
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_SIDECAR_FORMAT = 1
_RECORD_FORMAT = 1
REJECTED_SUFFIX = ".rejected"
# torch.hub's convention: `<name>-<first hex digits of the SHA-256>.<ext>`.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^-]*$")
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


@dataclasses.dataclass
class WeightsSource:
    """What a `weights=` argument names, resolved once (a checkpoint is read at most once).

    Attributes:
        spec: the registry name or the file path, as given.
        kind: "registry", "checkpoint" (`.pth`/`.pt`), "keras" or "weights_h5".
        state_dict: a checkpoint's arrays once read (by `overrides`), reused by `load_weights`.
    """

    spec: str
    kind: str
    state_dict: dict | None = None

    @property
    def classes(self):
        """The class count registry weights come with (None for files)."""
        return PRESETS[self.spec]["classes"] if self.kind == "registry" else None

    def read(self):
        """The checkpoint's state dict (read on first use)."""
        if self.state_dict is None:
            self.state_dict = convert.read_state_dict(self.spec)
        return self.state_dict

    def overrides(self, variant):
        """Architecture settings these weights fix for the model size `variant`.

        Registry names: checks the size exists for that name (a `ValueError` lists the sizes
        that do) and returns `{"window_size": ...}` (e.g. (16, 7, 7) for
        "something_something_v2"). `.pth` files: the checkpoint's window. Others: `{}`.
        """
        if self.kind == "registry":
            return {"window_size": weights_info(self.spec, variant)["window_size"]}
        if self.kind != "checkpoint":
            return {}
        state_dict = self.read()
        if convert.is_2d_state_dict(state_dict):
            return {}
        arch = convert.infer_architecture(state_dict)
        found = variant_of(arch)
        if found is not None and found != variant:
            raise ValueError(
                f"weights={self.spec!r} is a Video Swin-{found} checkpoint; build it with "
                f"VideoSwin{found}(weights=...), not VideoSwin{variant}."
            )
        return {"window_size": arch["window_size"]}


def resolve(weights):
    """A `WeightsSource` for a `weights=` argument (None stays None).

    Raises:
        ValueError: `weights` is neither a registry name nor an existing supported file.
    """
    if weights is None or isinstance(weights, WeightsSource):
        return weights
    path = os.fspath(weights)
    if path in PRESETS:
        return WeightsSource(path, "registry")
    if not os.path.isfile(path):
        _entry(path)  # raises the "not a registry name" error
    if path.endswith(".weights.h5"):
        return WeightsSource(path, "weights_h5")
    if path.endswith(".keras"):
        return WeightsSource(path, "keras")
    if _is_checkpoint_path(path):
        return WeightsSource(path, "checkpoint")
    raise ValueError(
        f"weights={path!r}: expected a registry name ({', '.join(list_weights())}), or a .pth, "
        ".pt, .keras or .weights.h5 file."
    )


def pretrained_overrides(variant, weights):
    """Architecture settings that `weights` fix for the model size `variant` (see
    `WeightsSource.overrides`); `{}` for None."""
    source = resolve(weights)
    return source.overrides(variant) if source is not None else {}


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


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def known_sha256(info):
    """The SHA-256 registry file `info` (from `weights_info`) must have, and where that comes
    from: `(hex digest, "the presets table")`, `(first hex digits, "its file name")` for files
    named `<name>-<hex>.<ext>` (torch.hub's convention, as torchvision's files), or
    `(None, None)`."""
    if info.get("sha256"):
        return info["sha256"].lower(), "the presets table"
    match = _HASH_IN_NAME.search(info["filename"])
    if match:
        return match[1], "its file name"
    return None, None


def record_path(path):
    """The download record of `path`: `<path>.json` (URL, bytes, SHA-256)."""
    return path + ".json"


def _read_record(path):
    try:
        with open(record_path(path), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        return None
    return record


def _write_record(path, url, digest, verified_by, size=None):
    record = dict(
        format=_RECORD_FORMAT,
        url=url,
        file=os.path.basename(path),
        bytes=os.path.getsize(path) if size is None else size,
        sha256=digest,
        verified_by=verified_by,
    )
    atomic.write_json(record_path(path), record)


def _move_aside(path, reason):
    """Moves an unusable cached file to `<path>.rejected` (replacing an older one: one per
    file) and drops its record, so it is never used again but can still be looked at."""
    aside = path + REJECTED_SUFFIX
    os.replace(path, aside)
    with contextlib.suppress(OSError):
        os.remove(record_path(path))
    logger.warning(
        "The cached %s is not usable (%s); moved it to %s and downloading it again.",
        path,
        reason,
        aside,
    )


class _Permanent(Exception):
    """A download failure that retrying cannot fix (e.g. HTTP 404)."""


class _Incomplete(ConnectionError):
    """The body ended but nothing shows the file is whole (retried: resumed from its end)."""


def _content_range(header):
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _fetch(url, part, progress, timeout):
    """One attempt: resume `part` from its size; returns the announced size (None when the
    server announced none) once the body has ended."""
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
            # What arrived goes to the file at once: a killed download leaves it to resume.
            while chunk := response.read1(_CHUNK):
                f.write(chunk)
                f.flush()
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")
    return total


def check_complete(path):
    """Raises `ValueError` unless `path` parses as a whole checkpoint: a zip archive (torch.save's
    format) whose members' CRCs check, or a legacy pickle stream read to its end. What proves a
    download complete when the server announced no length and no hash is known."""
    import zipfile

    from keras_vswin import checkpoint_reader

    try:
        if zipfile.is_zipfile(path):  # the central directory at the end arrived
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"zip member {bad} fails its CRC check")
        else:  # legacy format (or a cut zip): only the reader knows where it ends
            checkpoint_reader.load_checkpoint(path, allow_unknown_globals=True)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: {e}") from None


def _is_permanent(error):
    """Whether retrying cannot fix `error`: the host name does not resolve (offline, a typo in a
    mirror URL: seconds of backoff would not help), or the URL is malformed."""
    reason = getattr(error, "reason", error)
    return isinstance(reason, socket.gaierror) or isinstance(
        error, ValueError | http.client.InvalidURL
    )


def _fetch_with_retries(url, part, progress, retries, timeout, sha256):
    """Fetches `url` into `part` until the body is whole; returns what showed it: "length"
    (announced by the server), "parsed" (`check_complete`) or None (left to `sha256`)."""
    directory = os.path.dirname(part)
    for attempt in range(retries + 1):
        try:
            if _fetch(url, part, progress, timeout) is not None:
                return "length"
            if sha256 is not None:
                return None
            try:  # a cut connection looks like the end of the body
                check_complete(part)
            except ValueError as e:
                raise _Incomplete(
                    f"the server sent no length and the file does not parse ({e})"
                ) from None
            return "parsed"
        except _Permanent as e:
            raise WeightsDownloadError(f"Could not download {url}: {e}.") from None
        except (OSError, ValueError, http.client.HTTPException) as e:
            if _is_permanent(e):
                raise WeightsDownloadError(
                    f"Could not download {url}: {getattr(e, 'reason', e)}. Check the network "
                    f"(or set ${URL_ENV} to a mirror), or download the file yourself and "
                    "pass its path as weights=."
                ) from None
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


def _verify(url, part, sha256, validate):
    """The SHA-256 of the complete `part`, checked against `sha256` and `validate`."""
    digest = sha256_of(part)
    if sha256 and not digest.startswith(sha256):
        raise WeightsDownloadError(
            f"{url} gave a file whose SHA-256 is {digest}, not the expected {sha256}: the "
            f"server sent another file (or a damaged one). Nothing was kept in "
            f"{os.path.dirname(part)}."
        )
    if validate is not None:
        validate(part)
    return digest


def _check_cached(url, path, sha256, validate):
    """None when the cached `path` is the expected file (then recorded), else the reason."""
    record = _read_record(path)
    expected = sha256 or (record or {}).get("sha256")
    if expected:
        digest = sha256_of(path)
        if not digest.startswith(expected):
            origin = "the expected" if sha256 else "the recorded"
            return f"its SHA-256 is {digest}, not {origin} {expected}"
        if record is None or record.get("sha256") != digest:
            _write_record(path, url, digest, "known SHA-256")
        return None
    # Neither a known hash nor a record (a file cached by an older version): it must load.
    try:
        (validate or check_complete)(path)
    except ValueError as e:
        return f"it does not load: {e}"
    _write_record(path, url, sha256_of(path), "loaded")
    return None


def download(url, path, progress=True, retries=None, timeout=None, sha256=None, validate=None):
    """Download `url` to `path` and verify it; returns `path`.

    A download is complete only when verified: as long as the server announced (Content-Length,
    Content-Range); with the SHA-256 `sha256` (a hex digest or its first digits) when given;
    accepted by `validate(file)` (raises `ValueError` for an unusable file) when given; and,
    when the server announced no length and no hash is known, parsed whole (`check_complete`).
    Only then is it renamed to `path`, next to its record `<path>.json` (URL, bytes, SHA-256).

    An existing `path` is checked instead of downloaded: against `sha256`, else against its
    record; one with neither must pass `validate` (`check_complete`). One that fails is moved to
    `<path>.rejected` and downloaded again, never reused.

    Resumes after a dropped connection (HTTP Range) and after a killed earlier download (its
    stale temporary is taken over; restarted from zero if the result then fails its checks),
    retries `retries` times (`DOWNLOAD_RETRIES`) with exponential backoff, shows a tqdm progress
    bar on stderr. Errors that retrying cannot fix (an unknown host, HTTP 4xx, another SHA-256,
    a file `validate` refuses) fail at once; on failure nothing is left at or next to `path`.
    Stale temporaries of killed writers in the folder are removed.

    Raises:
        WeightsDownloadError: the file could not be downloaded, or has another SHA-256.
        ValueError: what `validate` raises for a downloaded file.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    sha256 = sha256.lower() if sha256 else None
    if os.path.exists(path):
        problem = _check_cached(url, path, sha256, validate)
        if problem is None:
            atomic.remove_stale(directory)
            return path
        _move_aside(path, problem)
    retries = DOWNLOAD_RETRIES if retries is None else retries
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    logger.info("Downloading %s to %s", url, path)
    if progress:
        print(f"Downloading {url}", file=sys.stderr)
    with atomic.atomic_path(path, resume=True) as part:
        atomic.remove_stale(directory)  # other killed writers' leftovers (ours is taken over)
        resumed = os.path.getsize(part) if os.path.exists(part) else 0
        if resumed:
            logger.warning(
                "Resuming %s from byte %d, where an interrupted download stopped.", url, resumed
            )
        else:
            open(part, "wb").close()
        whole = _fetch_with_retries(url, part, progress, retries, timeout, sha256)
        try:
            digest = _verify(url, part, sha256, validate)
        except (WeightsDownloadError, ValueError) as e:
            if not resumed:
                raise
            # The killed download's bytes may be damaged or from another file: start over.
            logger.warning("The resumed download of %s fails its checks (%s); restarting.", url, e)
            os.truncate(part, 0)
            whole = _fetch_with_retries(url, part, progress, retries, timeout, sha256)
            digest = _verify(url, part, sha256, validate)
        checks = [whole, sha256 and "known SHA-256", validate and "loaded"]
        verified_by = ", ".join(check for check in checks if check)
        _write_record(path, url, digest, verified_by, size=os.path.getsize(part))
    return path


# ----------------------------------------------------------------------------------------------
# Registry weights: download + convert + cache


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


def recorded_source_sha256(name, variant):
    """The SHA-256 of the registry checkpoint `name`/`variant` as recorded when it was first
    downloaded and converted (None when it is not in the cache)."""
    sidecar = _cache_paths(weights_info(name, variant))[2]
    try:
        with open(sidecar, encoding="utf-8") as handle:
            return json.load(handle).get("source_sha256")
    except (OSError, ValueError):
        return None


def _jsonable(arch):
    return json.loads(json.dumps(arch))


def _read_registry_file(info, path):
    """The state dict of `path`; `ValueError` unless it is the checkpoint `info` describes."""
    state_dict = convert.read_state_dict(path)
    arch = convert.infer_architecture(state_dict)
    differences = convert.architecture_differences(
        info["architecture"], arch, (*convert.MODEL_ARGUMENTS, "classes"), ("registry", "file")
    )
    if differences:
        raise ValueError(
            f"{info['url']} is not the checkpoint the registry describes for {info['name']!r} "
            f"({info['variant']}): " + "; ".join(differences)
        )
    return state_dict


def registry_checkpoint(name, variant, progress=True):
    """`(path, state_dict)` of the registry checkpoint `name`/`variant`, verified.

    The cached file is used when it matches its SHA-256 (`known_sha256`, else the one recorded
    at its first download); otherwise it is downloaded (see `download`). Either way it is read
    and must have the architecture the registry promises; a cached file that fails is moved
    aside (`<file>.rejected`) and downloaded again, and a downloaded one that fails is not kept.

    Raises:
        WeightsDownloadError: no readable checkpoint could be downloaded.
        ValueError: the server's file is another architecture than the registry describes.
    """
    from keras_vswin.checkpoint_reader import CheckpointFormatError

    info = weights_info(name, variant)
    path = os.path.join(cache_dir(), info["filename"])
    expected, _ = known_sha256(info)
    loaded = {}

    def validate(file):
        loaded["state_dict"] = _read_registry_file(info, file)

    def fetch():
        try:
            download(info["url"], path, progress=progress, sha256=expected, validate=validate)
        except CheckpointFormatError as e:
            raise WeightsDownloadError(
                f"{info['url']} did not give a readable checkpoint ({e}); nothing was kept in "
                "the cache."
            ) from None

    fetch()
    if "state_dict" not in loaded:  # a cached file that matched its hash: read it now
        try:
            loaded["state_dict"] = _read_registry_file(info, path)
        except ValueError as e:
            _move_aside(path, e)
            fetch()
            if "state_dict" not in loaded:  # another process cached it meanwhile
                loaded["state_dict"] = _read_registry_file(info, path)
    return path, loaded.pop("state_dict")


def checkpoint_path(name, variant, progress=True):
    """Local path of the registry checkpoint `name`/`variant`, downloaded and verified if
    needed (`registry_checkpoint`; use that to get its arrays too)."""
    return registry_checkpoint(name, variant, progress=progress)[0]


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
    checkpoint, state_dict = registry_checkpoint(name, variant, progress)
    if progress:
        print(f"Converting {info['filename']} for Keras (once): {converted}", file=sys.stderr)
    started = time.perf_counter()
    model, report, _ = convert_state_dict(state_dict, classifier_activation=None)
    del state_dict
    with atomic.atomic_path(converted) as tmp:
        model.save_weights(tmp)
    record = _read_record(checkpoint) or {}
    meta = dict(
        format=_SIDECAR_FORMAT,
        weights=name,
        variant=variant,
        source=info["url"],
        source_file=info["filename"],
        source_bytes=os.path.getsize(checkpoint),
        source_sha256=record.get("sha256") or sha256_of(checkpoint),
        architecture=_jsonable(info["architecture"]),
        layout=report.layout,
        tensors=len(report.loaded),
        sha256=sha256_of(converted),
    )
    atomic.write_json(sidecar, meta)
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
    entry = _entry(name)
    for variant in entry["variants"]:
        if same_backbone(VARIANTS[variant], arch):
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
    source = resolve(weights)
    if source is None:
        raise ValueError("weights=None: nothing to load.")
    path = source.spec
    if source.kind == "registry":
        return _load_registry(
            model, path, arch, include_top, skip_head, resize_window, resize_method, progress
        )
    if source.kind == "weights_h5":
        if skip_head:
            raise ValueError(
                f"weights={path!r}: skip_head needs a .pth, .keras or registry checkpoint; a "
                ".weights.h5 file does not record its architecture."
            )
        model.load_weights(path)
        return None
    if source.kind == "keras":
        import keras

        source_model = keras.saving.load_model(path, compile=False)
        state_dict = convert.model_state_dict(source_model, with_index=False)
        source_classes = convert.model_architecture(source_model)["classes"]
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
    state_dict, source.state_dict = source.read(), None  # the arrays are copied into the model
    return _load_checkpoint_file(
        model,
        path,
        state_dict,
        arch,
        include_top,
        skip_head,
        resize_window,
        resize_method,
        inflation,
    )


def _load_checkpoint_file(
    model, path, state_dict, arch, include_top, skip_head, resize_window, resize_method, inflation
):
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


# ----------------------------------------------------------------------------------------------
# Checkpoint -> model


def convert_state_dict(
    state_dict,
    layout=None,
    classes=None,
    skip_head=False,
    include_top=None,
    window_size=None,
    resize_method="bicubic",
    patch_size=None,
    inflation="inflate",
    classifier_activation="softmax",
    **model_kwargs,
):
    """Build the `VideoSwin` a state dict describes and load it strictly.

    Args:
        state_dict: a Video Swin state dict of any layout, or an image Swin one (then inflated:
            `patch_size` default (2, 4, 4), `window_size` default (8, 7, 7), `inflation`).
        layout: the layout, detected when None.
        classes: head size; None keeps the checkpoint's (no head if it has none). A different
            count needs `skip_head=True` (a fresh head).
        skip_head: do not load the checkpoint's head.
        include_top: None = a head when the checkpoint has one or `classes` is given.
        window_size: None keeps the checkpoint's window; another window resizes the bias
            tables (`resize_bias_table` with `resize_method`).
        classifier_activation: the head's activation.
        **model_kwargs: more `VideoSwin` arguments (e.g. `input_shape`, `drop_path_rate`).

    Returns:
        `(model, report, architecture)`: the Keras model, the `LoadReport` and the inferred
        architecture.
    """
    if convert.is_2d_state_dict(state_dict):
        arch = convert.infer_2d_architecture(state_dict)
        arch.update(
            patch_size=tuple(patch_size or (2, *arch["patch_size"])),
            window_size=tuple(window_size or (8, 7, 7)),
            classes=None,
            layout="2d",
        )
        skip_head = True
    else:
        arch = convert.infer_architecture(state_dict, layout)
    head_classes = classes if classes is not None else arch["classes"]
    if include_top is None:
        include_top = head_classes is not None
    if include_top and head_classes is None:
        raise ValueError("The checkpoint has no head: pass classes=N for a new head.")
    if not include_top:
        skip_head = True
    elif arch["classes"] is not None and head_classes != arch["classes"] and not skip_head:
        raise ValueError(
            f"The checkpoint's head has {arch['classes']} classes, not classes={classes}: pass "
            "skip_head=True to fine-tune with a new head, or include_top=False."
        )
    config = {k: arch[k] for k in convert.MODEL_ARGUMENTS}
    if window_size is not None:
        config["window_size"] = tuple(window_size)
    variant = variant_of(config)
    if variant is not None:
        model_kwargs.setdefault("drop_path_rate", VARIANTS[variant]["drop_path_rate"])
        model_kwargs.setdefault("name", f"video_swin_{variant.lower()}")
    model = VideoSwin(
        **config,
        include_top=include_top,
        classes=head_classes if include_top else 400,
        classifier_activation=classifier_activation,
        **model_kwargs,
    )
    if arch["layout"] == "2d":
        report = convert.load_2d_state_dict(model, state_dict, method=inflation)
    else:
        report = convert.load_state_dict(
            model,
            state_dict,
            layout=arch["layout"],
            skip_head=skip_head,
            resize_window=config["window_size"] != arch["window_size"],
            resize_method=resize_method,
        )
    return model, report, arch


def convert_checkpoint(path, allow_unknown_globals=False, memory_budget=None, **kwargs):
    """`convert_state_dict(convert.read_state_dict(path, ...), **kwargs)`: the file is read
    strictly (any class outside the weights is refused) unless `allow_unknown_globals`."""
    state_dict = convert.read_state_dict(
        path, allow_unknown_globals=allow_unknown_globals, memory_budget=memory_budget
    )
    return convert_state_dict(state_dict, **kwargs)
