"""The data contract of a distributed run: every rank reads the same, complete converted folders.

With ``msrun`` over several nodes each node reads the shards from its own file system: shared storage
mounted at the same path everywhere, or identical copies. A partial copy, a stale copy or another
conversion on one node would otherwise fail late with an obscure MindRecord error, or worse train on
different rows per rank: the sample order (``yolodata.pipeline.sampler``) assumes one dataset.

So before the network is built every rank checks the files it reads and the ranks compare what they
found (``check_data``; training: ``yolomodel.train.data_contract``, every folder it reads; distributed
evaluation: tools/eval.py, its --mindrecord):

* Locally (``inspect_folder``, no MindSpore): ``manifest.json`` parses; every shard file it lists
  exists with the size the manifest records (``num_bytes``, converter 1.4 and later), its MindRecord
  header reads and counts the rows the manifest says, and header size, page size and schema are those
  of the set's first file (MindRecord reads files together only then); each ``.db`` index exists and
  is an SQLite file; ``annotations.json`` exists. This covers the training folder and the validation
  folder: ``MindDataset`` opens every file of a set on every rank (a row index is global), so each
  rank reads all of them. The checks read a few KB per file: no image is decoded, no shard hashed.
* Together: each rank's report (host name, rank, problems, and per folder the dataset id and the
  sha256 of ``manifest.json``) goes to every rank through the communication group msrun set up
  (``yolomodel.evaluation.gather_words``: an AllGather of the lengths, then one of the reports). A
  rank whose own check failed still takes part, carrying its problems, so no rank is left waiting in
  a collective (on CPU an AllGather missing a rank gives up after 30 s with an error that names no
  cause): every rank then raises the same ``DataContractError`` naming node, rank and file (or the
  differing dataset ids), and tools/train.py or tools/eval.py exits with status 2 on every node.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
from pathlib import Path

import numpy as np

from yolodata.manifest import ManifestError, read_manifest
from yolodata.mindrecord_shards import MindRecordLayoutError, read_header, rows_in_header
from yolodata.schema import ANNOTATIONS_NAME, MANIFEST_NAME
from yolomodel.evaluation import gather_words

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_PROBLEMS_PER_RANK = 20       # a folder of 4096 missing files needs no 4096 lines to be understood
SAME_HEADER_KEYS = ("header_size", "page_size", "schema")
GUIDE = ("every node must read the same converted folders, on shared storage or as identical copies "
         "(README, \"Training on several nodes\")")


class DataContractError(ValueError):
    """The ranks do not all read the same, complete converted folders; the message names node, rank and file."""


@dataclasses.dataclass(frozen=True)
class FolderIdentity:
    """What a rank found in one converted folder it reads (``flag``: --mindrecord or --val_mindrecord)."""

    flag: str
    folder: str
    dataset_id: str
    manifest_sha256: str


@dataclasses.dataclass(frozen=True)
class RankReport:
    """One rank's view of the data: where it runs, what it reads, what is wrong with it."""

    rank: int
    host: str
    folders: tuple[FolderIdentity, ...]
    problems: tuple[str, ...]
    num_files: int                   # files checked

    def to_bytes(self) -> bytes:
        document = dataclasses.asdict(self)
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "RankReport":
        document = json.loads(data.decode("utf-8"))
        return cls(rank=int(document["rank"]), host=str(document["host"]),
                   folders=tuple(FolderIdentity(**entry) for entry in document["folders"]),
                   problems=tuple(document["problems"]), num_files=int(document["num_files"]))


# ---------------------------------------------------------------------------------------------
# This rank's files
# ---------------------------------------------------------------------------------------------

def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _index_problem(path: Path) -> str | None:
    """What is wrong with a shard's ``.db`` index (None: it exists and is an SQLite file)."""
    index = Path(f"{path}.db")
    if not index.is_file():
        return f"{index} is missing (each shard file needs its .db index beside it)"
    with open(index, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return f"{index} is not an SQLite index (damaged or partial copy)"
    return None


def shard_problems(path: Path, num_rows: int, num_bytes: int | None) -> tuple[list[str], dict | None]:
    """(problems, parsed MindRecord header or None) of one shard file the manifest lists with
    ``num_rows`` rows and ``num_bytes`` bytes (None: a manifest older than converter 1.4, size not checked)."""
    if not path.is_file():
        return [f"{path} is missing (listed in {MANIFEST_NAME})"], None
    problems = []
    size = path.stat().st_size
    if num_bytes is not None and size != num_bytes:
        problems.append(f"{path} has {size} bytes, {MANIFEST_NAME} says {num_bytes} (a partial copy, or a file "
                        f"of another conversion)")
    try:
        header, _ = read_header(path)
        stored = rows_in_header(header)
    except (OSError, MindRecordLayoutError, ValueError, KeyError, TypeError) as error:
        return problems + [f"{path} has no readable MindRecord header ({error!r})"], None
    if stored != num_rows:
        problems.append(f"{path} holds {stored} rows, {MANIFEST_NAME} says {num_rows} (a file of another "
                        f"conversion)")
    index_problem = _index_problem(path)
    if index_problem:
        problems.append(index_problem)
    return problems, header


def inspect_folder(flag: str, folder) -> tuple[FolderIdentity | None, list[str], int]:
    """(identity, problems, number of files checked) of a converted folder this rank reads (see the module
    docstring). The identity is None when ``manifest.json`` itself cannot be read."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
        manifest_sha256 = _sha256_of(folder / MANIFEST_NAME)
    except (ManifestError, OSError) as error:
        return None, [f"{flag} {folder}: {error}"], 1
    problems, first = [], None
    for entry in manifest.shards:
        path = folder / entry.file
        found, header = shard_problems(path, entry.num_rows, entry.num_bytes)
        problems += found
        if header is None:
            continue
        first = first or (path, header)
        differing = [key for key in SAME_HEADER_KEYS if header.get(key) != first[1].get(key)]
        if differing:
            problems.append(f"{path} differs from {first[0].name} in its MindRecord {', '.join(differing)} "
                            f"(files of different conversions cannot be read as one set)")
    if not (folder / ANNOTATIONS_NAME).is_file():
        problems.append(f"{folder / ANNOTATIONS_NAME} is missing (the converter writes it beside the shards)")
    identity = FolderIdentity(flag, str(folder), manifest.dataset_id, manifest_sha256)
    return identity, problems, 2 + 2 * len(manifest.shards)


def local_report(folders, rank: int, *, host: str | None = None, local_error: str | None = None) -> RankReport:
    """This rank's ``RankReport`` over ``folders`` ((flag, folder) pairs). ``local_error``: a failure before
    the check (e.g. no shards at all) that the report must carry to the other ranks."""
    identities, problems, num_files = [], [local_error] if local_error else [], 0
    for flag, folder in ([] if local_error else folders):
        try:
            identity, found, checked = inspect_folder(flag, folder)
        except Exception as error:  # noqa: BLE001 - whatever it is, the other ranks must hear of it
            identity, found, checked = None, [f"{flag} {folder}: cannot be checked: {error!r}"], 0
        problems += found
        num_files += checked
        if identity is not None:
            identities.append(identity)
    if len(problems) > MAX_PROBLEMS_PER_RANK:
        problems = problems[:MAX_PROBLEMS_PER_RANK] + [
            f"... and {len(problems) - MAX_PROBLEMS_PER_RANK} more problem(s) of the same folders"]
    return RankReport(rank=int(rank), host=host or socket.gethostname(), folders=tuple(identities),
                      problems=tuple(problems), num_files=num_files)


# ---------------------------------------------------------------------------------------------
# All ranks
# ---------------------------------------------------------------------------------------------

def report_to_words(report: RankReport) -> np.ndarray:
    """int32 (K, 1): the report's JSON bytes, padded with spaces (JSON ignores them) to whole int32 words;
    int32 because it is what MindSpore's CPU collectives carry bit for bit."""
    data = report.to_bytes()
    data += b" " * (-len(data) % 4)
    return np.frombuffer(data, np.int32).reshape(-1, 1).copy()


def words_to_report(words: np.ndarray) -> RankReport:
    return RankReport.from_bytes(np.ascontiguousarray(words, np.int32).tobytes())


def exchange_reports(report: RankReport, group_size: int) -> list[RankReport]:
    """Every rank's report, in rank order, on every rank (collectives: call it on all ranks)."""
    return [words_to_report(words) for words in gather_words(report_to_words(report), group_size)]


def _where(report: RankReport) -> str:
    return f"rank {report.rank} on node {report.host}"


def identity_mismatches(reports: list[RankReport]) -> list[str]:
    """One line per folder flag whose dataset id or manifest.json content is not the same on every rank
    that could read it."""
    lines = []
    flags = dict.fromkeys(identity.flag for report in reports for identity in report.folders)
    for flag in flags:
        groups: dict[tuple, list] = {}
        for report in reports:
            for identity in report.folders:
                if identity.flag == flag:
                    groups.setdefault((identity.dataset_id, identity.manifest_sha256), []).append((report, identity))
        if len(groups) < 2:
            continue
        what = ("different datasets" if len({key[0] for key in groups}) > 1 else
                f"the same dataset id but different {MANIFEST_NAME} files (converted with other options?)")
        parts = [", ".join(f"{_where(report)} ({identity.folder})" for report, identity in members)
                 + f" has dataset id {dataset_id[:16]}, {MANIFEST_NAME} sha256 {manifest_sha256[:16]}"
                 for (dataset_id, manifest_sha256), members in groups.items()]
        lines.append(f"{flag}: the ranks read {what}: " + "; ".join(parts))
    return lines


def contract_failures(reports: list[RankReport]) -> list[str]:
    """Everything that breaks the contract, one line each: each rank's own problems (naming node, rank and
    file), then the folders whose identity differs between ranks. Empty when the ranks agree."""
    lines = [f"{_where(report)}: {problem}" for report in reports for problem in report.problems]
    return lines + identity_mismatches(reports)


def check_data(folders, group, *, what: str = "the data", local_error: str | None = None,
               log=print) -> list[RankReport]:
    """Check ``folders`` ((flag, folder) pairs) on this rank and, with several ranks, agree on them with
    every rank; DataContractError (the same message on every rank) when a rank's files are incomplete or
    the ranks read different data. ``local_error``: a failure of this rank before the check, carried to
    the others. Returns the ranks' reports."""
    report = local_report(folders, group.rank, local_error=local_error)
    reports = exchange_reports(report, group.group_size) if group.distributed else [report]
    failures = contract_failures(reports)
    if failures:
        raise DataContractError(f"{what} is not the same complete set on every rank; " + GUIDE + ":\n  "
                                + "\n  ".join(failures))
    nodes = sorted({r.host for r in reports})
    log(f"data check: {len(reports)} rank(s) on {len(nodes)} node(s) read the same data: "
        + ", ".join(f"{i.flag} dataset {i.dataset_id[:12]} ({MANIFEST_NAME} sha256 {i.manifest_sha256[:12]})"
                    for i in report.folders) + f"; {report.num_files} files checked on each rank")
    return reports
