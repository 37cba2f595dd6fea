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
- `normal_permissions(path)`: gives a file or a folder tree the umask's permissions.

A writer killed by SIGKILL/SIGTERM leaves its temporary behind. A temporary is stale when it
was last modified before this process started and the process named in it (its pid) is gone:
`remove_stale` deletes such leftovers, and `atomic_path(path, resume=True)` takes over the
largest stale temporary of `path` instead (a download continues where the killed one stopped).
"""

import contextlib
import json
import os
import re
import shutil
import time
import uuid

# Suffixes that readers check (Keras refuses `x.keras.tmp`), kept at the end of temporaries.
_KEPT_SUFFIXES = (".weights.h5", ".keras", ".tfrecord", ".json", ".h5", ".pth")
TEMPORARY_MARK = ".tmp-"
_TEMPORARY = re.compile(r"\.(?P<stem>.*)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>.*)")


def _is_url(path):
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _umask():
    # Linux reports it; `os.umask` can only read it by setting it, which races with threads
    # creating files at that moment.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(path):
    """Gives `path` the permissions a plain `open`/`mkdir` would: `0o666 & ~umask` for files,
    `0o777 & ~umask` for folders (recursively). Writers like `mkstemp` (0600) or TensorFlow's
    `mkdir` (0755 whatever the umask) do not."""
    if _is_url(path):
        return
    mask = _umask()
    if os.path.isdir(path) and not os.path.islink(path):
        for root, _, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                file = os.path.join(root, name)
                if not os.path.islink(file):
                    os.chmod(file, 0o666 & ~mask)
    elif os.path.isfile(path) and not os.path.islink(path):
        os.chmod(path, 0o666 & ~mask)


def _split_suffix(base):
    suffix = next((s for s in _KEPT_SUFFIXES if base.endswith(s)), "")
    return (base[: len(base) - len(suffix)] if suffix else base), suffix


def temporary_name(path):
    """A unique sibling of `path`: `<dir>/.<name>.tmp-<pid>-<random><suffix>`."""
    path = os.fspath(path)
    directory, base = os.path.split(path.rstrip("/"))
    stem, suffix = _split_suffix(base)
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
def atomic_path(path, overwrite=True, resume=False):
    """Yields a temporary path next to `path`; when the block succeeds it becomes `path`.

    The block writes a file (or creates a directory) at the yielded path. On any error the
    temporary is removed and `path` is untouched. Parent directories are created (with the
    umask's permissions), and the result gets them too (`normal_permissions`).

    With `resume=True` (local files) the yielded path may already exist: it is the largest
    stale temporary of `path` that a killed writer left, renamed for this process, so the block
    can continue it (after checking it: a killed writer's last bytes may be missing).
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
    if resume and not _is_url(path):
        _adopt_stale(path, tmp)
    try:
        yield tmp
        normal_permissions(tmp)
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


def _writer_alive(pid):
    """Whether process `pid` (the writer named in a temporary) still runs on this machine."""
    if pid == os.getpid():
        return False  # an older temporary with our pid: a previous process that had it
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _stale(directory, older_than):
    """`(name, lstat)` of the stale temporaries in local `directory` (see the module doc)."""
    if older_than is None:
        older_than = _process_start_time()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None:
            continue
        try:
            info = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        if info.st_mtime < older_than and not _writer_alive(int(match["pid"])):
            found.append((name, info))
    return found


def _adopt_stale(path, tmp):
    """Renames the largest stale temporary of `path` to `tmp`; returns whether one existed."""
    directory, base = os.path.split(path)
    stem, suffix = _split_suffix(base)
    candidates = []
    for name, info in _stale(directory, None):
        match = _TEMPORARY.fullmatch(name)
        if (
            match["stem"] == stem
            and match["suffix"] == suffix
            and os.path.isfile(os.path.join(directory, name))
        ):
            candidates.append((info.st_size, name))
    for _, name in sorted(candidates, reverse=True):
        try:
            os.rename(os.path.join(directory, name), tmp)  # atomic: one process wins it
        except OSError:
            continue
        os.utime(tmp)  # now this process's live temporary
        return True
    return False


def remove_stale(directory, older_than=None):
    """Removes the temporaries (`.*.tmp-<pid>-*`) that killed writers left in `directory`.

    A temporary goes when it was last modified before `older_than` (default: this process's
    start) and its writer (the pid in its name) no longer runs, so a concurrent writer's live
    temporary is kept. Local folders only. Returns the removed paths.
    """
    if _is_url(directory) or not os.path.isdir(directory):
        return []
    removed = []
    for name, _ in _stale(directory, older_than):
        path = os.path.join(directory, name)
        try:
            _remove(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def _process_start_time():
    """This process's start as a Unix time (Linux `/proc`, to the clock tick), else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        # Both count from boot; `btime` in /proc/stat is rounded to whole seconds.
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()
