"""yolomodel.checkpoint.format: atomic writing and reading of the project's checkpoint files."""
from __future__ import annotations

import stat

import mindspore as ms
import numpy as np
import pytest

from yolodata import fileio
from yolodata.fileio import default_file_mode
from yolomodel.checkpoint import format as format_lib
from yolomodel.train import checkpoint as train_checkpoint


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    good = {"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}
    path = format_lib.save_checkpoint_atomic(tmp_path / "a.ckpt", [good], {"num_classes": 1})
    params, metadata = format_lib.read_checkpoint(path)
    assert metadata == {"num_classes": 1} and list(params) == ["w"]
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode()   # not MindSpore's owner-only 0o400

    def crash(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        format_lib.save_checkpoint_atomic(tmp_path / "a.ckpt", [{"name": "w", "data": ms.Tensor(np.zeros(3))}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]      # the old file, untouched
    np.testing.assert_array_equal(format_lib.read_checkpoint(path)[0]["w"].asnumpy(), np.ones(3))


def test_numeric_entries_of_the_writer_are_metadata_when_named(tmp_path):
    """The format knows the model description; a writer's own numeric entries (training's position) are
    metadata when the reader names them, and string entries always are."""
    good = {"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}
    path = format_lib.save_checkpoint_atomic(tmp_path / "b.ckpt", [good],
                                             {"num_classes": 2, "epoch": 4, "best_fitness": repr(0.25)})
    params, metadata = format_lib.read_checkpoint(path)
    assert metadata == {"num_classes": 2, "best_fitness": "0.25"} and sorted(params) == ["epoch", "w"]
    params, metadata = format_lib.read_checkpoint(path, ("epoch",))
    assert metadata == {"num_classes": 2, "epoch": 4, "best_fitness": "0.25"} and list(params) == ["w"]
    assert train_checkpoint.read_checkpoint(path)[1] == metadata        # training names its entries
