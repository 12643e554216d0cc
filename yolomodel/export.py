"""A checkpoint -> ``InferenceNet`` with its weights, and that network -> a MINDIR, ONNX or AIR file.

Which network a checkpoint holds
--------------------------------
Checkpoints written by ``tools/train.py`` record ``yolov5_version`` and ``num_classes``
(``yolomodel.train.checkpoint``); a plain weights file records nothing and the caller names the network.
``resolve_model_spec`` combines the two: a value given by the caller must equal the recorded one, and a
missing value is an error that says what to pass. The weights' own shapes tell the class count (the
detection convolutions have 3 * (5 + C) outputs) and the model size (the stem's width is different for
every size); messages use them to say what the file really holds.

Weights
-------
The EMA weights (``ema.*``) when the checkpoint has them, else the plain ones
(``checkpoint.model_weights``). Every network parameter must be present with its shape, else
``ModelLoadError`` names the size or class count that does not fit; nothing is loaded partially.

Export
------
The exported graph is ``InferenceNet``: input ``images`` uint8 (batch_size, S, S, 3) RGB, output
``predictions`` float32 (batch_size, sum_s 3 * (S / s)^2, 5 + C) = cx, cy, w, h (input pixels),
objectness, class probabilities; normalisation and decoding are inside. ONNX goes through
``mindspore.onnx.export`` (``mindspore.export(file_format="ONNX")`` is deprecated in 2.8), MINDIR and
AIR through ``mindspore.export``; AIR needs the Ascend backend, which ``check_export_request`` says
before anything is loaded or written. The file is written under a temporary name in the target folder
and moved to ``NAME.<suffix>`` with ``os.replace``, so an interrupted export never leaves a truncated
file under the final name.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from yolodata.checks import check_int, check_multiple_of
from yolodata.fileio import atomic_path

from .network import NUM_ANCHORS, YOLOV5_VERSIONS, BASE_CHANNELS, make_divisible

EXPORT_FORMATS = ("MINDIR", "ONNX", "AIR")
FORMAT_SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAME = "images"
OUTPUT_NAME = "predictions"
AIR_DEVICE = "Ascend"
# mindspore.export and mindspore.onnx.export refuse file names with other characters (spaces, accents ...)
MINDSPORE_FILE_NAME = re.compile(r"^[0-9a-zA-Z@_\-.:/\\]+$")
# parameters whose shapes identify the class count and the model size
HEAD_BIAS_NAME = "head.detect_s8.bias"
STEM_WEIGHT_NAME = "backbone.stem.conv.conv.weight"
HEAD_PREFIX = "head."


class ModelLoadError(ValueError):
    """A checkpoint that cannot give the requested network; the message names the file and the fix."""


class ExportError(ValueError):
    """An export request that cannot be carried out (format, device, shape, output name)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """What ``load_inference_net`` built: the network and where its description came from."""

    network: object          # InferenceNet with the checkpoint's weights
    version: str
    num_classes: int
    weights: str             # "ema" or "model"
    checkpoint: Path
    metadata: dict

    def describe(self) -> str:
        kind = "EMA weights" if self.weights == "ema" else "weights (no EMA in the checkpoint)"
        return f"{self.version}, {self.num_classes} classes, {kind} from {self.checkpoint}"


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds
# ---------------------------------------------------------------------------------------------

def stem_width_versions() -> dict:
    """Stem output channels -> model size name (each YOLOv5 size has its own stem width)."""
    return {make_divisible(BASE_CHANNELS[0] * width, 8): version
            for version, (_, width) in YOLOV5_VERSIONS.items()}


def classes_from_weights(weights: dict) -> int | None:
    """The class count the detection head of ``weights`` (network names) was built for, or None."""
    bias = weights.get(HEAD_BIAS_NAME)
    if bias is None or len(bias.shape) != 1:
        return None
    outputs = int(bias.shape[0])
    if outputs % NUM_ANCHORS or outputs // NUM_ANCHORS <= 5:
        return None
    return outputs // NUM_ANCHORS - 5


def version_from_weights(weights: dict) -> str | None:
    """The model size whose stem width ``weights`` (network names) has, or None."""
    stem = weights.get(STEM_WEIGHT_NAME)
    if stem is None or len(stem.shape) != 4:
        return None
    return stem_width_versions().get(int(stem.shape[0]))


def describe_weights(weights: dict) -> str:
    """A short phrase for messages: what the weights look like (``a yolov5n with 3 classes``)."""
    version, classes = version_from_weights(weights), classes_from_weights(weights)
    if version is None and classes is None:
        return "no YOLOv5 network of this project"
    size = version or "model of unknown size"
    return f"a {size} with {classes} classes" if classes is not None else f"a {size}"


def resolve_model_spec(metadata: dict, weights: dict, *, version=None, num_classes=None,
                       source: str = "the checkpoint", default_num_classes=None) -> tuple[str, int]:
    """(version, num_classes) of the network to build, from the caller's values and the checkpoint's.

    A value given by the caller must equal the recorded one; a value neither gives (nor
    ``default_num_classes``, for the class count) is an error naming the flag to pass (with what the
    weights look like). ``source`` names the checkpoint in messages.
    """
    recorded_version = metadata.get("yolov5_version")
    recorded_classes = metadata.get("num_classes")
    looks_like = describe_weights(weights)
    if version is not None and recorded_version is not None and str(version).lower() != str(recorded_version):
        raise ModelLoadError(f"--yolov5_version {version} but {source} holds a {recorded_version}; "
                             f"drop the flag or pass a {version} checkpoint")
    if num_classes is not None and recorded_classes is not None and int(num_classes) != int(recorded_classes):
        raise ModelLoadError(f"--num_classes {num_classes} but {source} was trained for {int(recorded_classes)} "
                             f"classes; drop the flag or pass a checkpoint with {num_classes} classes")
    chosen_version = version if version is not None else recorded_version
    chosen_classes = num_classes if num_classes is not None else recorded_classes
    if chosen_classes is None:
        chosen_classes = default_num_classes
    missing = [flag for flag, value in (("--yolov5_version", chosen_version), ("--num_classes", chosen_classes))
               if value is None]
    if missing:
        raise ModelLoadError(f"{source} does not record which network it holds (a plain weights file); pass "
                             f"{' and '.join(missing)} (its weights look like {looks_like})")
    from .network import validate_model_args

    try:
        return validate_model_args(str(chosen_version), int(chosen_classes))
    except (TypeError, ValueError) as error:
        raise ModelLoadError(str(error)) from error


def fitting_weights(weights: dict, network_shapes: dict, *, version: str, num_classes: int,
                    source: str) -> dict:
    """The entries of ``weights`` for every network parameter, or ModelLoadError saying what does not fit.

    ``network_shapes``: parameter name -> shape of the network built for (version, num_classes).
    Only detection-head shapes differing means another class count; any other difference or a missing
    parameter means another model size (or not a YOLOv5 checkpoint of this project).
    """
    missing = [name for name in network_shapes if name not in weights]
    other_shape = [name for name in network_shapes if name in weights
                   and tuple(weights[name].shape) != tuple(network_shapes[name])]
    if not missing and not other_shape:
        return {name: weights[name] for name in network_shapes}
    looks_like = describe_weights(weights)
    if len(missing) == len(network_shapes):
        raise ModelLoadError(f"{source} holds none of the {version} network's parameters (e.g. "
                             f"{next(iter(network_shapes))}): it is not a YOLOv5 checkpoint of this project")
    if not missing and all(name.startswith(HEAD_PREFIX) for name in other_shape):
        held = classes_from_weights(weights)
        held_text = f"{held} classes" if held is not None else "another class count"
        raise ModelLoadError(f"{source} has detection heads for {held_text}, not {num_classes}: pass the "
                             f"checkpoint's class count (--num_classes {held if held is not None else 'N'})")
    example = (other_shape or missing)[0]
    raise ModelLoadError(f"{source} does not fit a {version} with {num_classes} classes: {len(other_shape)} "
                         f"parameters have another shape and {len(missing)} are missing (e.g. {example}); it "
                         f"looks like {looks_like}; pass the checkpoint's --yolov5_version")


def load_inference_net(checkpoint, *, version=None, num_classes=None, use_ema: bool = True,
                       default_num_classes=None) -> LoadedModel:
    """``InferenceNet`` of the network ``checkpoint`` holds, with its weights (EMA when present).

    ``version`` / ``num_classes`` name the network when the checkpoint does not record it; when it
    does, they must agree with it. ModelLoadError for a missing or unreadable file and for weights that
    do not fit.
    """
    import mindspore as ms

    from .network import InferenceNet, create_yolov5
    from .train.checkpoint import model_weights, read_checkpoint

    path = Path(checkpoint)
    try:
        params, metadata = read_checkpoint(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    weights, is_ema = model_weights(params, use_ema)
    source = f"checkpoint {path}"
    version, num_classes = resolve_model_spec(metadata, weights, version=version, num_classes=num_classes,
                                              source=source, default_num_classes=default_num_classes)
    net = create_yolov5(version, num_classes)
    shapes = {param.name: tuple(param.shape) for param in net.get_parameters()}
    chosen = fitting_weights(weights, shapes, version=version, num_classes=num_classes, source=source)
    not_loaded, _ = ms.load_param_into_net(net, chosen, strict_load=True)
    if not_loaded:  # cannot happen after fitting_weights; a guard against a silent partial load
        raise ModelLoadError(f"{source}: parameters {not_loaded[:3]} could not be loaded")
    return LoadedModel(InferenceNet(net), version, num_classes, "ema" if is_ema else "model", path, metadata)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def select_device(device_target: str) -> None:
    """Select the MindSpore backend; ExportError when this installation or machine lacks it.

    Nothing is done when it is already the current one: ``set_device`` may not be called again once
    kernels have run in the process.
    """
    import mindspore as ms

    if ms.get_context("device_target") == device_target:
        return
    try:
        ms.set_device(device_target)
    except RuntimeError as error:
        lines = str(error).strip().splitlines()
        raise ExportError(f"cannot use --device_target {device_target} here: "
                          f"{lines[0] if lines else type(error).__name__}") from error


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
    from yolodata.targets import STRIDES

    rows = sum(NUM_ANCHORS * (int(testing_shape) // int(s)) ** 2 for s in STRIDES)
    return int(batch_size), rows, 5 + int(num_classes)


def check_export_request(*, file_format: str, batch_size: int, testing_shape: int, device_target: str,
                         file_name) -> Path:
    """The output path of a valid request; ExportError saying what to fix otherwise.

    Checked before any checkpoint is read, so a bad request writes and loads nothing.
    """
    if file_format not in EXPORT_FORMATS:
        raise ExportError(f"--file_format must be one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}")
    if file_format == "AIR" and device_target != AIR_DEVICE:
        raise ExportError(f"AIR export needs an Ascend device: MindSpore writes AIR files only with the Ascend "
                          f"backend, and this export runs on {device_target}. Export MINDIR or ONNX here, or run "
                          f"with --device_target Ascend on an Ascend machine.")
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


def _write_graph(inference_net, file_format: str, dummy_input, target: Path) -> None:
    import mindspore as ms

    if file_format == "ONNX":
        import mindspore.onnx

        mindspore.onnx.export(inference_net, dummy_input, file_name=str(target), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME])
    else:
        ms.export(inference_net, dummy_input, file_name=str(target), file_format=file_format)


def export_network(inference_net, *, file_format: str, batch_size: int, testing_shape: int, file_name,
                   device_target: str = "CPU") -> Path:
    """Write ``inference_net`` (an ``InferenceNet``) as ``file_format`` for uint8 (batch_size, S, S, 3)
    input; returns the path written (``file_name`` plus the format's suffix).

    The graph is traced with a zero image batch. The file appears under its final name only when it is
    complete (``yolodata.fileio.atomic_path``). When the folder's path has characters MindSpore refuses
    in file names, the graph is written in the system temporary folder and copied to the temporary
    name beside the target first.
    """
    import mindspore as ms

    final = check_export_request(file_format=file_format, batch_size=batch_size, testing_shape=testing_shape,
                                 device_target=device_target, file_name=file_name)
    folder = final.parent if str(final.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the folder {folder} for {final.name}: {error.strerror or error}") from error
    dummy_input = ms.Tensor(np.zeros(input_shape(batch_size, testing_shape), np.uint8))
    try:
        with atomic_path(final) as temporary:
            if MINDSPORE_FILE_NAME.match(str(temporary)):
                _write_graph(inference_net, file_format, dummy_input, temporary)
            else:
                with tempfile.TemporaryDirectory(prefix="yolov5-export-") as scratch:
                    staged = Path(scratch) / f"graph{FORMAT_SUFFIXES[file_format]}"
                    if not MINDSPORE_FILE_NAME.match(str(staged)):
                        raise ExportError(f"MindSpore cannot write to {folder} (its path has characters other "
                                          f"than letters, digits and @_-.:/) nor to the temporary folder {scratch}; "
                                          f"choose a --file_name in a plainly named folder")
                    _write_graph(inference_net, file_format, dummy_input, staged)
                    if staged.is_file():
                        shutil.copyfile(staged, temporary)
            if not temporary.is_file():
                raise ExportError(f"MindSpore reported no error but wrote no {file_format} file for {final}")
    except OSError as error:
        raise ExportError(f"cannot write {final}: {error.strerror or error}") from error
    return final
