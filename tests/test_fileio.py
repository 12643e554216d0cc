"""yolodata.fileio: files and folders appear complete or not at all, with the umask's permissions."""
from __future__ import annotations

import os
import stat

import pytest

from yolodata import fileio


def test_write_file_atomic_creates_folders_and_leaves_no_temporary(tmp_path):
    path = fileio.write_file_atomic(tmp_path / "a" / "b" / "x.json", b"{}")
    assert path.read_bytes() == b"{}"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_files_get_the_umask_mode_not_a_private_one(tmp_path):
    previous = os.umask(0o022)
    try:
        path = fileio.write_file_atomic(tmp_path / "x.bin", b"data")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 == fileio.default_file_mode()
        os.umask(0o077)
        private = fileio.write_file_atomic(tmp_path / "y.bin", b"data")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = fileio.write_file_atomic(tmp_path / "x.txt", b"old")

    def crash(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        fileio.write_file_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_atomic_path_removes_the_temporary_on_error_and_refuses_an_empty_result(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_path(tmp_path / "model.ckpt") as temporary:
            assert temporary.parent == tmp_path and temporary.suffix == ".ckpt"
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="nothing was written"):
        with fileio.atomic_path(tmp_path / "model.ckpt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_names_are_safe_for_mindspore(tmp_path):
    with fileio.atomic_path(tmp_path / "my model (v2).onnx") as temporary:
        assert " " not in temporary.name and "(" not in temporary.name
        temporary.write_bytes(b"x")
    assert (tmp_path / "my model (v2).onnx").read_bytes() == b"x"


def test_atomic_output_replaces_a_folder_only_on_commit(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.AtomicOutput(target) as temporary:
            (temporary / "new.txt").write_text("new")
            raise RuntimeError("failed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "old.txt").exists()
    output = fileio.AtomicOutput(target)
    with output as temporary:
        (temporary / "new.txt").write_text("new")
        output.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_check_refuses_before_anything_is_created(tmp_path):
    def refuse(target):
        raise ValueError(f"{target} is not mine")

    with pytest.raises(ValueError, match="is not mine"):
        with fileio.AtomicOutput(tmp_path / "new" / "out", refuse):
            pass
    assert list(tmp_path.iterdir()) == []
