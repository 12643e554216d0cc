"""The torch-free ``.pt`` reader: real YOLOv5 files, tensor views and dtypes, refusals, and a pickle that never runs."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_path
from pt_files import GlobalRef, NewTensor, Reduce, pickle_bytes, write_legacy_pt, write_pt
from yolomodel.checkpoint import pt_reader

FIXTURES = ("yolov5n_v5.0_release", "yolov5n_v6.1_release", "yolov5n_v7.0_custom3_last")
YOLOV5_MODULES = ("models.", "torch.nn.modules.")


def fixture_path(stem: str) -> Path:
    return shared_data_path("yolov5_pt", f"{stem}.pt")


@pytest.mark.parametrize("stem, num_tensors, first_name, first_shape", [
    ("yolov5n_v5.0_release", 362, "model.0.conv.conv.weight", (16, 12, 3, 3)),
    ("yolov5n_v6.1_release", 349, "model.0.conv.weight", (16, 3, 6, 6)),
    ("yolov5n_v7.0_custom3_last", 349, "model.0.conv.weight", (16, 3, 6, 6)),
])
def test_reads_the_real_yolov5_files(stem, num_tensors, first_name, first_shape):
    with pt_reader.open_pt(fixture_path(stem), YOLOV5_MODULES) as archive:
        root = archive.root
        model = root["ema"] if root.get("ema") is not None else root["model"]
        assert model.class_path in ("models.yolo.Model", "models.yolo.DetectionModel")
        tensors = pt_reader.module_tensors(model)
        assert len(tensors) == num_tensors
        name, tensor = next(iter(tensors.items()))
        assert (name, tensor.shape, tensor.dtype) == (first_name, first_shape, np.float16)
        values = tensor.numpy()
        assert values.shape == first_shape and values.dtype == np.float16 and np.isfinite(values).all()
        assert values.std() > 0                                   # real values, not zeros
        # the state_dict order of PyTorch: parameters, then buffers, then children
        bn = [n for n in tensors if n.startswith(first_name.rsplit(".", 2)[0] + ".bn.")]
        assert [n.rsplit(".", 1)[1] for n in bn] == ["weight", "bias", "running_mean", "running_var",
                                                     "num_batches_tracked"]
        assert tensors[bn[-1]].dtype == np.int64 and tensors[bn[-1]].shape == ()
        stride = model.attribute("stride").numpy()
        np.testing.assert_array_equal(stride, [8, 16, 32])
    assert "torch._utils._rebuild_tensor_v2" in archive.class_paths
    with pytest.raises(pt_reader.PtReadError, match="closed"):
        tensor.numpy()


def test_training_file_keeps_plain_data_and_numpy_values():
    with pt_reader.open_pt(fixture_path("yolov5n_v7.0_custom3_last"), YOLOV5_MODULES) as archive:
        root = archive.root
    assert root["epoch"] == 41 and root["updates"] == 1234 and root["opt"]["hyp"] == {"lr0": 0.01}
    np.testing.assert_allclose(root["best_fitness"].array, [0.4])  # a pickled numpy array, rebuilt from bytes
    assert root["ema"].attribute("names") == {0: "cat", 1: "dog", 2: "person"}
    assert isinstance(root["optimizer"], dict) and set(root["optimizer"]) == {"state", "param_groups"}


def test_classes_outside_the_given_namespaces_are_refused():
    with pytest.raises(pt_reader.UnsafePickleError, match="models.yolo.Model"):
        with pt_reader.open_pt(fixture_path("yolov5n_v6.1_release"), ("torch.nn.modules.",)):
            pass


@pytest.mark.parametrize("func, args", [
    (GlobalRef("os", "system"), ("touch {marker}",)),
    (GlobalRef("posix", "system"), ("touch {marker}",)),
    (GlobalRef("builtins", "eval"), ("open({marker!r}, 'w').close()",)),
    (GlobalRef("builtins", "exec"), ("open({marker!r}, 'w').close()",)),
    (GlobalRef("subprocess", "Popen"), (["touch", "{marker}"],)),
    (GlobalRef("builtins", "getattr"), ("x", "y")),
])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, func, args):
    marker = tmp_path / "was_run"

    def fill(value):
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.format(marker=str(marker))

    payload = {"model": Reduce(func, tuple(fill(a) for a in args))}
    path = write_pt(tmp_path / "evil.pt", payload)
    with pytest.raises(pt_reader.UnsafePickleError) as caught:
        pt_reader.open_pt(path, YOLOV5_MODULES).__enter__()
    assert f"{func.module}.{func.name}" in str(caught.value) and str(path) in str(caught.value)
    assert "nothing was imported or run" in str(caught.value)
    assert not marker.exists()
    # the same bytes do run code under plain pickle (so the test would catch a reader that executes)
    if func.module == "os":
        data = zipfile.ZipFile(path).read("archive/data.pkl")
        pickle.loads(data)  # noqa: S301 - deliberately, on our own payload
        assert marker.exists()


def test_records_of_inert_classes_run_no_code(tmp_path):
    # a class path that exists and has side effects when constructed, named as an inert namespace
    path = write_pt(tmp_path / "x.pt", {"model": Reduce(GlobalRef("models.evil", "Anything"), ("touch",))})
    with pt_reader.open_pt(path, ("models.",)) as archive:
        record = archive.root["model"]
    assert isinstance(record, pt_reader.PickledObject)
    assert (record.class_path, record.args) == ("models.evil.Anything", ("touch",))


def test_views_dtypes_and_byte_order(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    bf16 = (np.array([1.5, -2.25, 3.0e-3], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    tree = {
        "transposed": NewTensor(base, view=(1, (3, 4), (1, 6))),
        "half": NewTensor(base.astype(np.float16)),
        "bf16": NewTensor(bf16, storage_class="BFloat16Storage"),
        "long": NewTensor(np.array([7, -8], np.int64)),
        "empty": NewTensor(np.zeros(0, np.float32)),
    }
    for order in ("little", "big"):
        path = write_pt(tmp_path / f"{order}.pt", tree, byteorder=order)
        with pt_reader.open_pt(path) as archive:
            got = {k: v.numpy() for k, v in archive.root.items()}
        flat = base.reshape(-1)
        np.testing.assert_array_equal(got["transposed"], [[flat[1 + i + 6 * j] for j in range(4)] for i in range(3)])
        np.testing.assert_array_equal(got["half"], base.astype(np.float16))
        assert got["bf16"].dtype == np.float32
        np.testing.assert_array_equal(got["bf16"], (bf16.astype(np.uint32) << 16).view(np.float32))
        np.testing.assert_allclose(got["bf16"], [1.5, -2.25, 3.0e-3], rtol=1e-2)
        np.testing.assert_array_equal(got["long"], [7, -8])
        assert got["empty"].shape == (0,)
        assert all(v.dtype.isnative for v in got.values())


@pytest.mark.parametrize("tensor, message", [
    (NewTensor(np.zeros(6, np.float32), view=(4, (3,), (1,))), "reads past the end of storage"),
    (NewTensor(np.zeros(6, np.float32), view=(0, (2, 4), (4, 1))), "reads past the end of storage"),
    (NewTensor(np.zeros(6, np.float32), view=(0, (2,), (-1,))), "invalid view"),
    (NewTensor(np.zeros(6, np.float32), claimed_numel=600), "fewer than its 600 elements need"),
])
def test_tensor_views_must_stay_inside_their_storage(tmp_path, tensor, message):
    path = write_pt(tmp_path / "bad_view.pt", {"w": tensor})
    with pytest.raises(pt_reader.PtReadError, match=message):
        with pt_reader.open_pt(path) as archive:
            archive.root["w"].numpy()


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _corrupted(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/5"))
    # a stored member's bytes start after its 30-byte local header, name and extra field
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 64
    data[start:start + 16] = bytes(16)
    target.write_bytes(bytes(data))
    return target


def _zip_without_pickle(_source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    return target


@pytest.mark.parametrize("make, message", [
    (lambda s, t: (t.write_bytes(b""), t)[1], "is empty"),
    (lambda s, t: (t.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                                "4f2d0e5ea11ab1a07ab3c3f0ab8f3d6e6f35ba8c8d0b2e7f0b4e3a1b2c3d4e5f\nsize 14808437\n"), t)[1],
     "Git LFS pointer"),
    (lambda s, t: write_legacy_pt(t, {"epoch": -1, "model": NewTensor(np.ones(3, np.float16))}), "legacy"),
    (_truncated, "truncated or corrupt zip"),
    (_corrupted, "truncated or corrupt zip"),
    (_zip_without_pickle, "not a PyTorch checkpoint"),
    (lambda s, t: (t.write_bytes(pickle.dumps({"model": 1}, protocol=2)), t)[1], "bare pickle"),
    (lambda s, t: (t.write_bytes(os.urandom(2048)), t)[1], "not a PyTorch checkpoint"),
    (lambda s, t: write_pt(t, None, data=pickle_bytes({"a": 1})[:-7]), "corrupt pickle"),
])
def test_files_that_are_no_readable_checkpoint_are_named_with_what_to_do(tmp_path, make, message):
    source = fixture_path("yolov5n_v6.1_release")
    path = make(source, tmp_path / "weights.pt")
    with pytest.raises(pt_reader.PtReadError, match=message) as caught:
        with pt_reader.open_pt(path, YOLOV5_MODULES) as archive:
            for tensor in pt_reader.module_tensors(archive.root["model"]).values():
                tensor.numpy()
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(pt_reader.PtReadError, match="does not exist"):
        pt_reader.open_pt(tmp_path / "nope.pt").__enter__()
