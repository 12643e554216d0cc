"""Write rows into a MindRecord file set ``data.mindrecord0..N-1`` shard by shard, in bounded memory.

Why not one ``FileWriter(shard_num=N)``: its ``write_raw_data`` splits *each call's* rows into N
contiguous blocks, one per shard, and gives the ``len(rows) % N`` leftover rows to shards chosen at
random (mindspore 2.8.0, ``ShardWriter::BreakIntoShards``). Rows written in several calls therefore
interleave across the shards, and the design's layout (each shard a contiguous block of rows in write
order, so that ``row_index`` is ``MindDataset``'s global index) is only reachable with a single call
holding every row in memory.

So each shard is written on its own, as a one-file set (``FileWriter(path, shard_num=1)``), in small
calls, by a writer that is committed (``FileWriter.commit``) before the next shard starts. At the end
the files are linked into one set exactly as ``FileWriter(shard_num=N)`` links them: each file's
header (an 8-byte little-endian length, then JSON, at the start of the file) lists every file of the
set in ``shard_addresses``, carries its own ``shard_id`` (also in each page entry) and the writer's
total ``compression_size``; then the ``.db`` index of every file is built again for the set. For the
same rows per shard the result is byte-identical to one ``FileWriter(shard_num=N)`` call with every
row (checked by tests/test_convert.py). The header layout is that of the pinned mindspore 2.8.0; an
unexpected header raises instead of guessing.

Rows go through ``_NativeRowWriter`` (the C++ writer behind ``FileWriter``, without the Python
per-row overhead that holds the GIL) when available, else through the public ``write_raw_data``.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np

from .schema import MINDRECORD_SCHEMA, SHARD_PREFIX

ROWS_PER_WRITE = 256            # at most this many rows per FileWriter call
BYTES_PER_WRITE = 6 * 2 ** 20   # and at most about this many bytes of image data (then the call is made)
SCHEMA_DESCRIPTION = "yolodata rows, see yolodata/schema.py"
INDEX_FIELDS = ["image_id"]
_HEADER_LENGTH_BYTES = 8


class MindRecordLayoutError(RuntimeError):
    """A MindRecord file does not look like what mindspore 2.8.0 writes."""


def shard_paths(folder: Path, shard_num: int) -> list[Path]:
    """Shard file paths as FileWriter names them: data.mindrecord0..N-1 (zero-padded when N > 10)."""
    if shard_num == 1:
        return [folder / f"{SHARD_PREFIX}0"]
    digits = len(str(shard_num - 1))
    return [folder / f"{SHARD_PREFIX}{str(k).rjust(digits, '0')}" for k in range(shard_num)]


def read_header(path: Path) -> tuple[dict, int]:
    """(parsed JSON header, size of the header area) of a MindRecord data file."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(_HEADER_LENGTH_BYTES), "little")
        text = handle.read(length)
    try:
        header = json.loads(text)
        area = int(header["header_size"])
    except (ValueError, KeyError, TypeError) as error:
        raise MindRecordLayoutError(f"{path}: unexpected MindRecord header ({error})") from error
    if not isinstance(header, dict) or length + _HEADER_LENGTH_BYTES > area:
        raise MindRecordLayoutError(f"{path}: unexpected MindRecord header")
    return header, area


def rows_in_header(header: dict) -> int:
    """Rows a shard holds, from its header's blob pages (each covers rows [start_row_id, end_row_id))."""
    pages = header.get("page") or []
    return sum(int(p["end_row_id"]) - int(p["start_row_id"]) for p in pages if p.get("page_type") == "BLOB_DATA")


def linked_header(header: dict, shard_id: int, addresses: list[str], compression_size: int) -> dict:
    """The header of shard ``shard_id`` of a linked set (a new dict; key order kept, as MindSpore writes it)."""
    for key in ("shard_addresses", "shard_id", "page", "compression_size"):
        if key not in header:
            raise MindRecordLayoutError(f"MindRecord header without '{key}'")
    out = dict(header)
    out["shard_addresses"] = list(addresses)
    out["shard_id"] = shard_id
    out["compression_size"] = compression_size
    out["page"] = None if header["page"] is None else [{**page, "shard_id": shard_id} for page in header["page"]]
    return out


def link_shard_files(paths: list[Path]) -> None:
    """Turn committed one-file MindRecord sets into the file set ``paths`` and rebuild its .db indexes."""
    from mindspore.mindrecord.core.shardindexgenerator import ShardIndexGenerator

    for path in paths:  # each file's own index names only that file; the set's index replaces it
        Path(f"{path}.db").unlink(missing_ok=True)
    headers = [read_header(path) for path in paths]
    addresses = [path.name for path in paths]
    compression_size = sum(int(header["compression_size"]) for header, _ in headers)
    for shard_id, (path, (header, area)) in enumerate(zip(paths, headers)):
        text = json.dumps(linked_header(header, shard_id, addresses, compression_size), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        if len(text) + _HEADER_LENGTH_BYTES > area:
            raise MindRecordLayoutError(f"{path}: the linked header does not fit its {area}-byte header area")
        with open(path, "r+b") as handle:
            old_length = int.from_bytes(handle.read(_HEADER_LENGTH_BYTES), "little")
            handle.seek(0)
            handle.write(len(text).to_bytes(_HEADER_LENGTH_BYTES, "little") + text
                         + bytes(max(0, old_length - len(text))))
    generator = ShardIndexGenerator(os.path.realpath(paths[0]), False)
    generator.build()
    generator.write_to_db()
    for path in paths:  # FileWriter.commit leaves its files readable by the owner only
        os.chmod(f"{path}.db", stat.S_IRUSR | stat.S_IWUSR)


# Python type of each scalar (raw) field type the native path writes
_RAW_TYPES = {"string": str, "int32": int, "int64": int, "float32": float, "float64": float}


class _NativeRowWriter:
    """Direct path to the C++ MindRecord writer behind ``FileWriter`` (mindspore 2.8.0).

    ``FileWriter.write_raw_data`` spends much of its time in Python (per-row schema lookups, blob
    concatenation by repeated ``bytes +=``, a schema check) while holding the GIL, which stalls the
    decode threads. This class does what it does once per row instead: split the row into its raw
    fields and one merged blob in the layout of ``mindspore.mindrecord``'s ``ShardWriter._merge_blob``
    (per blob field in header order: 8-byte big-endian length, then the bytes), and hand them to the
    same C++ call. ``open`` prepares the file as ``FileWriter.write_raw_data`` does on its first call;
    it returns None when FileWriter lacks the internals used here, and the caller then uses the public
    API. The row counts read back from the headers and the verify step check the result either way.
    """

    def __init__(self, native, blob_fields: list, schema: dict):
        self._native = native
        self._blob_fields = blob_fields
        self._blob_dtypes = {f: schema[f]["type"] for f in blob_fields}
        self._raw_fields = [f for f in schema if f not in blob_fields]
        self._raw_types = {f: _RAW_TYPES[schema[f]["type"]] for f in self._raw_fields}

    @classmethod
    def open(cls, file_writer) -> "_NativeRowWriter | None":
        try:
            shard_writer = file_writer._writer
            header = file_writer._header
            native = shard_writer._writer
            blob_fields, schema = list(header.blob_fields), dict(header.schema)
            paths, overwrite = list(file_writer._paths), bool(file_writer._overwrite)
        except AttributeError:
            return None
        supported = all(schema[f]["type"] in _RAW_TYPES for f in schema if f not in blob_fields)
        if not callable(getattr(native, "write_raw_data", None)) or len(blob_fields) < 2 or not supported:
            return None
        if not shard_writer.is_open:
            shard_writer.open(paths, overwrite)
        if not shard_writer.get_shard_header():
            shard_writer.set_shard_header(header)
        return cls(native, blob_fields, schema)

    def encode(self, fields: dict) -> tuple[dict, bytes]:
        """(raw fields with exactly the schema's Python types, merged blob) of one row."""
        parts = []
        for name in self._blob_fields:
            value = fields[name]
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value, self._blob_dtypes[name]).tobytes()
            parts.append(len(value).to_bytes(8, "big"))
            parts.append(value)
        raw = {name: self._raw_types[name](fields[name]) for name in self._raw_fields}
        return raw, b"".join(parts)

    def write(self, encoded: list) -> None:
        raw_rows = [raw for raw, _ in encoded]
        blobs = [blob for _, blob in encoded]
        # validate=False: encode() gives the raw fields exactly the schema's types
        status = self._native.write_raw_data({0: raw_rows}, blobs, False, False)
        if status is not None and int(status) != 0:
            raise RuntimeError(f"MindRecord failed to write {len(encoded)} rows (status {status})")


class _ShardFile:
    """One shard being written: a one-file FileWriter and the rows not yet handed to it."""

    def __init__(self, path: Path, native: bool):
        from mindspore.mindrecord import FileWriter  # imported here: MindSpore takes a second to import

        self.path = path
        self.writer = FileWriter(str(path), shard_num=1, overwrite=False)
        self.writer.add_schema(dict(MINDRECORD_SCHEMA), SCHEMA_DESCRIPTION)
        self.writer.add_index(list(INDEX_FIELDS))
        self.native = _NativeRowWriter.open(self.writer) if native else None
        self.pending: list = []
        self.pending_bytes = 0
        self.num_rows = 0

    def add(self, fields: dict) -> None:
        self.pending.append(self.native.encode(fields) if self.native is not None else fields)
        self.pending_bytes += len(fields["image"])
        self.num_rows += 1
        if len(self.pending) >= ROWS_PER_WRITE or self.pending_bytes >= BYTES_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.native is not None:
            self.native.write(self.pending)
        else:
            count = len(self.pending)
            self.writer.write_raw_data(self.pending)
            if len(self.pending) != count:  # FileWriter drops rows that fail its schema check, with a warning
                raise RuntimeError("MindRecord rejected a row (see the warning above); this is a converter bug")
        self.pending = []
        self.pending_bytes = 0

    def commit(self) -> None:
        """Write what is left, the header and this file's own .db index (FileWriter.commit)."""
        self.flush()
        self.writer.commit()


class ShardSetWriter:
    """Rows into ``data.mindrecord0..N-1`` in ``folder``; rows of shard k all come before those of k+1.

    ``add(fields, shard)`` with non-decreasing ``shard``; ``close()`` commits, links the files into one
    set, builds the indexes and returns ``[{file, num_rows}]`` in row order. At most one shard is open
    and at most ROWS_PER_WRITE rows are held in memory. ``native=False`` forces the public FileWriter
    call for the rows.

    ``skip_empty_shards``: a shard that receives no row gets no file (as ``FileWriter`` would write it,
    an empty file that MindSpore warns about on every read); the files written are numbered without
    gaps, as a set of that many shards.
    ``file_mode``: the permissions every file gets at ``close`` (None: as FileWriter leaves them,
    readable by the owner only).
    """

    def __init__(self, folder: Path, shard_num: int, *, native: bool = True, skip_empty_shards: bool = False,
                 file_mode: int | None = None):
        if shard_num < 1:
            raise ValueError(f"shard_num must be at least 1, got {shard_num}")
        self.folder = Path(folder)
        self.shard_num = shard_num
        self.paths = shard_paths(self.folder, shard_num)
        self._native = native
        self._skip_empty = skip_empty_shards
        self._file_mode = file_mode
        self._current: _ShardFile | None = None
        self._next_shard = 0
        self._opened: list[int] = []       # the shards that got a file, in order
        self.rows_per_shard: list[int] = []
        self.num_rows = 0

    @property
    def uses_native_writer(self) -> bool | None:
        """Whether the open shard writes through _NativeRowWriter (None when no shard is open)."""
        return None if self._current is None else self._current.native is not None

    def _advance_to(self, shard: int) -> None:
        """Commit the open shard and open ``shard`` (creating the empty shards before it unless they are skipped)."""
        first = shard if self._skip_empty else self._next_shard
        for index in range(max(first, self._next_shard), shard + 1):
            if self._current is not None:
                self._finish_current()
            self._current = _ShardFile(self.paths[index], self._native)
            self._opened.append(index)
        self._next_shard = max(self._next_shard, shard + 1)

    def _finish_current(self) -> None:
        self._current.commit()
        self.rows_per_shard.append(self._current.num_rows)
        self._current = None

    def add(self, fields: dict, shard: int = 0) -> None:
        if not 0 <= shard < self.shard_num or shard < self._next_shard - 1:
            raise ValueError(f"rows must come in shard order 0..{self.shard_num - 1}; got shard {shard} after "
                             f"shard {self._next_shard - 1}")
        if shard >= self._next_shard:
            self._advance_to(shard)
        self._current.add(fields)
        self.num_rows += 1

    def discard(self) -> None:
        """Drop the open writer without committing (its files are removed with the temporary folder)."""
        self._current = None

    def _renumber(self) -> list[Path]:
        """Give the files written their names as a set of that many shards; returns them in order."""
        written = [self.paths[shard] for shard in self._opened]
        final = shard_paths(self.folder, len(written))
        for source, target in zip(written, final):  # targets never name a file still to be renamed
            if source != target:
                Path(f"{source}.db").unlink()
                os.rename(source, target)
        return final

    def close(self) -> list[dict]:
        """Commit every shard, link them into one set with its indexes, return [{file, num_rows, num_bytes}]."""
        if self._skip_empty:
            if self._current is None:
                raise ValueError("no row was written: a shard set needs at least one row")
        else:
            self._advance_to(self.shard_num - 1)
        self._finish_current()
        paths = self._renumber()
        if len(paths) > 1 or paths != [self.paths[shard] for shard in self._opened]:
            link_shard_files(paths)  # also for one renamed file: its header and index name it
        shards = []
        for path, written in zip(paths, self.rows_per_shard):
            stored = rows_in_header(read_header(path)[0])
            if stored != written:
                raise RuntimeError(f"{path.name} holds {stored} rows but {written} were written; MindRecord "
                                   f"dropped some (see its log)")
            shards.append({"file": path.name, "num_rows": written, "num_bytes": path.stat().st_size})
        if self._file_mode is not None:
            for path in paths:
                os.chmod(path, self._file_mode)
                os.chmod(f"{path}.db", self._file_mode)
        return shards


def stored_bytes(header: dict) -> int:
    """Bytes a MindRecord file really holds (its pages' used bytes): the file's apparent size adds the
    unused rest of its header area and of its last pages, which the file system keeps sparse."""
    pages = header.get("page") or []
    return sum(int(page.get("page_size", 0)) for page in pages)


class OneFileWriter:
    """Rows into one self-contained MindRecord file ``path`` (its own one-file set with its ``.db``).

    Files written this way by different processes can be read together (``MindDataset`` with the
    list of files) since every file has the same schema, header size and page size. The file is
    created at the first row: a writer that receives no row leaves no file (``close`` returns None).
    Same interface as ``ShardSetWriter`` with one shard (``add(fields, shard=0)``).
    """

    shard_num = 1

    def __init__(self, path: Path, *, native: bool = True, file_mode: int | None = None):
        self.path = Path(path)
        self._native = native
        self._file_mode = file_mode
        self._file: _ShardFile | None = None
        self.num_rows = 0

    def add(self, fields: dict, shard: int = 0) -> None:
        if shard != 0:
            raise ValueError(f"a one-file writer has only shard 0, got {shard}")
        if self._file is None:
            self._file = _ShardFile(self.path, self._native)
        self._file.add(fields)
        self.num_rows += 1

    def discard(self) -> None:
        self._file = None

    def close(self) -> dict | None:
        """Commit; returns {file, num_rows, num_bytes, stored_bytes} (None when no row was written)."""
        if self._file is None:
            return None
        self._file.commit()
        self._file = None
        header = read_header(self.path)[0]
        if rows_in_header(header) != self.num_rows:
            raise RuntimeError(f"{self.path.name} holds {rows_in_header(header)} rows but {self.num_rows} were "
                               f"written; MindRecord dropped some (see its log)")
        if self._file_mode is not None:
            os.chmod(self.path, self._file_mode)
            os.chmod(f"{self.path}.db", self._file_mode)
        return {"file": self.path.name, "num_rows": self.num_rows, "num_bytes": self.path.stat().st_size,
                "stored_bytes": stored_bytes(header)}
