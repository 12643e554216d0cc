"""One callable for every way to run the detector: a checkpoint, an exported ONNX file, an exported MINDIR file.

``open_runtime(path)`` picks by suffix: ``.onnx`` runs in onnxruntime, ``.mindir`` in MindSpore's graph
loader (``mindspore.load`` + ``nn.GraphCell``), anything else is a checkpoint (``.ckpt`` or a YOLOv5
``.pt``) loaded into ``InferenceNet``. Each runtime is called the same way, ``runtime(images)``: uint8
(B, S, S, 3) RGB letterboxed -> float32 (B, N, 5 + C) decoded predictions, so the pre- and
post-processing around it (``yolomodel.infer.Detector``) is one and the same for the three.

An exported file is described by its sidecar (``yolomodel.sidecar``): class names, model size, input
side and batch come from there, and are checked against the graph itself (its input and output
shapes) and against what the user passed (``--yolov5_version``, ``--num_classes``,
``--testing_shape``); a disagreement is an ``ExportedModelError`` that names both values.
A graph exported for a fixed batch larger than the call's is fed zero pictures for the missing rows.
"""
from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np

from .checkpoint.loading import LoadedModel, load_inference_net, network_predictor
from .sidecar import DYNAMIC, ExportedModelError, read_sidecar

ONNX_SUFFIX = ".onnx"
MINDIR_SUFFIX = ".mindir"


class Runtime:
    """What every runtime offers besides ``__call__``: the model it runs and how to describe it.

    ``testing_shape``: the input side the model needs, None when any multiple of 32 works;
    ``batch_size``: the fixed batch of the graph, None when any.
    """

    kind = "checkpoint"
    path: Path
    version: str
    layout: str
    num_classes: int
    class_names: tuple | None = None
    testing_shape: int | None = None
    batch_size: int | None = None
    weights: str = "model"

    def describe(self) -> str:
        raise NotImplementedError

    def model_info(self) -> dict:
        """The ``model`` entry of ``detections.json``."""
        return {"file": str(self.path), "runtime": self.kind, "yolov5_version": self.version,
                "yolov5_layout": self.layout, "num_classes": self.num_classes, "weights": self.weights}


class CheckpointRuntime(Runtime):
    """A checkpoint (or YOLOv5 ``.pt``) in ``InferenceNet``; any input side."""

    kind = "checkpoint"

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.predict = network_predictor(loaded.network)
        self.path, self.version, self.layout = loaded.checkpoint, loaded.version, loaded.layout
        self.num_classes, self.class_names, self.weights = loaded.num_classes, loaded.class_names, loaded.weights

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)

    def describe(self) -> str:
        return self.loaded.describe()


class ExportedRuntime(Runtime):
    """The part ONNX and MINDIR share: the sidecar's description and the fixed-batch padding."""

    file_format = ""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sidecar = read_sidecar(self.path, file_format=self.file_format)
        self.version = self.sidecar["yolov5_version"]
        self.layout = self.sidecar["yolov5_layout"]
        self.num_classes = int(self.sidecar["num_classes"])
        names = self.sidecar.get("class_names")
        self.class_names = tuple(names) if names and len(names) == self.num_classes else None
        self.testing_shape = int(self.sidecar["testing_shape"])
        self.batch_size = None if self.sidecar["batch_size"] == DYNAMIC else int(self.sidecar["batch_size"])
        self.weights = self.sidecar.get("weights", "model")

    def run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, np.uint8)
        count = images.shape[0]
        if self.batch_size is None or count == self.batch_size:
            return self.run(images)
        outputs = []
        for start in range(0, count, self.batch_size):
            chunk = images[start:start + self.batch_size]
            padded = np.zeros((self.batch_size,) + images.shape[1:], np.uint8)
            padded[:len(chunk)] = chunk
            outputs.append(self.run(padded)[:len(chunk)])
        return np.concatenate(outputs, axis=0)

    def describe(self) -> str:
        batch = "any batch" if self.batch_size is None else f"batch {self.batch_size}"
        return (f"{self.version}, {self.num_classes} classes, {self.file_format} {self.path} "
                f"({self.layout} layout, input {self.testing_shape}, {batch}, {self.weights} weights)")

    def model_info(self) -> dict:
        return {**super().model_info(), "testing_shape": self.testing_shape,
                "batch_size": self.sidecar["batch_size"], "exported_from": self.sidecar.get("checkpoint")}

    def check_graph_shapes(self, input_shape, output_shape) -> None:
        """ExportedModelError when the graph's own shapes disagree with its sidecar."""
        side, outputs = self.testing_shape, 5 + self.num_classes
        fixed_batch = self.batch_size
        expected_input = [fixed_batch, side, side, 3]
        got_input = [d if isinstance(d, int) else None for d in input_shape]
        if got_input[1:] != expected_input[1:] or (fixed_batch is not None and got_input[0] != fixed_batch):
            raise ExportedModelError(f"{self.path} takes input {list(input_shape)} but its sidecar says "
                                     f"{expected_input} (None: any batch): the sidecar belongs to another export")
        if output_shape and isinstance(output_shape[-1], int) and output_shape[-1] != outputs:
            raise ExportedModelError(f"{self.path} gives {output_shape[-1] - 5} class scores but its sidecar says "
                                     f"{self.num_classes} classes: the sidecar belongs to another export")


class OnnxRuntime(ExportedRuntime):
    """An exported ``.onnx`` run by onnxruntime on the CPU."""

    kind = "onnx"
    file_format = "ONNX"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            import onnxruntime  # the ``export`` extra (pip install .[export]); only this runtime needs it
        except ImportError as error:
            raise ExportedModelError(f"running {self.path} needs onnxruntime: pip install 'onnxruntime<1.21' (the "
                                     f"project's export extra)") from error
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a broken file
            raise ExportedModelError(f"onnxruntime cannot load {self.path}: {error}") from error
        [model_input], outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name, self.output_name = model_input.name, outputs[0].name
        self.check_graph_shapes(model_input.shape, outputs[0].shape)

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: images})[0]


class MindirRuntime(ExportedRuntime):
    """An exported ``.mindir`` run by MindSpore's graph loader."""

    kind = "mindir"
    file_format = "MINDIR"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self.graph = ms.nn.GraphCell(ms.load(str(self.path)))
        except (RuntimeError, ValueError, OSError) as error:
            raise ExportedModelError(f"MindSpore cannot load {self.path}: {error}") from error

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.graph(ms.Tensor(images)).asnumpy()


def check_request(runtime: Runtime, *, version=None, num_classes=None, testing_shape=None) -> None:
    """ExportedModelError when what the user passed disagrees with what the exported file holds."""
    if version is not None and str(version).lower() != runtime.version:
        raise ExportedModelError(f"--yolov5_version {version} but {runtime.path} holds a {runtime.version} (from "
                                 f"its sidecar): it was exported from another model size; drop the flag or pass "
                                 f"the {version} export")
    if num_classes is not None and int(num_classes) != runtime.num_classes:
        raise ExportedModelError(f"--num_classes {num_classes} but {runtime.path} detects {runtime.num_classes} "
                                 f"classes; drop the flag or pass the export of the model you mean")
    if testing_shape is not None and runtime.testing_shape is not None and int(testing_shape) != runtime.testing_shape:
        raise ExportedModelError(f"--testing_shape {testing_shape} but {runtime.path} was exported for "
                                 f"{runtime.testing_shape}x{runtime.testing_shape} input; drop the flag or export "
                                 f"again with --testing_shape {testing_shape}")


def open_runtime(path, *, version=None, num_classes=None, testing_shape=None) -> Runtime:
    """The runtime for ``path`` by its suffix (.onnx, .mindir, else a checkpoint), checked against the flags."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (ONNX_SUFFIX, MINDIR_SUFFIX):
        if not path.is_file():
            raise ExportedModelError(f"exported model {path} does not exist")
        runtime = OnnxRuntime(path) if suffix == ONNX_SUFFIX else MindirRuntime(path)
        check_request(runtime, version=version, num_classes=num_classes, testing_shape=testing_shape)
        return runtime
    return CheckpointRuntime(load_inference_net(path, version=version, num_classes=num_classes))
