"""YOLOv5 .pt import: PyTorch's own outputs reproduced, metadata recorded, every refusal on a real malformed file.

The fixtures in the real-data folder's yolov5_pt (conftest.shared_data_path) were written by the PyTorch YOLOv5 code (v5.0, v6.1, v7.0
source trees); ``expected_outputs.npz`` holds the raw head outputs PyTorch computed from them. The
malformed files are those fixtures changed in one place by ``pt_files`` (a Segment head, a fourth
output stride, an ultralytics class ...), or made in torch's other layouts.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from conftest import shared_data_path
from pt_files import NewTensor, child, load_tree, record, write_legacy_pt, write_pt
from yolomodel.network import create_yolov5, decode_head_output
from yolomodel.checkpoint.format import WEIGHTS_FORMAT, decode_anchors, decode_class_names, read_checkpoint
from yolomodel.checkpoint.loading import load_inference_net, read_weights
from yolomodel.checkpoint.yolov5_import import YOLOv5ImportError, import_yolov5, read_yolov5_pt

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tools_import_yolov5", PROJECT_ROOT / "tools" / "import_yolov5.py")
import_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_tool)

FIXTURES = {  # stem -> (layout, classes, names, weights taken)
    "yolov5n_v5.0_release": ("v5.0", 80, [f"class{i}" for i in range(80)], "model"),
    "yolov5n_v6.1_release": ("v6.0", 80, [f"class{i}" for i in range(80)], "model"),
    "yolov5n_v7.0_custom3_last": ("v6.0", 3, ["cat", "dog", "person"], "ema"),
}
# PyTorch computed in float32 from the fp16 weights; we measured at most 9.1e-6 (outputs up to about 7)
OUTPUT_TOLERANCE = 1e-4
DEFAULT_ANCHORS_PX = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                               [[116, 90], [156, 198], [373, 326]]], np.float32)


def fixture_path(stem: str) -> Path:
    return shared_data_path("yolov5_pt", f"{stem}.pt")


@pytest.fixture(scope="module")
def expected():
    return np.load(shared_data_path("yolov5_pt", "expected_outputs.npz"))


def raw_outputs(network, images_nchw: np.ndarray) -> list[np.ndarray]:
    """The network's three raw head outputs as PyTorch's Detect shapes them: (B, 3, H, W, 5 + C)."""
    network.set_train(False)
    batch, _, height, width = images_nchw.shape
    outputs = network(ms.Tensor(images_nchw.transpose(0, 2, 3, 1).copy()))
    return [o.asnumpy().reshape(batch, 3, height // s, width // s, -1) for o, s in zip(outputs, (8, 16, 32))]


def network_of(imported):
    net = create_yolov5(imported.version, imported.num_classes, layout=imported.layout, anchors=imported.anchors)
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in imported.weights.items()},
                           strict_load=True)
    return net


@pytest.mark.parametrize("stem", list(FIXTURES))
def test_imported_models_compute_what_pytorch_computed(stem, expected):
    layout, num_classes, names, weights_kind = FIXTURES[stem]
    imported = read_yolov5_pt(fixture_path(stem))
    assert (imported.version, imported.layout, imported.num_classes) == ("yolov5n", layout, num_classes)
    assert list(imported.class_names) == names and imported.weights_kind == weights_kind
    np.testing.assert_array_equal(imported.anchors, DEFAULT_ANCHORS_PX)
    assert not imported.anchors_changed and imported.storage_dtypes == ("float16",)
    outputs = raw_outputs(network_of(imported), expected["input_uint8_nchw"])
    for output, stride in zip(outputs, (8, 16, 32)):
        reference = expected[f"{stem}__s{stride}"]
        assert output.shape == reference.shape
        assert np.abs(output - reference).max() < OUTPUT_TOLERANCE, (stride, np.abs(output - reference).max())
        assert np.abs(reference).max() > 1.0                 # a meaningful comparison, not of near-zeros


def test_training_file_imports_the_ema_not_the_model(tmp_path, expected):
    stem = "yolov5n_v7.0_custom3_last"
    tree = load_tree(fixture_path(stem))
    tree["ema"] = None                          # what is left is the 'model' entry (other weights)
    imported = read_yolov5_pt(write_pt(tmp_path / "model_only.pt", tree))
    assert imported.weights_kind == "model"
    outputs = raw_outputs(network_of(imported), expected["input_uint8_nchw"])
    assert np.abs(outputs[0] - expected[f"{stem}__s8"]).max() > 1e-2


def test_import_tool_writes_a_checkpoint_that_loads_with_everything_recorded(tmp_path, capsys, expected):
    stem = "yolov5n_v7.0_custom3_last"
    output = tmp_path / "custom3.ckpt"
    assert import_tool.main(["--weights", str(fixture_path(stem)), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "yolov5n, layout v6.0, 3 classes (cat, dog, person)" in printed and str(output) in printed
    params, metadata = read_checkpoint(output)
    assert (metadata["format"], metadata["yolov5_version"], metadata["yolov5_layout"], metadata["num_classes"]) == \
        (WEIGHTS_FORMAT, "yolov5n", "v6.0", 3)
    assert decode_class_names(metadata) == ["cat", "dog", "person"]
    np.testing.assert_array_equal(decode_anchors(metadata), DEFAULT_ANCHORS_PX)
    assert "EMA weights" in metadata["source"] and "epoch 41" in metadata["source"]
    assert all(p.asnumpy().dtype == np.float32 for p in params.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom3.ckpt"]     # no temporary left behind

    loaded = load_inference_net(output)          # no flags: size, layout, classes, names and anchors recorded
    assert (loaded.version, loaded.layout, loaded.num_classes, loaded.class_names) == \
        ("yolov5n", "v6.0", 3, ("cat", "dog", "person"))
    images = expected["input_uint8_nchw"]
    outputs = raw_outputs(loaded.network.net, images)
    assert np.abs(outputs[2] - expected[f"{stem}__s32"]).max() < OUTPUT_TOLERANCE
    # the .pt itself loads the same network (imported in memory)
    direct = load_inference_net(fixture_path(stem))
    predictions = direct.network(ms.Tensor(images.transpose(0, 2, 3, 1).copy())).asnumpy()
    np.testing.assert_array_equal(predictions, loaded.network(ms.Tensor(images.transpose(0, 2, 3, 1).copy())).asnumpy())


def test_evolved_anchors_are_carried_into_the_model(tmp_path, expected):
    stem = "yolov5n_v6.1_release"
    tree = load_tree(fixture_path(stem))
    detect = child(tree["model"], "model", "24")
    grid_anchors = detect.state["_buffers"]["anchors"].array.astype(np.float32) * np.float32(1.25)
    detect.state["_buffers"]["anchors"] = NewTensor(grid_anchors.astype(np.float16))
    path = write_pt(tmp_path / "autoanchor.pt", tree)
    imported, written = import_yolov5(path, tmp_path / "autoanchor.ckpt")
    evolved = grid_anchors.astype(np.float16).astype(np.float32) * np.array([8, 16, 32], np.float32)[:, None, None]
    assert imported.anchors_changed and "carried into the model" in imported.describe()
    np.testing.assert_array_equal(imported.anchors, evolved)
    _, metadata = read_checkpoint(written)
    np.testing.assert_array_equal(decode_anchors(metadata), evolved)

    loaded = load_inference_net(written)
    np.testing.assert_array_equal(loaded.anchors, evolved)
    images = ms.Tensor(expected["input_uint8_nchw"].transpose(0, 2, 3, 1).copy())
    raw = loaded.network.net(images)
    decoded = loaded.network(images).asnumpy()
    rows = raw[0].shape[1]
    np.testing.assert_allclose(decoded[:, :rows], decode_head_output(raw[0], ms.Tensor(evolved[0]), 8, 32, 32)
                               .asnumpy(), rtol=1e-6, atol=1e-4)


def test_class_names_given_as_a_list_or_a_dict(tmp_path):
    tree = load_tree(fixture_path("yolov5n_v7.0_custom3_last"))
    tree["ema"].state["names"] = ["a", "b", "c"]
    assert read_yolov5_pt(write_pt(tmp_path / "list.pt", tree)).class_names == ("a", "b", "c")
    tree["ema"].state["names"] = {0: "a", 1: "b"}
    with pytest.raises(YOLOv5ImportError, match="2 class names for 3 classes"):
        read_yolov5_pt(write_pt(tmp_path / "two.pt", tree))


def test_bfloat16_and_float32_storages_import(tmp_path, expected):
    stem = "yolov5n_v6.1_release"
    tree = load_tree(fixture_path(stem))

    def convert(module):
        for group in ("_parameters", "_buffers"):
            for name, tensor in list((module.state.get(group) or {}).items()):
                if isinstance(tensor, NewTensor) and tensor.array.dtype == np.float16:
                    module.state[group][name] = NewTensor(tensor.array.astype(np.float32))
        for sub in (module.state.get("_modules") or {}).values():
            convert(sub)

    convert(tree["model"])
    imported = read_yolov5_pt(write_pt(tmp_path / "fp32.pt", tree))
    assert imported.storage_dtypes == ("float32",)
    outputs = raw_outputs(network_of(imported), expected["input_uint8_nchw"])
    assert np.abs(outputs[1] - expected[f"{stem}__s16"]).max() < OUTPUT_TOLERANCE


# --- refusals, each on a real malformed file; nothing is written ---------------------------------

def _p6(tree):
    model = tree["model"]
    model.state["yaml"]["anchors"] = model.state["yaml"]["anchors"] + [[436, 615, 739, 380, 925, 792]]
    detect = child(model, "model", "24")
    detect.state["nl"] = 4
    detect.state["_buffers"]["anchors"] = NewTensor(np.ones((4, 3, 2), np.float16))
    heads = detect.state["_modules"]["m"].state["_modules"]
    heads["3"] = heads["2"]
    detect.state["stride"] = NewTensor(np.array([8, 16, 32, 64], np.float32))


def _segmentation(tree):
    model = tree["model"]
    detect = child(model, "model", "24")
    segment = record("models.yolo.Segment", detect.state)
    segment.state["_modules"]["proto"] = record("models.common.Proto", {"_modules": {}, "_parameters": {}})
    model.state["_modules"]["model"].state["_modules"]["24"] = segment
    tree["model"] = record("models.yolo.SegmentationModel", model.state)


def _classification(tree):
    model = tree["model"]
    layers = model.state["_modules"]["model"].state["_modules"]
    for index in [str(i) for i in range(10, 25)]:
        layers.pop(index)
    layers["10"] = record("models.common.Classify", {"_modules": {}, "_parameters": {}, "_buffers": {}})
    tree["model"] = record("models.yolo.ClassificationModel", model.state)


def _ultralytics(tree):
    model = tree["model"]
    layers = model.state["_modules"]["model"].state["_modules"]
    layers["2"] = record("ultralytics.nn.modules.block.C2f", layers["2"].state)
    layers["24"] = record("ultralytics.nn.modules.head.Detect", layers["24"].state)
    tree["model"] = record("ultralytics.nn.tasks.DetectionModel", model.state)
    tree["train_args"] = {"model": "yolov8n.yaml"}


def _custom_size(tree):
    tree["model"].state["yaml"]["width_multiple"] = 0.375


def _older_layout(tree):
    tree["model"].state["yaml"]["backbone"][2] = [-1, 3, "BottleneckCSP", [128]]


def _leaky_relu(tree):
    conv = child(tree["model"], "model", "1")
    conv.state["_modules"]["act"] = record("torch.nn.modules.activation.LeakyReLU", {"negative_slope": 0.1})


def _state_dict_only(tree):
    return {"model.0.conv.weight": NewTensor(np.zeros((16, 3, 6, 6), np.float16))}


def _wrong_shape(tree):
    conv = child(tree["model"], "model", "7", "conv")
    conv.state["_parameters"]["weight"] = NewTensor(np.zeros((128, 64, 1, 1), np.float16))


@pytest.mark.parametrize("change, message", [
    (_p6, "P6 model"),
    (_segmentation, "segmentation checkpoint"),
    (_classification, "classification checkpoint"),
    (_ultralytics, "ultralytics package"),
    (_custom_size, "none of YOLOv5's sizes"),
    (_older_layout, "before v4.0"),
    (_leaky_relu, "LeakyReLU activations"),
    (_state_dict_only, "only a state_dict"),
    (_wrong_shape, "do not fit a yolov5n"),
])
def test_other_models_are_refused_by_name_and_nothing_is_written(tmp_path, change, message):
    tree = load_tree(fixture_path("yolov5n_v6.1_release"))
    replaced = change(tree)
    source = write_pt(tmp_path / "other.pt", replaced if replaced is not None else tree)
    output = tmp_path / "out" / "model.ckpt"
    with pytest.raises(YOLOv5ImportError, match=message) as caught:
        import_yolov5(source, output)
    assert str(source) in str(caught.value)
    assert not output.parent.exists()


def _truncated(path: Path) -> None:
    data = fixture_path("yolov5n_v6.1_release").read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("make, message", [
    (lambda p: write_legacy_pt(p, load_tree(fixture_path("yolov5n_v5.0_release"))), "legacy .pre-1.6, non-zip. format"),
    (_truncated, "truncated or corrupt zip"),
    (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 14808437\n"),
     "Git LFS pointer"),
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(4000)), "not a PyTorch checkpoint"),
    (lambda p: write_pt(p, {"weights": [1, 2, 3]}), "not a YOLOv5 checkpoint"),
])
def test_files_that_are_not_checkpoints_are_refused_and_an_existing_output_is_kept(tmp_path, make, message):
    source = tmp_path / "yolov5s.pt"
    make(source)
    output = tmp_path / "existing.ckpt"
    output.write_bytes(b"an earlier import")
    with pytest.raises(YOLOv5ImportError, match=message):
        import_yolov5(source, output)
    assert output.read_bytes() == b"an earlier import"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.ckpt", "yolov5s.pt"]


def test_tool_reports_a_refusal_without_a_traceback(tmp_path, capsys):
    source = tmp_path / "yolov5s.pt"
    source.write_text("version https://git-lfs.github.com/spec/v1\n")
    assert import_tool.main(["--weights", str(source), "--output", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Git LFS pointer" in err and "Traceback" not in err
    assert import_tool.main(["--weights", str(fixture_path("yolov5n_v6.1_release")),
                             "--output", str(tmp_path / "x.pt")]) == 2
    assert "must end with .ckpt" in capsys.readouterr().err


def test_the_one_checkpoint_reader_reads_a_pt_like_its_imported_ckpt(tmp_path):
    read = read_weights(fixture_path("yolov5n_v5.0_release"))
    assert read.metadata["yolov5_layout"] == "v5.0" and "backbone.stem.conv.conv.weight" in read.weights
    _, written = import_yolov5(fixture_path("yolov5n_v5.0_release"), tmp_path / "v5.ckpt")
    again = read_weights(written)
    assert again.metadata == read.metadata and set(again.weights) == set(read.weights)
    for name, value in read.weights.items():
        np.testing.assert_array_equal(again.weights[name].asnumpy(), value, err_msg=name)


def test_agreement_benchmark_prints_the_figures(capsys):
    spec = importlib.util.spec_from_file_location("pt_agreement", PROJECT_ROOT / "benchmarks" / "pt_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--data_dir", str(shared_data_path("yolov5_pt"))])
    assert [row["checkpoint"] for row in rows] == [f"{stem}.pt" for stem in sorted(FIXTURES)]
    assert all(row[f"max_abs_diff_s{s}"] < OUTPUT_TOLERANCE for row in rows for s in (8, 16, 32))
    assert "largest absolute difference from PyTorch over all outputs" in capsys.readouterr().out
