"""Tests for the torch-free, code-free PyTorch checkpoint reader.

Real checkpoints are written by torch (zip and legacy formats) into tmp_path; hostile and
broken files are crafted by hand. The reader itself never imports torch.
"""

import collections
import collections.abc
import io
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import _hostile_checkpoints as hostile
import numpy as np
import pytest

from keras_vswin import checkpoint_reader as cr
from keras_vswin.checkpoint_reader import (
    EXPECTED,
    CheckpointFormatError,
    OpaqueObject,
    UnsafeCheckpointError,
    load_checkpoint,
    state_dict_from_checkpoint,
)

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _save(obj, path, legacy):
    torch = pytest.importorskip("torch")
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _expected(tensor):
    """The numpy array the reader should produce for a torch tensor."""
    torch = pytest.importorskip("torch")
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.contiguous().numpy()


def _assert_same(array, tensor, name=""):
    expected = _expected(tensor)
    assert isinstance(array, np.ndarray), name
    assert array.dtype == expected.dtype, name
    assert array.shape == expected.shape, name
    np.testing.assert_array_equal(array, expected, err_msg=name)
    assert array.flags.writeable, name


# --------------------------------------------------------------------------------------------
# Real torch files
# --------------------------------------------------------------------------------------------


def _tensor_zoo():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    flat = torch.arange(10, dtype=torch.int64)
    return collections.OrderedDict(
        f32=torch.randn(3, 5, generator=gen),
        f16=torch.randn(2, 3, generator=gen).half(),
        bf16=torch.randn(2, 4, generator=gen).bfloat16(),
        f64=torch.randn(3, generator=gen, dtype=torch.float64),
        i64=torch.arange(-3, 3),
        i32=torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        i16=torch.tensor([-7, 7], dtype=torch.int16),
        i8=torch.tensor([-128, 127], dtype=torch.int8),
        u8=torch.tensor([0, 255], dtype=torch.uint8),
        u16=torch.tensor([1, 65535], dtype=torch.uint16),  # saved via _rebuild_tensor_v3
        flags=torch.tensor([True, False, True]),
        c64=torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64),
        conj=torch.tensor([1 + 2j], dtype=torch.complex64).conj(),  # lazy conj bit
        scalar=torch.tensor(2.5),  # 0-dim
        scalar_bf16=torch.tensor(-1.5, dtype=torch.bfloat16),
        scalar_i64=torch.tensor(7),
        empty=torch.zeros(0, 3),
        base=base,
        transposed=base.t(),  # non-contiguous, shares base's storage
        rows=base[1:3],  # contiguous slice with an offset
        cols=base[:, 2:5],  # non-contiguous slice
        strided=base[::2, ::3],
        head=flat[:4],  # two slices of one storage
        tail=flat[6:],
        expanded=torch.tensor([1.0, 2.0]).expand(3, 2),  # stride 0
        param=torch.nn.Parameter(torch.ones(2, 2)),
    )


@FORMATS
def test_tensor_dtypes_views_and_meta_match_torch(tmp_path, legacy):
    zoo = _tensor_zoo()
    meta = {
        "epoch": 3,
        "name": "swin",
        "lr": [0.1, 0.01],
        "flags": (True, None, False),
        "blob": b"\x00\xff",
        "big": 2**70,
        "nested": {"a": {"b": [1, 2.5, "x"]}},
    }
    path = _save({"state_dict": zoo, "meta": meta}, tmp_path / "ckpt.pth", legacy)
    loaded = load_checkpoint(path)
    assert set(loaded) == {"state_dict", "meta"}
    assert loaded["meta"] == meta
    state = loaded["state_dict"]
    assert isinstance(state, collections.OrderedDict)
    assert list(state) == list(zoo)
    for name, tensor in zoo.items():
        _assert_same(state[name], tensor, name)
    assert state["bf16"].dtype == np.float32  # documented conversion
    assert state["flags"].dtype == np.bool_
    assert state["scalar"].shape == () and isinstance(state["scalar"], np.ndarray)
    assert state["transposed"].flags.c_contiguous


@FORMATS
def test_official_style_checkpoint_and_state_dict_helper(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, (2, 4, 4), stride=(2, 4, 4)),
        torch.nn.Flatten(),
        torch.nn.LayerNorm(8),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 2, 4, 4)).sum().backward()
    optimizer.step()
    checkpoint = {
        "meta": {
            "mmcv_version": "1.3.1",
            "time": "Thu Jun 24 10:00:00 2021",
            "epoch": 30,
            "iter": 1000,
            "config": "model = dict(type='Recognizer3D')",
            "CLASSES": ("a", "b"),
            "hook_msgs": {"best_score": np.float64(0.8125), "ids": np.arange(3)},
        },
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}},
    }
    loaded = load_checkpoint(_save(checkpoint, tmp_path / "official.pth", legacy))
    assert set(loaded) == {"meta", "state_dict", "optimizer", "amp"}
    assert loaded["meta"]["CLASSES"] == ("a", "b")
    best = loaded["meta"]["hook_msgs"]["best_score"]
    assert isinstance(best, np.float64) and best == 0.8125
    np.testing.assert_array_equal(loaded["meta"]["hook_msgs"]["ids"], np.arange(3))
    assert loaded["amp"] == checkpoint["amp"]
    # module.state_dict() keeps its `_metadata` attribute (module versions)
    assert loaded["state_dict"]._metadata == model.state_dict()._metadata
    group = loaded["optimizer"]["param_groups"][0]
    assert group["lr"] == 1e-3 and group["params"] == [0, 1, 2, 3]
    saved_state = optimizer.state[model[0].weight]
    _assert_same(loaded["optimizer"]["state"][0]["exp_avg"], saved_state["exp_avg"])
    _assert_same(loaded["optimizer"]["state"][0]["step"], saved_state["step"])  # 0-dim

    weights = state_dict_from_checkpoint(loaded)
    assert list(weights) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        _assert_same(weights[name], tensor, name)


def test_state_dict_helper_variants():
    a = np.zeros(2, np.float32)
    assert state_dict_from_checkpoint({"w": a}) == {"w": a}
    assert state_dict_from_checkpoint({"model": {"w": a}, "epoch": 3}) == {"w": a}
    assert state_dict_from_checkpoint({"module": {"w": a}}) == {"w": a}
    assert state_dict_from_checkpoint({"model_state": {"w": a}}) == {"w": a}
    with pytest.raises(CheckpointFormatError, match="not an array"):
        state_dict_from_checkpoint({"state_dict": {"w": a, "extra": "text"}})
    with pytest.raises(CheckpointFormatError, match="top-level keys: 'meta'"):
        state_dict_from_checkpoint({"meta": {"x": 1}})
    with pytest.raises(CheckpointFormatError, match="expected a mapping"):
        state_dict_from_checkpoint([a])


def test_bare_storage_and_protocol_5_file(tmp_path):
    torch = pytest.importorskip("torch")
    storage = torch.arange(3, dtype=torch.float32).untyped_storage()
    torch.save(storage, tmp_path / "storage.pth")
    raw = load_checkpoint(tmp_path / "storage.pth")
    np.testing.assert_array_equal(raw.view(np.float32), [0, 1, 2])
    torch.save({"w": torch.ones(2), "s": {1, 2}}, tmp_path / "p5.pth", pickle_protocol=5)
    loaded = load_checkpoint(tmp_path / "p5.pth")
    assert loaded["s"] == {1, 2}
    np.testing.assert_array_equal(loaded["w"], [1, 1])


def test_big_endian_zip_archive(tmp_path):
    """A zip written on a big-endian machine has byteorder 'big' and swapped storages."""
    torch = pytest.importorskip("torch")
    tensors = {"f": torch.tensor([1.5, -2.0]), "i": torch.tensor([1, -(2**40)])}
    src = _save(tensors, tmp_path / "little.pth", legacy=False)
    loaded_little = load_checkpoint(src)
    dst = tmp_path / "big.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif info.filename.endswith("/data/0"):
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            elif info.filename.endswith("/data/1"):
                data = np.frombuffer(data, "<i8").astype(">i8").tobytes()
            zout.writestr(info, data)
    loaded = load_checkpoint(dst)
    for name, tensor in tensors.items():
        _assert_same(loaded[name], tensor, name)
        assert loaded[name].dtype.isnative
    assert loaded_little.keys() == loaded.keys()


# --------------------------------------------------------------------------------------------
# Hostile files: nothing may run
# --------------------------------------------------------------------------------------------


class _ExecPayload:
    """Unpickling this with pickle runs exec(), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class _SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _legacy_form(main_pickle):
    header = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return header + main_pickle + pickle.dumps([], protocol=2)


def _zip_form(data_pkl, storages=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_exec_payload_is_live_with_plain_pickle(tmp_path):
    """Control: the crafted payload really runs code when unpickled the normal way."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_ExecPayload(marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("payload_cls", [_ExecPayload, _SystemPayload], ids=["exec", "system"])
@pytest.mark.parametrize("form", ["bare", "legacy", "zip"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload_cls, form):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(payload_cls(marker), protocol=2)
    data = {"bare": payload, "legacy": _legacy_form(payload), "zip": _zip_form(payload)}[form]
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    expected = "builtins.exec" if payload_cls is _ExecPayload else f"{os.system.__module__}.system"
    assert info.value.global_name == expected
    assert expected in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


@FORMATS
def test_payload_hidden_in_real_checkpoint_meta(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    checkpoint = {"state_dict": {"w": torch.ones(3)}, "meta": {"hook": _ExecPayload(marker)}}
    path = _save(checkpoint, tmp_path / "trojan.pth", legacy)
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        load_checkpoint(path)
    assert not marker.exists()
    # The opt-in placeholder mode reads the weights; the payload stays an inert record.
    loaded = load_checkpoint(path, allow_unknown_globals=True)
    hook = loaded["meta"]["hook"]
    assert isinstance(hook, OpaqueObject) and hook.name == "builtins.exec"
    np.testing.assert_array_equal(loaded["state_dict"]["w"], np.ones(3, np.float32))
    assert not marker.exists()


def test_unknown_globals_are_refused_with_their_name(tmp_path):
    torch = pytest.importorskip("torch")
    import argparse

    path = _save({"meta": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pth", legacy=False)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        load_checkpoint(path)
    opaque = load_checkpoint(path, allow_unknown_globals=True)["meta"]
    assert opaque.name == "argparse.Namespace" and opaque.state == {"lr": 0.1}

    whole_model = _save(torch.nn.Linear(2, 2), tmp_path / "model.pth", legacy=False)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_checkpoint(whole_model)


def test_torchscript_archive_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(CheckpointFormatError, match="TorchScript"):
        load_checkpoint(tmp_path / "ts.pt")


# --------------------------------------------------------------------------------------------
# Crafted storage references
# --------------------------------------------------------------------------------------------


def _u(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _ints(values):
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _tensor_pkl(size, stride, offset=0, numel=4, key="0"):
    pid = b"(" + _u("storage") + b"ctorch\nFloatStorage\n" + _u(key) + _u("cpu")
    pid += b"J" + struct.pack("<i", numel) + b"t"
    args = b"(" + pid + b"Q" + b"J" + struct.pack("<i", offset) + _ints(size) + _ints(stride)
    args += b"\x89" + b"ccollections\nOrderedDict\n)R" + b"t"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return b"\x80\x02}" + _u("w") + tensor + b"s."


def test_crafted_tensor_references(tmp_path):
    storage = {"0": np.arange(4, dtype="<f4").tobytes()}
    good = tmp_path / "good.pth"
    good.write_bytes(_zip_form(_tensor_pkl((2, 2), (1, 2)), storage))
    np.testing.assert_array_equal(load_checkpoint(good)["w"], [[0, 2], [1, 3]])

    cases = {
        "oob": (_tensor_pkl((3, 2), (2, 1)), storage, "reaches element 5"),
        "offset": (_tensor_pkl((4,), (1,), offset=1), storage, "reaches element 4"),
        "missing": (_tensor_pkl((2,), (1,), key="7"), storage, "archive/data/7 is missing"),
        "size": (_tensor_pkl((2,), (1,), numel=8), storage, "declares 8 elements"),
    }
    for name, (pkl, storages, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(_zip_form(pkl, storages))
        with pytest.raises(CheckpointFormatError, match=message) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# Broken and wrong files
# --------------------------------------------------------------------------------------------


def _small_checkpoint(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    obj = {"state_dict": {"w": torch.arange(256, dtype=torch.float32)}, "meta": {"x": "y" * 300}}
    return _save(obj, tmp_path / f"small_{legacy}.pth", legacy)


def _assert_format_error(path, *fragments):
    with pytest.raises(CheckpointFormatError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_truncated_zip(tmp_path):
    data = _small_checkpoint(tmp_path, legacy=False).read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        _assert_format_error(path, "truncated or corrupt zip", EXPECTED)


def test_corrupt_zip_record(tmp_path):
    src = _small_checkpoint(tmp_path, legacy=False)
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(next(n for n in zf.namelist() if n.endswith("/data/0")))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 100] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(data))
    _assert_format_error(path, "corrupt", "CRC")


def test_truncated_legacy(tmp_path):
    data = _small_checkpoint(tmp_path, legacy=True).read_bytes()
    for cut in (200, len(data) - 10):  # inside the main pickle, inside the storage data
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        _assert_format_error(path, "truncated", EXPECTED)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a checkpoint\n")
    _assert_format_error(text, "text file", EXPECTED)
    png = tmp_path / "image.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    _assert_format_error(png, "PNG", EXPECTED)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _assert_format_error(empty, "empty", EXPECTED)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    _assert_format_error(plain, "not one written by torch.save")
    npz = tmp_path / "arrays.npz"
    np.savez(npz, w=np.ones(2))
    _assert_format_error(npz, "data.pkl")
    deep = tmp_path / "deep.pth"
    deep.write_bytes(_legacy_form(b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."))
    _assert_format_error(deep, "nested too deeply")


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(missing)
    with pytest.raises(IsADirectoryError):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------------
# The interpreter against Python's pickle on plain data
# --------------------------------------------------------------------------------------------


def _safe_loads(data):
    reader = cr._Reader(io.BytesIO(data), len(data), "<memory>")
    budget = cr._Budget(cr.default_memory_budget(len(data)))
    return cr._finalize(cr._Unpickler(reader, "<memory>", budget).load(), budget)


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_matches_pickle(protocol):
    shared = [1, 2]
    obj = {
        "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**64, -(2**100)],
        "floats": [0.0, -1.5, 1e300, float("inf")],
        "text": ["", "ascii", "ünïcødé", "emoji \U0001f600", "line\nbreak", "quote'\""],
        "bytes": [b"", b"\x00\xff" * 3, bytearray(b"ab")],
        "misc": (None, True, False, complex(1, -2), slice(1, None, 2)),
        "sets": [{1, "a"}, frozenset({2, 3})],
        "od": collections.OrderedDict([("b", 1), ("a", 2)]),
        "shared": (shared, shared),
        3: "int key",
    }
    data = pickle.dumps(obj, protocol=protocol)
    loaded = _safe_loads(data)
    assert loaded == pickle.loads(data)
    assert loaded["shared"][0] is loaded["shared"][1]
    assert type(loaded["od"]) is collections.OrderedDict


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy_values(protocol):
    obj = [
        np.float64(0.25),
        np.int64(-3),
        np.float32(1.5),
        np.bool_(True),
        np.str_("abc"),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        np.array([1, 2], dtype=">i4"),
        np.array(["ab", "c"]),
        np.array([b"x", b"yz"]),
        np.dtype("float16"),
    ]
    loaded = _safe_loads(pickle.dumps(obj, protocol=protocol))
    for got, want in zip(loaded, obj, strict=True):
        assert type(got) is type(want) or isinstance(got, np.ndarray)
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
            assert got.dtype.isnative
        else:
            assert got == want
    with pytest.raises(cr._Bad, match="'O8' is not allowed"):
        _safe_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=protocol))


def test_reader_imports_only_stdlib_and_numpy():
    path = Path(cr.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('reader', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = {'torch', 'tensorflow', 'keras', 'ml_dtypes'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Hostile files: bounded memory, bounded recursion (issue 13)
# --------------------------------------------------------------------------------------------

# Each bomb is loaded in a child process whose address space may grow by CHILD_CAP only: a
# regression fails (MemoryError, a crash, a timeout) instead of eating the machine.
CHILD_CAP = 512 << 20
BOMBS = {
    "deep_tuple_key": (lambda p: hostile.deep_tuple_key(p, 200_000), "nested too deeply"),
    "deep_tuple_key_50k": (lambda p: hostile.deep_tuple_key(p, 50_000), "nested too deeply"),
    "zero_stride": (hostile.zero_stride, "(32768, 32768) (stride (0, 0), torch.float32)"),
    "zero_stride_10^6": (lambda p: hostile.zero_stride(p, (10**6, 10**6)), "3.6 TiB more"),
    "overlapping_stride": (hostile.overlapping_stride, "stride (1, 1)"),
    "pickle_deflate_bomb": (hostile.pickle_deflate_bomb, "data.pkl would take 64.0 MiB"),
    "storage_size_mismatch": (
        lambda p: hostile.storage_deflate_bomb(p, megabytes=256),
        "has 268435456 bytes, but the pickle declares 4 elements",
    ),
    "storage_deflate_bomb": (
        lambda p: hostile.storage_deflate_bomb(p, megabytes=256, declared_numel=None),
        "storage '0' would take 256.0 MiB",
    ),
    "shared_tuple_key": (hostile.shared_tuple_key, "steps to hash"),
    "shared_list_meta": (hostile.shared_list_meta, "share parts so heavily"),
    "reused_string": (hostile.reused_string, "_codecs.encode would take"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_within_the_budget(tmp_path, name):
    build, fragment = BOMBS[name]
    path = build(tmp_path / f"{name}.pth")
    result = hostile.load_in_child(cr.__file__, path, CHILD_CAP, timeout=60)
    assert result["outcome"] == "refused", result
    assert result["type"] == "CheckpointFormatError"
    assert str(path) in result["message"] and fragment in result["message"], result["message"]
    budget = cr.default_memory_budget(path.stat().st_size)
    assert result["peak_mib"] < budget / 2**20 + 16, result


@pytest.mark.parametrize("name", ["deep_tuple_key", "zero_stride", "shared_tuple_key"])
def test_bomb_in_legacy_format_is_refused(tmp_path, name):
    build, fragment = BOMBS[name]
    with zipfile.ZipFile(build(tmp_path / "zip.pth")) as zf:
        pkl = zf.read("archive/data.pkl")
        storages = [("0", zf.read("archive/data/0"), 4)] if "zero" in name else []
    path = tmp_path / f"{name}_legacy.pth"
    path.write_bytes(hostile.legacy_form(pkl, storages))
    result = hostile.load_in_child(cr.__file__, path, CHILD_CAP, timeout=60)
    assert result["outcome"] == "refused" and fragment in result["message"], result
    assert str(path) in result["message"]


def test_real_checkpoint_loads_within_the_budget_in_a_limited_process(tmp_path):
    """Control for the bomb tests: a genuine 24 MiB file loads under the same limits, with a
    peak of about its size."""
    torch = pytest.importorskip("torch")
    state = {f"w{i}": torch.randn(1024, 1024) for i in range(6)}
    state["t"] = torch.randn(512, 1024).t()  # a non-contiguous view: copied
    path = _save({"state_dict": state, "meta": {"epoch": 1}}, tmp_path / "real.pth", False)
    result = hostile.load_in_child(cr.__file__, path, CHILD_CAP, timeout=60)
    assert result["outcome"] == "loaded", result
    size_mib = path.stat().st_size / 2**20
    assert result["peak_mib"] < 1.5 * size_mib + 16, result


def test_metadata_heavy_pickle_loads_within_the_budget(tmp_path):
    """The budget is charged close to real memory: a file that is all metadata (Python objects
    take ~6-9x its bytes) loads; one needing more is refused, naming memory_budget."""
    meta = {
        "history": [i * 0.5 for i in range(400_000)],
        "names": {f"class_{i}": i for i in range(100_000)},
    }
    path = tmp_path / "meta.pth"
    path.write_bytes(hostile.zip_form(pickle.dumps({"meta": meta}, protocol=2)))
    assert load_checkpoint(path)["meta"] == meta
    rows = [[i, (i, str(i))] for i in range(200_000)]  # ~15x its bytes once unpickled
    path.write_bytes(hostile.zip_form(pickle.dumps({"rows": rows}, protocol=2)))
    _assert_format_error(path, "memory budget", "memory_budget")
    assert load_checkpoint(path, memory_budget=256 << 20)["rows"] == rows


def test_expanded_views_load_within_the_budget(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"row": torch.arange(3.0).expand(4, 3), "big": torch.ones(1).expand(1024, 1024)}
    path = _save(state, tmp_path / "expanded.pth", legacy=False)
    loaded = load_checkpoint(path)  # 4 MiB materialised from a ~1 KiB file: within budget
    for name, tensor in state.items():
        _assert_same(loaded[name], tensor, name)
    with pytest.raises(CheckpointFormatError, match="memory budget of 1.0 MiB") as info:
        load_checkpoint(path, memory_budget=1 << 20)
    assert str(path) in str(info.value) and "(1024, 1024) (stride (0, 0)" in str(info.value)
    with pytest.raises(ValueError, match="memory_budget"):
        load_checkpoint(path, memory_budget=-1)


def test_storage_size_is_checked_before_reading(tmp_path):
    # A storage entry larger than the pickle declares is refused before a byte of it is read:
    # its zip record here is corrupt beyond its header, and that is never noticed.
    data = hostile.state_dict_pkl({"w": hostile.tensor((4,), (1,), numel=4)})
    path = tmp_path / "size.pth"
    path.write_bytes(hostile.zip_form(data, {"0": bytes(32)}))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("archive/data/0")
    raw[info.header_offset : info.header_offset + 4] = b"XXXX"  # its local header signature
    path.write_bytes(bytes(raw))
    _assert_format_error(path, "has 32 bytes, but the pickle declares 4 elements of 4 bytes")


def test_unusable_zip_entries_are_refused(tmp_path):
    data = hostile.state_dict_pkl({"w": hostile.tensor((4,), (1,), numel=4)})
    storage = struct.pack("<4f", 1, 2, 3, 4)

    def archive(name, **entry):
        path = tmp_path / f"{name}.pth"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", data)
            info = zipfile.ZipInfo("archive/data/0")
            info.compress_type = entry.get("method", zipfile.ZIP_STORED)
            zf.writestr(info, storage)
            if "flag" in entry:
                info.flag_bits |= entry["flag"]
            for extra_name, extra in entry.get("extra", []):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Duplicate name"
                    zf.writestr(extra_name, extra)
        return path

    np.testing.assert_array_equal(load_checkpoint(archive("ok"))["w"], [1, 2, 3, 4])
    deflated = archive("deflated", method=zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(load_checkpoint(deflated)["w"], [1, 2, 3, 4])
    # bz2 and lzma output is not bounded by zipfile while decompressing: refused unread
    _assert_format_error(archive("bz2", method=zipfile.ZIP_BZIP2), "compression method 12")
    _assert_format_error(archive("lzma", method=zipfile.ZIP_LZMA), "compression method 14")
    _assert_format_error(archive("encrypted", flag=0x1), "is encrypted")
    twice = archive("twice", extra=[("archive/data/0", b"\x00" * 16)])
    _assert_format_error(twice, "two entries named 'archive/data/0'")
    order = archive("order", extra=[("archive/byteorder", b"little" * 1000)])
    _assert_format_error(order, "byteorder holds 6000 bytes")


def test_keys_must_be_plain_values(tmp_path):
    cases = {
        "list": b"\x80\x02}]K\x00s.",
        "storage": b"\x80\x02}" + hostile.storage_pid(numel=1) + b"K\x00s.",
        "tuple_with_list": b"\x80\x02}(]t" + b"K\x00s.",
        "set_of_dicts": b"\x80\x02\x8f(}\x90.",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(hostile.zip_form(data, {"0": bytes(4)}))
        message = _assert_format_error(path, "invalid checkpoint")
        assert "key" in message or "element" in message, message
    # plain keys, including tuples of them, still load
    ok = {("a", 1): frozenset({(1, 2), 3.5}), None: {b"x": 1}}
    path = tmp_path / "ok.pth"
    path.write_bytes(hostile.zip_form(pickle.dumps(ok, protocol=2)))
    assert load_checkpoint(path) == ok


def test_deep_and_shared_values_are_refused(tmp_path):
    deep = b"\x80\x02" + b"]" * 150 + b"a" * 149 + b"."
    path = tmp_path / "deep.pth"
    path.write_bytes(hostile.zip_form(deep))
    _assert_format_error(path, "nested too deeply (more than 100 levels)")
    shallow = b"\x80\x02" + b"]" * 90 + b"a" * 89 + b"."
    path.write_bytes(hostile.zip_form(shallow))
    value = load_checkpoint(path)
    for _ in range(89):
        (value,) = value
    assert value == []
    # shared, not deep: 2**30 nodes for repr or json, in a 300-byte file
    assert "share parts" in _assert_format_error(hostile.shared_list_meta(path, 30))
    loaded = load_checkpoint(hostile.shared_list_meta(path, 8))  # 2**8: fine
    assert len(repr(loaded["meta"])) > 2**8


class _PairMapping(collections.abc.Mapping):
    """A mapping that never hashes its keys (so it can hold a deeply nested one)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __getitem__(self, key):
        for k, v in self.pairs:
            if k is key:
                return v
        raise KeyError("not here")

    def __iter__(self):
        return (k for k, _ in self.pairs)

    def __len__(self):
        return len(self.pairs)


def test_state_dict_helper_reports_deep_keys_without_recursion():
    deep = []
    for _ in range(200_000):
        deep = [deep]
    with pytest.raises(CheckpointFormatError, match=r"top-level keys: \[\[\[\[") as info:
        state_dict_from_checkpoint(_PairMapping([(deep, np.zeros(1))]))
    assert len(str(info.value)) < 400
    nested = {"state_dict": _PairMapping([(deep, np.zeros(1))])}
    with pytest.raises(CheckpointFormatError, match=r"non-string key \[\[\[\[") as info:
        state_dict_from_checkpoint(nested)
    assert len(str(info.value)) < 300


def test_unknown_global_in_meta_is_refused_or_a_logged_placeholder(tmp_path, caplog):
    marker = tmp_path / "pwned"
    path = hostile.meta_global(tmp_path / "meta.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="'os.system'") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and info.value.global_name == "os.system"
    assert isinstance(info.value, cr.CheckpointError)
    with caplog.at_level("WARNING", logger="keras_vswin"):
        loaded = load_checkpoint(path, allow_unknown_globals=True)
    assert "os.system" in caplog.text and str(path) in caplog.text
    hook = loaded["meta"]["hook"]
    assert isinstance(hook, OpaqueObject) and hook.name == "os.system"
    assert hook.args == (f"touch '{marker}'",)
    np.testing.assert_array_equal(state_dict_from_checkpoint(loaded)["w"], [1, 2, 3, 4])
    assert not marker.exists()
