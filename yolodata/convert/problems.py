"""What can go wrong in a conversion, and how it is told: errors, skipped images, warnings.

``ConversionError`` stops a run (bad arguments, a json that is not COCO, a --strict stop). A
``Problem`` names an image (or an annotation that belongs to no image) that is left out while the run
goes on; a ``ConversionWarning`` names something that is converted as given but that the user should
know about (once per run, with its count). All three end up in the summary, the last two also in
``manifest.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json

# Problems that are not errors: requested by the user, never stop a --strict run.
NON_ERROR_REASONS = frozenset({"empty_dropped"})
MAX_PROBLEMS_IN_MESSAGE = 20


class ConversionError(Exception):
    """A user-facing failure: bad arguments, a json that is not COCO, or a --strict stop."""


def id_as_written(value) -> str:
    """An id as the json writes it: 42, or "2299" for a string (quotes kept, so that it reads as one)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why an image (or an annotation that belongs to no image) was not converted.

    ``image_id`` and ``annotation_id`` are the ids as the json gives them (an int, or whatever else
    the json holds where an int belongs, such as the string "2299"), None when there is none.
    """

    reason: str
    message: str
    image_id: object = None
    file_name: str | None = None
    annotation_id: object = None
    about: str = "image"          # "image": an image is skipped; "annotation": an annotation of no image

    @property
    def is_error(self) -> bool:
        return self.reason not in NON_ERROR_REASONS

    def describe(self) -> str:
        if self.about == "annotation":
            name = "annotation" if self.annotation_id is None else f"annotation {id_as_written(self.annotation_id)}"
            owner = "no image_id" if self.image_id is None else f"image_id {id_as_written(self.image_id)}"
            return f"{name} ({owner}): {self.message}"
        name = "image" if self.image_id is None else f"image {id_as_written(self.image_id)}"
        file_name = f" ({self.file_name})" if self.file_name is not None else ""
        return f"{name}{file_name}: {self.message}"

    def manifest_entry(self) -> dict:
        entry = {"image_id": self.image_id, "file_name": self.file_name, "reason": self.reason,
                 "message": self.message}
        if self.annotation_id is not None:
            entry["annotation_id"] = self.annotation_id
        return entry


def _id_order(value) -> tuple:
    """Integers in numeric order first, then strings of digits in numeric order, other ids by their
    json text, then none."""
    if type(value) is int:
        return (0, value, "")
    if type(value) is str and value.isdecimal():
        return (1, int(value), value)
    if value is None:
        return (3, 0, "")
    return (2, 0, id_as_written(value))


def problem_order(problem: Problem) -> tuple:
    """Sort key of problems: by image id (as ``_id_order``), file name, annotation id."""
    return (_id_order(problem.image_id), problem.file_name or "", _id_order(problem.annotation_id))


def strict_stop(problems: list, stage: str) -> ConversionError:
    """The error of a --strict run that met ``problems`` (the first few listed)."""
    lines = [p.describe() for p in problems[:MAX_PROBLEMS_IN_MESSAGE]]
    more = len(problems) - len(lines)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return ConversionError(f"--strict: {len(problems)} problem(s) {stage}; nothing was written:\n  "
                           + "\n  ".join(lines) + tail)


def skipped_by_source(source_problems) -> list:
    """One Problem per image that a reader of another format left out (``SourceDocument.problems``):
    its first error, named by file and line, and how many more that image has."""
    by_image: dict = {}
    for problem in source_problems:
        if problem.is_error and problem.image is not None:
            by_image.setdefault((problem.image_id, problem.image), []).append(problem)
    skipped = []
    for (image_id, file_name), found in by_image.items():
        more = f" (and {len(found) - 1} more problem(s) of this image in source_problems)" if len(found) > 1 else ""
        skipped.append(Problem(found[0].reason, found[0].describe_where() + more, image_id, file_name))
    return skipped


@dataclasses.dataclass(frozen=True)
class ConversionWarning:
    """Something converted as given that the user should know about, told once with its count.

    ``kind`` is a short code (``area_contradicts_box``, ``shards_capped``); ``count`` how many
    annotations, images or shards it concerns; ``message`` the sentence the summary prints.
    """

    kind: str
    count: int
    message: str

    def manifest_entry(self) -> dict:
        return {"kind": self.kind, "count": self.count, "message": self.message}


@contextlib.contextmanager
def reporting_write_errors(output_dir):
    """Report a failure to write the output (full disk, MindRecord error) as a ConversionError."""
    try:
        yield
    except (ConversionError, KeyboardInterrupt):
        raise
    except Exception as error:  # MindRecord raises RuntimeError and its own exception types
        raise ConversionError(f"writing the output failed ({type(error).__name__}: {error}); "
                              f"{output_dir} was left as it was") from error
