"""Any checkpoint the project writes -> a network with its weights: eval, infer, export and training read here.

Reading
-------
``read_weights`` is the one reader: it reads a checkpoint file (``yolomodel.train.checkpoint`` describes
the layout) and returns the network-named weights, the EMA weights (``ema.*``) when the checkpoint has
them and ``use_ema`` asks for them, else the plain ones, with the checkpoint's metadata. Every loader
below goes through it, so a file format added later is added in one place.

Which network a checkpoint holds
--------------------------------
Checkpoints written by training record ``yolov5_version`` and ``num_classes``; a plain weights file
records nothing and the caller names the network. ``resolve_model_spec`` combines the two: a value given
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
``load_finetune_weights`` (``--resume_yolov5``): every weight that fits; the detection heads are
skipped, and say so, when the class count differs. ``load_pretrained_backbone``
(``--pretrained_backbone``): the ``backbone.*`` weights only. Exact resume (``--resume``) loads the whole
training state and lives with the checkpoint layout (``yolomodel.train.checkpoint.load_for_resume``).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .network import BASE_CHANNELS, NUM_ANCHORS, YOLOV5_VERSIONS, make_divisible

logger = logging.getLogger(__name__)

# parameters whose shapes identify the class count and the model size
HEAD_BIAS_NAME = "head.detect_s8.bias"
STEM_WEIGHT_NAME = "backbone.stem.conv.conv.weight"
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
    metadata: dict           # name -> Python value (``yolomodel.train.checkpoint.read_checkpoint``)


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
# Reading
# ---------------------------------------------------------------------------------------------

def model_weights(params: dict, use_ema: bool = True) -> tuple[dict, bool]:
    """(network-named weights, whether they are the EMA) from a checkpoint's parameters.

    With ``use_ema`` and ``ema.*`` entries present, those are returned under the network's names;
    otherwise the plain entries (a checkpoint without EMA, e.g. a converted or exported one).
    """
    from .train.ema import EMA_PREFIX

    prefix = EMA_PREFIX + "."
    ema = {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}
    if use_ema and ema:
        return ema, True
    return {name: value for name, value in params.items() if not name.startswith(prefix)}, False


def read_weights(path, use_ema: bool = True) -> CheckpointWeights:
    """The network weights (EMA when present and ``use_ema``) and metadata of a checkpoint file.

    ModelLoadError naming the file when it is missing or cannot be read as a checkpoint.
    """
    from .train.checkpoint import read_checkpoint

    path = Path(path)
    try:
        params, metadata = read_checkpoint(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    weights, is_ema = model_weights(params, use_ema)
    return CheckpointWeights(path, weights, is_ema, metadata)


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
                    source: str) -> dict:
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
    raise ModelLoadError(f"{source} does not fit a {version} with {num_classes} classes: {len(other_shape)} "
                         f"parameters have another shape and {len(missing)} are missing (e.g. {example}); it "
                         f"looks like {looks_like}; pass the checkpoint's --yolov5_version")


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
    import mindspore as ms

    from .network import InferenceNet, create_yolov5

    read = read_weights(checkpoint, use_ema)
    source = f"checkpoint {read.path}"
    version, num_classes = resolve_model_spec(read.metadata, read.weights, version=version,
                                              num_classes=num_classes, source=source,
                                              default_num_classes=default_num_classes)
    net = create_yolov5(version, num_classes)
    chosen = fitting_weights(read.weights, parameter_shapes(net), version=version, num_classes=num_classes,
                             source=source)
    not_loaded, _ = ms.load_param_into_net(net, chosen, strict_load=True)
    if not_loaded:  # cannot happen after fitting_weights; a guard against a silent partial load
        raise ModelLoadError(f"{source}: parameters {not_loaded[:3]} could not be loaded")
    return LoadedModel(InferenceNet(net), version, num_classes, "ema" if read.is_ema else "model", read.path,
                       read.metadata)


def network_predictor(inference_net) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(images)``: uint8 (B, S, S, 3) RGB numpy -> ``inference_net``'s float32 (B, N, 5 + C) numpy.

    The one way eval and infer run a network; they take ``predict`` as a parameter so that their
    geometry and bookkeeping can be checked without a network.
    """
    import mindspore as ms

    def predict(images: np.ndarray) -> np.ndarray:
        return inference_net(ms.Tensor(images)).asnumpy()

    return predict


# ---------------------------------------------------------------------------------------------
# Partial loads: training's starting weights
# ---------------------------------------------------------------------------------------------

def _assign(network, chosen: dict) -> None:
    """Copy ``chosen`` (name -> checkpoint Parameter) into the network's parameters of those names.

    Used for partial loads, where ``load_param_into_net`` would warn about every parameter left out.
    """
    import mindspore as ms

    own = {p.name: p for p in network.get_parameters()}
    for name, value in chosen.items():
        target = own[name]
        target.set_data(ms.Tensor(value.asnumpy()).astype(target.dtype))


def load_finetune_weights(network, path, num_classes: int, log=logger.info) -> dict:
    """``--resume_yolov5``: weights only (EMA when present), heads skipped when the class count differs.

    Returns a small report: loaded / skipped names and whether heads were skipped.
    """
    read = read_weights(path)
    weights, metadata, is_ema = read.weights, read.metadata, read.is_ema
    shapes = parameter_shapes(network)
    saved_classes = metadata.get("num_classes")
    head_shapes_differ = any(name.startswith(HEAD_PREFIX) and name in weights
                             and tuple(weights[name].shape) != shape for name, shape in shapes.items())
    skip_heads = head_shapes_differ or (saved_classes is not None and int(saved_classes) != int(num_classes))
    keep = (lambda name: not name.startswith(HEAD_PREFIX)) if skip_heads else None
    chosen, wrong_shape, absent = _matching(shapes, weights, keep)
    if wrong_shape:
        raise ModelLoadError(f"--resume_yolov5 {path}: {len(wrong_shape)} parameters outside the heads have another "
                             f"shape (e.g. {wrong_shape[:3]}): it is another model size than --yolov5_version; "
                             f"checkpoint says {metadata.get('yolov5_version', 'nothing')} (its weights look like "
                             f"{describe_weights(weights)})")
    if not chosen:
        raise ModelLoadError(f"--resume_yolov5 {path}: no parameter of it fits this network (no name matches); "
                             f"is it a YOLOv5 checkpoint of this project?")
    _assign(network, chosen)
    source = "EMA weights" if is_ema else "weights"
    if skip_heads:
        held = saved_classes if saved_classes is not None else "other head shapes"
        log(f"--resume_yolov5: loaded {len(chosen)} {source} from {path}; the detection heads (head.*) were NOT "
            f"loaded because the class count differs (checkpoint: {held}, this dataset: {num_classes}); they keep "
            f"their fresh initialisation")
    else:
        log(f"--resume_yolov5: loaded {len(chosen)} {source} from {path}")
    if absent:
        log(f"--resume_yolov5: {len(absent)} network parameters were not in the checkpoint and keep their "
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
                             f"of the same --yolov5_version")
    _assign(network, chosen)
    log(f"--pretrained_backbone: loaded {len(chosen)} backbone {'EMA ' if read.is_ema else ''}parameters from "
        f"{path}" + (f"; {len(absent)} backbone parameters were not in it (e.g. {absent[:3]})" if absent else ""))
    return sorted(chosen)
