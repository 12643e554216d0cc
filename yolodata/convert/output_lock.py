"""One conversion at a time into an output folder.

A conversion into ``OUT`` keeps its work beside it (``.OUT.spill``, ``.OUT.parts``, ``.OUT.partial-*``).
A second run into the same ``OUT`` started while the first is going (the same command in two
terminals, a retried cluster job) would remove or reuse the first one's units under it. So a run holds
an exclusive ``flock`` on ``.OUT.lock`` from before it reads the annotations until its last file is
removed, and a second run stops at once with a ConversionError naming the process that holds it.

The kernel releases the lock when its process ends, however it ends: a killed run never blocks the
next. The file is removed on the way out; a run that finds the file it locked already unlinked (the
holder left in between) locks the new one instead. Nested entries in the same thread (``convert_coco``
calls ``convert_units``) take the lock once. On a file system that cannot lock files (an NFS mount
without a lock daemon) the run goes on unlocked, with a warning: the lock guards against a mistake,
and must not stop conversions onto such shared storage.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import warnings
from pathlib import Path

from .problems import ConversionError

_held = threading.local()
# what flock raises on a file system without file locks
UNLOCKABLE_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


def lock_path_of(output_dir: Path) -> Path:
    """The lock file of conversions into ``output_dir`` (beside it, like the parts and spill folders)."""
    return output_dir.parent / f".{output_dir.name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _acquire(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock; ConversionError when another holds it;
    None (and a warning) when the file system cannot lock files."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConversionError(
                f"another conversion into {path.parent / path.name[1:-len('.lock')]} is running ({_holder(path)}; "
                f"lock file {path}); wait for it to end or stop it: two runs into one output would overwrite "
                f"each other's work") from None
        except OSError as error:
            os.close(descriptor)
            if error.errno not in UNLOCKABLE_ERRNOS:
                raise
            warnings.warn(f"{path}: this file system cannot lock files ({error.strerror}); the conversion goes "
                          f"on, but a second run into the same output at the same time would not be stopped",
                          stacklevel=4)
            return None
        except BaseException:
            os.close(descriptor)
            raise
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, str(os.getpid()).encode("ascii"))
            return descriptor
        os.close(descriptor)        # the holder removed the file after we opened it: lock the new one


@contextlib.contextmanager
def exclusive_output(output_dir):
    """Hold the lock of conversions into ``output_dir`` for the ``with`` block (see the module doc).
    Missing parent folders are made for the lock file and removed again on the way out when empty."""
    path = lock_path_of(Path(output_dir).absolute())
    held = getattr(_held, "paths", None)
    if held is None:
        held = _held.paths = set()
    if path in held:
        yield
        return
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    for folder in reversed(created):
        folder.mkdir(exist_ok=True)
    try:
        descriptor = _acquire(path)
    except BaseException:
        _remove_empty(created)
        raise
    held.add(path)
    try:
        yield
    finally:
        held.discard(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if descriptor is not None:
            os.close(descriptor)
        _remove_empty(created)


def _remove_empty(folders: list) -> None:
    """Remove the folders made for the lock file (innermost first) that nothing else has filled."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
