"""Safe reader for PyTorch checkpoint files (``.pth`` / ``.pt``), without torch.

``torch.load`` unpickles the file, and unpickling can call any importable function: a
malicious checkpoint runs code the moment it is loaded. This module never does that. It has
its own small pickle interpreter that builds only the data a weights file is made of:

* tensors (``torch._utils._rebuild_tensor``/``_v2``/``_v3``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``, ``torch._tensor._rebuild_from_type_v2`` for plain tensors
  and parameters), storages (``torch.*Storage``, ``torch.storage.UntypedStorage``/
  ``TypedStorage``) and ``torch.<dtype>``, ``torch.Size``, ``torch.device`` values;
* ``collections.OrderedDict`` (with its ``_metadata`` attribute), dict, list, tuple, set,
  frozenset, str, bytes, bytearray, int, float, complex, bool, None, slice;
* ``_codecs.encode(text, "latin1")`` (how pickle protocols 0-2 spell bytes);
* numpy scalars and numeric/string arrays (``numpy.dtype``, ``numpy.core.multiarray.scalar``,
  ``_reconstruct``, ``numpy.core.numeric._frombuffer``): rebuilt from raw bytes only, never by
  calling numpy functions named by the file; object arrays are refused.

Any other global (``os.system``, ``builtins.exec``, ``argparse.Namespace``, a pickled
``nn.Module`` class, ...), wherever it appears (weights, ``meta``, ``optimizer``, ...), raises
:class:`UnsafeCheckpointError` naming the file and the global, before anything is called. With
``allow_unknown_globals=True`` such globals become inert :class:`OpaqueObject` records instead
(still nothing is imported or called) and a warning names them, so the weights of a trusted
file with exotic metadata can be read.

Formats: the zip format of ``torch.save`` (default since PyTorch 1.6: one top-level folder
holding ``data.pkl``, ``data/<key>`` raw storages, ``byteorder``, ``version``) and the legacy
format (``_use_new_zipfile_serialization=False``: magic-number, protocol and sys-info pickles,
the main pickle, a pickled list of storage keys, then per key an 8-byte little-endian element
count and the raw little-endian bytes). TorchScript archives (``torch.jit.save``) and the
pre-0.1.10 tar format are refused with a clear message.

Tensors become ``numpy.ndarray`` with the tensor's dtype, shape and values (storage offset and
strides honoured; views, transposes and tensors sharing a storage all come out right; 0-dim
tensors become 0-d arrays). ``bfloat16`` has no numpy dtype: it is converted exactly to
``float32`` (the bf16 bits are the upper half of a float32). Complex tensors with the
conjugate/negative bit set are materialised. A tensor that is exactly its whole contiguous
storage is returned as a view of the storage buffer (no copy); any other view is copied into
its own C-contiguous array. All returned arrays are writable and native-endian.

Hostile files: a file is untrusted input, so everything the reader allocates or computes is
bounded by the file's size on disk. A memory budget (by default ``8 x file size + 32 MiB``,
see :func:`default_memory_budget`) is charged *before* each allocation: every storage (its
declared uncompressed size, compared with the element count the pickle declares before a byte
is read), ``data.pkl``, every copied or expanded tensor (a zero-stride or overlapping view
costs its full materialised size), and the objects the pickle builds (per opcode, per string
byte, per container item, and the work of hashing dict keys). A file that would exceed it
raises :class:`CheckpointFormatError` after reading at most the budget. Nothing recurses on
the file's nesting: objects nested more than 100 levels deep are refused (hashing a deeply
nested tuple key would otherwise overflow the C stack), and so are structures that share
parts so heavily that walking them in full (``repr``, ``json``) would visit more nodes than
the budget allows. Zip entries must be stored or deflated (the only methods whose
decompression the standard library bounds), unencrypted and uniquely named.

Memory for a genuine checkpoint: the zip reader allocates each storage once and fills it
from the archive in 8 MiB chunks; the legacy reader reads storages straight into their arrays.
Peak memory is about the size of the tensors plus a few MiB.

Only the standard library and numpy are imported.
"""

from __future__ import annotations

import codecs
import collections
import io
import logging
import math
import os
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "OpaqueObject",
    "UnsafeCheckpointError",
    "default_memory_budget",
    "load_checkpoint",
    "state_dict_from_checkpoint",
]

EXPECTED = "a PyTorch checkpoint saved with torch.save (zip or legacy format)"

logger = logging.getLogger("keras_vswin")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CHUNK = 8 << 20

# Memory budget: a multiple of the file's size plus a constant. A genuine checkpoint needs
# about 1x (storages) + the copies of non-contiguous views (<= 1x) + bfloat16 widening (1x);
# the Python objects of a metadata-heavy pickle take up to ~7x its bytes.
_BUDGET_FACTOR = 8
_BUDGET_SLACK = 32 << 20
# Deeper nesting is refused: hashing a tuple recurses in C without a depth check, and repr,
# json, copy.deepcopy and == recurse in Python; no checkpoint nests its data this deep.
_MAX_DEPTH = 100
_MAX_DIMS = 64  # numpy's limit on array dimensions
_INT64 = 1 << 63
# Budget units charged per step of hashing a key (a hash step costs about as much time as
# copying a few dozen bytes).
_HASH_COST = 8


class CheckpointError(ValueError):
    """Base class of the reader's errors; the message names the file."""


class CheckpointFormatError(CheckpointError):
    """The file is not a readable PyTorch checkpoint (wrong type, truncated, corrupt), or
    reading it would exceed the memory budget."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle references a global outside the allow list.

    ``global_name`` holds the offending ``module.name``. Nothing was imported or called.
    """

    def __init__(self, message: str, global_name: str = ""):
        super().__init__(message)
        self.global_name = global_name


class OpaqueObject:
    """Inert stand-in for an object built from a global that is not on the allow list.

    Only produced with ``load_checkpoint(..., allow_unknown_globals=True)``. ``name`` is the
    global's ``module.name``; ``args``/``kwargs`` are what the pickle would have called it with
    (``None`` for the bare global), ``state`` what it would have passed to ``__setstate__``,
    ``items``/``listitems`` what it would have stored into the object. Nothing is ever called.
    """

    def __init__(self, name: str, args=None, kwargs=None):
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items: dict = {}
        self.listitems: list = []

    def __repr__(self):
        how = "" if self.args is None else "(...)"
        return f"OpaqueObject({self.name[:200]}{how})"


def default_memory_budget(file_size):
    """The memory budget, in bytes, that :func:`load_checkpoint` allows a file of this size."""
    return _BUDGET_FACTOR * int(file_size) + _BUDGET_SLACK


class _Budget:
    """Bytes (and hashing work) charged so far against the limit; checked before allocating."""

    __slots__ = ("limit", "used")

    def __init__(self, limit):
        self.limit = limit
        self.used = 0

    def charge(self, amount, what):
        self.used += amount
        if self.used > self.limit:
            raise _OverBudget(what, amount)

    def release(self, amount):
        self.used -= amount


class _OverBudget(Exception):
    def __init__(self, what, amount):
        super().__init__(what, amount)
        self.what = what
        self.amount = amount


def _size(nbytes):
    """Human-readable size."""
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


class _Piece(str):
    """Literal text inside :func:`_brief` (as opposed to a str value to be repr'd)."""


_OPEN_CLOSE = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
    dict: ("{", "}"),
    collections.OrderedDict: ("OrderedDict({", "})"),
}


def _brief_leaf(obj, limit):
    if isinstance(obj, str | bytes | bytearray):
        text = repr(obj[: limit + 1])
        return text if len(obj) <= limit else text + "..."
    if isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > 128:
        return f"<int of {obj.bit_length()} bits>"
    if isinstance(obj, np.ndarray):
        return f"array(shape={obj.shape}, dtype={obj.dtype})"
    if isinstance(obj, _Marker | _Callable):
        return obj.qualname
    if isinstance(obj, _Storage):
        return f"<storage {obj.key}>"
    if isinstance(obj, OpaqueObject):
        return repr(obj)
    if isinstance(obj, int | float | complex | type(None) | slice | np.generic):
        return repr(obj)[: limit + 1]
    return f"<{type(obj).__name__}>"


def _brief(obj, limit=80):
    """``repr(obj)`` cut to about ``limit`` characters: never recursive, never built whole."""
    out, size, stack = [], 0, [obj]
    while stack and size <= limit:
        item = stack.pop()
        if type(item) is _Piece:
            text = item
        elif type(item) in _OPEN_CLOSE:
            start, end = _OPEN_CLOSE[type(item)]
            is_dict = isinstance(item, dict)
            parts = []
            for i, entry in enumerate(item.items() if is_dict else item):
                if i:
                    parts.append(_Piece(", "))
                if i * 3 > limit:
                    parts.append(_Piece("..."))
                    break
                parts.extend((entry[0], _Piece(": "), entry[1]) if is_dict else (entry,))
            stack.append(_Piece(end))
            stack.extend(reversed(parts))
            text = start
        else:
            text = _brief_leaf(item, limit)
        out.append(text)
        size += len(text)
    text = "".join(out)
    return text if size <= limit and not stack else text[:limit] + "..."


def _exc_text(exc):
    """An exception's message for an error report, without repr-ing arbitrary data."""
    if all(isinstance(a, str) or (type(a) is int and a.bit_length() < 64) for a in exc.args):
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return type(exc).__name__


# --------------------------------------------------------------------------------------------
# Element types
# --------------------------------------------------------------------------------------------

# torch dtype name -> numpy dtype of the raw (little-endian) storage elements.
_ELEMENTS = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # raw bits; converted to float32
    "complex128": np.dtype("<c16"),
    "complex64": np.dtype("<c8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint64": np.dtype("<u8"),
    "uint32": np.dtype("<u4"),
    "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("u1"),  # raw bytes; normalised to numpy bool
}
_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}
# torch dtypes that may appear as values but have no numpy representation here.
_UNSUPPORTED_DTYPES = {
    "complex32",
    "chalf",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    *(f"uint{n}" for n in range(1, 8)),
    *(f"int{n}" for n in range(1, 8)),
}
_STORAGE_CLASSES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_UNTYPED_STORAGES = {
    "torch.UntypedStorage",
    "torch.storage.UntypedStorage",
    "torch.TypedStorage",
    "torch.storage.TypedStorage",
}
_STORAGE_NAME = re.compile(r"^torch\.(?:cuda\.)?([A-Z][A-Za-z0-9]*Storage)$")
_NUMPY_KINDS = set("biufcSU")  # numeric and fixed-width strings; never objects or void


class _Marker:
    """A harmless global used as a value (storage class, dtype class, tensor type)."""

    __slots__ = ("qualname", "kind", "elem")

    def __init__(self, qualname, kind, elem=None):
        self.qualname = qualname
        self.kind = kind
        self.elem = elem  # storage classes: element name, None = untyped bytes

    def __repr__(self):
        return self.qualname


class _Callable:
    """An allowed global that the pickle may call (REDUCE/INST/OBJ) or instantiate (NEWOBJ)."""

    __slots__ = ("qualname", "call", "new")

    def __init__(self, qualname, call, new=None):
        self.qualname = qualname
        self.call = call
        self.new = new

    def __repr__(self):
        return self.qualname


class _Storage:
    """Raw bytes of one storage (``raw`` is None during the legacy format's first pass)."""

    __slots__ = ("raw", "elem", "big_endian", "key")

    def __init__(self, raw, elem, big_endian, key):
        self.raw = raw
        self.elem = elem
        self.big_endian = big_endian
        self.key = key

    def typed(self, elem, what):
        dtype = _ELEMENTS[elem]
        if self.big_endian and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(">")
        if self.raw.nbytes % dtype.itemsize:
            raise _Bad(f"storage {self.key!r} of {self.raw.nbytes} bytes cannot hold {what}")
        return self.raw.view(dtype)

    def as_array(self, budget):
        """A storage that appears outside a tensor: its elements as a 1-D array."""
        elem = self.elem or "uint8"
        typed = self.typed(elem, elem)
        if _converts(typed, elem):
            budget.charge(typed.shape[0] * _result_itemsize(typed, elem), f"storage {self.key!r}")
        return _finish(typed, elem, copy=False)


class _NpDtype:
    """A numpy dtype being unpickled (numpy sets its byte order with BUILD afterwards)."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype


class _NpArray:
    """A numpy array being unpickled via ``_reconstruct`` + BUILD."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None


class _Bad(Exception):
    """Internal: malformed content; turned into CheckpointFormatError with the path."""


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


def _int(value, what):
    if type(value) is not int or not 0 <= value < _INT64:
        raise _Bad(f"{what} must be a non-negative 64-bit int, got {_brief(value)}")
    return value


def _int_tuple(vm, value, what):
    if not isinstance(value, tuple | list):
        raise _Bad(f"{what} must be a tuple of ints, got {type(value).__name__}")
    if len(value) > _MAX_DIMS:
        raise _Bad(f"{what} has {len(value)} dimensions; at most {_MAX_DIMS} are supported")
    vm.budget.charge(8 * len(value), what)
    return tuple(_int(v, what) for v in value)


def _result_itemsize(view, elem):
    return 4 if elem == "bfloat16" else 1 if elem == "bool" else view.dtype.itemsize


def _converts(view, elem):
    """Whether `_finish` must convert (and so allocate) to give the tensor's numpy dtype."""
    return elem in ("bfloat16", "bool") or not view.dtype.isnative


def _finish(view, elem, copy):
    """Native-endian C-ordered array of the tensor's result dtype; copies only if asked or
    converting (the caller has charged the copy)."""
    if elem == "bfloat16":
        wide = view.astype(np.uint32, order="C")  # in-place shift keeps 0-d arrays as arrays
        wide <<= 16
        return wide.view(np.float32)
    if elem == "bool":
        return view.astype(np.bool_, order="C")
    if not view.dtype.isnative:
        return view.astype(view.dtype.newbyteorder("="), order="C")
    return view.copy(order="C") if copy else view


def _make_tensor(vm, storage, offset, size, stride, elem, metadata):
    if not isinstance(storage, _Storage):
        raise _Bad(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    offset = _int(offset, "storage offset")
    size = _int_tuple(vm, size, "tensor size")
    stride = _int_tuple(vm, stride, "tensor stride")
    if len(size) != len(stride):
        raise _Bad(f"tensor size {size} and stride {stride} differ in length")
    if elem is None:
        elem = storage.elem or "uint8"
    if elem not in _ELEMENTS:
        raise _Bad(f"tensors of dtype torch.{_brief(elem)} are not supported")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Bad(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    if storage.raw is None:  # first pass over a legacy file: only storages matter
        return None
    typed = storage.typed(elem, f"torch.{elem} elements")
    numel = math.prod(size)  # at most 64 factors below 2**63: cheap however large
    if numel == 0:
        return _finish(typed[:0], elem, copy=True).reshape(size)
    # Strides are >= 0, so the view's elements span [offset, last]: every element it reads
    # lies in the storage iff `last` does.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= typed.shape[0]:
        raise _Bad(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} "
            f"of storage {storage.key!r}, which has {typed.shape[0]}"
        )
    expected, contiguous = 1, True
    for n, s in zip(reversed(size), reversed(stride), strict=True):
        if n != 1 and s != expected:
            contiguous = False
            break
        expected *= n
    whole = contiguous and offset == 0 and numel == typed.shape[0]
    copies = int(bool(metadata and metadata.get("conj"))) + int(
        bool(metadata and metadata.get("neg"))
    )
    if not whole or _converts(typed, elem) or copies:
        # A zero-stride or overlapping view (torch's expand) materialises numel elements
        # however few the storage holds: charge them all before allocating.
        nbytes = numel * _result_itemsize(typed, elem)
        vm.budget.charge(
            nbytes * (1 + copies),
            f"tensor of shape {size} (stride {stride}, torch.{elem}) viewing "
            f"{typed.shape[0]} stored elements",
        )
    if contiguous:
        view = typed[offset : offset + numel].reshape(size)
        out = _finish(view, elem, copy=not whole)
    else:
        item = typed.itemsize
        view = np.lib.stride_tricks.as_strided(
            typed[offset:], shape=size, strides=[s * item for s in stride], writeable=False
        )
        out = _finish(view, elem, copy=True)
    if metadata:
        if metadata.get("conj"):
            out = np.asarray(np.conj(out))
        if metadata.get("neg"):
            out = np.asarray(np.negative(out))
    return out


def _args(args, name, low, high=None):
    high = low if high is None else high
    if not isinstance(args, tuple) or not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise _Bad(f"{name} expects {want} arguments, got {_brief(args, 200)}")
    return args


def _rebuild_tensor(vm, args):
    storage, offset, size, stride = _args(args, "_rebuild_tensor", 4)
    return _make_tensor(vm, storage, offset, size, stride, None, None)


def _rebuild_tensor_v2(vm, args):
    storage, offset, size, stride, _grad, _hooks, *meta = _args(args, "_rebuild_tensor_v2", 6, 7)
    return _make_tensor(vm, storage, offset, size, stride, None, meta[0] if meta else None)


def _rebuild_tensor_v3(vm, args):
    storage, offset, size, stride, _grad, _hooks, dtype, *meta = _args(
        args, "_rebuild_tensor_v3", 7, 8
    )
    if not (isinstance(dtype, str) and dtype.startswith("torch.")):
        raise _Bad(f"_rebuild_tensor_v3 expects a torch dtype, got {_brief(dtype)}")
    return _make_tensor(vm, storage, offset, size, stride, dtype[6:], meta[0] if meta else None)


def _rebuild_parameter(vm, args):
    return _args(args, "_rebuild_parameter", 3)[0]


def _rebuild_parameter_with_state(vm, args):
    return _args(args, "_rebuild_parameter_with_state", 4)[0]


_TENSOR_REBUILDERS = {_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3}
_TENSOR_REBUILDERS |= {_rebuild_parameter, _rebuild_parameter_with_state}


def _rebuild_from_type_v2(vm, args):
    func, new_type, inner, _state = _args(args, "_rebuild_from_type_v2", 4)
    if not (isinstance(func, _Callable) and func.call in _TENSOR_REBUILDERS):
        raise _Bad(f"_rebuild_from_type_v2 with rebuild function {_brief(func)} is not supported")
    # torch.Tensor / nn.Parameter; an unknown subclass can only be an OpaqueObject here (it
    # was refused unless allow_unknown_globals): then keep the plain tensor data.
    if not (isinstance(new_type, _Marker) and new_type.kind == "tensor_type"):
        if not isinstance(new_type, OpaqueObject):
            raise _Bad(f"_rebuild_from_type_v2 of {_describe(new_type)} is not supported")
    return func.call(vm, inner)


# --------------------------------------------------------------------------------------------
# Plain types
# --------------------------------------------------------------------------------------------


def _ordered_dict(vm, args):
    _args(args, "OrderedDict", 0, 1)
    if not args:
        return collections.OrderedDict()
    items = args[0]
    if isinstance(items, dict):
        vm.check_keys(items, "OrderedDict keys")
        vm.budget.charge(104 * len(items), "an OrderedDict")
        return collections.OrderedDict(items)
    if not isinstance(items, list | tuple) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in items
    ):
        raise _Bad("OrderedDict expects a list of (key, value) pairs")
    vm.check_keys([p[0] for p in items], "OrderedDict keys")
    vm.budget.charge(104 * len(items), "an OrderedDict")
    return collections.OrderedDict(items)


def _container(kind):
    def call(vm, args):
        _args(args, kind.__name__, 0, 1)
        if not args:
            return vm.tracked(kind()) if kind is frozenset else kind()
        items = args[0]
        if not isinstance(items, list | tuple | set | frozenset):
            raise _Bad(f"{kind.__name__} expects a list, got {type(items).__name__}")
        vm.check_keys(items, f"{kind.__name__} elements")
        vm.budget.charge(216 + 64 * len(items), f"a {kind.__name__}")
        made = kind(items)
        return vm.tracked(made) if kind is frozenset else made

    return call


def _slice(vm, args):
    _args(args, "slice", 1, 3)
    if not all(a is None or type(a) is int for a in args):
        raise _Bad("slice expects ints or None")
    return slice(*args)


def _complex(vm, args):
    _args(args, "complex", 0, 2)
    if not all(type(a) in (int, float, complex) for a in args):
        raise _Bad("complex expects numbers")
    return complex(*args)


def _latin1(vm, value, what):
    if isinstance(value, bytes | bytearray | str):
        vm.budget.charge(33 + len(value), what)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin1")
    raise _Bad(f"{what} expects bytes, got {type(value).__name__}")


def _codecs_encode(vm, args):
    text, encoding = _args(args, "_codecs.encode", 2)
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Bad(f"_codecs.encode is only allowed on text with latin1, got {_brief(encoding)}")
    vm.budget.charge(33 + len(text), "_codecs.encode")
    return text.encode("latin1")


def _bytearray(vm, args):
    _args(args, "bytearray", 0, 2)
    if not args:
        return bytearray()
    if len(args) == 2:
        return bytearray(_codecs_encode(vm, args))
    return bytearray(_latin1(vm, args[0], "bytearray"))


def _bytes(vm, args):
    # protocols 0-2 pickle b"" as bytes(); other bytes go through _codecs.encode
    _args(args, "bytes", 0, 1)
    return _latin1(vm, args[0], "bytes") if args else b""


def _torch_size(vm, args):
    (dims,) = _args(args, "torch.Size", 1)
    return vm.tracked(_int_tuple(vm, dims, "torch.Size"))


def _torch_device(vm, args):
    _args(args, "torch.device", 1, 2)
    if not isinstance(args[0], str) or (len(args) == 2 and type(args[1]) is not int):
        raise _Bad(f"torch.device expects (type, index), got {_brief(args, 100)}")
    if len(args) == 1:
        return args[0]
    vm.budget.charge(64 + len(args[0]), "torch.device")
    return f"{args[0]}:{args[1]}"


# --------------------------------------------------------------------------------------------
# numpy values (meta data of some checkpoints)
# --------------------------------------------------------------------------------------------


def _np_dtype_of(value, what):
    if isinstance(value, _NpDtype):
        return value.dtype
    raise _Bad(f"{what} expects a numpy dtype, got {type(value).__name__}")


def _numpy_dtype(vm, args):
    code = _args(args, "numpy.dtype", 1, 3)[0]
    if not isinstance(code, str) or len(code) > 32:
        raise _Bad(f"numpy.dtype expects a short type code, got {_brief(code, 50)}")
    try:
        dtype = np.dtype(code)
    except TypeError as exc:
        raise _Bad(f"invalid numpy dtype {code!r}") from exc
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Bad(f"numpy dtype {code!r} is not allowed (only numeric and string dtypes)")
    return _NpDtype(dtype)


def _numpy_dtype_build(obj, state):
    if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
        raise _Bad(f"unexpected numpy dtype state {_brief(state, 100)}")
    if any(s is not None for s in state[2:5]):
        raise _Bad("structured or sub-array numpy dtypes are not supported")
    dtype = obj.dtype
    if dtype.itemsize == 0 and len(state) > 5 and type(state[5]) is int and state[5] > 0:
        # flexible dtypes ("U", "S") carry their size in the state
        count = state[5] // 4 if dtype.kind == "U" else state[5]
        dtype = np.dtype(f"{dtype.kind}{count}")
    if state[1] in "<>" and dtype.itemsize > 1 and dtype.kind != "S":
        dtype = dtype.newbyteorder(state[1])
    obj.dtype = dtype


def _np_from_bytes(vm, data, dtype, shape, fortran):
    shape = _int_tuple(vm, shape, "array shape")
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise _Bad(f"numpy array data has {len(data)} bytes, expected {count * dtype.itemsize}")
    vm.budget.charge(112 + len(data), "a numpy array")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="K", copy=True)


def _numpy_scalar(vm, args):
    dtype_obj, data = _args(args, "numpy scalar", 2)
    dtype = _np_dtype_of(dtype_obj, "numpy scalar")
    return _np_from_bytes(vm, _latin1(vm, data, "numpy scalar"), dtype, (), False)[()]


def _numpy_reconstruct(vm, args):
    cls = _args(args, "numpy _reconstruct", 3)[0]
    if not (isinstance(cls, _Marker) and cls.kind == "ndarray"):
        raise _Bad(f"numpy _reconstruct of {_brief(cls, 100)} is not supported")
    return _NpArray()


def _numpy_array_build(vm, obj, state):
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    if not isinstance(state, tuple) or len(state) != 4:
        raise _Bad(f"unexpected numpy array state {_brief(state, 100)}")
    shape, dtype_obj, fortran, data = state
    dtype = _np_dtype_of(dtype_obj, "numpy array")
    if isinstance(data, list):
        raise _Bad("numpy object arrays are not supported")
    data = _latin1(vm, data, "numpy array")
    obj.array = _np_from_bytes(vm, data, dtype, shape, bool(fortran))


def _numpy_frombuffer(vm, args):
    data, dtype_obj, shape, order = _args(args, "numpy _frombuffer", 4)
    dtype = _np_dtype_of(dtype_obj, "numpy array")
    data = _latin1(vm, data, "numpy array")
    return _np_from_bytes(vm, data, dtype, shape, order == "F")


# --------------------------------------------------------------------------------------------
# The allow list
# --------------------------------------------------------------------------------------------


def _build_allowed():
    allowed = {}

    def add(qualname, call, new=None):
        allowed[qualname] = _Callable(qualname, call, new)

    add("collections.OrderedDict", _ordered_dict, lambda vm, a, k: collections.OrderedDict())
    add("builtins.set", _container(set), lambda vm, a, k: set())
    add("builtins.frozenset", _container(frozenset), lambda vm, a, k: _container(frozenset)(vm, a))
    add("builtins.slice", _slice)
    add("builtins.complex", _complex, lambda vm, a, k: _complex(vm, a))
    add("builtins.bytearray", _bytearray, lambda vm, a, k: _bytearray(vm, a))
    add("builtins.bytes", _bytes)
    add("_codecs.encode", _codecs_encode)
    for fn in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter):
        add(f"torch._utils.{fn.__name__}", fn)
    add("torch._utils._rebuild_parameter_with_state", _rebuild_parameter_with_state)
    add("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2)
    add("torch.Size", _torch_size)
    add("torch.device", _torch_device)
    for name in ("torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.Parameter"):
        allowed[name] = _Marker(name, "tensor_type")
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        add(f"{module}.scalar", _numpy_scalar)
        add(f"{module}._reconstruct", _numpy_reconstruct)
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        add(f"{module}._frombuffer", _numpy_frombuffer)
    add("numpy.dtype", _numpy_dtype)
    allowed["numpy.ndarray"] = _Marker("numpy.ndarray", "ndarray")
    return allowed


_ALLOWED = _build_allowed()
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _lookup_global(module, name):
    module = _PY2_MODULES.get(module, module)
    qualname = f"{module}.{name}"
    found = _ALLOWED.get(qualname)
    if found is not None:
        return qualname, found
    if module == "torch":
        dtype_name = _DTYPE_ALIASES.get(name, name)
        if dtype_name in _ELEMENTS or dtype_name in _UNSUPPORTED_DTYPES:
            return qualname, f"torch.{dtype_name}"  # dtypes are plain strings
    if qualname in _UNTYPED_STORAGES:
        return qualname, _Marker(qualname, "storage", None)
    match = _STORAGE_NAME.match(qualname)
    if match:
        elem = _STORAGE_CLASSES.get(match.group(1), f"unsupported:{match.group(1)}")
        return qualname, _Marker(qualname, "storage", elem)
    return qualname, None


# --------------------------------------------------------------------------------------------
# The pickle interpreter
# --------------------------------------------------------------------------------------------


class _Reader:
    """Bounded reads from a file object: never asks for more than the file still holds."""

    def __init__(self, fileobj, end, path):
        self.f = fileobj
        self.end = end
        self.path = path
        self.pos = fileobj.tell()

    def seek(self, pos):
        self.f.seek(pos)
        self.pos = pos

    def read(self, n):
        if n > self.end - self.pos:
            raise _Truncated(self.pos, n)
        data = self.f.read(n)
        if len(data) != n:
            raise _Truncated(self.pos, n)
        self.pos += n
        return data

    def readline(self):
        line = self.f.readline(self.end - self.pos)
        if not line.endswith(b"\n"):
            raise _Truncated(self.pos, len(line) + 1)
        self.pos += len(line)
        return line[:-1]

    def readinto(self, array):
        view = memoryview(array).cast("B")
        if view.nbytes > self.end - self.pos:
            raise _Truncated(self.pos, view.nbytes)
        done = 0
        while done < view.nbytes:
            n = self.f.readinto(view[done:])
            if not n:
                raise _Truncated(self.pos + done, view.nbytes - done)
            done += n
        self.pos += done


class _Truncated(Exception):
    def __init__(self, pos, wanted):
        super().__init__(pos, wanted)
        self.pos = pos
        self.wanted = wanted


_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U2 = struct.Struct("<H")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")

# What a key may hold (a tuple/frozenset key holds only these, recursively). Mutable and
# intermediate objects are refused: they are unhashable, or finalising would change them.
_KEY_SCALARS = (str, bytes, int, float, complex, type(None), np.generic, OpaqueObject)


class _Unpickler:
    """Interprets pickle opcodes (protocols 0-5) with the allow list above.

    Unlike ``pickle.Unpickler`` it never looks up a real Python object by name: globals
    resolve to the handlers/markers of this module, containers are mutated only when they are
    real dicts/lists/sets, and BUILD is accepted only for the few types that need it.

    Every opcode is charged to ``budget`` (about the memory the object it makes takes), and so
    is every byte, item and hashed key it adds. Tuples and frozensets are recorded with their
    nesting depth and the cost of hashing them, so that no key is hashed that nests deeper
    than ``_MAX_DEPTH`` (C recursion) or that shares parts exponentially (time).
    """

    def __init__(
        self, reader, path, budget, persistent_load=None, allow_unknown=False, unknown=None
    ):
        self.reader = reader
        self.path = path
        self.budget = budget
        self.persistent_load = persistent_load
        self.allow_unknown = allow_unknown
        self.unknown = unknown if unknown is not None else set()
        self.nested = {}  # id -> (tuple or frozenset, depth, hash cost, usable as a key)

    def load(self):
        self.stack = []
        self.metastack = []
        self.memo = {}
        read = self.reader.read
        dispatch = _DISPATCH
        costs = _OP_COST
        budget = self.budget
        while True:
            pos = self.reader.pos
            op = read(1)[0]
            budget.used += costs[op]
            if budget.used > budget.limit:
                raise _OverBudget(f"the objects the pickle builds (at byte {pos})", costs[op])
            if op == 0x2E:  # STOP
                if not self.stack:
                    raise _Bad(f"empty pickle stack at STOP (byte {pos})")
                result = self.stack.pop()
                # the memo and the tuple records die with the interpreter
                budget.release(64 * len(self.memo) + 128 * len(self.nested))
                return result
            handler = dispatch.get(op)
            if handler is None:
                raise _Bad(f"invalid pickle opcode 0x{op:02x} at byte {pos}")
            try:
                handler(self)
            except (_Bad, _Truncated, _OverBudget, UnsafeCheckpointError, CheckpointFormatError):
                raise
            except MemoryError:
                raise
            except Exception as exc:  # malformed data: wrong types, missing memo, ...
                name = _OPNAMES.get(op, "?")
                raise _Bad(f"malformed pickle at byte {pos} ({name}): {_exc_text(exc)}") from None

    # -- helpers ------------------------------------------------------------------------------
    def readline(self):
        line = self.reader.readline()
        self.budget.charge(64 + 4 * len(line), "a pickle text argument")
        return line

    def pop_mark(self):
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def tracked(self, obj):
        """Record a new tuple/frozenset's depth and hash cost; refuse nesting too deep."""
        depth, cost, plain = 1, len(obj) + 1, True
        for item in obj:
            kind = type(item)
            if kind is tuple or kind is frozenset:
                d, c, p = self.shape_of(item)
                depth = max(depth, d + 1)
                cost += c
                plain = plain and p
            elif not isinstance(item, _KEY_SCALARS):
                plain = False
            elif isinstance(item, np.generic):
                cost += item.nbytes // 8  # numpy scalars do not cache their hash
        if depth > _MAX_DEPTH:
            raise _Bad(f"objects nested too deeply (more than {_MAX_DEPTH} levels)")
        if type(obj) is frozenset:
            cost = len(obj) + 1  # its items' hashes are stored; its own is computed once
        if depth > 1 or len(obj) > 8 or not plain:  # small flat ones: shape_of recomputes
            self.budget.charge(128, "a tuple's record")
            self.nested[id(obj)] = (obj, depth, cost, plain)
        return obj

    def shape_of(self, obj):
        """(depth, hash cost, usable as a key) of a tuple/frozenset."""
        entry = self.nested.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1:]
        # Not recorded: at most 8 plain scalars (or the empty tuple, or a handler's tuple of
        # ints), so this is cheap; anything else in it makes it unusable as a key.
        return 1, len(obj) + 1, all(isinstance(v, _KEY_SCALARS) for v in obj)

    def new_tuple(self, items):
        self.budget.charge(40 + 8 * len(items), "a tuple")
        return self.tracked(tuple(items))

    def check_keys(self, keys, where):
        """Refuse keys that are unhashable, internal or too costly to hash; charge hashing."""
        cost = 0
        for key in keys:
            kind = type(key)
            if kind is tuple or kind is frozenset:
                _depth, key_cost, plain = self.shape_of(key)
                if not plain:
                    raise _Bad(
                        f"{where}: a {kind.__name__} holding a {_unkeyable(key)} is not a key"
                    )
                cost += key_cost
            elif isinstance(key, _KEY_SCALARS):
                cost += 1 + (key.nbytes // 8 if isinstance(key, np.generic) else 0)
            else:
                raise _Bad(f"{where}: {_describe(key)} cannot be a dict key or set element")
        # twice: a hash, and an equality test against an equal key already there
        work = 2 * _HASH_COST * cost
        if work > self.budget.limit:
            raise _Bad(
                f"{where}: a key that repeats shared parts would take {cost} steps to hash, "
                "more than the budget for this file"
            )
        self.budget.charge(work, f"hashing {where}")

    def find_global(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Bad("global names must be strings")
        qualname, value = _lookup_global(module, name)
        if value is not None:
            return value
        if self.allow_unknown:
            self.unknown.add(qualname[:200])
            return OpaqueObject(qualname)
        raise UnsafeCheckpointError(
            f"{self.path}: refusing to load: the pickle references the global "
            f"{_brief(qualname, 200)}, which is not part of a tensor/state-dict checkpoint "
            "(loading it with torch.load could execute code). Allowed: tensors, storages, "
            "OrderedDict and plain containers/scalars. If you trust the file, re-save only its "
            "state_dict, or pass allow_unknown_globals=True to read it with inert placeholders.",
            qualname[:200],
        )

    def call(self, func, args, kwargs=None, new=False):
        if not isinstance(args, tuple):
            raise _Bad(f"call arguments must be a tuple, got {type(args).__name__}")
        if isinstance(func, OpaqueObject):
            self.budget.charge(400, "a placeholder object")
            return OpaqueObject(func.name, args, kwargs)
        if isinstance(func, _Callable):
            if kwargs:
                raise _Bad(f"{func.qualname} does not take keyword arguments")
            if new:
                if func.new is None:
                    raise _Bad(f"{func.qualname} cannot be instantiated with NEWOBJ")
                return func.new(self, args, kwargs)
            return func.call(self, args)
        raise _Bad(f"cannot call {_describe(func)}")

    def build(self, obj, state):
        if isinstance(obj, _NpDtype):
            _numpy_dtype_build(obj, state)
        elif isinstance(obj, _NpArray):
            _numpy_array_build(self, obj, state)
        elif isinstance(obj, OpaqueObject):
            obj.state = state
        elif type(obj) is collections.OrderedDict and isinstance(state, dict):
            # module.state_dict() carries a `_metadata` attribute (module versions)
            self.budget.charge(104 * len(state), "OrderedDict attributes")
            for key, value in state.items():
                # plain new attributes only: never shadow a method or touch a dunder
                if not isinstance(key, str) or not key.isidentifier() or hasattr(obj, key):
                    raise _Bad(f"attribute {_brief(key, 50)} is not allowed on an OrderedDict")
                setattr(obj, key, value)
        else:
            raise _Bad(f"cannot set state on {_describe(obj)}")

    def setitems(self, target, items):
        if len(items) % 2:
            raise _Bad("odd number of items for SETITEMS")
        if isinstance(target, OpaqueObject):
            target = target.items
        if not isinstance(target, dict):
            raise _Bad(f"cannot store items into {_describe(target)}")
        self.check_keys(items[::2], "dict keys")
        self.budget.charge(20 * len(items), "dict items")  # ~40 bytes a slot, with growth
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def extend(self, target, items):
        if isinstance(target, OpaqueObject):
            target = target.listitems
        if not isinstance(target, list):
            raise _Bad(f"cannot append to {_describe(target)}")
        self.budget.charge(8 * len(items), "list items")
        target.extend(items)

    def decode_str8(self, data):
        """Protocol 0-2 ``str`` from Python 2: utf-8 if valid, else latin1 (like numpy)."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin1")

    def persid(self, pid):
        if self.persistent_load is None:
            raise _Bad("unexpected persistent id (storage reference) in this pickle")
        return self.persistent_load(pid)

    def get(self, key):
        if key not in self.memo:
            raise _Bad(f"memo key {key} is not defined")
        self.stack.append(self.memo[key])

    def put(self, key):
        if key < 0:
            raise _Bad("negative memo key")
        self.memo[key] = self.stack[-1]


def _unkeyable(obj):
    """The first value inside a tuple/frozenset key that cannot be part of a key (no recursion:
    only one level is named)."""
    for item in obj:
        if type(item) not in (tuple, frozenset) and not isinstance(item, _KEY_SCALARS):
            return type(item).__name__
    return "value that cannot be a key"


def _describe(obj):
    if isinstance(obj, _Callable | _Marker):
        return obj.qualname[:200]
    if isinstance(obj, OpaqueObject):
        return repr(obj)
    return f"a {type(obj).__name__}"


def _op_int(vm):
    line = vm.readline()
    if line == b"00":
        value = False
    elif line == b"01":
        value = True
    else:
        value = int(line)
    vm.stack.append(value)


def _op_long(vm):
    line = vm.readline()
    if line.endswith(b"L"):
        line = line[:-1]
    vm.stack.append(int(line))


def _op_long_n(size_struct):
    def op(vm):
        if size_struct is None:
            n = vm.reader.read(1)[0]
        else:
            n = size_struct.unpack(vm.reader.read(4))[0]
            if n < 0:
                raise _Bad("negative LONG4 size")
        vm.budget.charge(32 + n, "an int")
        vm.stack.append(int.from_bytes(vm.reader.read(n), "little", signed=True))

    return op


def _op_string(vm):
    line = vm.readline()
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise _Bad("STRING argument is not quoted")
    vm.stack.append(vm.decode_str8(codecs.escape_decode(line[1:-1])[0]))


def _sized(size_fmt, kind):
    """Opcodes that push a length-prefixed bytes/str value."""

    def op(vm):
        if size_fmt is None:
            n = vm.reader.read(1)[0]
        else:
            n = size_fmt.unpack(vm.reader.read(size_fmt.size))[0]
            if n < 0:
                raise _Bad("negative length")
        vm.budget.charge(49 + n, "a string")  # before reading it
        data = vm.reader.read(n)
        if kind == "str":
            value = data.decode("utf-8", "surrogatepass")
        elif kind == "str8":
            value = vm.decode_str8(data)
        elif kind == "bytearray":
            value = bytearray(data)
        else:
            value = data
        if isinstance(value, str) and not value.isascii():
            # up to 4 bytes per character once decoded; the encoded bytes were charged
            vm.budget.charge(max(0, sys.getsizeof(value) - n), "a string")
        vm.stack.append(value)

    return op


def _op_global(vm):
    module = vm.readline().decode("utf-8")
    name = vm.readline().decode("utf-8")
    vm.stack.append(vm.find_global(module, name))


def _op_stack_global(vm):
    name = vm.stack.pop()
    module = vm.stack.pop()
    vm.stack.append(vm.find_global(module, name))


def _op_reduce(vm):
    args = vm.stack.pop()
    vm.stack[-1] = vm.call(vm.stack[-1], args)


def _op_inst(vm):
    module = vm.readline().decode("utf-8")
    name = vm.readline().decode("utf-8")
    cls = vm.find_global(module, name)
    args = tuple(vm.pop_mark())
    vm.stack.append(vm.call(cls, args))


def _op_obj(vm):
    args = vm.pop_mark()
    cls = args.pop(0)
    vm.stack.append(vm.call(cls, tuple(args)))


def _op_newobj(vm):
    args = vm.stack.pop()
    cls = vm.stack.pop()
    vm.stack.append(vm.call(cls, args, new=True))


def _op_newobj_ex(vm):
    kwargs = vm.stack.pop()
    args = vm.stack.pop()
    cls = vm.stack.pop()
    if not isinstance(kwargs, dict):
        raise _Bad("NEWOBJ_EX keyword arguments must be a dict")
    vm.stack.append(vm.call(cls, args, kwargs, new=True))


def _op_build(vm):
    state = vm.stack.pop()
    vm.build(vm.stack[-1], state)


def _op_dict(vm):
    items = vm.pop_mark()
    target = {}
    vm.setitems(target, items)
    vm.stack.append(target)


def _op_setitem(vm):
    value = vm.stack.pop()
    key = vm.stack.pop()
    vm.setitems(vm.stack[-1], [key, value])


def _op_setitems(vm):
    items = vm.pop_mark()
    vm.setitems(vm.stack[-1], items)


def _op_append(vm):
    value = vm.stack.pop()
    vm.extend(vm.stack[-1], [value])


def _op_appends(vm):
    items = vm.pop_mark()
    vm.extend(vm.stack[-1], items)


def _op_additems(vm):
    items = vm.pop_mark()
    target = vm.stack[-1]
    if not isinstance(target, set):
        raise _Bad(f"cannot add items to {_describe(target)}")
    vm.check_keys(items, "set elements")
    vm.budget.charge(64 * len(items), "set elements")
    target.update(items)


def _op_pop(vm):
    if vm.stack:
        vm.stack.pop()
    else:
        vm.pop_mark()


def _op_mark(vm):
    vm.metastack.append(vm.stack)
    vm.stack = []


def _op_persid(vm):
    vm.stack.append(vm.persid(vm.readline().decode("ascii")))


def _op_binpersid(vm):
    vm.stack.append(vm.persid(vm.stack.pop()))


def _op_proto(vm):
    proto = vm.reader.read(1)[0]
    if proto > 5:
        raise _Bad(f"unsupported pickle protocol {proto}")


def _op_ext(vm):
    raise UnsafeCheckpointError(
        f"{vm.path}: refusing to load: the pickle uses a copyreg extension code (EXT opcode), "
        "which names a global indirectly",
        "copyreg extension",
    )


def _op_next_buffer(vm):
    raise _Bad("out-of-band pickle buffers (NEXT_BUFFER) are not supported")


def _op_list(vm):
    items = vm.pop_mark()  # the mark's own list becomes the list
    vm.stack.append(items)


def _op_tuple(vm):
    items = vm.pop_mark()  # replaces vm.stack: append to the new one
    vm.stack.append(vm.new_tuple(items))


def _op_frozenset(vm):
    items = vm.pop_mark()
    vm.check_keys(items, "frozenset elements")
    vm.budget.charge(216 + 64 * len(items), "a frozenset")
    vm.stack.append(vm.tracked(frozenset(items)))


def _op_tuple_n(n):
    def op(vm):
        if len(vm.stack) < n:
            raise _Bad(f"TUPLE{n} needs {n} items on the stack")
        items = vm.stack[-n:]
        del vm.stack[-n:]
        vm.stack.append(vm.new_tuple(items))

    return op


def _push(value_fn):
    return lambda vm: vm.stack.append(value_fn())


def _unpack(fmt, size):
    return lambda vm: vm.stack.append(fmt.unpack(vm.reader.read(size))[0])


_DISPATCH = {
    ord("("): _op_mark,
    ord("0"): _op_pop,
    ord("1"): lambda vm: vm.pop_mark(),
    ord("2"): lambda vm: vm.stack.append(vm.stack[-1]),
    ord("F"): lambda vm: vm.stack.append(float(vm.readline())),
    ord("G"): _unpack(_F8, 8),
    ord("I"): _op_int,
    ord("J"): _unpack(_I4, 4),
    ord("K"): lambda vm: vm.stack.append(vm.reader.read(1)[0]),
    ord("M"): _unpack(_U2, 2),
    ord("L"): _op_long,
    0x8A: _op_long_n(None),
    0x8B: _op_long_n(_I4),
    ord("N"): _push(lambda: None),
    0x88: _push(lambda: True),
    0x89: _push(lambda: False),
    ord("P"): _op_persid,
    ord("Q"): _op_binpersid,
    ord("R"): _op_reduce,
    ord("S"): _op_string,
    ord("T"): _sized(_I4, "str8"),
    ord("U"): _sized(None, "str8"),
    ord("V"): lambda vm: vm.stack.append(vm.readline().decode("raw-unicode-escape")),
    ord("X"): _sized(_U4, "str"),
    0x8C: _sized(None, "str"),
    0x8D: _sized(_U8, "str"),
    ord("B"): _sized(_U4, "bytes"),
    ord("C"): _sized(None, "bytes"),
    0x8E: _sized(_U8, "bytes"),
    0x96: _sized(_U8, "bytearray"),
    0x97: _op_next_buffer,
    0x98: lambda vm: None,  # READONLY_BUFFER
    ord("a"): _op_append,
    ord("e"): _op_appends,
    ord("b"): _op_build,
    ord("c"): _op_global,
    0x93: _op_stack_global,
    ord("d"): _op_dict,
    ord("}"): _push(dict),
    ord("l"): _op_list,
    ord("]"): _push(list),
    ord("t"): _op_tuple,
    ord(")"): _push(tuple),
    0x85: _op_tuple_n(1),
    0x86: _op_tuple_n(2),
    0x87: _op_tuple_n(3),
    0x8F: _push(set),
    0x90: _op_additems,
    0x91: _op_frozenset,
    ord("s"): _op_setitem,
    ord("u"): _op_setitems,
    ord("g"): lambda vm: vm.get(int(vm.readline())),
    ord("h"): lambda vm: vm.get(vm.reader.read(1)[0]),
    ord("j"): lambda vm: vm.get(_U4.unpack(vm.reader.read(4))[0]),
    ord("p"): lambda vm: vm.put(int(vm.readline())),
    ord("q"): lambda vm: vm.put(vm.reader.read(1)[0]),
    ord("r"): lambda vm: vm.put(_U4.unpack(vm.reader.read(4))[0]),
    0x94: lambda vm: vm.put(len(vm.memo)),
    ord("i"): _op_inst,
    ord("o"): _op_obj,
    0x81: _op_newobj,
    0x92: _op_newobj_ex,
    0x82: _op_ext,
    0x83: _op_ext,
    0x84: _op_ext,
    0x80: _op_proto,
    0x95: lambda vm: vm.reader.read(8),  # FRAME: a length hint; data is read sequentially
}
_OPNAMES = {
    ord("R"): "REDUCE",
    ord("b"): "BUILD",
    ord("s"): "SETITEM",
    ord("u"): "SETITEMS",
    ord("a"): "APPEND",
    ord("e"): "APPENDS",
    0x81: "NEWOBJ",
    ord("h"): "BINGET",
    ord("j"): "LONG_BINGET",
    ord("g"): "GET",
}


# Budget charged per opcode: about the memory of the object it pushes (sys.getsizeof in
# CPython 3.11) plus its stack slot. Variable-size data is charged by the handlers.
_OP_COST = [32] * 256
for _op, _cost in {
    "]": 64,  # empty list
    "}": 72,  # empty dict
    "(": 64,  # MARK: a new stack list
    "\x8f": 224,  # empty set
    ")": 8,  # the empty tuple is shared
    "2": 16,  # DUP and GETs push a reference
    "g": 16,
    "h": 16,
    "j": 16,
    "p": 64,  # memo entries: a dict slot and an int key
    "q": 64,
    "r": 64,
    "\x94": 64,
    # length-prefixed str/bytes: the stack slot; `_sized` charges the object
    **dict.fromkeys(["X", "\x8c", "\x8d", "B", "C", "\x8e", "\x96", "T", "U"], 8),
}.items():
    _OP_COST[ord(_op)] = _cost
del _op, _cost

# --------------------------------------------------------------------------------------------
# After unpickling: turn the interpreter's intermediate objects into plain values
# --------------------------------------------------------------------------------------------

_LEAVES = (np.ndarray, np.generic, str, bytes, bytearray, int, float, complex, type(None), slice)


def _open(obj, budget):
    """(final value, None) for a leaf; (None, children) for a container."""
    if isinstance(obj, _LEAVES):
        return obj, None
    kind = type(obj)
    if kind is dict or kind is collections.OrderedDict:
        children = [*obj.keys(), *obj.values()]
        if kind is collections.OrderedDict:
            children += vars(obj).values()  # `_metadata`
        return None, children
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return None, list(obj)
    if kind is OpaqueObject:
        return None, [obj.args, obj.kwargs, obj.state, obj.items, obj.listitems]
    if kind is _Storage:
        return obj.as_array(budget), None
    if kind is _NpDtype:
        return obj.dtype, None
    if kind is _NpArray:
        if obj.array is None:
            raise _Bad("numpy array without data")
        return obj.array, None
    if kind is _Marker or kind is _Callable:
        return obj.qualname, None
    return obj, None


def _close(obj, finals, cyclic, budget):
    """The final value of a container whose children's final values are `finals`."""
    kind = type(obj)
    if kind is dict or kind is collections.OrderedDict:
        n = len(obj)
        olds, news = list(obj.items()), finals[n : 2 * n]
        for (key, old), new in zip(olds, news, strict=True):
            if new is not old:
                obj[key] = new
        if kind is collections.OrderedDict:
            for name, new in zip(list(vars(obj)), finals[2 * n :], strict=True):
                if new is not getattr(obj, name):
                    setattr(obj, name, new)
        return obj  # keys hold only plain values (check_keys): they never change
    if kind is list:
        for i, new in enumerate(finals):
            if new is not obj[i]:
                obj[i] = new
        return obj
    if kind is tuple:
        if all(new is old for new, old in zip(finals, obj, strict=True)):
            return obj
        if cyclic:
            raise _Bad("a tuple that contains itself holds storages or numpy values")
        budget.charge(40 + 8 * len(finals), "a tuple")
        return tuple(finals)
    if kind is OpaqueObject:
        obj.args, obj.kwargs, obj.state = finals[:3]
        return obj
    return obj  # sets and frozensets hold only plain values (check_keys)


def _finalize(obj, budget):
    """Replace intermediate objects (storages, numpy dtypes/arrays, markers) by plain values.

    Iterative: the file's nesting never becomes Python or C recursion here. Refuses objects
    nested more than ``_MAX_DEPTH`` deep, and structures whose shared parts make a full walk
    (what ``repr``, ``json`` or ``==`` do) visit more than ``budget.limit // 32`` nodes.
    """
    max_nodes = max(1, budget.limit // 32)
    results = {}  # id -> (original, final, height, nodes); keeps originals alive
    active, cyclic = set(), set()
    final, children = _open(obj, budget)
    if children is None:
        return final
    # frame: [object, children, next child, finals, height, nodes]
    frames = [[obj, children, 0, [], 1, 1]]
    active.add(id(obj))
    too_shared = (
        f"objects share parts so heavily that walking them in full (as repr or json do) would "
        f"visit more than {max_nodes} of them"
    )
    while True:
        frame = frames[-1]
        children, finals, start = frame[1], frame[3], frame[2]
        i, n = start, len(children)
        while i < n and isinstance(children[i], _LEAVES):  # plain values stay as they are
            finals.append(children[i])
            i += 1
        frame[5] += i - start
        if frame[5] > max_nodes:
            raise _Bad(too_shared)
        if i < n:
            child = children[i]
            frame[2] = i + 1
            key = id(child)
            done = results.get(key)
            if done is not None:
                _, final, height, nodes = done
            elif key in active:  # a container that holds itself: repr shows it as [...]
                cyclic.add(key)
                final, height, nodes = child, 0, 1
            else:
                final, grandchildren = _open(child, budget)
                if grandchildren is not None:
                    budget.charge(112, "walking the loaded objects")  # its `results` entry
                    if len(frames) >= _MAX_DEPTH:
                        raise _Bad(f"objects nested too deeply (more than {_MAX_DEPTH} levels)")
                    active.add(key)
                    frames.append([child, grandchildren, 0, [], 1, 1])
                    continue
                height, nodes = 0, 1
                if final is not child:  # a converted storage shared by several references
                    results[key] = (child, final, 0, 1)
        else:
            frame[2] = n
            frames.pop()
            original = frame[0]
            active.discard(id(original))
            final = _close(original, frame[3], id(original) in cyclic, budget)
            height, nodes = frame[4], frame[5]
            results[id(original)] = (original, final, height, nodes)
            if not frames:
                return final
        parent = frames[-1]
        parent[3].append(final)
        if height + 1 > parent[4]:
            parent[4] = height + 1
            if parent[4] > _MAX_DEPTH:
                raise _Bad(f"objects nested too deeply (more than {_MAX_DEPTH} levels)")
        parent[5] += nodes
        if parent[5] > max_nodes:
            raise _Bad(too_shared)


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def _storage_pid(pid, path):
    """Validate ``('storage', storage_class, key, location, numel[, view_metadata])``."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise _Bad(f"unsupported persistent id {_brief(pid, 200)}")
    kind, key, _location, numel = pid[1:5]
    if not (isinstance(kind, _Marker) and kind.kind == "storage"):
        raise _Bad(f"persistent id names {_describe(kind)}, not a storage class")
    if kind.elem is not None and kind.elem.startswith("unsupported:"):
        raise _Bad(f"storages of type {kind.qualname} are not supported")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", key):
        raise _Bad(f"invalid storage key {_brief(key)}")
    itemsize = _ELEMENTS[kind.elem].itemsize if kind.elem else 1
    return kind.elem, key, _int(numel, "storage size"), itemsize, pid[5] if len(pid) == 6 else None


# The compression methods whose decompression zipfile bounds by the declared size (it passes
# bz2 and lzma output through unbounded); torch.save writes stored entries.
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,  # e.g. a negative offset, an undecodable utf-8 name
    struct.error,
    OverflowError,
)


def _read_zip_record(zf, info, budget, what):
    """The bytes of one zip entry, after charging its declared size (which zipfile enforces:
    a deflate stream that expands further is cut there and fails its CRC check)."""
    if info.flag_bits & 0x1:
        raise _Bad(f"zip entry {_brief(info.filename)} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise _Bad(
            f"zip entry {_brief(info.filename)} uses compression method {info.compress_type}; "
            "only stored (what torch.save writes) and deflated entries are read"
        )
    budget.charge(info.file_size, what)
    out = np.empty(info.file_size, dtype=np.uint8)
    view = memoryview(out)
    done = 0
    try:
        with zf.open(info) as fh:
            while done < info.file_size:
                chunk = fh.read(min(_CHUNK, info.file_size - done))
                if not chunk:
                    raise _Bad(f"zip record {_brief(info.filename)} ends early")
                view[done : done + len(chunk)] = chunk
                done += len(chunk)
            fh.read(1)  # reaching EOF makes zipfile verify the CRC
    except (*_ZIP_ERRORS, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise _Bad(
            f"zip entry {_brief(info.filename)} is truncated or corrupt ({_exc_text(exc)})"
        ) from None
    return out


def _load_zip(fileobj, path, budget, allow_unknown, unknown):
    try:
        zf = zipfile.ZipFile(fileobj)
    except _ZIP_ERRORS as exc:
        raise CheckpointFormatError(
            f"{path}: truncated or corrupt zip archive ({_exc_text(exc)}); expected {EXPECTED}"
        ) from None
    with zf:
        # zipfile has built the central directory already (bounded by the file's size); its
        # entries (~0.5 KiB each) count against the budget like everything else.
        budget.charge(512 * len(zf.infolist()), "the zip directory")
        infos = {}
        for info in zf.infolist():
            if info.filename in infos:
                raise _Bad(f"the zip archive has two entries named {_brief(info.filename)}")
            infos[info.filename] = info
        if not infos:
            raise CheckpointFormatError(f"{path}: empty zip archive; expected {EXPECTED}")
        first = next(iter(infos)).split("/", 1)[0]
        candidates = [first] + sorted(
            {n.split("/", 1)[0] for n in infos if n.count("/") == 1 and n.endswith("/data.pkl")}
        )
        prefix = next((p for p in candidates if f"{p}/data.pkl" in infos), None)
        if prefix is None:
            raise CheckpointFormatError(
                f"{path}: zip archive without <folder>/data.pkl (a .npz, .keras or other zip "
                f"file?); expected {EXPECTED}"
            )
        if f"{prefix}/constants.pkl" in infos or any(
            n.startswith(f"{prefix}/code/") for n in infos
        ):
            raise CheckpointFormatError(
                f"{path}: this is a TorchScript archive (torch.jit.save), which stores code; "
                f"expected {EXPECTED}. Save model.state_dict() with torch.save instead."
            )
        big_endian = False
        order_info = infos.get(f"{prefix}/byteorder")
        if order_info is not None:
            if order_info.file_size > 16:
                raise _Bad(
                    f"{prefix}/byteorder holds {order_info.file_size} bytes, not a byte order"
                )
            order = _read_zip_record(zf, order_info, budget, "byteorder").tobytes().strip()
            if order not in (b"little", b"big"):
                raise _Bad(f"unknown byteorder {order[:20]!r}")
            big_endian = order == b"big"
        raw_cache = {}

        def persistent_load(pid):
            elem, key, numel, itemsize, _view = _storage_pid(pid, path)
            raw = raw_cache.get(key)
            if raw is None:
                info = infos.get(f"{prefix}/data/{key}")
                if info is None:
                    raise _Bad(f"storage {key!r} is referenced but {prefix}/data/{key} is missing")
                nbytes = info.file_size
            else:
                nbytes = raw.nbytes
            # compared before a byte is read: a storage is exactly what the pickle declares
            if nbytes != numel * itemsize:
                raise _Bad(
                    f"storage {key!r} has {nbytes} bytes, but the pickle declares {numel} "
                    f"elements of {itemsize} bytes"
                )
            if raw is None:
                raw = raw_cache[key] = _read_zip_record(zf, info, budget, f"storage {key!r}")
            return _Storage(raw, elem, big_endian, key)

        pickle_info = infos[f"{prefix}/data.pkl"]
        # twice its size while the bytes object is made from the array
        budget.charge(pickle_info.file_size, "data.pkl")
        raw_pickle = _read_zip_record(zf, pickle_info, budget, "data.pkl")
        data = raw_pickle.tobytes()
        del raw_pickle
        budget.release(pickle_info.file_size)
        reader = _Reader(io.BytesIO(data), len(data), path)
        obj = _Unpickler(reader, path, budget, persistent_load, allow_unknown, unknown).load()
        budget.release(len(data))  # freed on return
        return obj


def _load_legacy(fileobj, size, path, budget, allow_unknown, unknown):
    reader = _Reader(fileobj, size, path)
    try:
        magic = _Unpickler(reader, path, budget).load()
    except (_Bad, _Truncated) as exc:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch checkpoint ({_sniff_text(fileobj)}: {_message(exc)}); "
            f"expected {EXPECTED}"
        ) from None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointFormatError(
            f"{path}: a pickle file, but not one written by torch.save (no torch magic number); "
            f"expected {EXPECTED}"
        )
    protocol = _Unpickler(reader, path, budget).load()
    if protocol != _LEGACY_PROTOCOL:
        raise _Bad(f"unsupported legacy protocol version {_brief(protocol, 50)}")
    sys_info = _Unpickler(reader, path, budget).load()
    if not isinstance(sys_info, dict):
        raise _Bad("legacy sys_info is not a dict")

    # Pass 1: find which storages the main pickle uses and their element sizes; the storage
    # data only follows the pickle. Pass 2 (below) re-reads the pickle with the real data.
    # Pass 1's objects are dropped before pass 2: it gets a budget of its own.
    main_start = reader.pos
    itemsizes = {}

    def record(pid):
        elem, key, _numel, itemsize, _view = _storage_pid(pid, path)
        if itemsizes.setdefault(key, itemsize) != itemsize:
            raise _Bad(f"storage {key!r} is used with different element sizes")
        return _Storage(None, elem, False, key)

    first_pass = _Budget(budget.limit - budget.used)
    _Unpickler(reader, path, first_pass, record, allow_unknown, set()).load()
    keys = _Unpickler(reader, path, budget).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Bad("legacy storage key list is not a list of strings")
    raws = {}
    for key in keys:
        if key not in itemsizes:
            raise _Bad(f"storage {_brief(key)} is listed but never used; cannot size it")
        numel = int.from_bytes(reader.read(8), "little", signed=True)
        if numel < 0:
            raise _Bad(f"negative size for storage {key!r}")
        nbytes = numel * itemsizes[key]
        if nbytes > size - reader.pos:
            raise _Truncated(reader.pos, nbytes)
        budget.charge(nbytes, f"storage {key!r}")
        raw = np.empty(nbytes, dtype=np.uint8)
        reader.readinto(raw)
        raws[key] = raw
    missing = sorted(set(itemsizes) - set(raws))
    if missing:
        raise _Bad(f"storages {missing[:5]} are referenced but have no data")

    views = {}

    def persistent_load(pid):
        elem, key, numel, itemsize, view = _storage_pid(pid, path)
        raw = raws[key]
        if raw.nbytes != numel * itemsize:
            raise _Bad(f"storage {key!r} has {raw.nbytes} bytes, not {numel} x {itemsize}")
        if view is None:
            return _Storage(raw, elem, False, key)
        # pre-1.0 torch: a storage that is a window into another one
        view_key, offset, view_numel = _args(view, "storage view metadata", 3)
        if not isinstance(view_key, str):
            raise _Bad(f"storage view key must be a string, got {type(view_key).__name__}")
        offset, view_numel = _int(offset, "view offset"), _int(view_numel, "view size")
        if offset + view_numel > numel:
            raise _Bad(f"storage view {_brief(view_key)} exceeds storage {key!r}")
        if view_key not in views:
            part = raw[offset * itemsize : (offset + view_numel) * itemsize]
            views[view_key] = _Storage(part, elem, False, view_key[:64])
        return views[view_key]

    reader.seek(main_start)
    return _Unpickler(reader, path, budget, persistent_load, allow_unknown, unknown).load()


_SIGNATURES = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5/.weights.h5 file?)"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"BZh", "a bzip2-compressed file (decompress it first)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it first)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"%PDF", "a PDF document"),
]


def _sniff(head):
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head[257:262] == b"ustar":
        return "a tar archive (the tar format of PyTorch < 0.1.10 is not supported)"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file (not supported here)"
    return "pickle"


def _sniff_text(fileobj):
    fileobj.seek(0)
    head = fileobj.read(1024)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    if "\x00" in text:
        return "unrecognised binary data"
    return "it looks like a text file"


def _message(exc):
    if isinstance(exc, _Truncated):
        return f"unexpected end of file at byte {exc.pos}"
    return str(exc)


def load_checkpoint(path, *, allow_unknown_globals=False, memory_budget=None):
    """Load a ``torch.save`` file safely, with every tensor as a ``numpy.ndarray``.

    Args:
        path: path of a ``.pth``/``.pt`` file written by ``torch.save`` (zip or legacy format).
        allow_unknown_globals: if True, globals outside the allow list (anywhere in the file,
            ``meta`` included) become inert :class:`OpaqueObject` placeholders instead of
            raising, and a warning names them. Nothing is ever imported or called either way;
            use it only to read the weights of trusted files with exotic metadata.
        memory_budget: the most bytes the reader may allocate (checked before allocating),
            ``None`` for :func:`default_memory_budget` of the file's size. Raise it only for a
            trusted file that needs more (e.g. one whose tensors are expanded views).

    Returns:
        The unpickled top-level object (usually a dict or ``OrderedDict``) with tensors
        replaced by numpy arrays (``bfloat16`` converted to ``float32``) and containers and
        scalars preserved.

    Raises:
        FileNotFoundError / IsADirectoryError: ``path`` is missing or a directory.
        CheckpointFormatError: the file is empty, truncated, corrupt, not a checkpoint, nested
            too deeply, or needs more than the memory budget.
        UnsafeCheckpointError: the pickle references a global outside the allow list.
        (Both are :class:`CheckpointError`, a ``ValueError``, and name the file.)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; expected {EXPECTED}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory; expected {EXPECTED}")
    if memory_budget is not None and (type(memory_budget) is not int or memory_budget < 0):
        raise ValueError(
            f"memory_budget must be a number of bytes (int >= 0), got {memory_budget!r}"
        )
    unknown = set()
    with open(path, "rb") as fileobj:
        size = os.fstat(fileobj.fileno()).st_size
        budget = _Budget(default_memory_budget(size) if memory_budget is None else memory_budget)
        head = fileobj.read(512)
        fileobj.seek(0)
        if not head:
            raise CheckpointFormatError(f"{path}: the file is empty; expected {EXPECTED}")
        kind = _sniff(head)
        try:
            if kind == "zip":
                obj = _load_zip(fileobj, path, budget, allow_unknown_globals, unknown)
            elif kind == "pickle":
                obj = _load_legacy(fileobj, size, path, budget, allow_unknown_globals, unknown)
            else:
                raise CheckpointFormatError(
                    f"{path}: not a PyTorch checkpoint ({kind}); expected {EXPECTED}"
                )
            obj = _finalize(obj, budget)
        except _OverBudget as exc:
            raise CheckpointFormatError(
                f"{path}: refusing to load: {exc.what} would take {_size(exc.amount)} more, "
                f"beyond the reader's memory budget of {_size(budget.limit)} for this "
                f"{_size(size)} file ({_size(budget.used - exc.amount)} already used); a "
                "checkpoint's tensors and metadata fit in a few times its size. If you trust "
                "the file, pass a larger memory_budget to load_checkpoint."
            ) from None
        except _Truncated as exc:
            raise CheckpointFormatError(
                f"{path}: truncated file (needed {exc.wanted} more bytes at byte {exc.pos}, "
                f"the file has {size}); expected {EXPECTED}"
            ) from None
        except _Bad as exc:
            raise CheckpointFormatError(f"{path}: invalid checkpoint: {exc}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise CheckpointFormatError(
                f"{path}: truncated or corrupt zip archive ({_exc_text(exc)}); expected {EXPECTED}"
            ) from None
        except RecursionError:  # a safety net: nothing above recurses on the file's nesting
            raise CheckpointFormatError(
                f"{path}: invalid checkpoint: objects nested too deeply"
            ) from None
    if unknown:
        names = sorted(unknown)
        logger.warning(
            "%s: replaced %d global(s) outside the allow list by inert placeholders "
            "(allow_unknown_globals=True; nothing was imported or called): %s",
            path,
            len(names),
            ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""),
        )
    return obj


_STATE_DICT_KEYS = ("state_dict", "model", "module", "model_state", "model_state_dict")


def _is_array_mapping(obj):
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    )


def state_dict_from_checkpoint(obj):
    """Return the flat ``{name: numpy.ndarray}`` weights of a loaded checkpoint.

    ``obj`` is what :func:`load_checkpoint` returned. The weights are taken from the first of
    the keys ``state_dict`` (mmaction / official Video Swin), ``model`` (2D Swin, timm, DeiT),
    ``module``, ``model_state``, ``model_state_dict`` that holds a mapping; otherwise ``obj``
    itself is used if it is a mapping of arrays (a bare ``module.state_dict()``). Other top-level
    entries (``meta``, ``optimizer``, ``amp``, ...) are ignored. Key names are kept as they are
    (no prefix is stripped). Returns a new ``dict`` in the checkpoint's order. Error messages
    show keys cut short, without recursing into them (a key may be a deeply nested tuple).

    Raises:
        CheckpointFormatError: no state dict is found, or an entry is not an array.
    """
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            candidate = obj.get(key)
            if isinstance(candidate, Mapping):
                return _checked_state_dict(candidate, f"checkpoint[{key!r}]")
        if _is_array_mapping(obj):
            return dict(obj)
        keys = []
        for i, key in enumerate(obj):
            if i == 10:
                keys.append("...")
                break
            keys.append(_brief(key, 60))
        raise CheckpointFormatError(
            "no state dict in the checkpoint: expected one of the keys "
            f"{', '.join(_STATE_DICT_KEYS)} or a mapping of arrays; top-level keys: "
            f"{', '.join(keys)}"
        )
    raise CheckpointFormatError(
        f"no state dict in the checkpoint: expected a mapping, got {type(obj).__name__}"
    )


def _checked_state_dict(mapping, where):
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise CheckpointFormatError(f"{where} has a non-string key {_brief(name)}")
        if not isinstance(value, np.ndarray):
            raise CheckpointFormatError(
                f"{where}[{_brief(name)}] is a {type(value).__name__}, not an array"
            )
    return dict(mapping)
