"""One conversion at a time into an output folder (``yolodata.convert.output_lock``): a second run into
the same output stops at once and touches nothing of the first one's work, a killed run never blocks
the next, and a finished run leaves no lock file behind."""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from yolodata.cli import coco2mindrecord
from yolodata.convert import ConversionError, convert_coco, convert_yolo
from yolodata.convert import run as run_lib
from yolodata.convert import output_lock
from yolodata.convert.output_lock import exclusive_output, lock_path_of
from yolodata.synthetic import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from yolodata.convert.output_lock import exclusive_output
with exclusive_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock_coco")
    make_synthetic_coco(root, num_images=4, seed=5, image_size=(64, 80), val_fraction=0.0, num_workers=1)
    return root / "images", root / "annotations" / "instances_train.json"


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def start_holder(output_dir: Path) -> subprocess.Popen:
    """Another process holding the lock of conversions into ``output_dir`` (as a running conversion does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(output_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_busy_output_stops_and_leaves_the_first_runs_work_alone(tiny_coco, tmp_path, capsys):
    out = tmp_path / "out"
    convert_coco(*tiny_coco, out, num_workers=1)
    before = digests(out)
    # what the first run has beside the output while it works
    parts, spill = run_lib.parts_dir_of(out), run_lib.spill_dir_of(out)
    for folder in (parts, spill):
        folder.mkdir()
        (folder / "in-progress").write_text("the first run's")
    holder = start_holder(out)
    try:
        with pytest.raises(ConversionError, match=rf"another conversion into .*out is running \(process {holder.pid};"):
            convert_coco(*tiny_coco, out, num_workers=1)
        code = coco2mindrecord.main(["--image_dir", str(tiny_coco[0]), "--ann_file", str(tiny_coco[1]),
                                     "--output_dir", str(out), "--num_workers", "1"])
        assert code == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert digests(out) == before
    assert (parts / "in-progress").read_text() == (spill / "in-progress").read_text() == "the first run's"


def test_a_killed_run_does_not_block_the_next_and_a_finished_run_leaves_no_lock_file(tiny_coco, tmp_path):
    out = tmp_path / "out"
    holder = start_holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path_of(out.absolute()).exists()    # the killed run could not remove it ...
    summary = convert_coco(*tiny_coco, out, num_workers=1)    # ... but the kernel released its lock
    assert summary.num_images == 4
    assert not lock_path_of(out.absolute()).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_run_leaves_no_lock_file_and_no_folder_it_made(tmp_path):
    data_file = tmp_path / "missing.yaml"
    out = tmp_path / "new" / "nested" / "out"
    with pytest.raises((ConversionError, ValueError, OSError)):
        convert_yolo(data_file, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_another_thread_of_the_same_process_is_refused_too(tiny_coco, tmp_path):
    out = tmp_path / "out"
    errors = []

    def convert_in_thread():
        try:
            convert_coco(*tiny_coco, out, num_workers=1)
        except ConversionError as error:
            errors.append(str(error))

    with exclusive_output(out):
        with exclusive_output(out):      # nested in the same thread: taken once, no error
            thread = threading.Thread(target=convert_in_thread)
            thread.start()
            thread.join()
    assert len(errors) == 1 and f"process {os.getpid()}" in errors[0]
    assert not out.exists()
    convert_coco(*tiny_coco, out, num_workers=1)      # free again once the holder's block ended
    assert (out / "manifest.json").is_file()


def test_a_file_system_without_locks_converts_with_a_warning(tiny_coco, tmp_path, monkeypatch):
    """flock failing with ENOLCK (an NFS mount without a lock daemon): the conversion goes on, says
    that concurrent runs would not be stopped, and leaves no lock file."""
    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(output_lock.fcntl, "flock", no_locks)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"cannot lock files .*a second run into the same output"):
        summary = convert_coco(*tiny_coco, out, num_workers=1)
    assert summary.num_images == 4 and not lock_path_of(out.absolute()).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_other_locking_errors_stop_the_run(tiny_coco, tmp_path, monkeypatch):
    def broken(descriptor, operation):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(output_lock.fcntl, "flock", broken)
    with pytest.raises(OSError, match="Input/output error"):
        convert_coco(*tiny_coco, tmp_path / "out", num_workers=1)
    # nothing of a conversion was started (the lock file may stay, as after a killed run: the next run locks it)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".out.lock"] == []
