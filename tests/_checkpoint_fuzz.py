"""A seeded, time-bounded fuzzer for keras_vswin.checkpoint_reader.

Run as a child process (`run_fuzz` does it): it loads the reader by file path, makes mutated
checkpoints from seed files (bytes flipped, pickles mutated and re-zipped, random opcode
streams, zip headers rewritten), loads each one and checks that the outcome is either a load
or the reader's own error naming the file. Anything else (another exception, a MemoryError
under the address-space limit, a case over its time limit, a crash) is a failure, reported
with the case number that reproduces it (`--first N --cases 1`). Globals that would create a
marker file if they ever ran are spliced in; the parent checks that the file never appears.

Only the standard library and numpy (through the reader) are used here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hostile_checkpoints as hostile  # noqa: E402

# --------------------------------------------------------------------------------------------
# Seeds: small checkpoints in the shapes torch.save writes
# --------------------------------------------------------------------------------------------


def _plain_fragment(value):
    """Like `_fragment`, but with memo puts stripped by re-pickling through a fast pickler."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.fast = True  # no memo
    pickler.dump(value)
    return buffer.getvalue()[2:-1]


def _tensor_v3(size, stride, key, numel, dtype, storage="UntypedStorage", offset=0):
    pid = b"(" + hostile.u("storage") + f"ctorch\n{storage}\n".encode() + hostile.u(key)
    pid += hostile.u("cpu") + hostile.long1(numel) + b"tQ"
    args = b"(" + pid + hostile.long1(offset) + hostile.int_tuple(size)
    args += hostile.int_tuple(stride) + b"\x89" + b"ccollections\nOrderedDict\n)R"
    args += f"ctorch\n{dtype}\n".encode() + b"t"
    return b"ctorch._utils\n_rebuild_tensor_v3\n" + args + b"R"


def _ordered_state(entries, metadata=True):
    """OrderedDict() + SETITEMS, then BUILD with a `_metadata` attribute like a state_dict."""
    body = b"".join(hostile.u(k) + v for k, v in entries.items())
    out = b"ccollections\nOrderedDict\n)R(" + body + b"u"
    if metadata:
        meta = {"": {"version": 1}, "layer": {"version": 2}}
        out += b"}" + hostile.u("_metadata") + b"ccollections\nOrderedDict\n)R"
        out += b"(" + b"".join(hostile.u(k) + _plain_fragment(v) for k, v in meta.items())
        out += b"us" + b"b"
    return out


def seed_checkpoints():
    """{name: (data.pkl bytes, {storage key: raw bytes}, {storage key: itemsize})}."""
    floats = struct.pack("<12f", *range(12))
    seeds = {}
    entries = {
        "w": hostile.tensor((3, 4), (4, 1), numel=12, key="0"),
        "t": hostile.tensor((4, 3), (1, 4), numel=12, key="0"),
        "row": hostile.tensor((4,), (1,), offset=4, numel=12, key="0"),
        "scalar": hostile.tensor((), (), offset=2, numel=12, key="0"),
        "half": _tensor_v3((2,), (1,), "1", 4, "float16"),
        "bf16": _tensor_v3((2,), (1,), "1", 4, "bfloat16"),
        "flags": _tensor_v3((4,), (1,), "2", 4, "bool"),
        "idx": _tensor_v3((2,), (1,), "3", 16, "int64"),
    }
    storages = {"0": floats, "1": bytes(range(4)), "2": b"\x00\x01\x01\x00", "3": bytes(16)}
    itemsizes = {"0": 4, "1": 1, "2": 1, "3": 1}
    meta = {
        "epoch": 30,
        "lr": [0.1, 1e-3],
        "name": "swin",
        "flags": (True, None, False),
        "blob": b"\x00\xff",
        "big": 2**70,
        "nested": {"a": {"b": [1, 2.5, "x"]}, ("k", 1): frozenset({1, 2})},
    }
    state = _ordered_state(entries)
    seeds["official"] = (
        b"\x80\x02}("
        + hostile.u("state_dict")
        + state
        + hostile.u("meta")
        + _plain_fragment(meta)
        + b"u.",
        storages,
        itemsizes,
    )
    seeds["bare"] = (
        b"\x80\x02" + _ordered_state(entries, metadata=False) + b".",
        storages,
        itemsizes,
    )
    try:
        import numpy as np

        values = [np.float64(0.25), np.int64(-3), np.arange(6, dtype=np.float32).reshape(2, 3)]
        seeds["numpy_meta"] = (
            b"\x80\x02}("
            + hostile.u("model")
            + _ordered_state({"w": entries["w"]}, False)
            + hostile.u("meta")
            + _plain_fragment(values)
            + b"u.",
            {"0": floats},
            {"0": 4},
        )
    except ImportError:  # pragma: no cover
        pass
    seeds["protocol0"] = (pickle.dumps({"meta": meta, "lst": [1, [2, [3]]]}, protocol=0), {}, {})
    return seeds


def write_seed_files(directory, extra=None):
    """Write every seed in zip and legacy form to `directory` (plus `extra` {name: bytes})."""
    os.makedirs(directory, exist_ok=True)
    for name, (pkl, storages, _itemsizes) in seed_checkpoints().items():
        with open(os.path.join(directory, f"{name}.zip.pth"), "wb") as f:
            f.write(hostile.zip_form(pkl, storages))
    for name, data in (extra or {}).items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def torch_seed_files():
    """Real torch.save files (zip and legacy) as extra seeds, {name: bytes}; {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(3, 2)
    state = {
        "state_dict": linear.state_dict(),
        "view": torch.arange(12.0).reshape(3, 4).t(),
        "bf16": torch.randn(3, generator=gen).bfloat16(),
        "meta": {"epoch": 1, "hist": [0.5, 0.25], "size": torch.Size([2, 3])},
    }
    out = {}
    for legacy in (False, True):
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
        out[f"torch_{'legacy' if legacy else 'zip'}.pth"] = buffer.getvalue()
    return out


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 7, 64, 100, 255, 256, 2**15, 2**31 - 1, 2**31, 2**32, 2**62,
                    2**63 - 1, 2**63, 2**64, 10**12, -(2**31)]  # fmt: skip
INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x2E, 0x28, 0x74, 0x85, 0x86, 0x87, 0x51]


def malicious_fragments(marker):
    """Opcodes that would create `marker` if the reader ever called the global they name."""
    code = f"open({str(marker)!r}, 'w').close()"
    calls = [
        ("builtins", "exec", code),
        ("builtins", "eval", f"exec({code!r})"),
        ("os", "system", f"touch '{marker}'"),
        ("posix", "system", f"touch '{marker}'"),
        ("subprocess", "getoutput", f"touch '{marker}'"),
        ("builtins", "open", str(marker)),
    ]
    out = []
    for module, name, arg in calls:
        out.append(f"c{module}\n{name}\n".encode() + b"(" + hostile.u(arg) + b"tR")
        out.append(hostile.u(module) + hostile.u(name) + b"\x93" + hostile.u(arg) + b"\x85R")
        out.append(b"(" + hostile.u(arg) + f"i{module}\n{name}\n".encode())  # INST
    out.append(b"ccopyreg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR")
    return out


def opcode_snippets(rng):
    """A random small piece of pickle: one opcode with plausible arguments, or a known idiom."""
    n = rng.choice(INTERESTING_INTS + [rng.randrange(-1000, 1000)])
    pieces = [
        b"(",
        b")",
        b"]",
        b"}",
        b"\x8f",
        b"N",
        b"\x88",
        b"\x89",
        b"0",
        b"1",
        b"2",
        b"t",
        b"l",
        b"d",
        b"s",
        b"u",
        b"a",
        b"e",
        b"\x85",
        b"\x86",
        b"\x87",
        b"\x90",
        b"\x91",
        b"R",
        b"b",
        b"\x81",
        b"\x92",
        b"Q",
        b"\x94",
        b"o",
        b".",
        b"K" + bytes([rng.randrange(256)]),
        b"M" + struct.pack("<H", rng.randrange(65536)),
        b"J" + struct.pack("<i", max(-(2**31), min(2**31 - 1, n))),
        hostile.long1(n),
        b"\x8b" + struct.pack("<i", rng.choice([0, 1, 8, 2**20])) + b"\x00" * rng.randrange(9),
        b"G" + struct.pack(">d", rng.random()),
        b"F1.5\n",
        b"I12\n",
        b"L5L\n",
        b"S'abc'\n",
        b"Vxyz\n",
        b"g0\n",
        b"p0\n",
        b"h" + bytes([rng.randrange(8)]),
        b"q" + bytes([rng.randrange(8)]),
        b"j" + struct.pack("<I", rng.randrange(8)),
        b"r" + struct.pack("<I", rng.randrange(8)),
        hostile.u("storage"),
        hostile.u("x" * rng.randrange(40)),
        b"X" + struct.pack("<I", rng.choice([0, 5, 2**31, 2**32 - 1])) + b"abc",
        b"C\x03abc",
        b"B" + struct.pack("<I", 3) + b"abc",
        b"\x8e" + struct.pack("<Q", rng.choice([3, 2**40])) + b"abc",
        b"\x96" + struct.pack("<Q", 3) + b"abc",
        b"\x97",
        b"\x98",
        b"\x82\x01",
        b"\x95" + struct.pack("<Q", rng.randrange(100)),
        b"\x80" + bytes([rng.randrange(7)]),
        b"ctorch\nFloatStorage\n",
        b"ctorch\nBFloat16Storage\n",
        b"ctorch\nQInt8Storage\n",
        b"ctorch._utils\n_rebuild_tensor_v2\n",
        b"ctorch._utils\n_rebuild_tensor\n",
        b"ctorch._utils\n_rebuild_parameter\n",
        b"ctorch._tensor\n_rebuild_from_type_v2\n",
        b"ctorch\nSize\n",
        b"ctorch\ndevice\n",
        b"ctorch\nfloat16\n",
        b"ctorch\nTensor\n",
        b"ccollections\nOrderedDict\n",
        b"c__builtin__\nset\n",
        b"c__builtin__\nfrozenset\n",
        b"c__builtin__\nbytearray\n",
        b"c_codecs\nencode\n",
        b"cnumpy\ndtype\n",
        b"cnumpy.core.multiarray\nscalar\n",
        b"cnumpy.core.multiarray\n_reconstruct\n",
        b"cnumpy\nndarray\n",
        b"cnumpy.core.numeric\n_frombuffer\n",
        b"cargparse\nNamespace\n",
        hostile.storage_pid(str(rng.randrange(4)), rng.choice([1, 4, 12, 2**40])),
        hostile.tensor(
            tuple(rng.choice(INTERESTING_INTS[:12]) for _ in range(rng.randrange(3))),
            tuple(rng.choice([0, 1, 2, 4, 2**40]) for _ in range(rng.randrange(3))),
            offset=rng.choice([0, 1, 11, 2**62]),
            numel=rng.choice([1, 4, 12]),
            key=str(rng.randrange(4)),
        ),
        b"K\x01" + b"\x85" * rng.randrange(50, 400),  # deep tuples
        b"K\x01\x85" + b"2\x86" * rng.randrange(10, 70),  # shared tuples
        b"]" * 120 + b"a" * 119,  # deep lists
        b"K\x01" + b"q\x000(h\x00h\x00l" * rng.randrange(10, 40),  # shared lists
    ]
    return rng.choice(pieces)


def mutate_bytes(rng, data, rounds=None):
    data = bytearray(data)
    for _ in range(rounds or rng.randrange(1, 5)):
        if not data:
            data += bytes([rng.randrange(256)])
        i = rng.randrange(len(data))
        choice = rng.randrange(7)
        if choice == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[i] = rng.choice(INTERESTING_BYTES)
        elif choice == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif choice == 3:
            del data[i : i + rng.randrange(1, 17)]
        elif choice == 4:
            j = rng.randrange(len(data))
            data[i:i] = data[j : j + rng.randrange(1, 64)] * rng.randrange(1, 4)
        elif choice == 5:
            del data[i:]
        else:
            width = rng.choice([1, 2, 4, 8])
            value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
            data[i : i + width] = value.to_bytes(width, "little")
    return bytes(data)


def mutate_ints(rng, data):
    """Replace 1-3 integer arguments (sizes, strides, offsets, element counts, memo keys) of a
    valid pickle by interesting values: the structure stays valid, the numbers do not."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - an already mutated pickle: fall back to bytes
        return mutate_bytes(rng, data)
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    spots = [
        (pos, end)
        for (op, _, pos), end in zip(ops, ends, strict=True)
        if op.name in ("BININT", "BININT1", "BININT2", "LONG1")
    ]
    if not spots:
        return mutate_bytes(rng, data)
    for pos, end in sorted(rng.sample(spots, min(len(spots), rng.randrange(1, 4))), reverse=True):
        data = data[:pos] + hostile.long1(rng.choice(INTERESTING_INTS)) + data[end:]
    return data


def mutate_pickle(rng, data, marker):
    """Opcode-aware: new integer arguments, or snippets (or a malicious call) spliced in, then
    maybe some bytes flipped."""
    if rng.random() < 0.4:
        return mutate_ints(rng, data)
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(data) + 1)
        if rng.random() < 0.1:
            piece = rng.choice(malicious_fragments(marker))
        else:
            piece = b"".join(opcode_snippets(rng) for _ in range(rng.randrange(1, 4)))
        if rng.random() < 0.3 and data:
            del data[i : i + rng.randrange(1, 8)]
        data[i:i] = piece
    if rng.random() < 0.3:
        data = bytearray(mutate_bytes(rng, data, 1))
    return bytes(data)


def random_opcodes(rng, marker):
    body = b"".join(opcode_snippets(rng) for _ in range(rng.randrange(1, 60)))
    if rng.random() < 0.2:
        body += rng.choice(malicious_fragments(marker))
    return b"\x80\x02" + body + b"."


def mutate_zip_headers(rng, data):
    """Rewrite one field of a local header, central directory entry or end record."""
    data = bytearray(data)
    layouts = {
        b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)],
        b"PK\x01\x02": [
            (8, 2),
            (10, 2),
            (16, 4),
            (20, 4),
            (24, 4),
            (28, 2),
            (30, 2),
            (34, 2),
            (42, 4),
        ],  # fmt: skip
        b"PK\x05\x06": [(4, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
    }
    spots = [
        (pos, layout) for signature, layout in layouts.items() for pos in _find_all(data, signature)
    ]
    for _ in range(rng.randrange(1, 3)):
        if not spots:
            break
        pos, layout = rng.choice(spots)
        offset, width = rng.choice(layout)
        values = [
            0,
            1,
            2,
            8,
            12,
            14,
            99,
            0x800,
            0x41,
            (1 << (8 * width)) - 1,
            (1 << (8 * width - 1)) - 1,
        ]
        old = int.from_bytes(data[pos + offset : pos + offset + width], "little")
        values += [
            max(0, old + rng.randrange(-16, 17)),
            old * 1000,
            rng.randrange(1 << (8 * width)),
        ]
        value = rng.choice(values) % (1 << (8 * width))
        data[pos + offset : pos + offset + width] = value.to_bytes(width, "little")
    return bytes(data)


def _find_all(data, needle):
    found, start = [], 0
    while (i := data.find(needle, start)) != -1:
        found.append(i)
        start = i + 1
    return found


def _rezip(rng, pkl, storages):
    """A valid zip (correct CRCs) around a possibly mutated data.pkl and storages."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.3 else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as zf:
        zf.writestr("archive/data.pkl", pkl)
        if rng.random() < 0.9:
            zf.writestr("archive/byteorder", rng.choice(["little", "little", "big", "middle"]))
        for key, raw in storages.items():
            if rng.random() < 0.1:
                raw = raw[: rng.randrange(len(raw) + 1)] + bytes(rng.randrange(3) * 4)
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _legacy(pkl, storages, itemsizes):
    return hostile.legacy_form(pkl, [(k, raw, itemsizes.get(k, 1)) for k, raw in storages.items()])


STRATEGIES = ("bytes", "pickle_zip", "pickle_legacy", "opcodes", "zip_headers")


def make_case(case, seed, seed_files, seeds, marker):
    """(strategy, file bytes, allow_unknown_globals) of case number `case`: reproducible."""
    rng = random.Random(f"{seed}:{case}")
    strategy = STRATEGIES[case % len(STRATEGIES)]
    allow = rng.random() < 0.3
    if strategy == "bytes":
        data = mutate_bytes(rng, rng.choice(seed_files))
    elif strategy in ("pickle_zip", "pickle_legacy"):
        pkl, storages, itemsizes = seeds[rng.choice(sorted(seeds))]
        pkl = mutate_pickle(rng, pkl, marker)
        data = (
            _rezip(rng, pkl, storages)
            if strategy == "pickle_zip"
            else _legacy(pkl, storages, itemsizes)
        )
    elif strategy == "opcodes":
        pkl = random_opcodes(rng, marker)
        pick = rng.random()
        storages = {
            "0": struct.pack("<12f", *range(12)),
            "1": bytes(4),
            "2": bytes(4),
            "3": bytes(16),
        }
        if pick < 0.5:
            data = _rezip(rng, pkl, storages)
        elif pick < 0.8:
            data = _legacy(pkl, storages, {"0": 4})
        else:
            data = pkl
    else:
        data = mutate_zip_headers(rng, rng.choice([f for f in seed_files if f[:2] == b"PK"]))
    return strategy, data, allow


# --------------------------------------------------------------------------------------------
# The child: run cases, report
# --------------------------------------------------------------------------------------------


class _CaseTimeout(BaseException):
    """Raised by the timer; a BaseException so that no `except Exception` can swallow it."""


def _status(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024


def child_main(argv=None):
    import importlib.util
    import resource
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--reader", required=True)
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--case-seconds", type=float, default=10.0)
    parser.add_argument("--cap-mib", type=int, default=1024)
    args = parser.parse_args(argv)

    spec = importlib.util.spec_from_file_location("checkpoint_reader", args.reader)
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    import logging

    logging.getLogger("keras_vswin").setLevel(logging.ERROR)  # placeholders warn each time

    seed_files = []
    for name in sorted(os.listdir(args.seeds)):
        with open(os.path.join(args.seeds, name), "rb") as f:
            seed_files.append(f.read())
    seeds = seed_checkpoints()
    for data in seed_files:  # real torch files: their data.pkl and storages are seeds too
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
                prefix = names[0].split("/", 1)[0]
                pkl = zf.read(f"{prefix}/data.pkl")
                storages = {
                    n.rsplit("/", 1)[1]: zf.read(n)
                    for n in names
                    if n.startswith(f"{prefix}/data/")
                }
            seeds[f"file{len(seeds)}"] = (pkl, storages, {})

    base_rss, base_vm = _status("VmHWM:"), _status("VmSize:")
    resource.setrlimit(resource.RLIMIT_AS, (base_vm + (args.cap_mib << 20), resource.RLIM_INFINITY))

    def on_alarm(signum, frame):
        raise _CaseTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    own = (reader.CheckpointFormatError, reader.UnsafeCheckpointError)
    counts, failures, by_strategy = {}, [], {}
    progress = os.path.join(args.work, "progress")
    path = os.path.join(args.work, "case.pth")
    start = time.perf_counter()
    done = 0
    for case in range(args.first, args.first + args.cases):
        if time.perf_counter() - start > args.seconds:
            break
        strategy, data, allow = make_case(case, args.seed, seed_files, seeds, args.marker)
        with open(progress, "w") as f:
            f.write(f"{case} {strategy}\n")
        with open(path, "wb") as f:
            f.write(data)
        outcome = None
        signal.setitimer(signal.ITIMER_REAL, args.case_seconds)
        try:
            try:
                obj = reader.load_checkpoint(path, allow_unknown_globals=allow)
                outcome = "loaded"
                try:
                    reader.state_dict_from_checkpoint(obj)
                except own:
                    pass
                repr(obj)  # what loaded can be walked by consumers
                del obj
            except own as exc:
                outcome = type(exc).__name__
                if path not in str(exc):
                    failures.append({"case": case, "strategy": strategy,
                                     "problem": "message does not name the file",
                                     "message": str(exc)[:300]})  # fmt: skip
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _CaseTimeout:
            outcome = "timeout"
            failures.append({"case": case, "strategy": strategy,
                             "problem": f"took more than {args.case_seconds} s"})  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - every other outcome is a finding
            outcome = "failed"
            failures.append({"case": case, "strategy": strategy, "problem": type(exc).__name__,
                             "message": str(exc)[:300]})  # fmt: skip
        counts[outcome] = counts.get(outcome, 0) + 1
        by_strategy.setdefault(strategy, {}).setdefault(outcome, 0)
        by_strategy[strategy][outcome] += 1
        done += 1
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "cases": done,
                "seconds": seconds,
                "counts": counts,
                "by_strategy": by_strategy,
                "failures": failures[:50],
                "failure_count": len(failures),
                "peak_mib": (_status("VmHWM:") - base_rss) / 2**20,
            }
        )
    )


def run_fuzz(reader_path, seeds_dir, work_dir, marker, seed=13, cases=3000, seconds=45.0,
             cap_mib=1024, timeout=None):  # fmt: skip
    """Run the fuzzer in a child process; returns its JSON report, or a dict with "crashed"."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable, os.path.abspath(__file__), "--reader", str(reader_path),
        "--seeds", str(seeds_dir), "--work", str(work_dir), "--marker", str(marker),
        "--seed", str(seed), "--cases", str(cases), "--seconds", str(seconds),
        "--cap-mib", str(cap_mib),
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout or seconds + 120
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        progress = os.path.join(work_dir, "progress")
        last = open(progress).read().strip() if os.path.exists(progress) else "?"
        return {
            "crashed": out.returncode,
            "last_case": last,
            "stderr": out.stderr[-2000:],
        }
    return json.loads(lines[-1])


if __name__ == "__main__":
    child_main()
