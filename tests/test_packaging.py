"""The library as a user installs it: a wheel holding only `keras_vswin`, the `keras-vswin`
command outside the repo, a layered package without import cycles."""

import ast
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_vswin")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), ROOT],
        capture_output=True, text=True, cwd=out,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("keras_vswin-*.whl")
    return path


def test_wheel_installs_only_keras_vswin(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["keras_vswin"]
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "keras-vswin = keras_vswin.cli:main" in archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "keras_vswin"
    }
    # What a pip user needs at run time is inside: label files and the recipe configs.
    assert "keras_vswin/labels/kinetics400.txt" in names
    assert "keras_vswin/finetune/configs/swin_t_k400.py" in names


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A fresh venv holding the wheel (not editable); its dependencies are this venv's, through
    a plain path entry (so this checkout's editable install is not seen)."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(site, "dependencies.pth"), "w") as handle:
        handle.write("\n".join(ours) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_installed_command_works_outside_the_repo(installed, tmp_path):
    from keras_vswin.cli import COMMANDS

    top = _run([str(installed / "bin" / "keras-vswin"), "--help"], tmp_path)
    assert top.returncode == 0, top.stderr[-2000:]
    assert all(name in top.stdout for name in COMMANDS)
    # Every subcommand's --help, in one process of the installed interpreter.
    script = (
        "import json, sys, keras_vswin, keras_vswin.cli as cli\n"
        "codes = {}\n"
        "for name in cli.COMMANDS:\n"
        "    try:\n"
        "        codes[name] = cli.main([name, '--help'])\n"
        "    except SystemExit as exit:\n"
        "        codes[name] = exit.code\n"
        "print(json.dumps({'file': keras_vswin.__file__, 'codes': codes}))\n"
        "try:\n"
        "    import training\n"
        "except ModuleNotFoundError:\n"
        "    print('no training package')\n"
    )
    proc = _run([str(installed / "bin" / "python"), "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-2])
    assert report["file"].startswith(str(installed))  # the wheel, not this checkout
    assert report["codes"] == {name: 0 for name in COMMANDS}
    assert proc.stdout.count("usage: keras-vswin ") >= len(COMMANDS)
    assert lines[-1] == "no training package"


def test_repo_entry_points_still_run(tmp_path):
    for module in ("training.train", "tfrecords.write", "conversion.convert"):
        proc = _run([sys.executable, "-m", module, "--help"], ROOT)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (module, proc.stderr[-2000:])


def _module_name(path):
    relative = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def _import_graph():
    """`{module: {imported keras_vswin modules}}`, imports anywhere in the file (top level or
    inside functions), with `from package import module` resolved to the module."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                modules[_module_name(os.path.join(folder, name))] = os.path.join(folder, name)
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("keras_vswin"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_vswin"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            # A package's __init__ re-exporting its own submodules is not a cycle of layers.
            if target.startswith(module + "."):
                continue
            if state.get(target) == "open":
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_layers_and_architecture_import_no_weights_loading():
    graph = _import_graph()
    loaders = {"keras_vswin.weights", "keras_vswin.applications", "keras_vswin.convert"}
    for module in ("keras_vswin.windows", "keras_vswin.layers", "keras_vswin.model"):
        assert not graph[module] & loaders, (module, graph[module])
    assert "keras_vswin.model" not in graph["keras_vswin.convert"]
    assert graph["keras_vswin.checkpoint_reader"] == set()  # a standard-library leaf


def test_import_keras_vswin_leaves_tensorflow_out_on_other_backends():
    script = (
        "import sys, keras_vswin\n"
        "m = keras_vswin.VideoSwin(embed_dim=8, depths=(1,), num_heads=(1,), classes=3)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
