"""Safe reader of legacy-format (pre-1.6, non-zip) PyTorch ``state_dict`` files.

PyTorch < 1.6 wrote ``torch.save`` files as a sequence of pickles followed by
raw storage bytes::

    pickle(magic number)  pickle(protocol version)  pickle(sys_info dict)
    pickle(state_dict)    # tensors reference storages by persistent_id
    pickle([storage keys])
    for each key: int64 little-endian element count, then the raw bytes

This module reads such a file into numpy arrays without torch and without
ever running arbitrary code: the unpicklers only admit the tensor-rebuild
functions, the storage types and ``collections.OrderedDict``; any other global
is refused with :class:`~gradcam_cli.errors.WeightsError`. It never imports
TensorFlow.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gradcam_cli.errors import WeightsError, first_line

__all__ = ["load_state_dict", "LEGACY_MAGIC_NUMBER", "STORAGE_DTYPES"]

#: The magic number ``torch.save`` writes first in a legacy file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: The only legacy protocol version PyTorch ever wrote.
LEGACY_PROTOCOL_VERSION = 1001

#: Storage type names (in module ``torch``) and the numpy dtype of one element.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_EXPECTED = (
    "expected a legacy (PyTorch < 1.6, non-zip) torch.save file of a state_dict"
)
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(eq=False)
class _Storage:
    """One storage declared by the pickle; its bytes are read afterwards."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(eq=False)
class _StorageView:
    """A slice of a root storage (legacy ``view_metadata``)."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the element dtype."""

    name: str
    dtype: np.dtype


@dataclass(eq=False)
class _TensorRef:
    """A tensor awaiting its storage bytes: storage + offset + size + stride."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """Validate ``value`` as a tuple of non-negative ints (a size or stride)."""
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"bad tensor {what} {value!r}")
    return tuple(value)


def _check_storage(storage: Any) -> _Storage | _StorageView:
    """Ensure a rebuild function got a storage (not some other object)."""
    if not isinstance(storage, (_Storage, _StorageView)):
        raise ValueError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor``."""
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise ValueError(f"bad storage offset {storage_offset!r}")
    ref = _TensorRef(
        _check_storage(storage),
        storage_offset,
        _as_int_tuple(size, "size"),
        _as_int_tuple(stride, "stride"),
    )
    if len(ref.size) != len(ref.stride):
        raise ValueError(f"size {ref.size} and stride {ref.stride} differ in rank")
    return ref


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (grad flags dropped)."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    if not isinstance(data, _TensorRef):
        raise ValueError(f"parameter rebuilt from {type(data).__name__}, not a tensor")
    return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RefusingUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global and every persistent id."""

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file)
        self._path = path

    def _refuse(self, name: str) -> WeightsError:
        return WeightsError(
            f"refusing to load {self._path}: it names the global {name!r}; "
            "only PyTorch tensor and storage types are allowed"
        )

    def find_class(self, module: str, name: str) -> Any:
        raise self._refuse(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


class _StateDictUnpickler(_RefusingUnpickler):
    """Admits only tensor-rebuild functions, storage types and OrderedDict."""

    def __init__(self, file: BinaryIO, path: Path, little_endian: bool):
        super().__init__(file, path)
        self._byteorder = "<" if little_endian else ">"
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        func = _ALLOWED_FUNCTIONS.get((module, name))
        if func is not None:
            return func
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name].newbyteorder(self._byteorder))
        raise self._refuse(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id {pid!r} names no storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage reference {pid!r}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif root.dtype != storage_type.dtype or root.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared twice differently")
        if view_metadata is None:
            return root
        _view_key, offset, view_numel = view_metadata
        if not (isinstance(offset, int) and isinstance(view_numel, int)) or not (
            0 <= offset and 0 <= view_numel and offset + view_numel <= numel
        ):
            raise pickle.UnpicklingError(f"bad storage view {view_metadata!r}")
        return _StorageView(root, offset, view_numel)


def _read_header(f: BinaryIO, path: Path) -> bool:
    """Check the magic number and protocol; return the file's little-endianness."""
    head = f.read(4)
    if not head:
        raise WeightsError(f"cannot load {path}: the file is empty; {_EXPECTED}")
    if head == _ZIP_MAGIC:
        raise WeightsError(
            f"cannot load {path}: it is a zip-format (PyTorch >= 1.6) checkpoint; "
            f"{_EXPECTED}"
        )
    f.seek(0)
    try:
        magic = _RefusingUnpickler(f, path).load()
    except WeightsError:
        raise
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC_NUMBER:
        raise WeightsError(
            f"cannot load {path}: it does not start with the PyTorch magic number; "
            f"{_EXPECTED}"
        )
    protocol = _RefusingUnpickler(f, path).load()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise WeightsError(
            f"cannot load {path}: unsupported legacy protocol version {protocol!r} "
            f"(expected {LEGACY_PROTOCOL_VERSION}); {_EXPECTED}"
        )
    sys_info = _RefusingUnpickler(f, path).load()
    if not isinstance(sys_info, dict):
        raise ValueError(f"sys_info is a {type(sys_info).__name__}, not a dict")
    return bool(sys_info.get("little_endian", True))


def _read_storages(f: BinaryIO, keys: list[str], storages: dict[str, _Storage], remaining: int) -> None:
    """Read each storage's element count and raw bytes, in ``keys`` order."""
    for key in keys:
        storage = storages.get(key) if isinstance(key, str) else None
        if storage is None:
            raise ValueError(f"storage key {key!r} was never referenced")
        count_bytes = f.read(8)
        if len(count_bytes) != 8:
            raise ValueError(f"file ends before storage {key!r}")
        (count,) = struct.unpack("<q", count_bytes)
        if count != storage.numel:
            raise ValueError(
                f"storage {key!r} holds {count} elements, the pickle declared {storage.numel}"
            )
        nbytes = count * storage.dtype.itemsize
        remaining -= 8
        if nbytes > remaining:
            raise ValueError(f"file ends inside storage {key!r}")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"file ends inside storage {key!r}")
        remaining -= nbytes
        storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialize(name: str, ref: _TensorRef) -> np.ndarray:
    """Turn a tensor reference into a C-contiguous native-endian numpy copy."""
    if isinstance(ref.storage, _StorageView):
        root, base = ref.storage.root, ref.storage.offset
        limit = ref.storage.numel
    else:
        root, base, limit = ref.storage, 0, ref.storage.numel
    if root.data is None:
        raise ValueError(f"tensor {name!r} uses storage {root.key!r}, whose bytes are missing")
    if any(s == 0 for s in ref.size):
        return np.zeros(ref.size, dtype=root.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= limit:
        raise ValueError(f"tensor {name!r} reaches past the end of its storage")
    flat = root.data[base : base + limit]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :],
        shape=ref.size,
        strides=tuple(s * item for s in ref.stride),
        writeable=False,
    )
    # np.ascontiguousarray would turn a 0-d tensor into shape (1,): use np.array.
    return np.array(view, dtype=root.dtype.newbyteorder("="), order="C", copy=True)


def _parse(f: BinaryIO, path: Path, size: int) -> dict[str, np.ndarray]:
    """Parse an open legacy file (may raise any exception on malformed input)."""
    little_endian = _read_header(f, path)
    unpickler = _StateDictUnpickler(f, path, little_endian)
    state = unpickler.load()
    if not isinstance(state, dict):
        raise ValueError(f"the pickled object is a {type(state).__name__}, not a state_dict")
    keys = _RefusingUnpickler(f, path).load()
    if not isinstance(keys, list):
        raise ValueError("the storage key list is missing")
    _read_storages(f, keys, unpickler.storages, size - f.tell())
    result: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ValueError(f"entry {name!r} is not a named tensor")
        result[name] = _materialize(name, value)
    return result


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch ``state_dict`` file into numpy arrays.

    Returns the entries in file order, each a C-contiguous copy with the
    tensor's shape. Raises :class:`WeightsError` if the file is missing, not a
    legacy torch file, malformed, or names any global other than the PyTorch
    tensor-rebuild functions, storage types and ``collections.OrderedDict``.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return _parse(f, p, os.fstat(f.fileno()).st_size)
    except WeightsError:
        raise
    except OSError as exc:
        raise WeightsError(f"cannot read {p}: {exc.strerror or exc}") from exc
    except Exception as exc:  # malformed pickle: any exception type is possible
        raise WeightsError(f"cannot load {p}: {first_line(exc)}; {_EXPECTED}") from exc
