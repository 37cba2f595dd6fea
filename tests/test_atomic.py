"""keras_vswin.atomic: what killed writers leave, and the permissions of what writers make.

Writers are real child processes killed with SIGKILL inside `atomic_path`; what they left is
cleaned (or taken over) by a process started after the kill, as a restarted run would be. The
children load `atomic.py` by its path (a standard-library module), so they start in
milliseconds instead of importing Keras.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from keras_vswin import atomic

PRELUDE = textwrap.dedent(
    f"""
    import importlib.util, json, os, sys, tempfile, time
    spec = importlib.util.spec_from_file_location("atomic", {atomic.__file__!r})
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)
    """
)
# A writer that has written `data` to its temporary and is still working when it is killed.
WRITER = PRELUDE + textwrap.dedent(
    """
    with atomic.atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as f:
            f.write(sys.argv[2].encode())
        print(tmp, flush=True)
        time.sleep(600)
    """
)


def start_writer(target, data):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), data], stdout=subprocess.PIPE, text=True
    )
    temporary = process.stdout.readline().strip()
    assert os.path.exists(temporary), temporary
    return process, temporary


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL


def run_later(code, *args, umask=None):
    """Runs `code` in a new process (started after what it cleans was last written)."""
    time.sleep(0.05)  # the start time is known to a clock tick (10 ms)
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        umask=-1 if umask is None else umask,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_killed_writers_temporaries_are_removed_live_ones_kept(tmp_path):
    killed, stale = start_writer(tmp_path / "model.keras", "half")
    live, running = start_writer(tmp_path / "other.weights.h5", "busy")
    try:
        kill(killed)
        assert os.path.basename(stale).startswith(".model.tmp-") and stale.endswith(".keras")
        assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (stale, running))
        # The live writer's temporary is older than the new process too: its pid keeps it.
        removed = run_later("print(json.dumps(atomic.remove_stale(sys.argv[1])))", tmp_path)
        assert json.loads(removed) == [stale]
        assert os.listdir(tmp_path) == [os.path.basename(running)]
        assert atomic.remove_stale(tmp_path) == []  # this process started before both
    finally:
        live.kill()
        live.wait()
        live.stdout.close()
    assert json.loads(run_later("print(json.dumps(atomic.remove_stale(sys.argv[1])))", tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_killed_writers_temporary_is_taken_over_with_resume(tmp_path):
    target = tmp_path / "weights.pth"
    killed, stale = start_writer(target, "first half|")
    kill(killed)
    smaller, _ = start_writer(target, "x")  # a shorter stale temporary of the same file
    kill(smaller)
    decoy, _ = start_writer(tmp_path / "other.pth", "not this one")
    kill(decoy)
    found = run_later(
        """
        with atomic.atomic_path(sys.argv[1], resume=True) as tmp:
            with open(tmp, "rb") as f:
                found = f.read().decode()
            with open(tmp, "ab") as f:
                f.write(b"second half")
            atomic.remove_stale(os.path.dirname(tmp))  # keeps the one taken over
        print(found)
        """,
        target,
    )
    assert found.strip() == "first half|"  # the largest one of this file
    assert target.read_text() == "first half|second half"
    assert os.listdir(tmp_path) == ["weights.pth"]


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_outputs_get_the_umask_permissions(tmp_path, umask):
    # mkstemp makes 0600 files, TensorFlow's mkdir 0755 folders whatever the umask.
    run_later(
        """
        target = sys.argv[1]
        with atomic.atomic_path(os.path.join(target, "model.weights.h5")) as tmp:
            os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))  # as mkstemp makes it
        with atomic.atomic_path(os.path.join(target, "saved_model")) as tmp:
            os.mkdir(tmp, 0o755)
            os.mkdir(os.path.join(tmp, "variables"), 0o700)
            fd, _ = tempfile.mkstemp(dir=os.path.join(tmp, "variables"))
            os.close(fd)
        atomic.write_json(os.path.join(target, "nested", "run.json"), {})
        """,
        tmp_path / "out",
        umask=umask,
    )
    modes = {}
    for root, folders, files in os.walk(tmp_path / "out"):
        for name in folders + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, tmp_path)] = stat.S_IMODE(os.lstat(path).st_mode)
    files = {p: m for p, m in modes.items() if os.path.isfile(tmp_path / p)}
    folders = {p: m for p, m in modes.items() if p not in files}
    assert len(files) == 3 and len(folders) == 3, modes
    assert set(files.values()) == {0o666 & ~umask}, modes
    assert set(folders.values()) == {0o777 & ~umask}, modes
    assert not [p for p in modes if atomic.TEMPORARY_MARK in p]
