"""Export: ONNX and MINDIR files compute what InferenceNet computes; bad checkpoints and requests are explained."""
from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from yolodata.fileio import default_file_mode
from yolodata.rng import keyed_rng
from yolomodel.cli import export as export_cli
from yolomodel.export import ExportError, check_export_request, output_path, output_shape
from yolomodel.checkpoint.loading import ModelLoadError, load_inference_net
from yolomodel.network import InferenceNet, create_yolov5
from yolomodel.checkpoint.format import save_checkpoint_atomic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPORT_SCRIPT = PROJECT_ROOT / "tools" / "export.py"
SHAPE = 128           # testing_shape of the exported graphs: small keeps the compile short
BATCH = 2
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A training-style checkpoint (metadata, plain weights of seed 0, EMA weights of seed 1), a plain
    weights checkpoint (seed 0, nothing recorded), and the InferenceNets those weights make."""
    folder = tmp_path_factory.mktemp("export_ckpt")
    model = create_yolov5("yolov5n", NUM_CLASSES, seed=0)
    ema = create_yolov5("yolov5n", NUM_CLASSES, seed=1)
    entries = [{"name": p.name, "data": p} for p in model.get_parameters()]
    entries += [{"name": "ema." + p.name, "data": p} for p in ema.get_parameters()]
    trained = save_checkpoint_atomic(folder / "trained.ckpt", entries,
                                     {"yolov5_version": "yolov5n", "num_classes": NUM_CLASSES, "training_shape": SHAPE})
    plain = folder / "plain.ckpt"
    ms.save_checkpoint(model, str(plain))
    return {"trained": trained, "plain": plain, "ema_net": InferenceNet(ema), "model_net": InferenceNet(model)}


@pytest.fixture(scope="module")
def test_images():
    return keyed_rng(0, purpose="test_export_images").integers(0, 256, (BATCH, SHAPE, SHAPE, 3), dtype=np.uint8)


def export_main(*args) -> int:
    return export_cli.main([str(a) for a in args])


def assert_same_predictions(result, expected):
    """Boxes (input pixels, up to a few hundred) within 1e-3 px; probabilities within 1e-5.

    Measured: onnxruntime differs by about 3e-5 px and 1e-7 (float32 rounding), MINDIR by nothing.
    """
    assert result.shape == expected.shape
    np.testing.assert_allclose(result[..., :4], expected[..., :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(result[..., 4:], expected[..., 4:], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_and_mindir_compute_what_inference_net_computes_with_the_ema_weights(checkpoints, test_images,
                                                                                   tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    expected = checkpoints["ema_net"](ms.Tensor(test_images)).asnumpy()
    plain_weights = checkpoints["model_net"](ms.Tensor(test_images)).asnumpy()
    assert np.abs(expected[..., :4] - plain_weights[..., :4]).max() > 1.0  # so the test tells EMA from model
    assert expected.shape == output_shape(BATCH, SHAPE, NUM_CLASSES)

    for file_format in ("ONNX", "MINDIR"):
        code = export_main("--ckpt_file", checkpoints["trained"], "--file_format", file_format, "--testing_shape",
                           SHAPE, "--batch_size", BATCH, "--file_name", tmp_path / "yolov5n")
        assert code == 0
        assert "EMA weights" in capsys.readouterr().out
    # no temporary left; each file with its sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolov5n.mindir", "yolov5n.mindir.json", "yolov5n.onnx",
                                                          "yolov5n.onnx.json"]
    for written in tmp_path.iterdir():  # readable by others as the umask allows, like every other output
        assert stat.S_IMODE(written.stat().st_mode) == default_file_mode(), written

    session = ort.InferenceSession(str(tmp_path / "yolov5n.onnx"), providers=["CPUExecutionProvider"])
    [model_input], [model_output] = session.get_inputs(), session.get_outputs()
    assert (model_input.name, model_input.type, model_input.shape) == ("images", "tensor(uint8)",
                                                                       [BATCH, SHAPE, SHAPE, 3])
    assert model_output.name == "predictions"
    assert_same_predictions(session.run(["predictions"], {"images": test_images})[0], expected)

    graph = ms.nn.GraphCell(ms.load(str(tmp_path / "yolov5n.mindir")))
    assert_same_predictions(graph(ms.Tensor(test_images)).asnumpy(), expected)


@pytest.mark.slow
def test_plain_weights_export_with_flags_into_a_folder_with_a_space(checkpoints, test_images, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    folder = tmp_path / "my models"  # MindSpore refuses such names itself: the export stages elsewhere
    code = export_main("--ckpt_file", checkpoints["plain"], "--file_format", "onnx", "--testing_shape", SHAPE,
                       "--batch_size", 1, "--file_name", folder / "n.onnx", "--yolov5_version", "yolov5n",
                       "--num_classes", NUM_CLASSES)
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["n.onnx", "n.onnx.json"]
    session = ort.InferenceSession(str(folder / "n.onnx"), providers=["CPUExecutionProvider"])
    expected = checkpoints["model_net"](ms.Tensor(test_images[:1])).asnumpy()
    assert_same_predictions(session.run(["predictions"], {"images": test_images[:1]})[0], expected)


@pytest.mark.parametrize("which, flags, message", [
    ("trained", ["--num_classes", "80"], "was trained for 3 classes"),
    ("trained", ["--yolov5_version", "yolov5s"], "holds a yolov5n"),
    ("plain", [], "pass --yolov5_version and --num_classes (its weights look like a yolov5n with 3 classes)"),
    ("plain", ["--yolov5_version", "yolov5n", "--num_classes", "80"], "detection heads for 3 classes, not 80"),
    ("plain", ["--yolov5_version", "yolov5s", "--num_classes", "3"], "looks like a yolov5n with 3 classes"),
])
def test_checkpoints_that_do_not_fit_are_explained(checkpoints, tmp_path, capsys, which, flags, message):
    code = export_main("--ckpt_file", checkpoints[which], "--file_format", "ONNX", "--testing_shape", SHAPE,
                       "--file_name", tmp_path / "out", *flags)
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert list(tmp_path.iterdir()) == []


def test_air_on_cpu_says_ascend_is_needed_and_writes_nothing(checkpoints, tmp_path, capsys):
    code = export_main("--ckpt_file", checkpoints["trained"], "--file_format", "AIR", "--file_name",
                       tmp_path / "model", "--device_target", "CPU")
    assert code == 2
    error = capsys.readouterr().err
    assert "AIR export needs an Ascend device" in error and "MINDIR or ONNX" in error
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_is_named(tmp_path, capsys):
    code = export_main("--ckpt_file", tmp_path / "nope.ckpt", "--file_format", "MINDIR", "--file_name", tmp_path / "m")
    assert code == 2
    assert f"checkpoint {tmp_path / 'nope.ckpt'} does not exist" in capsys.readouterr().err


def test_command_line_errors_have_no_traceback(checkpoints, tmp_path):
    result = subprocess.run([sys.executable, str(EXPORT_SCRIPT), "--ckpt_file",
                             str(checkpoints["plain"]), "--file_format", "MINDIR", "--yolov5_version", "yolov5n",
                             "--num_classes", "80", "--file_name", str(tmp_path / "m")],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr and "3 classes, not 80" in result.stderr


def test_requests_are_checked_before_any_work():
    assert output_path("out/model", "MINDIR") == Path("out/model.mindir")
    assert output_path("model.onnx", "ONNX") == Path("model.onnx")
    assert output_path("model.onnx", "MINDIR") == Path("model.onnx.mindir")
    with pytest.raises(ExportError, match="multiple of 32"):
        check_export_request(file_format="ONNX", batch_size=1, testing_shape=100, device_target="CPU", file_name="m")
    with pytest.raises(ExportError, match="batch_size"):
        check_export_request(file_format="ONNX", batch_size=0, testing_shape=640, device_target="CPU", file_name="m")
    with pytest.raises(ExportError, match="Ascend"):
        check_export_request(file_format="AIR", batch_size=1, testing_shape=640, device_target="GPU", file_name="m")


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_inference_net(not_a_checkpoint, version="yolov5n", num_classes=3)
