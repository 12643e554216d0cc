"""The per-frame records of one video, camera or stream, kept on disk as they come instead of in memory.

``yolo-infer`` on a long video or an endless stream makes one json record a processed frame
(``{"frame": index, "detections": [...]}``). Held in a list they would grow with the stream; a
``FrameLog`` writes each one as a line of a JSON-lines file the moment the frame is done, so memory
no longer depends on the length of the stream. ``detections.json`` still holds every video's frames
inline (``yolomodel.infer.write_detections_json`` copies the lines in, one frame a line, and then
removes the log): its layout is the same whatever the length.

The log is a hidden temporary beside the drawn video, ``.<video name>.frames-<pid>-<token>.jsonl.partial``,
flushed after every frame: a run that is killed (or fails) before ``detections.json`` is written
leaves it behind, readable line by line (each line one frame's complete record) and clearly marked
as temporary by its name; nothing else removes it.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Iterator

FRAME_LOG_SUFFIX = ".jsonl.partial"


class FrameLog:
    """JSON-lines file of one video's frame records; iterating reads the records back, in order."""

    def __init__(self, output_dir: Path, video_name: str):
        final = Path(output_dir) / video_name
        final.parent.mkdir(parents=True, exist_ok=True)
        self.path = final.with_name(f".{final.name}.frames-{os.getpid()}-{secrets.token_hex(4)}{FRAME_LOG_SUFFIX}")
        self.num_frames = 0
        self._stream = open(self.path, "x", encoding="utf-8")

    def append(self, record: dict) -> None:
        """Write one frame's record as a line and flush it (readable by others, kept if the process dies)."""
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()
        self.num_frames += 1

    def close(self) -> None:
        """Stop writing (safe to call more than once); the file stays until ``discard``."""
        if not self._stream.closed:
            self._stream.close()

    def lines(self) -> Iterator[str]:
        """The records as the JSON text lines they were written as (no newline), one at a time."""
        if not self._stream.closed:
            self._stream.flush()
        with open(self.path, encoding="utf-8") as stream:
            for line in stream:
                yield line.rstrip("\n")

    def __iter__(self) -> Iterator[dict]:
        return (json.loads(line) for line in self.lines())

    def discard(self) -> None:
        """Close and remove the file (once its records are published elsewhere)."""
        self.close()
        self.path.unlink(missing_ok=True)
