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
``nn.Module`` class, ...) raises :class:`UnsafeCheckpointError` naming the file and the global,
before anything is called. With ``allow_unknown_globals=True`` such globals become inert
:class:`OpaqueObject` records instead (still nothing is imported or called), so the weights of
a trusted file with exotic metadata can be read.

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

Memory: the zip reader allocates each storage once and fills it from the archive in 8 MiB
chunks; the legacy reader reads storages straight into their arrays. Peak memory is about the
size of the tensors plus a few MiB.

Only the standard library and numpy are imported.
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "OpaqueObject",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "state_dict_from_checkpoint",
]

EXPECTED = "a PyTorch checkpoint saved with torch.save (zip or legacy format)"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CHUNK = 8 << 20


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint (wrong type, truncated, corrupt)."""


class UnsafeCheckpointError(ValueError):
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
        return f"OpaqueObject({self.name}{how})"


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

    def as_array(self):
        """A storage that appears outside a tensor: its elements as a 1-D array."""
        elem = self.elem or "uint8"
        return _finish(self.typed(elem, elem), elem, copy=False)


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
    if type(value) is not int or value < 0:
        raise _Bad(f"{what} must be a non-negative int, got {value!r}")
    return value


def _int_tuple(value, what):
    if not isinstance(value, tuple | list):
        raise _Bad(f"{what} must be a tuple of ints, got {type(value).__name__}")
    return tuple(_int(v, what) for v in value)


def _finish(view, elem, copy):
    """Native-endian array of the tensor's result dtype; copies only if asked or converting."""
    if elem == "bfloat16":
        wide = view.astype(np.uint32)  # in-place shift keeps 0-d arrays as arrays
        wide <<= 16
        return wide.view(np.float32)
    if elem == "bool":
        return view.astype(np.bool_)
    if not view.dtype.isnative:
        return view.astype(view.dtype.newbyteorder("="))
    return view.copy() if copy else view


def _make_tensor(storage, offset, size, stride, elem, metadata):
    if not isinstance(storage, _Storage):
        raise _Bad(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    offset = _int(offset, "storage offset")
    size = _int_tuple(size, "tensor size")
    stride = _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
        raise _Bad(f"tensor size {size} and stride {stride} differ in length")
    if elem is None:
        elem = storage.elem or "uint8"
    if elem not in _ELEMENTS:
        raise _Bad(f"tensors of dtype torch.{elem} are not supported")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Bad(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    if storage.raw is None:  # first pass over a legacy file: only storages matter
        return None
    typed = storage.typed(elem, f"torch.{elem} elements")
    numel = math.prod(size)
    if numel == 0:
        return _finish(typed[:0], elem, copy=True).reshape(size)
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
    if contiguous:
        view = typed[offset : offset + numel].reshape(size)
        whole = offset == 0 and numel == typed.shape[0]
        out = _finish(view, elem, copy=not whole)
    else:
        item = typed.itemsize
        view = np.lib.stride_tricks.as_strided(
            typed[offset:], shape=size, strides=[s * item for s in stride], writeable=False
        )
        out = np.ascontiguousarray(_finish(view, elem, copy=True))
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
        raise _Bad(f"{name} expects {want} arguments, got {args!r:.200}")
    return args


def _rebuild_tensor(vm, args):
    storage, offset, size, stride = _args(args, "_rebuild_tensor", 4)
    return _make_tensor(storage, offset, size, stride, None, None)


def _rebuild_tensor_v2(vm, args):
    storage, offset, size, stride, _grad, _hooks, *meta = _args(args, "_rebuild_tensor_v2", 6, 7)
    return _make_tensor(storage, offset, size, stride, None, meta[0] if meta else None)


def _rebuild_tensor_v3(vm, args):
    storage, offset, size, stride, _grad, _hooks, dtype, *meta = _args(
        args, "_rebuild_tensor_v3", 7, 8
    )
    if not (isinstance(dtype, str) and dtype.startswith("torch.")):
        raise _Bad(f"_rebuild_tensor_v3 expects a torch dtype, got {dtype!r:.100}")
    return _make_tensor(storage, offset, size, stride, dtype[6:], meta[0] if meta else None)


def _rebuild_parameter(vm, args):
    return _args(args, "_rebuild_parameter", 3)[0]


def _rebuild_parameter_with_state(vm, args):
    return _args(args, "_rebuild_parameter_with_state", 4)[0]


_TENSOR_REBUILDERS = {_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3}
_TENSOR_REBUILDERS |= {_rebuild_parameter, _rebuild_parameter_with_state}


def _rebuild_from_type_v2(vm, args):
    func, new_type, inner, _state = _args(args, "_rebuild_from_type_v2", 4)
    if not (isinstance(func, _Callable) and func.call in _TENSOR_REBUILDERS):
        raise _Bad(f"_rebuild_from_type_v2 with rebuild function {func!r:.100} is not supported")
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
        return collections.OrderedDict(items)
    if not isinstance(items, list | tuple) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in items
    ):
        raise _Bad("OrderedDict expects a list of (key, value) pairs")
    return collections.OrderedDict(items)


def _container(kind):
    def call(vm, args):
        _args(args, kind.__name__, 0, 1)
        if not args:
            return kind()
        if not isinstance(args[0], list | tuple | set | frozenset):
            raise _Bad(f"{kind.__name__} expects a list, got {type(args[0]).__name__}")
        return kind(args[0])

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


def _latin1(value, what):
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin1")
    raise _Bad(f"{what} expects bytes, got {type(value).__name__}")


def _codecs_encode(vm, args):
    text, encoding = _args(args, "_codecs.encode", 2)
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Bad(f"_codecs.encode is only allowed on text with latin1, got {encoding!r:.50}")
    return text.encode("latin1")


def _bytearray(vm, args):
    _args(args, "bytearray", 0, 2)
    if not args:
        return bytearray()
    if len(args) == 2:
        return bytearray(_codecs_encode(vm, args))
    return bytearray(_latin1(args[0], "bytearray"))


def _bytes(vm, args):
    # protocols 0-2 pickle b"" as bytes(); other bytes go through _codecs.encode
    _args(args, "bytes", 0, 1)
    return _latin1(args[0], "bytes") if args else b""


def _torch_size(vm, args):
    (dims,) = _args(args, "torch.Size", 1)
    return _int_tuple(dims, "torch.Size")


def _torch_device(vm, args):
    _args(args, "torch.device", 1, 2)
    if not isinstance(args[0], str) or (len(args) == 2 and type(args[1]) is not int):
        raise _Bad(f"torch.device expects (type, index), got {args!r:.100}")
    return args[0] if len(args) == 1 else f"{args[0]}:{args[1]}"


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
        raise _Bad(f"numpy.dtype expects a short type code, got {code!r:.50}")
    try:
        dtype = np.dtype(code)
    except TypeError as exc:
        raise _Bad(f"invalid numpy dtype {code!r}") from exc
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Bad(f"numpy dtype {code!r} is not allowed (only numeric and string dtypes)")
    return _NpDtype(dtype)


def _numpy_dtype_build(obj, state):
    if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
        raise _Bad(f"unexpected numpy dtype state {state!r:.100}")
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


def _np_from_bytes(data, dtype, shape, fortran):
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise _Bad(f"numpy array data has {len(data)} bytes, expected {count * dtype.itemsize}")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="K", copy=True)


def _numpy_scalar(vm, args):
    dtype_obj, data = _args(args, "numpy scalar", 2)
    dtype = _np_dtype_of(dtype_obj, "numpy scalar")
    return _np_from_bytes(_latin1(data, "numpy scalar"), dtype, (), False)[()]


def _numpy_reconstruct(vm, args):
    cls = _args(args, "numpy _reconstruct", 3)[0]
    if not (isinstance(cls, _Marker) and cls.kind == "ndarray"):
        raise _Bad(f"numpy _reconstruct of {cls!r:.100} is not supported")
    return _NpArray()


def _numpy_array_build(obj, state):
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    if not isinstance(state, tuple) or len(state) != 4:
        raise _Bad(f"unexpected numpy array state {state!r:.100}")
    shape, dtype_obj, fortran, data = state
    dtype = _np_dtype_of(dtype_obj, "numpy array")
    if isinstance(data, list):
        raise _Bad("numpy object arrays are not supported")
    data = _latin1(data, "numpy array")
    obj.array = _np_from_bytes(data, dtype, _int_tuple(shape, "array shape"), bool(fortran))


def _numpy_frombuffer(vm, args):
    data, dtype_obj, shape, order = _args(args, "numpy _frombuffer", 4)
    dtype = _np_dtype_of(dtype_obj, "numpy array")
    data = bytes(data) if isinstance(data, bytes | bytearray) else _latin1(data, "numpy array")
    return _np_from_bytes(data, dtype, _int_tuple(shape, "array shape"), order == "F")


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


class _Unpickler:
    """Interprets pickle opcodes (protocols 0-5) with the allow list above.

    Unlike ``pickle.Unpickler`` it never looks up a real Python object by name: globals
    resolve to the handlers/markers of this module, containers are mutated only when they are
    real dicts/lists/sets, and BUILD is accepted only for the few types that need it.
    """

    def __init__(self, reader, path, persistent_load=None, allow_unknown=False):
        self.reader = reader
        self.path = path
        self.persistent_load = persistent_load
        self.allow_unknown = allow_unknown

    def load(self):
        self.stack = []
        self.metastack = []
        self.memo = {}
        read = self.reader.read
        dispatch = _DISPATCH
        while True:
            pos = self.reader.pos
            op = read(1)[0]
            if op == 0x2E:  # STOP
                if not self.stack:
                    raise _Bad(f"empty pickle stack at STOP (byte {pos})")
                return self.stack.pop()
            handler = dispatch.get(op)
            if handler is None:
                raise _Bad(f"invalid pickle opcode 0x{op:02x} at byte {pos}")
            try:
                handler(self)
            except (_Bad, _Truncated, UnsafeCheckpointError, CheckpointFormatError):
                raise
            except MemoryError:
                raise
            except Exception as exc:  # malformed data: wrong types, missing memo, ...
                name = _OPNAMES.get(op, "?")
                raise _Bad(f"malformed pickle at byte {pos} ({name}): {exc!r:.300}") from exc

    # -- helpers ------------------------------------------------------------------------------
    def pop_mark(self):
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def find_global(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Bad("global names must be strings")
        qualname, value = _lookup_global(module, name)
        if value is not None:
            return value
        if self.allow_unknown:
            return OpaqueObject(qualname)
        raise UnsafeCheckpointError(
            f"{self.path}: refusing to load: the pickle references the global {qualname!r}, "
            "which is not part of a tensor/state-dict checkpoint (loading it with torch.load "
            "could execute code). Allowed: tensors, storages, OrderedDict and plain "
            "containers/scalars. If you trust the file, re-save only its state_dict, or pass "
            "allow_unknown_globals=True to read it with inert placeholders.",
            qualname,
        )

    def call(self, func, args, kwargs=None, new=False):
        if not isinstance(args, tuple):
            raise _Bad(f"call arguments must be a tuple, got {type(args).__name__}")
        if isinstance(func, OpaqueObject):
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
            _numpy_array_build(obj, state)
        elif isinstance(obj, OpaqueObject):
            obj.state = state
        elif type(obj) is collections.OrderedDict and isinstance(state, dict):
            # module.state_dict() carries a `_metadata` attribute (module versions)
            for key, value in state.items():
                # plain new attributes only: never shadow a method or touch a dunder
                if not isinstance(key, str) or not key.isidentifier() or hasattr(obj, key):
                    raise _Bad(f"attribute {key!r:.50} is not allowed on an OrderedDict")
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
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def extend(self, target, items):
        if isinstance(target, OpaqueObject):
            target = target.listitems
        if not isinstance(target, list):
            raise _Bad(f"cannot append to {_describe(target)}")
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


def _describe(obj):
    if isinstance(obj, _Callable | _Marker):
        return obj.qualname
    if isinstance(obj, OpaqueObject):
        return repr(obj)
    return f"a {type(obj).__name__}"


def _op_int(vm):
    line = vm.reader.readline()
    if line == b"00":
        value = False
    elif line == b"01":
        value = True
    else:
        value = int(line)
    vm.stack.append(value)


def _op_long(vm):
    line = vm.reader.readline()
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
        vm.stack.append(int.from_bytes(vm.reader.read(n), "little", signed=True))

    return op


def _op_string(vm):
    line = vm.reader.readline()
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
        data = vm.reader.read(n)
        if kind == "str":
            value = data.decode("utf-8", "surrogatepass")
        elif kind == "str8":
            value = vm.decode_str8(data)
        elif kind == "bytearray":
            value = bytearray(data)
        else:
            value = data
        vm.stack.append(value)

    return op


def _op_global(vm):
    module = vm.reader.readline().decode("utf-8")
    name = vm.reader.readline().decode("utf-8")
    vm.stack.append(vm.find_global(module, name))


def _op_stack_global(vm):
    name = vm.stack.pop()
    module = vm.stack.pop()
    vm.stack.append(vm.find_global(module, name))


def _op_reduce(vm):
    args = vm.stack.pop()
    vm.stack[-1] = vm.call(vm.stack[-1], args)


def _op_inst(vm):
    module = vm.reader.readline().decode("utf-8")
    name = vm.reader.readline().decode("utf-8")
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
    vm.stack.append(vm.persid(vm.reader.readline().decode("ascii")))


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


def _marked(kind):
    """LIST / TUPLE / FROZENSET: the items since the last MARK become one object."""

    def op(vm):
        items = vm.pop_mark()  # replaces vm.stack: append to the new one
        vm.stack.append(kind(items))

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
    ord("F"): lambda vm: vm.stack.append(float(vm.reader.readline())),
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
    ord("V"): lambda vm: vm.stack.append(vm.reader.readline().decode("raw-unicode-escape")),
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
    ord("l"): _marked(list),
    ord("]"): _push(list),
    ord("t"): _marked(tuple),
    ord(")"): _push(tuple),
    0x85: lambda vm: vm.stack.append((vm.stack.pop(),)),
    0x86: lambda vm: vm.stack.extend([(vm.stack.pop(-2), vm.stack.pop())]),
    0x87: lambda vm: vm.stack.extend([(vm.stack.pop(-3), vm.stack.pop(-2), vm.stack.pop())]),
    0x8F: _push(set),
    0x90: _op_additems,
    0x91: _marked(frozenset),
    ord("s"): _op_setitem,
    ord("u"): _op_setitems,
    ord("g"): lambda vm: vm.get(int(vm.reader.readline())),
    ord("h"): lambda vm: vm.get(vm.reader.read(1)[0]),
    ord("j"): lambda vm: vm.get(_U4.unpack(vm.reader.read(4))[0]),
    ord("p"): lambda vm: vm.put(int(vm.reader.readline())),
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


# --------------------------------------------------------------------------------------------
# After unpickling: turn the interpreter's intermediate objects into plain values
# --------------------------------------------------------------------------------------------

_LEAVES = (np.ndarray, np.generic, str, bytes, bytearray, int, float, complex, type(None), slice)


def _finalize(obj):
    done = {}

    def walk(o):
        if isinstance(o, _LEAVES):
            return o
        key = id(o)
        if key in done:
            return done[key]
        t = type(o)
        if t is dict or t is collections.OrderedDict:
            done[key] = o
            for k, v in o.items():
                nv = walk(v)
                if nv is not v:
                    o[k] = nv
            return o
        if t is list:
            done[key] = o
            for i, v in enumerate(o):
                o[i] = walk(v)
            return o
        if t in (tuple, set, frozenset):
            done[key] = o
            items = [walk(v) for v in o]
            if any(a is not b for a, b in zip(items, o, strict=True)):
                if t is set:
                    o.clear()
                    o.update(items)
                else:
                    done[key] = t(items)
            return done[key]
        if t is _Storage:
            done[key] = o.as_array()
        elif t is _NpDtype:
            done[key] = o.dtype
        elif t is _NpArray:
            if o.array is None:
                raise _Bad("numpy array without data")
            done[key] = o.array
        elif t is _Marker or t is _Callable:
            done[key] = o.qualname
        elif t is OpaqueObject:
            done[key] = o
            o.args = walk(o.args)
            o.kwargs = walk(o.kwargs)
            o.state = walk(o.state)
            walk(o.items)
            walk(o.listitems)
        else:
            done[key] = o
        return done[key]

    return walk(obj)


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def _storage_pid(pid, path):
    """Validate ``('storage', storage_class, key, location, numel[, view_metadata])``."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise _Bad(f"unsupported persistent id {pid!r:.200}")
    kind, key, _location, numel = pid[1:5]
    if not (isinstance(kind, _Marker) and kind.kind == "storage"):
        raise _Bad(f"persistent id names {_describe(kind)}, not a storage class")
    if kind.elem is not None and kind.elem.startswith("unsupported:"):
        raise _Bad(f"storages of type {kind.qualname} are not supported")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", key):
        raise _Bad(f"invalid storage key {key!r:.80}")
    itemsize = _ELEMENTS[kind.elem].itemsize if kind.elem else 1
    return kind.elem, key, _int(numel, "storage size"), itemsize, pid[5] if len(pid) == 6 else None


def _read_zip_record(zf, info):
    out = np.empty(info.file_size, dtype=np.uint8)
    view = memoryview(out)
    done = 0
    with zf.open(info) as fh:
        while done < info.file_size:
            chunk = fh.read(min(_CHUNK, info.file_size - done))
            if not chunk:
                raise _Bad(f"zip record {info.filename} ends early")
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        fh.read(1)  # reaching EOF makes zipfile verify the CRC
    return out


def _load_zip(fileobj, path, allow_unknown):
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise CheckpointFormatError(
            f"{path}: truncated or corrupt zip archive ({exc}); expected {EXPECTED}"
        ) from exc
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
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
        if f"{prefix}/byteorder" in infos:
            order = zf.read(f"{prefix}/byteorder").strip()
            if order not in (b"little", b"big"):
                raise _Bad(f"unknown byteorder {order[:20]!r}")
            big_endian = order == b"big"
        raw_cache = {}

        def persistent_load(pid):
            elem, key, numel, itemsize, _view = _storage_pid(pid, path)
            if key not in raw_cache:
                info = infos.get(f"{prefix}/data/{key}")
                if info is None:
                    raise _Bad(f"storage {key!r} is referenced but {prefix}/data/{key} is missing")
                raw_cache[key] = _read_zip_record(zf, info)
            raw = raw_cache[key]
            if raw.nbytes != numel * itemsize:
                raise _Bad(
                    f"storage {key!r} has {raw.nbytes} bytes, but the pickle declares {numel} "
                    f"elements of {itemsize} bytes"
                )
            return _Storage(raw, elem, big_endian, key)

        data = zf.read(f"{prefix}/data.pkl")
        reader = _Reader(io.BytesIO(data), len(data), path)
        return _Unpickler(reader, path, persistent_load, allow_unknown).load()


def _load_legacy(fileobj, size, path, allow_unknown):
    reader = _Reader(fileobj, size, path)
    try:
        magic = _Unpickler(reader, path).load()
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
    protocol = _Unpickler(reader, path).load()
    if protocol != _LEGACY_PROTOCOL:
        raise _Bad(f"unsupported legacy protocol version {protocol!r:.50}")
    sys_info = _Unpickler(reader, path).load()
    if not isinstance(sys_info, dict):
        raise _Bad("legacy sys_info is not a dict")

    # Pass 1: find which storages the main pickle uses and their element sizes; the storage
    # data only follows the pickle. Pass 2 (below) re-reads the pickle with the real data.
    main_start = reader.pos
    itemsizes = {}

    def record(pid):
        elem, key, _numel, itemsize, _view = _storage_pid(pid, path)
        if itemsizes.setdefault(key, itemsize) != itemsize:
            raise _Bad(f"storage {key!r} is used with different element sizes")
        return _Storage(None, elem, False, key)

    _Unpickler(reader, path, record, allow_unknown).load()
    keys = _Unpickler(reader, path).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Bad("legacy storage key list is not a list of strings")
    raws = {}
    for key in keys:
        if key not in itemsizes:
            raise _Bad(f"storage {key!r} is listed but never used; cannot size it")
        numel = int.from_bytes(reader.read(8), "little", signed=True)
        if numel < 0:
            raise _Bad(f"negative size for storage {key!r}")
        nbytes = numel * itemsizes[key]
        if nbytes > size - reader.pos:
            raise _Truncated(reader.pos, nbytes)
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
        offset, view_numel = _int(offset, "view offset"), _int(view_numel, "view size")
        if offset + view_numel > numel:
            raise _Bad(f"storage view {view_key!r} exceeds storage {key!r}")
        if view_key not in views:
            part = raw[offset * itemsize : (offset + view_numel) * itemsize]
            views[view_key] = _Storage(part, elem, False, str(view_key))
        return views[view_key]

    reader.seek(main_start)
    return _Unpickler(reader, path, persistent_load, allow_unknown).load()


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


def load_checkpoint(path, *, allow_unknown_globals=False):
    """Load a ``torch.save`` file safely, with every tensor as a ``numpy.ndarray``.

    Args:
        path: path of a ``.pth``/``.pt`` file written by ``torch.save`` (zip or legacy format).
        allow_unknown_globals: if True, globals outside the allow list become inert
            :class:`OpaqueObject` placeholders instead of raising. Nothing is ever imported or
            called either way; use it only to read the weights of files with exotic metadata.

    Returns:
        The unpickled top-level object (usually a dict or ``OrderedDict``) with tensors
        replaced by numpy arrays (``bfloat16`` converted to ``float32``) and containers and
        scalars preserved.

    Raises:
        FileNotFoundError / IsADirectoryError: ``path`` is missing or a directory.
        CheckpointFormatError: the file is empty, truncated, corrupt or not a checkpoint.
        UnsafeCheckpointError: the pickle references a global outside the allow list.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; expected {EXPECTED}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory; expected {EXPECTED}")
    with open(path, "rb") as fileobj:
        size = os.fstat(fileobj.fileno()).st_size
        head = fileobj.read(512)
        fileobj.seek(0)
        if not head:
            raise CheckpointFormatError(f"{path}: the file is empty; expected {EXPECTED}")
        kind = _sniff(head)
        try:
            if kind == "zip":
                obj = _load_zip(fileobj, path, allow_unknown_globals)
            elif kind == "pickle":
                obj = _load_legacy(fileobj, size, path, allow_unknown_globals)
            else:
                raise CheckpointFormatError(
                    f"{path}: not a PyTorch checkpoint ({kind}); expected {EXPECTED}"
                )
            return _finalize(obj)
        except _Truncated as exc:
            raise CheckpointFormatError(
                f"{path}: truncated file (needed {exc.wanted} more bytes at byte {exc.pos}, "
                f"the file has {size}); expected {EXPECTED}"
            ) from None
        except _Bad as exc:
            raise CheckpointFormatError(f"{path}: invalid checkpoint: {exc}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise CheckpointFormatError(
                f"{path}: truncated or corrupt zip archive ({exc}); expected {EXPECTED}"
            ) from None
        except RecursionError:
            raise CheckpointFormatError(
                f"{path}: invalid checkpoint: objects nested too deeply"
            ) from None


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
    (no prefix is stripped). Returns a new ``dict`` in the checkpoint's order.

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
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointFormatError(
            "no state dict in the checkpoint: expected one of the keys "
            f"{', '.join(_STATE_DICT_KEYS)} or a mapping of arrays; top-level keys: {keys}"
        )
    raise CheckpointFormatError(
        f"no state dict in the checkpoint: expected a mapping, got {type(obj).__name__}"
    )


def _checked_state_dict(mapping, where):
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise CheckpointFormatError(f"{where} has a non-string key {name!r:.80}")
        if not isinstance(value, np.ndarray):
            raise CheckpointFormatError(
                f"{where}[{name!r}] is a {type(value).__name__}, not an array"
            )
    return dict(mapping)
