"""Writing files and folders so that a reader never sees half of them, and nothing is lost on failure.

* ``atomic_path(final)``: a temporary path beside ``final`` for any writer (MindSpore's checkpoint or
  export functions, our own bytes); it replaces ``final`` only when the block ends without an error.
* ``write_file_atomic(path, data)``: bytes through ``atomic_path``, flushed to disk first.
* ``AtomicOutput(folder)``: a whole output folder built beside the target and renamed into place.

Files are created with mode 0o666 minus the umask, as ``open()`` would: readable by the other users of
a shared dataset folder where the umask allows it (``tempfile.mkstemp`` would leave them 0o600).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator


_UNSAFE_NAME_CHARACTERS = re.compile(r"[^0-9A-Za-z@_.\-]")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the process umask."""
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(final, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``final``'s folder; on success it is moved onto ``final`` (os.replace).

    The folder is created if needed. The file gets ``default_file_mode()`` whatever its writer chose
    (MindSpore writes checkpoints and MINDIR files readable by their owner only). ``suffix`` (default: ``final``'s own) ends the temporary name, for
    writers that insist on an extension (MindSpore appends ``.ckpt``/``.mindir`` otherwise). On any
    exception, KeyboardInterrupt included, the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    ending = final.suffix if suffix is None else suffix
    # only characters every writer accepts (MindSpore refuses others in file names)
    stem = _UNSAFE_NAME_CHARACTERS.sub("_", final.stem)
    temporary = final.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{ending}")
    try:
        yield temporary
        if not temporary.is_file():
            raise OSError(f"nothing was written to {temporary} for {final}")
        os.chmod(temporary, default_file_mode())
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_file_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    return path


def write_file_durable(path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and flush it to disk (inside a folder that ``AtomicOutput``
    renames into place as a whole, where a per-file rename buys nothing)."""
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicOutput:
    """A temporary folder beside ``target`` that replaces it only at ``commit()``.

    ``check_target(target)`` (optional) raises when ``target`` must not be replaced (for example a
    non-empty folder that is not an output of the same tool); it runs on entry and again at commit.
    On any exception (including KeyboardInterrupt) the temporary folder is removed and ``target`` is
    left as it was. Leftovers of killed runs (``.NAME.partial-PID-*`` of dead processes) are removed
    first; an old output caught between the two renames of a killed commit is restored.
    """

    def __init__(self, target, check_target: Callable[[Path], None] | None = None):
        self.target = Path(target)
        self.check_target = check_target or (lambda target: None)
        self.temp: Path | None = None
        self._created_parents: list[Path] = []

    def _remove_stale(self) -> None:
        pattern = re.compile(re.escape(f".{self.target.name}.") + r"(partial|old)-(\d+)-[0-9a-f]+$")
        for candidate in sorted(self.target.parent.iterdir()):
            match = pattern.match(candidate.name)
            if not match or int(match.group(2)) == os.getpid() or _process_alive(int(match.group(2))):
                continue
            if match.group(1) == "old" and not self.target.exists():
                os.rename(candidate, self.target)
            else:
                shutil.rmtree(candidate, ignore_errors=True)

    def __enter__(self) -> Path:
        self.check_target(self.target)
        missing = []
        parent = self.target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created_parents.append(folder)
        self._remove_stale()
        self.temp = self.target.parent / f".{self.target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        self.temp.mkdir()
        return self.temp

    def commit(self) -> None:
        """Move the finished temporary folder into place (the old output, if any, is removed after)."""
        self.check_target(self.target)
        backup = None
        try:
            if self.target.exists():
                backup = self.target.parent / f".{self.target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(self.target, backup)
            os.rename(self.temp, self.target)
        except BaseException:
            if backup is not None and backup.exists() and not self.target.exists():
                os.rename(backup, self.target)
            raise
        self.temp = None
        self._created_parents = []
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None
        for folder in reversed(self._created_parents):
            try:
                folder.rmdir()
            except OSError:
                pass
