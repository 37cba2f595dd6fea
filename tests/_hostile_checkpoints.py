"""Hostile PyTorch checkpoint files, and a child process that loads one under memory limits.

Shared by tests/test_checkpoint_reader*.py and benchmarks/bench_checkpoint_reader.py. Nothing
here imports torch or keras_vswin: the files are crafted opcode by opcode, and the child loads
the reader by file path so that it measures the reader alone.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# --------------------------------------------------------------------------------------------
# Pickle pieces (protocol 2 opcodes)
# --------------------------------------------------------------------------------------------


def u(text):
    """BINUNICODE."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i4(value):
    """BININT (a signed 32-bit int)."""
    return b"J" + struct.pack("<i", value)


def long1(value):
    """LONG1: any int."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def int_tuple(values):
    return b"(" + b"".join(long1(v) for v in values) + b"t"


def storage_pid(key="0", numel=1, storage="FloatStorage"):
    """The persistent id of a storage: ('storage', torch.<storage>, key, 'cpu', numel)."""
    pid = b"(" + u("storage") + f"ctorch\n{storage}\n".encode() + u(key) + u("cpu")
    return pid + long1(numel) + b"tQ"


def tensor(size, stride, offset=0, numel=1, key="0"):
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    args = b"(" + storage_pid(key, numel) + long1(offset) + int_tuple(size) + int_tuple(stride)
    args += b"\x89" + b"ccollections\nOrderedDict\n)R" + b"t"
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def state_dict_pkl(entries):
    """A protocol-2 pickle of {name: piece} where each piece pushes one value."""
    body = b"".join(u(name) + piece for name, piece in entries.items())
    return b"\x80\x02}(" + body + b"u."


def legacy_form(main_pickle, storages=()):
    """The legacy torch.save format around `main_pickle`; `storages`: (key, raw bytes, itemsize)."""
    header = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    out = header + main_pickle + pickle.dumps([key for key, _, _ in storages], protocol=2)
    for _key, raw, itemsize in storages:
        out += struct.pack("<q", len(raw) // itemsize) + raw
    return out


def zip_form(data_pkl, storages=None, deflate=False):
    """The zip torch.save format: archive/data.pkl, archive/data/<key>, byteorder, version."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _write_zip_streamed(path, entries):
    """Zip whose entries are (name, chunk, repeat, deflate): written without holding them whole."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, chunk, repeat, deflate in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            info.file_size = len(chunk) * repeat  # sizes the zip64 decision up front
            with zf.open(info, "w", force_zip64=info.file_size >= 1 << 31) as out:
                for _ in range(repeat):
                    out.write(chunk)
    return path


# --------------------------------------------------------------------------------------------
# The bombs of issue 13 (and a few of the same classes)
# --------------------------------------------------------------------------------------------


def deep_tuple_key(path, depth=200_000):
    """{(((...(1,)...),),): 0}: a dict key nested `depth` deep (hashing it recurses in C)."""
    data = b"\x80\x02}" + b"K\x01" + b"\x85" * depth + b"K\x00s."
    path.write_bytes(zip_form(data))
    return path


def shared_tuple_key(path, levels=64):
    """A key t = (t', t'), t' = (t'', t''), ...: 2**levels nodes to hash, in a 300-byte file."""
    data = b"\x80\x02}" + b"K\x01\x85" + b"2\x86" * levels + b"K\x00s."
    path.write_bytes(zip_form(data))
    return path


def shared_list_meta(path, levels=64):
    """Valid weights next to meta = l, l = [l', l'], l' = [l'', l'']...: 2**levels items to walk."""
    meta = b"K\x01" + b"q\x000(h\x00h\x00l" * levels  # memo the last level, pop it, list it twice
    body = u("state_dict") + b"}" + u("w") + tensor((4,), (1,), numel=4) + b"s" + u("meta") + meta
    data = b"\x80\x02}(" + body + b"u."
    path.write_bytes(zip_form(data, {"0": struct.pack("<4f", 1, 2, 3, 4)}))
    return path


def zero_stride(path, shape=(1 << 15, 1 << 15)):
    """torch.zeros(1).expand(*shape) saved: one stored float, every stride 0."""
    data = state_dict_pkl({"w": tensor(shape, (0,) * len(shape), numel=1)})
    path.write_bytes(zip_form(data, {"0": struct.pack("<f", 0)}))
    return path


def overlapping_stride(path, side=1 << 15):
    """A (side, side) view with strides (1, 1) of a 2*side-element storage."""
    numel = 2 * side
    data = state_dict_pkl({"w": tensor((side, side), (1, 1), numel=numel)})
    path.write_bytes(zip_form(data, {"0": bytes(4 * numel)}))
    return path


def pickle_deflate_bomb(path, megabytes=64):
    """data.pkl of `megabytes` MiB of EMPTY_LIST opcodes, deflated (about 1000:1)."""
    chunk = b"]" * (1 << 20)
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size = megabytes << 20
        with zf.open(info, "w") as out:
            out.write(b"\x80\x02" + chunk[2:])
            for _ in range(megabytes - 2):
                out.write(chunk)
            out.write(chunk[1:] + b".")
        zf.writestr("archive/version", "3\n")
    return path


def storage_deflate_bomb(path, megabytes=1024, declared_numel=4):
    """A storage entry of `megabytes` MB of zeros, deflated; the pickle declares
    `declared_numel` float32 elements (None: exactly as many as the entry holds)."""
    numel = (megabytes << 20) // 4 if declared_numel is None else declared_numel
    data = state_dict_pkl({"w": tensor((numel,), (1,), numel=numel)})
    return _write_zip_streamed(
        path,
        [
            ("archive/data.pkl", data, 1, False),
            ("archive/data/0", bytes(1 << 20), megabytes, True),
            ("archive/version", b"3\n", 1, False),
        ],
    )


def reused_string(path, megabytes=1, copies=10_000):
    """_codecs.encode(s, 'latin1') called `copies` times on one memoised `megabytes` MB string."""
    text = u("a" * (megabytes << 20)) + b"q\x00"
    call = b"c_codecs\nencode\n(h\x00" + u("latin1") + b"tR"
    data = b"\x80\x02]" + text + b"0(" + call * copies + b"e."
    path.write_bytes(zip_form(data))
    return path


def meta_global(path, marker):
    """Valid weights with `meta` holding os.system('touch marker')."""
    payload = b"cos\nsystem\n(" + u(f"touch '{marker}'") + b"tR"
    body = u("state_dict") + b"}" + u("w") + tensor((4,), (1,), numel=4) + b"s"
    body += u("meta") + b"}" + u("hook") + payload + b"s"
    data = b"\x80\x02}(" + body + b"u."
    path.write_bytes(zip_form(data, {"0": struct.pack("<4f", 1, 2, 3, 4)}))
    return path


# name -> (builder, what the issue measured before)
BOMBS = {
    "deep_tuple_key_200k": (lambda p: deep_tuple_key(p, 200_000), "SIGSEGV"),
    "deep_tuple_key_50k": (lambda p: deep_tuple_key(p, 50_000), "RecursionError traceback"),
    "zero_stride_2^15x2^15": (zero_stride, "4.8 GB RSS"),
    "zero_stride_10^6x10^6": (lambda p: zero_stride(p, (10**6, 10**6)), "MemoryError traceback"),
    "overlapping_stride_2^15x2^15": (overlapping_stride, "(not measured)"),
    "pickle_deflate_bomb_64MB": (pickle_deflate_bomb, "5.5 GB, 37 s"),
    "storage_deflate_bomb_1GiB": (storage_deflate_bomb, "1 GiB read before the size check"),
    "storage_deflate_bomb_1GiB_declared": (
        lambda p: storage_deflate_bomb(p, declared_numel=None),
        "(not measured)",
    ),
    "shared_tuple_key_2^64": (shared_tuple_key, "(not measured)"),
    "shared_list_meta_2^64": (shared_list_meta, "(not measured)"),
    "reused_string_10k_x_1MB": (reused_string, "(not measured)"),
}


# --------------------------------------------------------------------------------------------
# A child process that loads one file with the reader under an address-space limit
# --------------------------------------------------------------------------------------------

CHILD = r"""
import importlib.util, json, resource, sys, time
reader_path, path, cap, walk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = importlib.util.spec_from_file_location("checkpoint_reader", reader_path)
reader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reader)


def status(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024


base_rss, base_vm = status("VmHWM:"), status("VmSize:")
resource.setrlimit(resource.RLIMIT_AS, (base_vm + cap, resource.RLIM_INFINITY))
own = tuple(getattr(reader, n) for n in ("CheckpointFormatError", "UnsafeCheckpointError"))
start = time.perf_counter()
result = {}
try:
    obj = reader.load_checkpoint(path)
    result["outcome"] = "loaded"
    if walk >= 1:  # the reader's own helper: an error of its own is an answer
        try:
            reader.state_dict_from_checkpoint(obj)
        except own:
            pass
    if walk >= 2:  # what a consumer printing the checkpoint does
        result["repr_chars"] = len(repr(obj))
except own as exc:
    result.update(outcome="refused", type=type(exc).__name__, message=str(exc))
except BaseException as exc:
    result.update(outcome="failed", type=type(exc).__name__, message=str(exc)[:300])
result["seconds"] = time.perf_counter() - start
result["peak_mib"] = (status("VmHWM:") - base_rss) / 2**20
print(json.dumps(result))
"""


def load_in_child(reader_path, path, cap_bytes, timeout, walk=2):
    """Load `path` in a fresh process whose address space may grow by `cap_bytes`; then
    (walk >= 1) call state_dict_from_checkpoint on it and (walk >= 2) repr it.

    Returns a dict: outcome ("loaded", "refused" = the reader's own error, "failed" = any other
    exception, "crashed" = killed by a signal, "timeout"), type, message, seconds and peak_mib
    (the child's resident high-water mark above what it had after importing the reader).
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-c", CHILD, str(reader_path), str(path), str(cap_bytes)]
    command.append(str(walk))
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "type": "", "message": f"killed after {timeout} s"}
    if out.returncode < 0:
        return {"outcome": "crashed", "type": f"signal {-out.returncode}", "message": ""}
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"outcome": "failed", "type": "exit", "message": out.stderr[-500:]}
    return json.loads(lines[-1])
