"""Read PyTorch `torch.save` checkpoints (`.pth`, `.pth.tar`) without torch.

A torch checkpoint is a zip archive `<name>/data.pkl` (a pickle) plus one raw little-endian
storage per tensor under `<name>/data/<key>`. This reader unpickles `data.pkl` with a restricted
unpickler that, like torch's `weights_only=True`, resolves only the globals needed to rebuild
tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the typed `torch.*Storage`
classes, `collections.OrderedDict`, and a few plain builtins) and refuses everything else, so a
checkpoint cannot run code. Tensors come back as numpy arrays.

The legacy (pre-1.6, non-zip) `torch.save` format is read too: five pickles in a row (the magic
number 0x1950a86a20f9469cfc6c, the protocol version 1001, the system info `{little_endian,
type_sizes}`, the object whose storages are persistent ids `('storage', <X>Storage, key,
location, numel, view)`, and the list of storage keys), then per key an int64 little-endian
element count and the raw little-endian bytes. Every one of the five pickles goes through the
same restricted unpickler, so a legacy file naming any other global is refused before anything
runs; the state pickle is read before the storage bytes, so its tensors are views that are filled
in place and copied out at the end.

`load(path) -> object` (dicts/lists/numbers/strings with np.ndarray leaves).
"""
import collections
import os
import pickle
import struct
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


class _StorageType:
    """Stand-in for a `torch.<X>Storage` class named in the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, array):
        self.array = array


def _np_dtype(dtype):
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as err:  # pragma: no cover - ml_dtypes ships with TF/JAX
            raise ValueError("bfloat16 checkpoint tensors need the ml_dtypes package") from err
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    arr = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(arr[storage_offset])
    need = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, arr.dtype)
    if need > arr.size:
        raise ValueError("checkpoint tensor reaches past the end of its storage")
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(arr[storage_offset:], shape=size,
                                           strides=tuple(s * item for s in stride))
    return np.array(view)  # contiguous copy


def _rebuild_tensor_view(storage, storage_offset, size, stride, requires_grad=False,
                         backward_hooks=None, metadata=None):
    """Legacy format: a strided view on a storage that is filled later (copied out in `load`)."""
    arr = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(n == 0 for n in size):
        return np.zeros(size, arr.dtype)
    need = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if need > arr.size or storage_offset < 0 or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("checkpoint tensor reaches past the end of its storage")
    return np.lib.stride_tricks.as_strided(arr[storage_offset:], shape=size,
                                           strides=tuple(s * arr.itemsize for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh, read_record, source):
        super().__init__(fh)
        self._read_record = read_record
        self._source = source
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self._source}: refusing to load global {module}.{name} (only tensor data is "
            f"accepted from a checkpoint)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._source}: unsupported storage type "
                                         f"{storage_type!r}")
        key = str(key)
        if key not in self._storages:
            dtype = _np_dtype(storage_type.dtype)
            raw = self._read_record(key)
            arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1
                                else dtype)
            if arr.size < int(numel):
                raise pickle.UnpicklingError(f"{self._source}: storage {key} is truncated")
            self._storages[key] = _Storage(arr.astype(dtype, copy=False))
        return self._storages[key]


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001


class _LegacyUnpickler(_RestrictedUnpickler):
    """State pickle of the legacy format: storages are allocated now and filled afterwards."""

    def __init__(self, fh, source, file_size):
        super().__init__(fh, None, source)
        self.dtypes = {}
        self._file_size = file_size

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_view
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._source}: unsupported storage type "
                                         f"{storage_type!r}")
        key, numel = str(key), int(numel)
        if key not in self._storages:
            dtype = _np_dtype(storage_type.dtype)
            if not 0 <= numel * dtype.itemsize <= self._file_size:  # no allocation on a lie
                raise pickle.UnpicklingError(f"{self._source}: storage {key} claims {numel} "
                                             f"elements, more than the file holds")
            self.dtypes[key] = dtype
            self._storages[key] = _Storage(np.zeros(numel, dtype))
        root = self._storages[key]
        if view is None:
            return root
        _view_key, offset, view_size = view  # offset and size in elements of the root
        offset, view_size = int(offset), int(view_size)
        if offset < 0 or offset + view_size > root.array.size:
            raise pickle.UnpicklingError(f"{self._source}: storage view outside storage {key}")
        return _Storage(root.array[offset:offset + view_size])


def _copy_out(obj):
    """Replace every array view in a loaded object by an independent contiguous copy."""
    if isinstance(obj, np.ndarray):
        return np.array(obj)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _copy_out(obj[k])
        return obj
    if isinstance(obj, list):
        return [_copy_out(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_out(v) for v in obj)
    return obj


def _load_legacy(path, fh):
    def header():
        return _RestrictedUnpickler(fh, None, path).load()

    magic = header()
    if not isinstance(magic, int) or magic != LEGACY_MAGIC:
        raise ValueError(f"{path}: not a torch checkpoint (neither a zip archive nor a legacy "
                         f"torch.save file: wrong magic number)")
    protocol = header()
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: legacy torch.save protocol {protocol!r} is not supported "
                         f"(expected {LEGACY_PROTOCOL})")
    info = header()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise ValueError(f"{path}: legacy checkpoint is not little-endian ({info!r})")
    state = _LegacyUnpickler(fh, path, os.fstat(fh.fileno()).st_size)
    obj = state.load()
    keys = _RestrictedUnpickler(fh, None, path).load()
    if not isinstance(keys, (list, tuple)) or sorted(map(str, keys)) != sorted(state.dtypes):
        raise ValueError(f"{path}: legacy storage key list does not match the tensors")
    for key in map(str, keys):
        arr = state._storages[key].array
        (count,) = struct.unpack("<q", fh.read(8))
        if count != arr.size:
            raise ValueError(f"{path}: storage {key} holds {count} elements, {arr.size} "
                             f"expected")
        raw = fh.read(count * arr.itemsize)
        if len(raw) != count * arr.itemsize:
            raise ValueError(f"{path}: storage {key} is truncated")
        dt = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        arr[:] = np.frombuffer(raw, dtype=dt)
    return _copy_out(obj)


def load(path):
    """Load a torch checkpoint (zip or legacy) as numpy. Raises FileNotFoundError / ValueError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            try:
                return _load_legacy(path, fh)
            except pickle.UnpicklingError as err:
                raise ValueError(str(err)) from None
            except (EOFError, TypeError, AttributeError, IndexError, KeyError,
                    struct.error) as err:
                raise ValueError(f"{path}: not a readable torch checkpoint (neither a zip "
                                 f"archive nor a legacy torch.save file: {err})") from None
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: no single <name>/data.pkl record in the archive")
        root = pkls[0][:-len("data.pkl")]
        if root + "byteorder" in names:
            order = zf.read(root + "byteorder").decode().strip()
            if order != "little":
                raise ValueError(f"{path}: byte order {order!r} is not supported")

        def read_record(key):
            name = f"{root}data/{key}"
            if name not in names:
                raise pickle.UnpicklingError(f"{path}: missing storage record {name}")
            return zf.read(name)

        with zf.open(pkls[0]) as fh:
            try:
                return _RestrictedUnpickler(fh, read_record, path).load()
            except pickle.UnpicklingError as err:
                raise ValueError(str(err)) from None
            except (EOFError, TypeError, AttributeError, IndexError) as err:
                raise ValueError(f"{path}: corrupt checkpoint pickle ({err})") from None
