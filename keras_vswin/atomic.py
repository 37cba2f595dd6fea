"""Files and directories that appear whole or not at all.

Everything keras-vswin writes goes through here: the output is produced under a temporary
sibling name, then renamed onto its final name, so a reader (or a killed writer's next run)
sees the old file or the complete new one, never a half-written one. Local paths are fsynced
before the rename; URLs with a scheme (`gs://...`) go through `tf.io.gfile`. New files get the
usual `0o666 & ~umask` permissions (not `mkstemp`'s 0600).

- `atomic_path(path)`: a context manager yielding the temporary path to write.
- `write_text(path, text)`, `write_json(path, payload)`: the common cases.
- `move_into_place(tmp, target, overwrite)`: the rename, for files and directories.
- `temporary_name(path)`: the temporary sibling name (keeps Keras' `.keras`/`.weights.h5`).
- `remove_stale(directory)`: removes temporaries left by killed writers.
"""

import contextlib
import json
import os
import shutil
import time
import uuid

# Suffixes that readers check (Keras refuses `x.keras.tmp`), kept at the end of temporaries.
_KEPT_SUFFIXES = (".weights.h5", ".keras", ".tfrecord", ".json", ".h5", ".pth")
TEMPORARY_MARK = ".tmp-"


def _is_url(path):
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_name(path):
    """A unique sibling of `path`: `<dir>/.<name>.tmp-<pid>-<random><suffix>`."""
    path = os.fspath(path)
    directory, base = os.path.split(path.rstrip("/"))
    suffix = next((s for s in _KEPT_SUFFIXES if base.endswith(s)), "")
    stem = base[: len(base) - len(suffix)] if suffix else base
    name = f".{stem}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    return f"{directory}/{name}" if _is_url(path) else os.path.join(directory, name)


def _exists(path):
    return FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it.")


def _fsync(path):
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(os.path.join(root, name))
        flags = os.O_RDONLY
    elif os.path.isfile(path):
        flags = os.O_RDONLY
    else:
        return
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    if _is_url(path):
        gfile = _gfile()
        if gfile.isdir(path):
            gfile.rmtree(path)
        elif gfile.exists(path):
            gfile.remove(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def move_into_place(tmp, target, overwrite=True):
    """Renames `tmp` (a file or a directory) onto `target`.

    An existing `target` is replaced only with `overwrite` (else `FileExistsError`); a
    directory is swapped via a backup name, restored if the rename fails.
    """
    if _is_url(target):
        gfile = _gfile()
        if gfile.exists(target) and not overwrite:
            raise FileExistsError(
                f"{target} exists; pass --overwrite (overwrite=True) to replace it."
            )
        if gfile.isdir(target):
            gfile.rmtree(target)
        gfile.rename(tmp, target, overwrite=True)
        return
    _fsync(tmp)
    if os.path.isdir(target) and not os.path.islink(target):
        if not overwrite:
            raise FileExistsError(
                f"{target} exists; pass --overwrite (overwrite=True) to replace it."
            )
        old = temporary_name(target)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.exists(target) and not overwrite:
        raise _exists(target)
    else:
        os.replace(tmp, target)
    _fsync(os.path.dirname(os.path.abspath(target)))


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yields a temporary path next to `path`; when the block succeeds it becomes `path`.

    The block writes a file (or creates a directory) at the yielded path. On any error the
    temporary is removed and `path` is untouched. Parent directories are created.
    """
    path = os.fspath(path)
    if not _is_url(path):
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    elif not _gfile().exists(path.rsplit("/", 1)[0]):
        _gfile().makedirs(path.rsplit("/", 1)[0])
    if not overwrite and (_gfile().exists(path) if _is_url(path) else os.path.exists(path)):
        raise _exists(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not _is_url(tmp) and os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        move_into_place(tmp, path, overwrite=overwrite)
    finally:
        _remove(tmp)


def write_bytes(path, data):
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        if _is_url(tmp):
            with _gfile().GFile(tmp, "wb") as handle:
                handle.write(data)
        else:
            with open(tmp, "wb") as handle:
                handle.write(data)
    return path


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, payload, indent=2):
    """Writes `payload` as JSON (with a final newline) to `path` atomically."""
    return write_text(path, json.dumps(payload, indent=indent) + "\n")


def remove_stale(directory, older_than=None):
    """Removes temporaries (`.*.tmp-*`) that killed writers left in `directory`.

    Only those last modified before `older_than` (default: this process's start) go, so a
    concurrent writer's live temporary is kept. Returns the removed paths.
    """
    if _is_url(directory) or not os.path.isdir(directory):
        return []
    if older_than is None:
        older_than = _process_start_time()
    removed = []
    for name in os.listdir(directory):
        if not (name.startswith(".") and TEMPORARY_MARK in name):
            continue
        path = os.path.join(directory, name)
        try:
            if os.lstat(path).st_mtime < older_than:
                _remove(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def _process_start_time():
    """This process's start as a Unix time (Linux `/proc`), else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return time.time()
