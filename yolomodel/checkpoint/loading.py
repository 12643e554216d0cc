"""Any checkpoint the project writes -> a network with its weights: eval, infer, export and training read here.

Reading
-------
``read_weights`` is the one reader: it reads a checkpoint file (``checkpoint.format`` describes
the layout) and returns the network-named weights, the EMA weights (``ema.*``) when the checkpoint has
them and ``use_ema`` asks for them, else the plain ones, with the checkpoint's metadata. Every loader
below goes through it, so a file format added later is added in one place. A PyTorch YOLOv5 ``.pt`` is
such a format: it is imported in memory (``checkpoint.yolov5_import``, with the import tool's checks;
nothing in it is executed) and then reads like the ``.ckpt`` the import tool would write.

Which network a checkpoint holds
--------------------------------
Checkpoints written by training and by the YOLOv5 importer record ``yolov5_version``,
``yolov5_layout``, ``num_classes``, the anchors and the class names; a plain weights file records
nothing and the caller names the network (its layout is told by the stem's parameter names,
``layout_from_weights``). ``resolve_model_spec`` combines the two: a value given
by the caller must equal the recorded one, and a missing value is an error that says what to pass. The
weights' own shapes tell the class count (the detection convolutions have 3 * (5 + C) outputs) and the
model size (the stem's width is different for every size); messages use them to say what the file
really holds.

Complete loads (eval, infer, export)
------------------------------------
``load_inference_net``: every network parameter must be present with its shape, else
``ModelLoadError`` names the size or class count that does not fit; nothing is loaded partially.
``network_predictor`` turns the loaded ``InferenceNet`` into a numpy function.

Partial loads (training)
------------------------
``load_finetune_weights`` (``--weights`` = ``--resume_yolov5``): every weight that fits; the detection
heads are skipped, and say so, when the class count differs. ``load_pretrained_backbone``
(``--pretrained_backbone``): the ``backbone.*`` weights only. Exact resume (``--resume``) loads the whole
training state and lives with the checkpoint layout (``yolomodel.train.checkpoint.load_for_resume``).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np

from ..network import (BASE_CHANNELS, DEFAULT_LAYOUT, LAYOUT_V6, NUM_ANCHORS, YOLOV5_VERSIONS, InferenceNet,
                       create_yolov5, make_divisible, normalize_layout, validate_model_args)
from .format import EMA_PREFIX, WEIGHTS_FORMAT, as_float32, decode_anchors, decode_class_names, read_checkpoint
from .yolov5_import import is_pytorch_file, read_yolov5_pt

logger = logging.getLogger(__name__)

# parameters whose shapes identify the class count and the model size
HEAD_BIAS_NAME = "head.detect_s8.bias"
STEM_WEIGHT_NAMES = ("backbone.stem.conv.conv.weight", "backbone.stem.conv.weight")   # v5.0 Focus, v6.0 conv
V6_STEM_WEIGHT_NAME = "backbone.stem.conv.weight"
HEAD_PREFIX = "head."
BACKBONE_PREFIX = "backbone."


class ModelLoadError(ValueError):
    """A checkpoint that cannot give the requested network; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class CheckpointWeights:
    """What ``read_weights`` read: network-named weights, whether they are the EMA, the metadata."""

    path: Path
    weights: dict            # network parameter name -> Parameter
    is_ema: bool
    metadata: dict           # name -> Python value (``format.read_checkpoint``)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """What ``load_inference_net`` built: the network and where its description came from."""

    network: object          # InferenceNet with the checkpoint's weights
    version: str
    num_classes: int
    weights: str             # "ema" or "model"
    checkpoint: Path
    metadata: dict
    layout: str = "v5.0"
    class_names: tuple | None = None     # recorded in the checkpoint (trained or imported), else None
    anchors: object = None               # float32 (3, 3, 2) pixels the network decodes with

    def describe(self) -> str:
        # a weights file (imported, or training's final *_weights.ckpt) holds one set of weights by design
        kind = "EMA weights" if self.weights == "ema" else (
            "weights" if self.metadata.get("format") == WEIGHTS_FORMAT else "weights (no EMA in the checkpoint)")
        source = self.metadata.get("source")
        return (f"{self.version}, {self.num_classes} classes, {kind} from {self.checkpoint} ({self.layout} layout"
                + (f"; {source})" if source else ")"))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def model_weights(params: dict, use_ema: bool = True) -> tuple[dict, bool]:
    """(network-named weights, whether they are the EMA) from a checkpoint's parameters.

    With ``use_ema`` and ``ema.*`` entries present, those are returned under the network's names;
    otherwise the plain entries (a checkpoint without EMA, e.g. a converted or exported one).
    """
    prefix = EMA_PREFIX + "."
    ema = {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}
    if use_ema and ema:
        return ema, True
    return {name: value for name, value in params.items() if not name.startswith(prefix)}, False


def read_weights(path, use_ema: bool = True) -> CheckpointWeights:
    """The network weights (EMA when present and ``use_ema``) and metadata of a checkpoint file.

    ``path`` may be a PyTorch YOLOv5 ``.pt`` (or any zip): it is imported in memory and gives the
    weights and metadata of the ``.ckpt`` the import tool would write (its values are numpy arrays).
    ModelLoadError naming the file when it is missing or cannot be read as a checkpoint.
    """
    path = Path(path)
    try:
        if is_pytorch_file(path):
            imported = read_yolov5_pt(path)
            params, metadata = dict(imported.weights), imported.metadata()
        else:
            params, metadata = read_checkpoint(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    weights, is_ema = model_weights(params, use_ema)
    return CheckpointWeights(path, as_float32(weights), is_ema, metadata)


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
    stem = next((weights[name] for name in STEM_WEIGHT_NAMES if name in weights), None)
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


def layout_from_weights(metadata: dict, weights: dict) -> str:
    """The network layout a checkpoint holds: recorded, else told by its stem's parameter names, else v5.0."""
    recorded = metadata.get("yolov5_layout")
    if recorded:
        try:
            return normalize_layout(recorded)
        except ValueError as error:
            raise ModelLoadError(f"the checkpoint records an unknown layout: {error}") from error
    if V6_STEM_WEIGHT_NAME in weights or any(name.startswith("backbone.sppf.") for name in weights):
        return LAYOUT_V6
    return DEFAULT_LAYOUT


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
    try:
        return validate_model_args(str(chosen_version), int(chosen_classes))
    except (TypeError, ValueError) as error:
        raise ModelLoadError(str(error)) from error


def _matching(network_shapes: dict, weights: dict, keep: Callable[[str], bool] | None = None):
    """(entries of ``weights`` that fit, names with another shape, names without an entry).

    ``network_shapes``: parameter name -> shape; ``keep`` limits the names considered (None: all).
    """
    chosen, wrong_shape, absent = {}, [], []
    for name, shape in network_shapes.items():
        if keep is not None and not keep(name):
            continue
        if name not in weights:
            absent.append(name)
        elif tuple(weights[name].shape) != tuple(shape):
            wrong_shape.append(name)
        else:
            chosen[name] = weights[name]
    return chosen, wrong_shape, sorted(absent)


def parameter_shapes(network) -> dict:
    """Parameter name -> shape of a MindSpore cell."""
    return {param.name: tuple(param.shape) for param in network.get_parameters()}


def fitting_weights(weights: dict, network_shapes: dict, *, version: str, num_classes: int,
                    source: str, layout: str = "v5.0") -> dict:
    """The entries of ``weights`` for every network parameter, or ModelLoadError saying what does not fit.

    ``network_shapes``: parameter name -> shape of the network built for (version, num_classes).
    Only detection-head shapes differing means another class count; any other difference or a missing
    parameter means another model size (or not a YOLOv5 checkpoint of this project).
    """
    chosen, other_shape, missing = _matching(network_shapes, weights)
    if not missing and not other_shape:
        return chosen
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
    raise ModelLoadError(f"{source} does not fit a {version} (layout {layout}) with {num_classes} classes: "
                         f"{len(other_shape)} parameters have another shape and {len(missing)} are missing (e.g. "
                         f"{example}); it looks like {looks_like}; pass the checkpoint's --yolov5_version")


# ---------------------------------------------------------------------------------------------
# Complete loads: the inference network
# ---------------------------------------------------------------------------------------------

def load_inference_net(checkpoint, *, version=None, num_classes=None, use_ema: bool = True,
                       default_num_classes=None) -> LoadedModel:
    """``InferenceNet`` of the network ``checkpoint`` holds, with its weights (EMA when present).

    ``version`` / ``num_classes`` name the network when the checkpoint does not record it; when it
    does, they must agree with it. ModelLoadError for a missing or unreadable file and for weights that
    do not fit.
    """
    read = read_weights(checkpoint, use_ema)
    source = f"checkpoint {read.path}"
    layout = layout_from_weights(read.metadata, read.weights)
    try:
        anchors = decode_anchors(read.metadata)
    except ValueError as error:
        raise ModelLoadError(f"{source}: {error}") from error
    version, num_classes = resolve_model_spec(read.metadata, read.weights, version=version,
                                              num_classes=num_classes, source=source,
                                              default_num_classes=default_num_classes)
    try:
        net = create_yolov5(version, num_classes, layout=layout, anchors=anchors)
    except ValueError as error:
        raise ModelLoadError(f"{source}: {error}") from error
    chosen = fitting_weights(read.weights, parameter_shapes(net), version=version, num_classes=num_classes,
                             source=source, layout=layout)
    chosen = {name: value if isinstance(value, ms.Parameter) else ms.Parameter(ms.Tensor(value), name=name)
              for name, value in chosen.items()}
    not_loaded, _ = ms.load_param_into_net(net, chosen, strict_load=True)
    if not_loaded:  # cannot happen after fitting_weights; a guard against a silent partial load
        raise ModelLoadError(f"{source}: parameters {not_loaded[:3]} could not be loaded")
    names = decode_class_names(read.metadata)
    return LoadedModel(InferenceNet(net), version, num_classes, "ema" if read.is_ema else "model", read.path,
                       read.metadata, layout=layout,
                       class_names=tuple(names) if names is not None and len(names) == num_classes else None,
                       anchors=np.asarray(net.anchors, np.float32))


def network_predictor(inference_net) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(images)``: uint8 (B, S, S, 3) RGB numpy -> ``inference_net``'s float32 (B, N, 5 + C) numpy.

    The one way eval and infer run a network; they take ``predict`` as a parameter so that their
    geometry and bookkeeping can be checked without a network.
    """
    def predict(images: np.ndarray) -> np.ndarray:
        return inference_net(ms.Tensor(images)).asnumpy()

    return predict


# ---------------------------------------------------------------------------------------------
# Partial loads: training's starting weights
# ---------------------------------------------------------------------------------------------

def _assign(network, chosen: dict) -> None:
    """Copy ``chosen`` (name -> checkpoint Parameter or numpy array) into the network's parameters of those names.

    Used for partial loads, where ``load_param_into_net`` would warn about every parameter left out.
    """
    own = {p.name: p for p in network.get_parameters()}
    for name, value in chosen.items():
        target = own[name]
        values = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
        target.set_data(ms.Tensor(values).astype(target.dtype))


def load_finetune_weights(network, path, num_classes: int, log=logger.info, *, read=None) -> dict:
    """``--weights`` (``--resume_yolov5``): weights only (EMA when present), heads skipped when the class count differs.

    ``path``: a ``.ckpt`` (trained or imported) or a YOLOv5 ``.pt``; ``read``: its ``read_weights`` when the
    caller has it already. Skipped heads keep the network's initialisation, YOLOv5's with its objectness
    and class bias priors. Returns a small report: loaded / skipped names and whether heads were skipped.
    """
    read = read if read is not None else read_weights(path)
    weights, metadata, is_ema = read.weights, read.metadata, read.is_ema
    shapes = parameter_shapes(network)
    saved_classes = metadata.get("num_classes")
    head_shapes_differ = any(name.startswith(HEAD_PREFIX) and name in weights
                             and tuple(weights[name].shape) != shape for name, shape in shapes.items())
    skip_heads = head_shapes_differ or (saved_classes is not None and int(saved_classes) != int(num_classes))
    keep = (lambda name: not name.startswith(HEAD_PREFIX)) if skip_heads else None
    held = (f"{metadata.get('yolov5_version', 'an unrecorded size')}, layout "
            f"{layout_from_weights(metadata, weights)}")
    network_layout = getattr(network, "layout", None)
    if network_layout is not None and layout_from_weights(metadata, weights) != network_layout:
        raise ModelLoadError(f"--weights {path} holds the {layout_from_weights(metadata, weights)} layout, this "
                             f"network is {network_layout}; drop --yolov5_layout (it comes from the checkpoint)")
    chosen, wrong_shape, absent = _matching(shapes, weights, keep)
    if wrong_shape:
        raise ModelLoadError(f"--weights {path}: {len(wrong_shape)} parameters outside the heads have another "
                             f"shape (e.g. {wrong_shape[:3]}): it is another model size or layout than this "
                             f"network's (the checkpoint holds {held}; its weights look like "
                             f"{describe_weights(weights)})")
    if not chosen:
        raise ModelLoadError(f"--weights {path}: no parameter of it fits this network (no name matches); is it a "
                             f"YOLOv5 checkpoint? (it holds {held})")
    _assign(network, chosen)
    source = "EMA weights" if is_ema else "weights"
    if skip_heads:
        held_classes = saved_classes if saved_classes is not None else "other head shapes"
        log(f"--weights: loaded {len(chosen)} {source} from {path}; the detection heads (head.*) were NOT loaded "
            f"because the class count differs (checkpoint: {held_classes}, this dataset: {num_classes}); they are "
            f"re-initialised as YOLOv5 does, with its bias priors (objectness log(8 / (640 / stride)^2), classes "
            f"log(0.6 / (classes - 0.99)))")
    else:
        log(f"--weights: loaded {len(chosen)} {source} from {path} (all of the network, heads included)")
    if absent:
        log(f"--weights: {len(absent)} network parameters were not in the checkpoint and keep their "
            f"initialisation (e.g. {absent[:3]})")
    return {"loaded": sorted(chosen), "skipped_heads": skip_heads, "absent": absent, "ema": is_ema}


def load_pretrained_backbone(network, path, log=logger.info) -> list[str]:
    """``--pretrained_backbone``: load ``backbone.*`` (EMA when present) from a checkpoint.

    A checkpoint of a bare backbone whose names lack the ``backbone.`` prefix is accepted as well.
    """
    read = read_weights(path)
    weights = read.weights
    if not any(name.startswith(BACKBONE_PREFIX) for name in weights):
        weights = {BACKBONE_PREFIX + name: value for name, value in weights.items()}
    chosen, wrong_shape, absent = _matching(parameter_shapes(network), weights,
                                            lambda name: name.startswith(BACKBONE_PREFIX))
    if wrong_shape or not chosen:
        raise ModelLoadError(f"--pretrained_backbone {path}: {len(chosen)} backbone parameters fit, "
                             f"{len(wrong_shape)} have another shape (e.g. {wrong_shape[:3]}); it must be a backbone "
                             f"of the same --yolov5_version and --yolov5_layout")
    _assign(network, chosen)
    log(f"--pretrained_backbone: loaded {len(chosen)} backbone {'EMA ' if read.is_ema else ''}parameters from "
        f"{path}" + (f"; {len(absent)} backbone parameters were not in it (e.g. {absent[:3]})" if absent else ""))
    return sorted(chosen)
