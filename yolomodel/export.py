"""An ``InferenceNet`` -> a MINDIR, ONNX or AIR file for deployment.

The network comes from ``yolomodel.checkpoint.loading.load_inference_net`` (any checkpoint the project writes;
the EMA weights when it has them). The exported graph is ``InferenceNet``: input ``images`` uint8
(batch_size, S, S, 3) RGB, output ``predictions`` float32 (batch_size, sum_s 3 * (S / s)^2, 5 + C) =
cx, cy, w, h (input pixels), objectness, class probabilities; normalisation and decoding are inside.
ONNX goes through ``mindspore.onnx.export`` (``mindspore.export(file_format="ONNX")`` is deprecated in
2.8), MINDIR and AIR through ``mindspore.export``; AIR needs the Ascend backend, which
``check_export_request`` says before anything is loaded or written. The file is written under a
temporary name in the target folder and moved to ``NAME.<suffix>`` with ``os.replace``, so an
interrupted export never leaves a truncated file under the final name; it gets the mode of the
project's other outputs (0o666 minus the umask; MindSpore would leave a MINDIR readable by its owner
only).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from yolodata.checks import check_int, check_multiple_of
from yolodata.fileio import atomic_path
from yolodata.pipeline.targets import STRIDES

from .network import NUM_ANCHORS

EXPORT_FORMATS = ("MINDIR", "ONNX", "AIR")
FORMAT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAME = "images"
OUTPUT_NAME = "predictions"
AIR_DEVICE = "Ascend"
DYNAMIC_BATCH_NAME = "batch"
DYNAMIC_BATCH_FORMATS = ("ONNX", "MINDIR")
# mindspore.export and mindspore.onnx.export refuse file names with other characters (spaces, accents ...)
MINDSPORE_FILE_NAME = re.compile(r"^[0-9a-zA-Z@_\-.:/\\]+$")


class ExportError(ValueError):
    """An export request that cannot be carried out (format, device, shape, output name)."""


def output_path(file_name, file_format: str) -> Path:
    """The file an export of ``file_format`` writes for ``file_name``: its suffix added unless present.

    MindSpore appends the suffix itself (``NAME`` -> ``NAME.mindir``) but keeps one that is already
    there; this gives the same name without depending on it.
    """
    suffix = FORMAT_SUFFIXES[file_format]
    path = Path(file_name)
    if not str(file_name) or str(file_name).endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise ExportError(f"--file_name must name a file, got {str(file_name)!r}")
    return path if path.name.lower().endswith(suffix) else path.with_name(path.name + suffix)


def input_shape(batch_size: int, testing_shape: int) -> tuple[int, int, int, int]:
    """The exported graph's input shape (batch_size, S, S, 3)."""
    return int(batch_size), int(testing_shape), int(testing_shape), 3


def output_shape(batch_size: int, testing_shape: int, num_classes: int) -> tuple[int, int, int]:
    """The exported graph's output shape (batch_size, sum_s 3 * (S / s)^2, 5 + C)."""
    rows = sum(NUM_ANCHORS * (int(testing_shape) // int(s)) ** 2 for s in STRIDES)
    return int(batch_size), rows, 5 + int(num_classes)


def check_export_request(*, file_format: str, batch_size: int, testing_shape: int, device_target: str,
                         file_name, dynamic_batch: bool = False) -> Path:
    """The output path of a valid request; ExportError saying what to fix otherwise.

    Checked before any checkpoint is read, so a bad request writes and loads nothing.
    """
    if file_format not in EXPORT_FORMATS:
        raise ExportError(f"--file_format must be one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}")
    if file_format == "AIR" and device_target != AIR_DEVICE:
        raise ExportError(f"AIR export needs an Ascend device: MindSpore writes AIR files only with the Ascend "
                          f"backend, and this export runs on {device_target}. Export MINDIR or ONNX here, or run "
                          f"with --device_target Ascend on an Ascend machine.")
    if dynamic_batch and file_format not in DYNAMIC_BATCH_FORMATS:
        raise ExportError(f"--dynamic_batch works for {' and '.join(DYNAMIC_BATCH_FORMATS)} files, not {file_format}")
    try:
        check_int("--batch_size", batch_size, minimum=1)
        check_multiple_of("--testing_shape", testing_shape)
    except ValueError as error:
        raise ExportError(str(error)) from None
    final = output_path(file_name, file_format)
    if final.is_dir():
        raise ExportError(f"{final} is a folder; --file_name must name the file to write")
    if final.parent.exists() and not final.parent.is_dir():
        raise ExportError(f"cannot write {final}: {final.parent} is not a folder")
    return final


def mark_onnx_batch_dynamic(path: Path) -> None:
    """Name the batch dimension of an ONNX file's output ``batch`` too (MindSpore marks the input only)."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.output) + list(model.graph.input):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = DYNAMIC_BATCH_NAME
    onnx.save(model, str(path))


def _write_graph(inference_net, file_format: str, dummy_input, target: Path, dynamic_batch: bool = False) -> None:
    import mindspore as ms

    if file_format == "ONNX":
        import mindspore.onnx

        # every reshape in the network keeps -1 for the batch, so the traced graph runs with any batch once
        # the input's first axis is declared symbolic
        mindspore.onnx.export(inference_net, dummy_input, file_name=str(target), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: DYNAMIC_BATCH_NAME}} if dynamic_batch else None)
        if dynamic_batch:
            mark_onnx_batch_dynamic(target)
    else:
        ms.export(inference_net, dummy_input, file_name=str(target), file_format=file_format)


def export_network(inference_net, *, file_format: str, batch_size: int, testing_shape: int, file_name,
                   device_target: str = "CPU", dynamic_batch: bool = False) -> Path:
    """Write ``inference_net`` (an ``InferenceNet``) as ``file_format`` for uint8 (batch_size, S, S, 3)
    input; returns the path written (``file_name`` plus the format's suffix).

    The graph is traced with a zero image batch. The file appears under its final name only when it is
    complete (``yolodata.fileio.atomic_path``). When the folder's path has characters MindSpore refuses
    in file names, the graph is written in the system temporary folder and copied to the temporary
    name beside the target first. ``dynamic_batch``: the graph takes any batch (ONNX: the input's and
    output's first axis is named ``batch``, traced with ``batch_size``; MINDIR: traced with an input of
    unknown batch); ``batch_size`` is then only the traced one.
    """
    import mindspore as ms

    final = check_export_request(file_format=file_format, batch_size=batch_size, testing_shape=testing_shape,
                                 device_target=device_target, file_name=file_name, dynamic_batch=dynamic_batch)
    folder = final.parent if str(final.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the folder {folder} for {final.name}: {error.strerror or error}") from error
    if dynamic_batch and file_format == "MINDIR":
        dummy_input = ms.Tensor(shape=[None, *input_shape(batch_size, testing_shape)[1:]], dtype=ms.uint8)
    else:
        dummy_input = ms.Tensor(np.zeros(input_shape(batch_size, testing_shape), np.uint8))
    try:
        with atomic_path(final) as temporary:
            if MINDSPORE_FILE_NAME.match(str(temporary)):
                _write_graph(inference_net, file_format, dummy_input, temporary, dynamic_batch)
            else:
                with tempfile.TemporaryDirectory(prefix="yolov5-export-") as scratch:
                    staged = Path(scratch) / f"graph{FORMAT_SUFFIXES[file_format]}"
                    if not MINDSPORE_FILE_NAME.match(str(staged)):
                        raise ExportError(f"MindSpore cannot write to {folder} (its path has characters other "
                                          f"than letters, digits and @_-.:/) nor to the temporary folder {scratch}; "
                                          f"choose a --file_name in a plainly named folder")
                    _write_graph(inference_net, file_format, dummy_input, staged, dynamic_batch)
                    if staged.is_file():
                        shutil.copyfile(staged, temporary)
            if not temporary.is_file():
                raise ExportError(f"MindSpore reported no error but wrote no {file_format} file for {final}")
    except OSError as error:
        raise ExportError(f"cannot write {final}: {error.strerror or error}") from error
    return final
