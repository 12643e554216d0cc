"""Import a PyTorch YOLOv5 checkpoint (``.pt``, releases v5.0 to v7.0) as this project's ``.ckpt``, without torch.

What is accepted
----------------
Checkpoints written by the PyTorch YOLOv5 (github.com/ultralytics/yolov5), releases v5.0 through v7.0:
stripped release files (``yolov5s.pt``: ``model`` in fp16, no optimizer) and training files
(``last.pt``/``best.pt``: ``model`` and ``ema``, optimizer state; the ``ema`` weights are taken when
present, as YOLOv5 itself does when it strips a checkpoint), fp16, bf16 or fp32 storages, class names as
a list or a dict. The model's ``yaml`` gives the layout (v5.0: Focus stem and SPP; v6.0: the 6x6 stem
conv and SPPF, used by v6.0, v6.1, v6.2 and v7.0), the size (its depth and width multiples must be those
of n, s, m, l or x) and the class count. Every layer of the yaml must be the standard one of that
layout, every activation SiLU, every BatchNorm eps 1e-3, and the weights must fit the network of that
layout, size and class count exactly (names and shapes); anything else is refused.

Anchors are carried into the model: the Detect layer's ``anchors`` (grid units, times its strides)
become the model's anchors in pixels, so a checkpoint whose anchors YOLOv5's AutoAnchor evolved imports
with those anchors, and eval, infer, export and fine-tuning use them. ``ImportedYolov5.anchors_changed``
says when they differ from YOLOv5's defaults.

What is refused (``YOLOv5ImportError``, naming the file and what to do; nothing is written)
---------------------------------------------------------------------------------------------
A P6 model (four output strides, ``yolov5s6``), a segmentation or classification checkpoint, a
checkpoint of the ``ultralytics`` package (YOLOv8, YOLO11, YOLOv5u), layouts older than v5.0 or
customised ones, custom depth/width multiples, torch's legacy non-zip format, a truncated or corrupt
zip, a Git LFS pointer, a file that is no checkpoint, and a pickle naming anything outside the reader's
allow-list (``pt_reader``: the pickle is never executed).

The written ``.ckpt`` holds the network's parameters under this project's names (float32 values of
the stored weights) and the metadata ``format`` (``format.WEIGHTS_FORMAT``), ``yolov5_version``,
``yolov5_layout``, ``num_classes``, ``class_names`` and ``anchors`` (JSON) and ``source``; it is
written atomically.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mindspore as ms
import numpy as np

from ..network import LAYOUT_V5, LAYOUT_V6, NUM_ANCHORS, YOLOV5_LAYER_CELLS, YOLOV5_VERSIONS, create_yolov5
from . import pt_reader
from .format import WEIGHTS_FORMAT, encode_anchors, encode_class_names, save_checkpoint_atomic

# classes of these namespaces become inert records (YOLOv5's own, torch's modules, the ultralytics
# package's so that its checkpoints can be recognised and refused by name)
INERT_MODULES = ("models.", "utils.", "torch.nn.modules.", "ultralytics.", "argparse.", "pathlib.")
DETECTION_MODEL_CLASSES = ("models.yolo.Model", "models.yolo.DetectionModel")
DETECT_CLASS = "models.yolo.Detect"
PT_SUFFIXES = (".pt", ".pth")
YOLOV5_STRIDES = (8, 16, 32)
BN_EPS = 1e-3
# YOLOv5's default anchors (pixels), as its yaml files write them: one row of three (w, h) per stride
YAML_DEFAULT_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
# BatchNorm2d state names -> MindSpore BatchNorm2d parameter names
BN_RENAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
SKIPPED_TENSORS = ("num_batches_tracked", "anchors", "anchor_grid")
DETECT_LAYER = 24
HEAD_CELLS = ("head.detect_s8", "head.detect_s16", "head.detect_s32")

# The standard model yaml of each layout: [from, repeats, module, args] per layer (channels before the
# width multiple, repeats before the depth multiple), as YOLOv5's models/yolov5{n,s,m,l,x}.yaml write it.
_HEAD_YAML = (
    (-1, 1, "Conv", (512, 1, 1)), (-1, 1, "nn.Upsample", (None, 2, "nearest")), ((-1, 6), 1, "Concat", (1,)),
    (-1, 3, "C3", (512, False)), (-1, 1, "Conv", (256, 1, 1)), (-1, 1, "nn.Upsample", (None, 2, "nearest")),
    ((-1, 4), 1, "Concat", (1,)), (-1, 3, "C3", (256, False)), (-1, 1, "Conv", (256, 3, 2)),
    ((-1, 14), 1, "Concat", (1,)), (-1, 3, "C3", (512, False)), (-1, 1, "Conv", (512, 3, 2)),
    ((-1, 10), 1, "Concat", (1,)), (-1, 3, "C3", (1024, False)), ((17, 20, 23), 1, "Detect", ("nc", "anchors")),
)
STANDARD_YAML = {
    LAYOUT_V5: (
        (-1, 1, "Focus", (64, 3)), (-1, 1, "Conv", (128, 3, 2)), (-1, 3, "C3", (128,)), (-1, 1, "Conv", (256, 3, 2)),
        (-1, 9, "C3", (256,)), (-1, 1, "Conv", (512, 3, 2)), (-1, 9, "C3", (512,)), (-1, 1, "Conv", (1024, 3, 2)),
        (-1, 1, "SPP", (1024, (5, 9, 13))), (-1, 3, "C3", (1024, False)),
    ) + _HEAD_YAML,
    LAYOUT_V6: (
        (-1, 1, "Conv", (64, 6, 2, 2)), (-1, 1, "Conv", (128, 3, 2)), (-1, 3, "C3", (128,)),
        (-1, 1, "Conv", (256, 3, 2)), (-1, 6, "C3", (256,)), (-1, 1, "Conv", (512, 3, 2)), (-1, 9, "C3", (512,)),
        (-1, 1, "Conv", (1024, 3, 2)), (-1, 3, "C3", (1024,)), (-1, 1, "SPPF", (1024, 5)),
    ) + _HEAD_YAML,
}


class YOLOv5ImportError(ValueError):
    """A ``.pt`` this importer cannot turn into a model; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class ImportedYolov5:
    """A YOLOv5 ``.pt`` read and checked: the network description and its weights under this project's names."""

    path: Path
    layout: str                      # one of network.YOLOV5_LAYOUTS
    version: str                     # yolov5n/s/m/l/x
    num_classes: int
    class_names: tuple
    anchors: np.ndarray              # float32 (3, 3, 2) pixels
    weights: dict                    # network parameter name -> float32 numpy array
    weights_kind: str                # "ema" or "model"
    model_class: str                 # e.g. models.yolo.DetectionModel
    epoch: int | None                # the training epoch (-1 or None for a release file)
    storage_dtypes: tuple            # e.g. ("float16",)

    @property
    def anchors_changed(self) -> bool:
        default = np.asarray(YAML_DEFAULT_ANCHORS, np.float32).reshape(len(YOLOV5_STRIDES), NUM_ANCHORS, 2)
        return not np.array_equal(self.anchors, default)

    def source_text(self) -> str:
        """One line for the checkpoint's ``source`` entry and for messages."""
        kind = "EMA weights" if self.weights_kind == "ema" else "model weights"
        epoch = f", epoch {self.epoch}" if self.epoch is not None and self.epoch >= 0 else ""
        return (f"imported from {self.path.name} ({self.model_class}, layout {self.layout}, {kind}{epoch}, "
                f"{'/'.join(self.storage_dtypes)} storages)")

    def metadata(self) -> dict:
        """The metadata entries of the ``.ckpt`` this import writes (``format.METADATA_KEYS``)."""
        return {"format": WEIGHTS_FORMAT, "yolov5_version": self.version, "yolov5_layout": self.layout,
                "num_classes": self.num_classes, "class_names": encode_class_names(self.class_names),
                "anchors": encode_anchors(self.anchors), "source": self.source_text()}

    def describe(self) -> str:
        names = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
        anchors = ("anchors differ from YOLOv5's defaults (e.g. evolved by AutoAnchor) and are carried into "
                   "the model" if self.anchors_changed else "YOLOv5's default anchors")
        return (f"{self.version}, layout {self.layout}, {self.num_classes} classes ({names}), {anchors}; "
                f"{self.source_text()}")


def is_pytorch_file(path) -> bool:
    """True for a file this importer should read: a ``.pt``/``.pth`` name or a zip archive."""
    path = Path(path)
    if path.suffix.lower() in PT_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in pt_reader.ZIP_SIGNATURES
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Checks on the pickled model
# ---------------------------------------------------------------------------------------------

def _normalise_yaml_value(value):
    if isinstance(value, (list, tuple)):
        return tuple(_normalise_yaml_value(v) for v in value)
    if value == "None":
        return None
    return value


def _yaml_layer_text(entry) -> str:
    source, repeats, module, args = entry
    return f"{module}{list(args) if isinstance(args, tuple) else args} x{repeats} from {source}"


def _module_children(module) -> dict:
    children = module.attribute("_modules") if isinstance(module, pt_reader.PickledObject) else None
    return children if isinstance(children, dict) else {}


def _walk_modules(module, path="model"):
    """(path, record) of ``module`` and every descendant torch module record."""
    yield path, module
    for name, child in _module_children(module).items():
        if isinstance(child, pt_reader.PickledObject):
            yield from _walk_modules(child, f"{path}.{name}")


class _Checker:
    """The checks of one file, each raising YOLOv5ImportError with the file name and the advice."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, what: str, advice: str = "") -> YOLOv5ImportError:
        return YOLOv5ImportError(f"{self.path}: {what}" + (f"; {advice}" if advice else ""))

    def model_record(self, root):
        """The model to import (``ema`` when present, else ``model``) and which of the two it is."""
        if isinstance(root, pt_reader.PickledObject):      # torch.save(model) rather than a checkpoint dict
            return root, "model"
        if not isinstance(root, dict):
            raise self.fail(f"holds a {type(root).__name__}, not a YOLOv5 checkpoint (a dict with 'model')",
                            "pass a .pt written by YOLOv5's train.py or a release file such as yolov5s.pt")
        for key in ("ema", "model"):
            if isinstance(root.get(key), pt_reader.PickledObject):
                return root[key], key
        if root and all(isinstance(v, pt_reader.TensorRef) for v in root.values()):
            raise self.fail("holds only a state_dict (tensors without the model's yaml, names and anchors)",
                            "pass the checkpoint YOLOv5's train.py wrote (last.pt/best.pt) or a release file")
        raise self.fail(f"is a PyTorch file but not a YOLOv5 checkpoint (its keys: {', '.join(map(str, list(root)[:8]))})",
                        "pass a .pt written by YOLOv5's train.py or a release file such as yolov5s.pt")

    def model_kind(self, model, class_paths) -> None:
        """Refuse what is not a YOLOv5 detection model, saying what it is."""
        model_class = model.class_path
        if model_class.startswith("ultralytics.") or any(p.startswith("ultralytics.") for p in class_paths):
            raise self.fail(f"was written by the ultralytics package ({model_class}: YOLOv8, YOLO11 or the "
                            f"anchor-free YOLOv5u), whose network is not YOLOv5's",
                            "import a checkpoint of github.com/ultralytics/yolov5 (releases v5.0-v7.0), e.g. its "
                            "yolov5s.pt")
        modules = [record.class_path for _, record in _walk_modules(model)]
        if model_class.endswith("SegmentationModel") or any(c.endswith((".Segment", ".Proto")) for c in modules):
            raise self.fail("is a YOLOv5 segmentation checkpoint (Segment head, mask prototypes)",
                            "this toolkit trains detection: import the detection checkpoint (yolov5s.pt, not "
                            "yolov5s-seg.pt)")
        if model_class.endswith("ClassificationModel") or any(c.endswith(".Classify") for c in modules):
            raise self.fail("is a YOLOv5 classification checkpoint (Classify head)",
                            "this toolkit trains detection: import a detection checkpoint (yolov5s.pt, not "
                            "yolov5s-cls.pt)")
        if model_class not in DETECTION_MODEL_CLASSES:
            raise self.fail(f"holds a {model_class}, not a YOLOv5 detection model",
                            "pass a .pt written by YOLOv5 (models.yolo.Model / DetectionModel)")

    def model_yaml(self, model) -> dict:
        spec = model.attribute("yaml")
        if not isinstance(spec, dict) or not {"backbone", "head", "nc"} <= set(spec):
            raise self.fail("the model carries no YOLOv5 yaml (backbone, head, nc)",
                            "it was not written by YOLOv5's own code; re-save it with YOLOv5's train.py")
        return spec

    def not_p6(self, spec: dict, detect) -> None:
        anchors = spec.get("anchors")
        num_levels = len(anchors) if isinstance(anchors, (list, tuple)) else None
        detect_levels = detect.attribute("nl") if detect is not None else None
        levels = [n for n in (num_levels, detect_levels) if isinstance(n, int)]
        if any(n != len(YOLOV5_STRIDES) for n in levels):
            count = next(n for n in levels if n != len(YOLOV5_STRIDES))
            what = ("a P6 model (four output strides 8, 16, 32, 64, as yolov5s6.pt)" if count == 4 else
                    f"a model with {count} output strides")
            raise self.fail(f"is {what}; this toolkit builds the P5 models (strides 8, 16, 32)",
                            "import the P5 checkpoint of the same size (yolov5s.pt rather than yolov5s6.pt)")

    def layout(self, spec: dict) -> str:
        """v5.0 or v6.0 when every layer of the yaml is the standard one of that layout; refused otherwise."""
        layers = [_normalise_yaml_value(entry) for entry in list(spec["backbone"]) + list(spec["head"])]
        for layout, standard in STANDARD_YAML.items():
            if tuple(layers) == standard:
                return layout
        first_module = layers[0][2] if layers and isinstance(layers[0], tuple) and len(layers[0]) == 4 else None
        candidate = LAYOUT_V5 if first_module == "Focus" else LAYOUT_V6
        standard = STANDARD_YAML[candidate]
        advice = "this importer reads the standard yolov5n/s/m/l/x of YOLOv5 releases v5.0 to v7.0"
        older = any(isinstance(e, tuple) and len(e) == 4 and e[2] == "BottleneckCSP" for e in layers)
        era = " (BottleneckCSP layers: a YOLOv5 release before v4.0)" if older else ""
        if len(layers) != len(standard):
            raise self.fail(f"has {len(layers)} layers where YOLOv5's {candidate} layout has {len(standard)}{era}: "
                            f"the network is customised or from another release", advice)
        index = next(i for i, (got, want) in enumerate(zip(layers, standard)) if got != want)
        got = layers[index]
        got_text = _yaml_layer_text(got) if isinstance(got, tuple) and len(got) == 4 else repr(got)
        raise self.fail(f"layer {index} is {got_text} where YOLOv5's {candidate} layout has "
                        f"{_yaml_layer_text(standard[index])}{era}: the network is not the standard v5.0 or v6.0 "
                        f"layout", advice)

    def size(self, spec: dict) -> str:
        depth, width = spec.get("depth_multiple"), spec.get("width_multiple")
        for version, (d, w) in YOLOV5_VERSIONS.items():
            if isinstance(depth, (int, float)) and isinstance(width, (int, float)) and \
                    math.isclose(depth, d, abs_tol=1e-9) and math.isclose(width, w, abs_tol=1e-9):
                return version
        raise self.fail(f"has depth_multiple {depth} and width_multiple {width}, which are none of YOLOv5's sizes "
                        f"n/s/m/l/x", "this toolkit builds yolov5n/s/m/l/x only")

    def activations_and_norms(self, model) -> None:
        for path, record in _walk_modules(model):
            class_path = record.class_path
            if class_path.startswith("torch.nn.modules.activation.") and not class_path.endswith(".SiLU"):
                raise self.fail(f"uses {class_path.rsplit('.', 1)[-1]} activations ({path}); the YOLOv5 network "
                                f"here uses SiLU", "import a model trained with YOLOv5's default SiLU")
            if class_path.endswith("batchnorm.BatchNorm2d"):
                eps = record.attribute("eps")
                if not isinstance(eps, float) or not math.isclose(eps, BN_EPS, rel_tol=1e-6):
                    raise self.fail(f"has BatchNorm eps {eps} ({path}); YOLOv5 (and this network) use {BN_EPS}",
                                    "import a model built by YOLOv5's own code")

    def detect_layer(self, model):
        layers = _module_children(model).get("model")
        children = _module_children(layers)
        if not children:
            raise self.fail("the model has no layer list (model.model)", "it was not written by YOLOv5's own code")
        detect = list(children.values())[-1]
        if detect.class_path != DETECT_CLASS:
            if detect.class_path.endswith(".Segment"):
                raise self.fail("is a YOLOv5 segmentation checkpoint (Segment head)",
                                "import the detection checkpoint (yolov5s.pt, not yolov5s-seg.pt)")
            raise self.fail(f"its last layer is {detect.class_path}, not YOLOv5's Detect",
                            "pass a YOLOv5 detection checkpoint")
        return detect

    def class_names(self, model, num_classes: int) -> tuple:
        names = model.attribute("names")
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise self.fail(f"its class names are keyed {sorted(names)[:5]}..., not 0..{len(names) - 1}",
                                "fix the names in YOLOv5 before importing")
            names = [names[i] for i in range(len(names))]
        if names is None:
            return tuple(f"class{i}" for i in range(num_classes))
        if not isinstance(names, (list, tuple)) or len(names) != num_classes:
            count = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
            raise self.fail(f"has {count} class names for {num_classes} classes",
                            "fix the names in YOLOv5 (model.names) before importing")
        return tuple(str(name) for name in names)

    def anchors(self, detect, tensors: dict, spec: dict) -> np.ndarray:
        """The Detect layer's anchors in pixels (3, 3, 2) float32; consistent with its strides and anchor_grid."""
        key = f"model.{DETECT_LAYER}.anchors"
        if key not in tensors:
            raise self.fail("its Detect layer has no anchors buffer", "it was not written by YOLOv5's own code")
        grid_units = tensors[key].numpy().astype(np.float32)
        if grid_units.shape != (len(YOLOV5_STRIDES), NUM_ANCHORS, 2):
            raise self.fail(f"its anchors have shape {grid_units.shape}, not (3, 3, 2)",
                            "this toolkit builds YOLOv5's three anchors at each of three strides")
        stride = detect.attribute("stride")
        strides = stride.numpy().astype(np.float32).reshape(-1) if isinstance(stride, pt_reader.TensorRef) else None
        if strides is None or tuple(strides.tolist()) != tuple(float(s) for s in YOLOV5_STRIDES):
            raise self.fail(f"its Detect strides are {None if strides is None else strides.tolist()}, not 8, 16, 32",
                            "import a P5 YOLOv5 model")
        pixels = grid_units * strides[:, None, None]
        grid_key = f"model.{DETECT_LAYER}.anchor_grid"
        if grid_key in tensors:                      # v5.0 keeps the pixel anchors as a second buffer
            anchor_grid = tensors[grid_key].numpy().astype(np.float32).reshape(pixels.shape)
            if not np.allclose(anchor_grid, pixels, rtol=2e-3, atol=1e-3):
                raise self.fail("its anchors and anchor_grid disagree (the file is inconsistent)",
                                "re-save it with YOLOv5")
        if not (np.isfinite(pixels).all() and (pixels > 0).all()):
            raise self.fail("its anchors are not positive finite sizes", "the file is corrupt")
        return pixels.astype(np.float32)


def _network_name(torch_name: str, layout: str) -> str | None:
    """This project's parameter name for YOLOv5's state_dict entry ``torch_name`` (None when not a parameter)."""
    parts = torch_name.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit() or parts[-1] in SKIPPED_TENSORS:
        return None
    index = int(parts[1])
    cells = YOLOV5_LAYER_CELLS[layout]
    if index >= len(cells) or cells[index] is None:
        return "?" + torch_name
    rest = parts[2:]
    if index == DETECT_LAYER:
        if len(rest) != 3 or rest[0] != "m" or not rest[1].isdigit() or int(rest[1]) >= len(HEAD_CELLS):
            return "?" + torch_name
        return f"{HEAD_CELLS[int(rest[1])]}.{rest[2]}"
    if len(rest) >= 2 and rest[-2] == "bn" and rest[-1] in BN_RENAMES:
        rest = rest[:-1] + [BN_RENAMES[rest[-1]]]
    return ".".join([cells[index], *rest])


def map_state_dict(tensors: dict, layout: str) -> tuple[dict, list]:
    """(network name -> TensorRef, YOLOv5 names that map to no parameter of this network)."""
    mapped, unknown = {}, []
    for torch_name, tensor in tensors.items():
        name = _network_name(torch_name, layout)
        if name is None:
            continue
        if name.startswith("?"):
            unknown.append(torch_name)
        else:
            mapped[name] = tensor
    return mapped, unknown


def network_shapes(version: str, num_classes: int, layout: str) -> dict:
    """Parameter name -> shape of this project's network for (version, num_classes, layout)."""
    net = create_yolov5(version, num_classes, layout=layout)
    return {param.name: tuple(param.shape) for param in net.get_parameters()}


def read_yolov5_pt(path) -> ImportedYolov5:
    """Read and check a YOLOv5 ``.pt``; YOLOv5ImportError (a ValueError) naming the file and the fix otherwise."""
    path = Path(path)
    check = _Checker(path)
    try:
        with pt_reader.open_pt(path, INERT_MODULES) as archive:
            root = archive.root
            model, weights_kind = check.model_record(root)
            check.model_kind(model, archive.class_paths)
            spec = check.model_yaml(model)
            detect = check.detect_layer(model)
            check.not_p6(spec, detect)
            layout = check.layout(spec)
            version = check.size(spec)
            check.activations_and_norms(model)
            num_classes = spec.get("nc")
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise check.fail(f"its yaml has nc {num_classes!r}, not a positive class count", "re-save it with YOLOv5")
            detect_classes = detect.attribute("nc")
            if detect_classes is not None and detect_classes != num_classes:
                raise check.fail(f"its yaml says {num_classes} classes and its Detect layer {detect_classes}",
                                 "the file is inconsistent; re-save it with YOLOv5")
            class_names = check.class_names(model, num_classes)
            tensors = pt_reader.module_tensors(model)
            anchors = check.anchors(detect, tensors, spec)
            mapped, unknown = map_state_dict(tensors, layout)
            expected = network_shapes(version, num_classes, layout)
            _check_fit(check, mapped, unknown, expected, version, num_classes, layout)
            weights = {}
            dtypes = set()
            for name in expected:
                tensor = mapped[name]
                dtypes.add("bfloat16" if tensor.storage.dtype_code == "bf16" else str(tensor.dtype))
                values = tensor.numpy()
                if values.dtype.kind != "f":
                    raise check.fail(f"parameter {name} is stored as {values.dtype}, not floating point",
                                     "the file is corrupt")
                values = values.astype(np.float32)
                if not np.isfinite(values).all():
                    raise check.fail(f"parameter {name} holds NaN or infinite values", "the weights are broken")
                weights[name] = values
            epoch = root.get("epoch") if isinstance(root, dict) else None
    except pt_reader.PtReadError as error:
        raise YOLOv5ImportError(str(error)) from None
    return ImportedYolov5(path=path, layout=layout, version=version, num_classes=num_classes,
                          class_names=class_names, anchors=anchors, weights=weights, weights_kind=weights_kind,
                          model_class=model.class_path, epoch=epoch if isinstance(epoch, int) else None,
                          storage_dtypes=tuple(sorted(dtypes)))


def _check_fit(check: _Checker, mapped: dict, unknown: list, expected: dict, version: str, num_classes: int,
               layout: str) -> None:
    missing = [name for name in expected if name not in mapped]
    extra = sorted(set(mapped) - set(expected)) + unknown
    wrong = [name for name in expected if name in mapped and tuple(mapped[name].shape) != expected[name]]
    if missing or extra or wrong:
        example = (f"{wrong[0]} is {tuple(mapped[wrong[0]].shape)}, expected {expected[wrong[0]]}" if wrong else
                   f"{missing[0]} is missing" if missing else f"{extra[0]} has no place in the network")
        raise check.fail(f"its weights do not fit a {version} ({layout} layout, {num_classes} classes): {len(missing)} "
                         f"missing, {len(extra)} extra, {len(wrong)} with another shape (e.g. {example})",
                         "the network was customised; this importer reads the standard yolov5n/s/m/l/x")


def save_imported(imported: ImportedYolov5, output) -> Path:
    """Write ``imported`` as this project's ``.ckpt`` (weights + metadata), atomically."""
    entries = [{"name": name, "data": ms.Tensor(values)} for name, values in imported.weights.items()]
    return save_checkpoint_atomic(output, entries, imported.metadata())


def import_yolov5(source, output) -> tuple[ImportedYolov5, Path]:
    """Read, check and convert ``source`` (.pt) into ``output`` (.ckpt); nothing is written unless all checks pass."""
    source, output = Path(source), Path(output)
    if output.suffix != ".ckpt":
        raise YOLOv5ImportError(f"--output {output} must end with .ckpt (MindSpore's checkpoint suffix)")
    if output.exists() and output.resolve() == source.resolve():
        raise YOLOv5ImportError(f"--output {output} is the input file; choose another name")
    if output.is_dir():
        raise YOLOv5ImportError(f"--output {output} is a folder; name the .ckpt file to write")
    imported = read_yolov5_pt(source)
    return imported, save_imported(imported, output)
