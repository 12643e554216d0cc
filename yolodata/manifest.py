"""Read and validate a converter output folder: ``manifest.json``, the shard list and ``dataset_id``.

The converter (``yolodata.convert``) writes the folder; the pipeline, the verify step and the tools
read it only through this module, so that a damaged or half-copied folder fails with one clear message
naming what is missing instead of an obscure MindRecord error later.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .schema import ANNOTATIONS_NAME, MANIFEST_NAME, SCHEMA_VERSION

# Keys every manifest has (DESIGN.md); readers may rely on them.
REQUIRED_KEYS = (
    "num_images", "num_boxes", "categories", "skipped", "boxes_per_category", "converter_version",
    "schema_version", "annotation_sha256", "shards", "dataset_id",
)


class ManifestError(ValueError):
    """The folder is not a complete converter output; the message says what is missing or wrong."""


def compute_dataset_id(schema_version: int, image_ids: Iterable[int], boxes_per_row: Iterable[int],
                       annotation_sha256: str) -> str:
    """The dataset identity: sha256 hex over the schema version, the image ids in row order, each row's
    box count and the annotation file's sha256. The sampler and resume key on it."""
    ids = np.asarray(list(image_ids), dtype="<i8")
    counts = np.asarray(list(boxes_per_row), dtype="<i8")
    if ids.shape != counts.shape:
        raise ValueError(f"dataset id needs one box count per image: {ids.size} ids, {counts.size} counts")
    digest = hashlib.sha256()
    digest.update(f"yolodata-dataset;schema={int(schema_version)};annotations={annotation_sha256};"
                  f"rows={ids.size};".encode("ascii"))
    digest.update(ids.tobytes())
    digest.update(counts.tobytes())
    return digest.hexdigest()


def _check_manifest_fields(manifest: dict, where: Path) -> None:
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ManifestError(f"{where} lacks key(s) {missing}; re-run tools/coco2mindrecord.py")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(f"{where} has schema_version {manifest['schema_version']!r} but this code reads "
                            f"version {SCHEMA_VERSION}; re-run tools/coco2mindrecord.py")
    shards = manifest["shards"]
    if not isinstance(shards, list) or not shards:
        raise ManifestError(f"{where}: 'shards' must be a non-empty list of {{file, num_rows}}")
    for entry in shards:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("num_rows"), int) and entry["num_rows"] >= 0):
            raise ManifestError(f"{where}: bad shard entry {entry!r}; expected {{'file': str, 'num_rows': int}}")
        if os.path.basename(entry["file"]) != entry["file"]:
            raise ManifestError(f"{where}: shard file {entry['file']!r} must be a plain file name")
    total = sum(entry["num_rows"] for entry in shards)
    if total != manifest["num_images"]:
        raise ManifestError(f"{where}: shards hold {total} rows but num_images is {manifest['num_images']}")


def read_manifest_file(output_dir: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of ``output_dir`` with its keys checked (files not checked)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder; pass the --output_dir of tools/coco2mindrecord.py")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} is missing: {folder} is not a converter output folder "
                            f"(run tools/coco2mindrecord.py)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path} cannot be read as JSON: {error}") from error
    _check_manifest_fields(manifest, path)
    return manifest


def load_manifest(output_dir: str | os.PathLike) -> dict:
    """The manifest of a converter output folder, after checking that every file it names exists.

    Raises ManifestError (a ValueError) naming the first missing or inconsistent piece: the folder,
    ``manifest.json``, a key, ``annotations.json``, a shard file or its ``.db`` index.
    """
    folder = Path(output_dir)
    manifest = read_manifest_file(folder)
    missing = []
    for entry in manifest["shards"]:
        for name in (entry["file"], entry["file"] + ".db"):
            if not (folder / name).is_file():
                missing.append(name)
    if not (folder / ANNOTATIONS_NAME).is_file():
        missing.append(ANNOTATIONS_NAME)
    if missing:
        raise ManifestError(f"{folder} is incomplete: missing {missing} named by its {MANIFEST_NAME}")
    return manifest


def shard_files(output_dir: str | os.PathLike) -> list[Path]:
    """Paths of the shard files of ``output_dir`` in row order (the first one opens the whole set)."""
    folder = Path(output_dir)
    manifest = load_manifest(folder)
    return [folder / entry["file"] for entry in manifest["shards"]]


def shard_row_starts(manifest: dict) -> list[int]:
    """Global row index of the first row of each shard (cumulative ``num_rows``)."""
    starts, total = [], 0
    for entry in manifest["shards"]:
        starts.append(total)
        total += int(entry["num_rows"])
    return starts


def shard_of_row(manifest: dict, row_index: int) -> str:
    """File name of the shard holding global row ``row_index`` (rows are stored in row order)."""
    row_index = int(row_index)
    if not 0 <= row_index < int(manifest["num_images"]):
        raise ValueError(f"row_index {row_index} is outside 0..{int(manifest['num_images']) - 1}")
    starts = shard_row_starts(manifest)
    # the last shard whose first row is <= row_index (skipping empty shards that start at the same row)
    position = bisect.bisect_right(starts, row_index) - 1
    return manifest["shards"][position]["file"]
