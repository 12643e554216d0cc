"""A YOLO txt dataset as work units without its document in memory: the reader's records spilled to disk.

The YOLO txt reader (``formats.yolo_txt.read_yolo_dataset``) reads one label file and one image header
at a time; with a ``SpillingBuilder`` each image and box record it makes goes, as compact JSON text,
into the same spill a streamed COCO json fills (``coco_stream.spill_units``), and is routed to its unit
from there. What stays in memory is the reader's list of image paths, its problems, and a few bytes
per image. The document's bytes (what ``SourceDocument.from_document`` would give: compact JSON, the
same sha256 and the same ``annotations.json`` when everything is converted) are written to
``document.json`` in the work folder from the spills, chunk by chunk.

``StreamedReaderUnits`` gives the same units, unit documents and identity as ``DocumentUnits`` over
the reader's in-memory document.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..formats import FormatError
from ..formats.common import DocumentBuilder, SourceDataset
from .coco_stream import RAW_ANNOTATIONS, RAW_IMAGES, SPILL_ENCODING, RawSpill, load_spilled_unit, spill_units
from .problems import ConversionError

DOCUMENT_NAME = "document.json"
COPY_CHUNK_LINES = 65_536


def compact_json(value) -> str:
    """``value`` as ``SourceDocument.from_document`` writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class SpillingBuilder(DocumentBuilder):
    """A DocumentBuilder whose records go to a ``RawSpill`` (as compact JSON text) instead of lists."""

    def __init__(self, names: list, image_root, spill: RawSpill):
        super().__init__(names, image_root)
        spill.index.image_dir = str(image_root)
        self.spill = spill

    def keep(self, key: str, record: dict) -> None:
        self.spill.on_element(key, compact_json(record), record)


def _copy_spill(source: Path, out, digest) -> None:
    """Append the spill's records to ``out`` (bytes) comma-separated, as the document's list holds them."""
    if not source.is_file():
        return
    with open(source, **SPILL_ENCODING) as lines:
        first = True
        while True:
            chunk = [line.rstrip("\n") for _, line in zip(range(COPY_CHUNK_LINES), lines)]
            if not chunk:
                return
            data = (("" if first else ",") + ",".join(chunk)).encode("utf-8", "surrogatepass")
            out.write(data)
            digest.update(data)
            first = False


def write_document(work_dir: Path, categories: list) -> str:
    """Write ``document.json`` (images, annotations, categories, compact) from the raw spills; its sha256."""
    digest = hashlib.sha256()
    with open(work_dir / DOCUMENT_NAME, "wb") as out:
        for part in (b'{"images":[', RAW_IMAGES, b'],"annotations":[', RAW_ANNOTATIONS,
                     ('],"categories":' + compact_json(categories) + "}").encode("utf-8")):
            if isinstance(part, bytes):
                out.write(part)
                digest.update(part)
            else:
                _copy_spill(work_dir / part, out, digest)
    return digest.hexdigest()


class StreamedReaderUnits:
    """The work units of a dataset read by ``read_dataset(builder_factory)`` (a ``formats`` reader with
    its options bound), spilled to ``work_dir``. Attributes as ``units.UnitSource``; ``image_root`` is
    the folder the file names are relative to. ``work_dir`` must stay until the conversion is done."""

    def __init__(self, read_dataset: Callable[[Callable], SourceDataset], name: str, annotation_file: str,
                 work_dir, *, shard_size: int | None = None, shard_num: int | None = None,
                 max_side: int | None = None):
        self.work_dir = Path(work_dir)

        def read(spill: RawSpill) -> tuple[SourceDataset, str]:
            try:
                dataset = read_dataset(lambda names, root: SpillingBuilder(names, root, spill))
            except FormatError as error:
                raise ConversionError(str(error)) from error
            finally:
                spill.close()
            return dataset, write_document(self.work_dir, dataset.document["categories"])

        (dataset, self.annotation_sha256), spilled = spill_units(self.work_dir, None, read, shard_size=shard_size,
                                                                 shard_num=shard_num, max_side=max_side)
        self.name, self.source_format, self.annotation_file = name, dataset.source_format, annotation_file
        self.image_root = dataset.image_root
        self.categories = dataset.document["categories"]
        self.other_members, self.member_order = {}, ("images", "annotations", "categories")
        self.details, self.source_problems = dataset.source, tuple(dataset.problems)
        self.problems, self.units = spilled.problems, spilled.units
        self.num_image_records, self.num_annotation_records = spilled.num_image_records, spilled.num_annotation_records

    def load_unit(self, index: int) -> dict:
        """The document of unit ``index`` (as ``DocumentUnits.load_unit``)."""
        return load_spilled_unit(self.work_dir, index)

    def open_source(self):
        """The document's bytes (compact JSON, as ``SourceDocument.from_document`` makes them)."""
        return open(self.work_dir / DOCUMENT_NAME, "rb")

