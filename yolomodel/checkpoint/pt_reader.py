"""Read a PyTorch ``.pt`` file (``torch.save``'s zip format) without torch and without running its code.

A ``.pt`` file from the internet is untrusted: an ordinary ``pickle.load`` (and ``torch.load`` with
``weights_only=False``) imports and calls whatever the pickle names, so a crafted file runs arbitrary
code. This reader resolves only an explicit allow-list of globals, and none of them executes anything
the file chose:

* classes in the namespaces the caller names (``inert_modules``, e.g. YOLOv5's ``models.`` and
  ``torch.nn.modules.``) become inert records (``PickledObject``): the class path, the constructor
  arguments and the pickled state, kept as data; no code of those classes exists here;
* torch's tensor rebuild functions (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, ...)
  and storage classes (``torch.HalfStorage``, ...) become ``TensorRef`` records pointing into the zip;
* a few plain data constructors are replaced by checked equivalents written here: ``collections.
  OrderedDict``, ``set``, ``frozenset``, ``_codecs.encode`` (latin-1 only), numpy's array and scalar
  reconstruction (numeric dtypes only), ``torch.Size`` (a tuple), ``torch.device`` (a string).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) stops the read with
``UnsafePickleError`` naming it; nothing it names is imported.

The zip layout (torch >= 1.6): ``<prefix>/data.pkl`` (the pickle), ``<prefix>/data/<key>`` (raw bytes
of each storage, little-endian unless ``<prefix>/byteorder`` says ``big``), ``<prefix>/version``.
Storages are read when a tensor's ``numpy()`` is called, with the zip's CRC check, and every view
(offset, shape, strides) is checked to lie inside its storage.
"""
from __future__ import annotations

import collections
import contextlib
import io
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

# torch's storage classes -> numpy dtype of their elements (bfloat16 is widened to float32 on read)
STORAGE_DTYPES = {
    "HalfStorage": "f2", "FloatStorage": "f4", "DoubleStorage": "f8", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}
TENSOR_REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
# the first pickle of torch's legacy (pre-1.6, non-zip) format is this magic number
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 1 << 30
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
NUMERIC_KINDS = "biufc"


class PtReadError(ValueError):
    """A file that cannot be read as a PyTorch checkpoint; the message names the file and what to do."""


class UnsafePickleError(PtReadError):
    """The pickle names a global outside the allow-list; nothing it names was imported or called."""


# ---------------------------------------------------------------------------------------------
# Inert records
# ---------------------------------------------------------------------------------------------

class PickledObject:
    """An instance of a class named by the pickle, kept as data: ``class_path``, ``args``, ``state``.

    Subclasses are made per class path by ``record_class``; constructing one runs nothing but this.
    ``state`` is what the pickle's BUILD gave (for torch modules: a dict with ``_parameters``,
    ``_buffers``, ``_modules`` and the module's attributes); ``items``/``list_items`` hold what a
    dict or list subclass received.
    """

    class_path = "?"

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args = args
        instance.state = None
        instance.items = {}
        instance.list_items = []
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    def attribute(self, name, default=None):
        """A pickled attribute (from the BUILD state dict, or a (dict, slots) pair), or ``default``."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if isinstance(state, dict):
            return state.get(name, default)
        return default

    def __repr__(self):
        return f"<pickled {self.class_path}>"


def record_class(module: str, name: str) -> type:
    """A ``PickledObject`` subclass standing for ``module.name`` (a type, as pickle's NEWOBJ needs)."""
    return type(f"Pickled_{name}", (PickledObject,), {"class_path": f"{module}.{name}"})


class StorageRef:
    """One storage of the archive: its key (``data/<key>``), element dtype code and element count."""

    def __init__(self, key: str, dtype_code: str, numel: int, storage_class: str):
        self.key = key
        self.dtype_code = dtype_code
        self.numel = numel
        self.storage_class = storage_class


class TensorRef:
    """A tensor of the pickle: a view (offset, shape, strides in elements) of a ``StorageRef``.

    ``numpy()`` reads it from the archive (which must still be open) as a native-order array.
    """

    def __init__(self, storage: StorageRef, offset: int, shape, strides, archive: "PtArchive"):
        self.storage = storage
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.strides = tuple(int(s) for s in strides)
        self._archive = archive

    @property
    def dtype(self) -> np.dtype:
        code = self.storage.dtype_code
        return np.dtype("f4") if code == "bf16" else np.dtype(code)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def numpy(self) -> np.ndarray:
        return self._archive.read_tensor(self)

    def __repr__(self):
        return f"<tensor {self.storage.storage_class} {self.shape}>"


class NumpyArrayRecord:
    """numpy's pickled array (``_reconstruct`` + BUILD) rebuilt from its raw bytes, numeric dtypes only."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("a pickled numpy array has an unexpected state")
        _, shape, dtype, is_fortran, raw = state
        dtype = dtype.dtype if isinstance(dtype, NumpyDtypeRecord) else None
        if dtype is None or not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError("a pickled numpy array is not a plain numeric array")
        array = np.frombuffer(bytes(raw), dtype=dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if array.size != count:
            raise UnsafePickleError("a pickled numpy array's data does not match its shape")
        self.array = array.reshape(shape, order="F" if is_fortran else "C").copy()


class NumpyDtypeRecord:
    """numpy's pickled dtype: numeric kinds only; the byte order comes from its BUILD state."""

    def __init__(self, spec, align=False, copy=False):
        try:
            self.dtype = np.dtype(str(spec))
        except TypeError as error:
            raise UnsafePickleError(f"a pickled numpy dtype {spec!r} is not understood") from error
        if self.dtype.kind not in NUMERIC_KINDS:
            raise UnsafePickleError(f"a pickled numpy dtype {spec!r} is not numeric; such arrays are not read")

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


def _numpy_reconstruct(subtype, shape, dtype_spec):
    return NumpyArrayRecord()


def _numpy_scalar(dtype, raw=None):
    if not isinstance(dtype, NumpyDtypeRecord) or not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError("a pickled numpy scalar is not a plain numeric value")
    values = np.frombuffer(bytes(raw), dtype=dtype.dtype)
    if values.size != 1:
        raise UnsafePickleError("a pickled numpy scalar has the wrong number of bytes")
    return values[0].item()


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """Protocol 2 pickles bytes as ``_codecs.encode(str, 'latin1')``; nothing else is accepted."""
    if not isinstance(text, str) or str(encoding).replace("-", "").lower() != "latin1":
        raise UnsafePickleError(f"_codecs.encode with {encoding!r} is not an allowed pickle call")
    return text.encode("latin-1", errors)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


def _plain_set(items=()):
    return set(items)


def _plain_frozenset(items=()):
    return frozenset(items)


def _torch_size(values=()):
    return tuple(int(v) for v in values)


def _torch_device(kind, index=None):
    return f"{kind}:{index}" if index is not None else str(kind)


# ---------------------------------------------------------------------------------------------
# The unpickler
# ---------------------------------------------------------------------------------------------

class _MarkerType:
    """A placeholder for a global that is only ever passed as an argument (numpy.ndarray, a storage class)."""

    def __init__(self, path: str):
        self.path = path


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns only the safe stand-ins described above."""

    def __init__(self, stream, archive: "PtArchive", inert_modules: tuple[str, ...]):
        super().__init__(stream)
        self.archive = archive
        self.inert_modules = tuple(inert_modules)
        self._records: dict[str, type] = {}
        self.class_paths: set[str] = set()

    def find_class(self, module, name):
        module, name = str(module), str(name)
        path = f"{module}.{name}"
        self.class_paths.add(path)
        if module in ("collections",) and name == "OrderedDict":
            return _ordered_dict
        if module in ("__builtin__", "builtins") and name in ("set", "frozenset"):
            return _plain_set if name == "set" else _plain_frozenset
        if module == "_codecs" and name == "encode":
            return _codecs_encode
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_reconstruct
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar
        if module == "numpy" and name == "dtype":
            return NumpyDtypeRecord
        if module == "numpy" and name == "ndarray":
            return _MarkerType(path)
        if module == "torch._utils" and name in TENSOR_REBUILDERS:
            return self._rebuild_parameter if "parameter" in name else self._rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _MarkerType(path)
        if module == "torch" and name == "Size":
            return _torch_size
        if module == "torch" and name == "device":
            return _torch_device
        if any(module == prefix.rstrip(".") or module.startswith(prefix) for prefix in self.inert_modules):
            if path not in self._records:
                self._records[path] = record_class(module, name)
            return self._records[path]
        raise UnsafePickleError(f"the pickle names {path}, which is not on the reader's allow-list "
                                f"(nothing was imported or run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {str(pid)[:80]!r} (expected a torch storage)")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _MarkerType) or not storage_type.path.startswith("torch."):
            raise UnsafePickleError(f"storage {key!r} has an unknown storage type")
        class_name = storage_type.path.split(".")[-1]
        if not isinstance(numel, int) or numel < 0:
            raise PtReadError(f"storage {key!r} has an invalid element count {numel!r}")
        return self.archive.storage(str(key), STORAGE_DTYPES[class_name], numel, class_name)

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *rest):
        if not isinstance(storage, StorageRef):
            raise UnsafePickleError("a tensor is rebuilt from something that is not a storage of the archive")
        if not (isinstance(storage_offset, int) and all(isinstance(v, int) for v in (*size, *stride))):
            raise PtReadError("a tensor has a non-integer offset, shape or stride")
        if len(size) != len(stride) or storage_offset < 0 or any(v < 0 for v in (*size, *stride)):
            raise PtReadError(f"a tensor has an invalid view (offset {storage_offset}, shape {tuple(size)}, "
                              f"strides {tuple(stride)})")
        return TensorRef(storage, storage_offset, size, stride, self.archive)

    @staticmethod
    def _rebuild_parameter(data, *rest):
        return data


# ---------------------------------------------------------------------------------------------
# The archive
# ---------------------------------------------------------------------------------------------

def sniff_non_zip(path: Path, head: bytes) -> str:
    """Why a file that is not a readable zip is not a checkpoint we can read (a sentence for messages)."""
    if not head:
        return "is empty"
    if head.startswith(LFS_POINTER_PREFIX):
        return ("is a Git LFS pointer file, not the weights: fetch the real file (git lfs pull, or download it "
                "from the release page)")
    if head.startswith(ZIP_SIGNATURES):
        return "is a truncated or corrupt zip archive: download or copy it again"
    if head[:1] == b"\x80":
        try:
            first = _first_pickled_int(head)
        except Exception:  # noqa: BLE001 - anything unreadable is simply "not the legacy format"
            first = None
        if first == LEGACY_MAGIC_NUMBER:
            return ("was written in torch's legacy (pre-1.6, non-zip) format, which this reader does not accept: "
                    "re-save it on a machine with PyTorch (torch.save(torch.load(f), f2)), or download a current "
                    "release file")
        return "is a bare pickle, not a PyTorch checkpoint archive"
    return "is neither a zip archive nor torch's legacy format: it is not a PyTorch checkpoint"


def _first_pickled_int(head: bytes):
    """The integer a pickle starts with (PROTO then LONG1/BININT*), read with pickletools (no objects built)."""
    import pickletools

    for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
        if opcode.name == "PROTO":
            continue
        return argument if opcode.name in ("LONG1", "LONG4", "BININT", "BININT1", "BININT2", "INT", "LONG") else None
    return None


class PtArchive:
    """An open ``.pt`` zip: ``root`` is the unpickled object tree (records, TensorRefs, plain data).

    Use as a context manager (``open_pt``); tensors read their data while it is open.
    """

    def __init__(self, path, inert_modules=()):
        self.path = Path(path)
        self._zip = None
        self._storages: dict[str, StorageRef] = {}
        self._byteorder = "<"
        self.class_paths: set[str] = set()
        self.root = None
        self._open(tuple(inert_modules))

    def _error(self, text: str) -> PtReadError:
        return PtReadError(f"{self.path} {text}")

    def _open(self, inert_modules) -> None:
        if not self.path.is_file():
            raise self._error("does not exist" if not self.path.exists() else "is not a file")
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(4096)
        except OSError as error:
            raise self._error(f"cannot be read: {error.strerror or error}") from error
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise self._error(sniff_non_zip(self.path, head)) from None
        try:
            self._load(inert_modules)
        except BaseException:
            self.close()
            raise

    def _member(self, name: str) -> bytes:
        try:
            return self._zip.read(name)
        except KeyError:
            raise self._error(f"is missing {name} inside the archive (truncated or corrupt)") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as error:
            raise self._error(f"is a truncated or corrupt zip archive ({name}: {error}): download or copy it "
                              f"again") from None

    def _load(self, inert_modules) -> None:
        pickles = [info for info in self._zip.infolist() if info.filename.endswith("data.pkl")
                   and info.filename.count("/") == 1]
        if len(pickles) != 1:
            raise self._error("is a zip archive but not a PyTorch checkpoint (no <name>/data.pkl inside)")
        info = pickles[0]
        self._prefix = info.filename[: -len("data.pkl")]
        if info.file_size > MAX_PICKLE_BYTES:
            raise self._error(f"has a {info.file_size} byte pickle; that is no checkpoint")
        byteorder_name = self._prefix + "byteorder"
        if byteorder_name in self._zip.namelist():
            order = self._member(byteorder_name).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise self._error(f"declares an unknown byte order {order!r}")
            self._byteorder = "<" if order == "little" else ">"
        data = self._member(info.filename)
        unpickler = RestrictedUnpickler(io.BytesIO(data), self, inert_modules)
        try:
            self.root = unpickler.load()
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{self.path} cannot be read safely: {error}") from None
        except PtReadError as error:
            raise self._error(f"is not a readable checkpoint: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, RecursionError) as error:
            raise self._error(f"holds a corrupt pickle ({type(error).__name__}: {error}): download or copy it "
                              f"again") from None
        finally:
            self.class_paths = set(unpickler.class_paths)

    def storage(self, key: str, dtype_code: str, numel: int, class_name: str) -> StorageRef:
        existing = self._storages.get(key)
        if existing is not None:
            return existing
        name = f"{self._prefix}data/{key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise PtReadError(f"storage {key} is not in the archive (truncated or corrupt)") from None
        itemsize = 2 if dtype_code == "bf16" else np.dtype(dtype_code).itemsize
        if info.file_size < numel * itemsize:
            raise PtReadError(f"storage {key} holds {info.file_size} bytes, fewer than its {numel} elements need")
        ref = StorageRef(key, dtype_code, numel, class_name)
        self._storages[key] = ref
        return ref

    def _storage_array(self, storage: StorageRef) -> np.ndarray:
        raw = self._member(f"{self._prefix}data/{storage.key}")
        if storage.dtype_code == "bf16":
            halves = np.frombuffer(raw, dtype=np.dtype("u2").newbyteorder(self._byteorder), count=storage.numel)
            return (halves.astype(np.uint32) << 16).view(np.float32)
        dtype = np.dtype(storage.dtype_code).newbyteorder(self._byteorder)
        return np.frombuffer(raw, dtype=dtype, count=storage.numel)

    def read_tensor(self, tensor: TensorRef) -> np.ndarray:
        """The tensor's values as a new native-order array; PtReadError when the view leaves its storage."""
        if self._zip is None:
            raise PtReadError(f"{self.path} is closed; read tensors inside open_pt(...)")
        values = self._storage_array(tensor.storage)
        if tensor.size == 0:
            return np.zeros(tensor.shape, values.dtype.newbyteorder("="))
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides))
        if last >= tensor.storage.numel:
            raise self._error(f"has a tensor {tensor.shape} that reads past the end of storage {tensor.storage.key}")
        itemsize = values.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(values[tensor.offset:], shape=tensor.shape,
                                               strides=tuple(s * itemsize for s in tensor.strides), writeable=False)
        return np.array(view, dtype=values.dtype.newbyteorder("="))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@contextlib.contextmanager
def open_pt(path, inert_modules=("torch.nn.modules.",)):
    """``PtArchive`` of ``path``: its unpickled ``root``; tensors readable inside the ``with`` block.

    ``inert_modules``: namespace prefixes whose classes become ``PickledObject`` records. PtReadError
    (naming the file) for anything that is not a readable torch zip checkpoint.
    """
    archive = PtArchive(path, inert_modules)
    try:
        yield archive
    finally:
        archive.close()


def module_tensors(module: PickledObject, prefix: str = "") -> dict:
    """A torch module record's ``state_dict``: name -> TensorRef, in PyTorch's order.

    Each module contributes its ``_parameters``, then its persistent ``_buffers``, then its children
    (``_modules``) recursively, as ``torch.nn.Module.state_dict`` does; None entries are skipped.
    """
    tensors: dict = {}
    non_persistent = module.attribute("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (module.attribute(group) or {}).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            tensors[prefix + name] = value
    for name, child in (module.attribute("_modules") or {}).items():
        if isinstance(child, PickledObject):
            tensors.update(module_tensors(child, f"{prefix}{name}."))
    return tensors
