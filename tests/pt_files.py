"""Write PyTorch-format ``.pt`` files without torch, for tests: real fixtures changed in one place, or made up.

``load_tree`` reads a ``.pt`` with ``yolomodel.checkpoint.pt_reader`` into plain data (records, ``NewTensor``
arrays); ``write_pt`` writes such a tree back in torch's zip layout (``<prefix>/data.pkl`` holding a
protocol-2 pickle whose tensors are ``torch._utils._rebuild_tensor_v2`` calls on persistent storages,
``<prefix>/data/<key>`` raw little-endian storages, ``byteorder``, ``version``), the layout
``torch.save`` writes. Classes are written as GLOBAL opcodes naming the record's class path, so a test
can make any class appear in the pickle (a Segment head, an ultralytics model, ``os.system``) without
that class existing here. ``write_legacy_pt`` writes torch's pre-1.6 (non-zip) layout.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from yolomodel.checkpoint import pt_reader

NUMPY_TO_STORAGE = {"float16": "HalfStorage", "float32": "FloatStorage", "float64": "DoubleStorage",
                    "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}
LEGACY_PROTOCOL_VERSION = 1001


class GlobalRef:
    """A global written as ``GLOBAL module\\nname\\n`` (it need not exist anywhere)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler insists on a callable; it is only ever written, never called
        raise TypeError(f"{self.module}.{self.name} is a name to write into a test pickle")


class NewTensor:
    """A tensor to write: its values (the storage class follows the dtype unless given).

    ``view`` = (offset, shape, strides) writes another view of the same storage than the array's own
    (to make views that leave their storage); ``claimed_numel`` overrides the element count the
    persistent id declares.
    """

    def __init__(self, array, *, storage_class=None, view=None, claimed_numel=None):
        self.array = np.ascontiguousarray(array)
        self.storage_class = storage_class
        self.view = view
        self.claimed_numel = claimed_numel

    @property
    def shape(self):
        return self.array.shape


class Reduce:
    """An arbitrary ``callable(*args)`` in the pickle: ``Reduce(GlobalRef('os', 'system'), ('touch x',))``."""

    def __init__(self, func: GlobalRef, args: tuple):
        self.func, self.args = func, args


class _Storage:
    def __init__(self, key: str, array: np.ndarray, storage_class=None, claimed_numel=None):
        self.key, self.array = key, array
        self.storage_class = storage_class or NUMPY_TO_STORAGE[str(array.dtype)]
        self.numel = int(array.size if claimed_numel is None else claimed_numel)


def record(class_path: str, state=None, args=()):
    """A ``PickledObject`` of ``class_path`` (e.g. 'models.yolo.Segment') with that state."""
    module, name = class_path.rsplit(".", 1)
    obj = pt_reader.record_class(module, name)(*args)
    obj.state = state
    return obj


def _materialise(value):
    if isinstance(value, pt_reader.TensorRef):
        return NewTensor(value.numpy())
    if isinstance(value, pt_reader.NumpyArrayRecord):
        return value.array
    if isinstance(value, pt_reader.PickledObject):
        value.args = tuple(_materialise(v) for v in value.args)
        value.state = _materialise(value.state)
        return value
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: _materialise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialise(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_materialise(v) for v in value)
    return value


def load_tree(path):
    """The unpickled root of a ``.pt`` with every tensor read into a ``NewTensor`` (the archive is closed)."""
    with pt_reader.open_pt(path, ("models.", "utils.", "torch.nn.modules.", "ultralytics.")) as archive:
        return _materialise(archive.root)


_BASE = pickle._Pickler  # noqa: SLF001 - the pure-Python pickler lets us emit GLOBAL opcodes ourselves


class _TorchPickler(_BASE):
    # the standard pickler's own handlers (dill, imported by MindSpore, adds its own to the shared table)
    dispatch = {type(None): _BASE.save_none, bool: _BASE.save_bool, int: _BASE.save_long, float: _BASE.save_float,
                bytes: _BASE.save_bytes, bytearray: _BASE.save_bytearray, str: _BASE.save_str,
                tuple: _BASE.save_tuple, list: _BASE.save_list, dict: _BASE.save_dict, set: _BASE.save_set,
                frozenset: _BASE.save_frozenset, type: _BASE.save_global}

    def __init__(self, stream, storages: list):
        super().__init__(stream, protocol=2)
        self.storages = storages

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, GlobalRef):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
            return
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj):
        if isinstance(obj, pt_reader.PickledObject):
            module, name = obj.class_path.rsplit(".", 1)
            return GlobalRef(module, name), tuple(obj.args), obj.state
        if isinstance(obj, NewTensor):
            storage = _Storage(str(len(self.storages)), obj.array.reshape(-1), obj.storage_class, obj.claimed_numel)
            self.storages.append(storage)
            strides = tuple(s // obj.array.itemsize for s in obj.array.strides)
            offset, shape, strides = obj.view or (0, tuple(obj.array.shape), strides)
            return (GlobalRef("torch._utils", "_rebuild_tensor_v2"),
                    (storage, offset, tuple(shape), tuple(strides), False, collections.OrderedDict()))
        if isinstance(obj, Reduce):
            return obj.func, tuple(obj.args)
        return NotImplemented

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", GlobalRef("torch", obj.storage_class), obj.key, "cpu", obj.numel)
        return None


def pickle_bytes(root, storages: list | None = None) -> bytes:
    stream = io.BytesIO()
    _TorchPickler(stream, storages if storages is not None else []).dump(root)
    return stream.getvalue()


def write_pt(path, root, prefix: str = "archive", byteorder: str = "little", data: bytes | None = None) -> Path:
    """Write ``root`` (or the pickle bytes ``data``) in torch's zip checkpoint layout at ``path``."""
    storages: list = []
    data = pickle_bytes(root, storages) if data is None else data
    order = "<" if byteorder == "little" else ">"
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", data)
        archive.writestr(f"{prefix}/byteorder", byteorder)
        for storage in storages:
            archive.writestr(f"{prefix}/data/{storage.key}",
                             storage.array.astype(storage.array.dtype.newbyteorder(order)).tobytes())
        archive.writestr(f"{prefix}/version", "3\n")
    return path


def write_legacy_pt(path, root) -> Path:
    """torch's legacy layout: pickles of the magic number, protocol version, sys info, the object, the storage keys,
    then each storage's element count and bytes."""
    storages: list = []
    body = pickle_bytes(root, storages)
    with open(path, "wb") as handle:
        for header in (pt_reader.LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION,
                       {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            handle.write(pickle.dumps(header, protocol=2))
        handle.write(body)
        handle.write(pickle.dumps([s.key for s in storages], protocol=2))
        for storage in storages:
            handle.write(np.int64(storage.array.size).tobytes())
            handle.write(storage.array.tobytes())
    return Path(path)


def child(module, *names):
    """The descendant module record ``module._modules[names[0]]._modules[names[1]]...``."""
    for name in names:
        module = module.state["_modules"][name]
    return module
