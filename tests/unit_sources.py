"""A tiny in-memory ``UnitSource`` for the unit-conversion tests: a COCO document split by ``plan_units``.

(The project's own sources live in ``yolodata.convert``; this one is deliberately minimal so that the
tests of the consumers do not depend on how a source is produced.)
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from yolodata.convert.units import plan_units


class TinyUnits:
    """Units of an in-memory COCO document whose images are under ``image_dir`` (picklable)."""

    def __init__(self, document: dict, name: str, image_dir, *, shard_size=None, shard_num=None):
        self.name = name
        self.source_format = "coco"
        self.annotation_file = Path(name).name
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.annotation_sha256 = hashlib.sha256(data).hexdigest()
        self.categories = document["categories"]
        self.other_members = {k: v for k, v in document.items() if k not in ("images", "annotations", "categories")}
        self.problems = ()
        self.source_problems = ()
        images = document["images"]
        sizes = [os.path.getsize(Path(image_dir) / r["file_name"]) for r in images]
        self.units = plan_units(np.array([r["id"] for r in images]), np.array(sizes), shard_size=shard_size,
                                shard_num=shard_num)
        by_image = collections.defaultdict(list)
        for ann in document["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self._images = sorted(images, key=lambda r: r["id"])
        self._annotations = by_image

    def load_unit(self, index: int) -> dict:
        unit = self.units[index]
        images = [r for r in self._images if unit.first_image_id <= r["id"] <= unit.last_image_id]
        return {"images": images, "annotations": [a for r in images for a in self._annotations[r["id"]]]}


def square_failing_once(task):
    """Engine test function (module level, so spawned workers can import it): ``value ** 2``; when
    ``marker`` is given and does not exist yet, create it and fail (a task that fails on its first try)."""
    value, marker = task
    if marker is not None and not os.path.exists(marker):
        Path(marker).write_text("failed once\n")
        raise RuntimeError(f"first attempt at {value} fails")
    return value * value, os.getpid()


def always_fails(task):
    raise RuntimeError(f"task {task} always fails")
