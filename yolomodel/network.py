"""YOLOv5 for MindSpore, both network layouts: ``create_yolov5(version, num_classes, layout=...)``, ``InferenceNet``.

Two layouts (``YOLOV5_LAYOUTS``), named after the YOLOv5 release that introduced them; channels are
given before the width multiple, C3 repeats before the depth multiple:

* ``backbone`` of layout ``v5.0`` (YOLOv5 v5.0 ``models/yolov5*.yaml``; the reference's and the
  default for training from scratch): Focus(64, 3x3) -> Conv(128, 3, s2) -> C3(128) x3 -> Conv(256, s2)
  -> C3(256) x9 [P3] -> Conv(512, s2) -> C3(512) x9 [P4] -> Conv(1024, s2) -> SPP(1024; 5, 9, 13) ->
  C3(1024, no shortcut) x3 [P5].
* ``backbone`` of layout ``v6.0`` (releases v6.0, v6.1, v6.2 and v7.0, the layout of every published
  checkpoint since October 2021): Conv(64, 6x6, s2, padding 2) -> Conv(128, 3, s2) -> C3(128) x3 ->
  Conv(256, s2) -> C3(256) x6 [P3] -> Conv(512, s2) -> C3(512) x9 [P4] -> Conv(1024, s2) -> C3(1024) x3
  -> SPPF(1024, 5) [P5].
* ``neck`` (PAN, every C3 without shortcut): 1x1 Conv(512) on P5, upsample, concat P4, C3(512),
  1x1 Conv(256), upsample, concat P3, C3(256) [out P3]; Conv(256, s2), concat the 256 lateral, C3(512)
  [out P4]; Conv(512, s2), concat the 512 lateral, C3(1024) [out P5].
* ``head``: one 1x1 convolution with bias per stride 8 / 16 / 32, 3 * (5 + C) channels.

Neck and head are the same in both layouts. ``YOLOV5_LAYER_CELLS`` maps YOLOv5's layer indices
(``model.0`` .. ``model.24`` of its ``state_dict``, the numbers its ``--freeze`` counts) to these cells.
The anchors (pixels, one row of three per stride) are YOLOv5's defaults unless given (an imported
checkpoint carries its own, e.g. after YOLOv5's AutoAnchor).

The network takes the pipeline's uint8 (B, H, W, 3) RGB batch (H, W multiples of 32) and normalises it
itself. ``YOLOv5.construct`` returns the three raw head outputs, each float32 (B, 3 * H_s * W_s, 5 + C)
with row a * H_s * W_s + gy * W_s + gx: the rows that ``yolodata.pipeline.targets``' ``target_indices_s{s}``
index. ``InferenceNet`` adds YOLOv5's decode (boxes in input pixels, sigmoid scores).

Initial weights are a pure function of ``seed`` and each parameter's name (``yolodata.rng.keyed_rng``),
so every rank of a distributed run starts from the same weights without a global seed.
"""
from __future__ import annotations

import math
import zlib

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from yolodata.checks import INPUT_MULTIPLE
from yolodata.rng import keyed_rng
from yolodata.pipeline.targets import STRIDES, YOLOV5_ANCHORS

from .layers import C3, SPP, SPPF, ConvBNSiLU, ConvStem, Focus, upsample_nearest_2x

# version -> (depth_multiple, width_multiple), as in YOLOv5's models/yolov5{n,s,m,l,x}.yaml
YOLOV5_VERSIONS = {
    "yolov5n": (0.33, 0.25),
    "yolov5s": (0.33, 0.50),
    "yolov5m": (0.67, 0.75),
    "yolov5l": (1.0, 1.0),
    "yolov5x": (1.33, 1.25),
}
NUM_ANCHORS = 3
# network layouts, named after the YOLOv5 release that introduced them; v5.0 is the reference's
LAYOUT_V5 = "v5.0"
LAYOUT_V6 = "v6.0"
YOLOV5_LAYOUTS = (LAYOUT_V5, LAYOUT_V6)
DEFAULT_LAYOUT = LAYOUT_V5
# what users may type: the release their weights come from (v6.1, v6.2 and v7.0 use the v6.0 layout)
LAYOUT_ALIASES = {"v5.0": LAYOUT_V5, "v5": LAYOUT_V5, "5.0": LAYOUT_V5, "5": LAYOUT_V5,
                  **{name: LAYOUT_V6 for name in ("v6.0", "v6", "6.0", "6", "v6.1", "6.1", "v6.2", "6.2",
                                                  "v7.0", "v7", "7.0", "7")}}
# YOLOv5's layer index (model.<i> in its state_dict) -> the cell of this network holding that layer;
# None for the layers without parameters (Upsample, Concat). Index 24 is Detect (all three heads).
_NECK_CELLS = ("neck.lateral5", None, None, "neck.top_down4", "neck.lateral4", None, None, "neck.top_down3",
               "neck.down3", None, "neck.bottom_up4", "neck.down4", None, "neck.bottom_up5", "head")
YOLOV5_LAYER_CELLS = {
    LAYOUT_V5: ("backbone.stem", "backbone.down2", "backbone.c3_2", "backbone.down3", "backbone.c3_3",
                "backbone.down4", "backbone.c3_4", "backbone.down5", "backbone.spp", "backbone.c3_5") + _NECK_CELLS,
    LAYOUT_V6: ("backbone.stem", "backbone.down2", "backbone.c3_2", "backbone.down3", "backbone.c3_3",
                "backbone.down4", "backbone.c3_4", "backbone.down5", "backbone.c3_5", "backbone.sppf") + _NECK_CELLS,
}
NUM_BACKBONE_LAYERS = 10            # YOLOv5's --freeze 10 freezes exactly the backbone
PRIOR_IMAGE_SIZE = 640              # YOLOv5's _initialize_biases assumes 640 px images
BASE_CHANNELS = (64, 128, 256, 512, 1024)


def make_divisible(value: float, divisor: int = 8) -> int:
    """YOLOv5's channel rounding: the smallest multiple of ``divisor`` that is >= ``value``."""
    return int(math.ceil(value / divisor) * divisor)


def scaled_depth(repeats: int, depth_multiple: float) -> int:
    """YOLOv5's repeat rounding (parse_model): max(round(n * gd), 1) for n > 1, n itself otherwise."""
    return max(round(repeats * depth_multiple), 1) if repeats > 1 else repeats


def normalize_layout(layout) -> str:
    """``layout`` as one of YOLOV5_LAYOUTS (release names such as 'v7.0' accepted), or ValueError saying what to pass."""
    key = str(layout).strip().lower() if isinstance(layout, (str, float, int)) and not isinstance(layout, bool) else None
    if key is not None and key.startswith("yolov5"):
        key = key[len("yolov5"):].lstrip("-_ ")
    if key not in LAYOUT_ALIASES:
        raise ValueError(f"the YOLOv5 network layout must be v5.0 (Focus stem, SPP; YOLOv5 releases up to v5.0) or "
                         f"v6.0 (6x6 stem conv, SPPF; releases v6.0 to v7.0); got {layout!r}")
    return LAYOUT_ALIASES[key]


def validate_anchors(anchors) -> np.ndarray:
    """float32 (3 strides, 3 anchors, 2) anchor sizes in pixels, or ValueError saying what is wrong."""
    values = np.asarray(anchors, np.float64)
    if values.shape != (len(STRIDES), NUM_ANCHORS, 2):
        raise ValueError(f"anchors must be (width, height) pixel sizes shaped ({len(STRIDES)}, {NUM_ANCHORS}, 2), "
                         f"one row of {NUM_ANCHORS} per stride {tuple(int(s) for s in STRIDES)}; got shape {values.shape}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError("anchors must be positive finite sizes in pixels")
    return values.astype(np.float32)


def validate_model_args(version, num_classes) -> tuple[str, int]:
    """Check ``version`` and ``num_classes``; return them normalised, or raise ValueError saying what to fix."""
    if not isinstance(version, str) or version.lower() not in YOLOV5_VERSIONS:
        raise ValueError(f"version must be one of {sorted(YOLOV5_VERSIONS)}; got {version!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (80 for COCO); got {num_classes!r}")
    return version.lower(), int(num_classes)


def conv_init_bound(shape) -> float:
    """Bound of PyTorch's default Conv2d init (kaiming_uniform with a=sqrt(5), and the bias rule): 1/sqrt(fan_in).

    ``shape`` is the weight's (out, in, kh, kw); the bias of that convolution uses the same bound.
    """
    fan_in = int(np.prod(shape[1:]))
    return 1.0 / math.sqrt(fan_in)


def uniform_init(seed: int, name: str, shape, bound: float) -> np.ndarray:
    """float32 values uniform in [-bound, bound), drawn from the keyed RNG of (seed, parameter name)."""
    rng = keyed_rng(seed, zlib.crc32(name.encode("utf-8")), purpose="weight_init")
    # float32 draws in [0, 1) scaled in place: about 3x faster than uniform() in float64 for yolov5x
    values = rng.random(tuple(shape), dtype=np.float32)
    values *= np.float32(2.0 * bound)
    values -= np.float32(bound)
    return values


def detection_bias_prior(num_classes: int, stride: int, num_anchors: int = NUM_ANCHORS,
                         image_size: int = PRIOR_IMAGE_SIZE) -> np.ndarray:
    """YOLOv5's _initialize_biases offsets for one detection conv: float32 (num_anchors * (5 + C),).

    Per anchor block of 5 + C: objectness += log(8 / (image_size / stride)^2) (about 8 objects per
    image), each class += log(0.6 / (C - 0.99)); the box channels get 0.
    """
    offsets = np.zeros((num_anchors, 5 + num_classes), np.float64)
    offsets[:, 4] = math.log(8.0 / (image_size / stride) ** 2)
    offsets[:, 5:] = math.log(0.6 / (num_classes - 0.99))
    return offsets.reshape(-1).astype(np.float32)


def flatten_head_output(x, num_anchors: int):
    """Head conv output (B, A * (5 + C), H, W) -> (B, A * H * W, 5 + C), row a * H * W + gy * W + gx."""
    _, channels, height, width = x.shape
    outputs = channels // num_anchors
    # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W) -> (B, A, H, W, 5+C) -> (B, A*H*W, 5+C)
    # -1 for the batch: an exported ONNX graph then runs with any batch (``yolo-export --dynamic_batch``)
    x = x.reshape(-1, num_anchors, outputs, height, width).transpose(0, 1, 3, 4, 2)
    return x.reshape(-1, num_anchors * height * width, outputs)


def decode_head_output(raw, anchors, stride: int, height: int, width: int):
    """YOLOv5 (v5.0) decode of one raw head output (B, A * H * W, 5 + C) -> same shape, decoded.

    ``anchors``: float32 Tensor (A, 2) in input pixels; ``height``, ``width``: the grid size H_s, W_s.
    Columns out: cx, cy = (2 * sigmoid - 0.5 + cell) * stride, w, h = (2 * sigmoid)^2 * anchor (input
    pixels), then sigmoid(objectness) and sigmoid(class logits). The grid is built from the shape so
    one network serves every input size.
    """
    _, rows, outputs = raw.shape
    num_anchors = anchors.shape[0]
    # (B, A*H*W, 5+C) -> (B, A, H, W, 5+C)
    probs = ops.sigmoid(raw).reshape(-1, num_anchors, height, width, outputs)
    grid_y, grid_x = ops.meshgrid(ops.arange(height, dtype=ms.float32), ops.arange(width, dtype=ms.float32),
                                  indexing="ij")
    # (H, W) twice -> (1, 1, H, W, 2) holding (gx, gy)
    grid = ops.stack((grid_x, grid_y), axis=-1).reshape(1, 1, height, width, 2)
    xy = (probs[..., 0:2] * 2.0 - 0.5 + grid) * float(stride)
    scaled = probs[..., 2:4] * 2.0
    wh = scaled * scaled * anchors.reshape(1, num_anchors, 1, 1, 2)
    decoded = ops.concat((xy, wh, probs[..., 4:]), axis=-1)
    return decoded.reshape(-1, rows, outputs)


class Backbone(nn.Cell):
    """The v5.0 backbone, Focus stem to SPP + C3: returns the P3, P4, P5 feature maps (strides 8, 16, 32)."""

    def __init__(self, widths, depth_multiple: float):
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        n3, n9 = scaled_depth(3, depth_multiple), scaled_depth(9, depth_multiple)
        self.stem = Focus(3, c1, 3)
        self.down2 = ConvBNSiLU(c1, c2, 3, 2)
        self.c3_2 = C3(c2, c2, n3)
        self.down3 = ConvBNSiLU(c2, c3, 3, 2)
        self.c3_3 = C3(c3, c3, n9)
        self.down4 = ConvBNSiLU(c3, c4, 3, 2)
        self.c3_4 = C3(c4, c4, n9)
        self.down5 = ConvBNSiLU(c4, c5, 3, 2)
        self.spp = SPP(c5, c5, (5, 9, 13))
        self.c3_5 = C3(c5, c5, n3, shortcut=False)

    def construct(self, images):
        x = self.c3_2(self.down2(self.stem(images)))
        p3 = self.c3_3(self.down3(x))
        p4 = self.c3_4(self.down4(p3))
        p5 = self.c3_5(self.spp(self.down5(p4)))
        return p3, p4, p5


class BackboneV6(nn.Cell):
    """The v6.0 backbone, 6x6 stem conv to C3 + SPPF: returns the P3, P4, P5 feature maps (strides 8, 16, 32)."""

    def __init__(self, widths, depth_multiple: float):
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        n3, n6, n9 = (scaled_depth(n, depth_multiple) for n in (3, 6, 9))
        self.stem = ConvStem(3, c1, 6, 2, 2)
        self.down2 = ConvBNSiLU(c1, c2, 3, 2)
        self.c3_2 = C3(c2, c2, n3)
        self.down3 = ConvBNSiLU(c2, c3, 3, 2)
        self.c3_3 = C3(c3, c3, n6)
        self.down4 = ConvBNSiLU(c3, c4, 3, 2)
        self.c3_4 = C3(c4, c4, n9)
        self.down5 = ConvBNSiLU(c4, c5, 3, 2)
        self.c3_5 = C3(c5, c5, n3)
        self.sppf = SPPF(c5, c5, 5)

    def construct(self, images):
        x = self.c3_2(self.down2(self.stem(images)))
        p3 = self.c3_3(self.down3(x))
        p4 = self.c3_4(self.down4(p3))
        p5 = self.sppf(self.c3_5(self.down5(p4)))
        return p3, p4, p5


class Neck(nn.Cell):
    """YOLOv5's PAN: top-down (lateral 1x1, upsample, concat, C3) then bottom-up (3x3 s2, concat, C3)."""

    def __init__(self, widths, depth_multiple: float):
        super().__init__()
        _, _, c3, c4, c5 = widths
        n3 = scaled_depth(3, depth_multiple)
        self.lateral5 = ConvBNSiLU(c5, c4, 1)
        self.top_down4 = C3(2 * c4, c4, n3, shortcut=False)
        self.lateral4 = ConvBNSiLU(c4, c3, 1)
        self.top_down3 = C3(2 * c3, c3, n3, shortcut=False)
        self.down3 = ConvBNSiLU(c3, c3, 3, 2)
        self.bottom_up4 = C3(2 * c3, c4, n3, shortcut=False)
        self.down4 = ConvBNSiLU(c4, c4, 3, 2)
        self.bottom_up5 = C3(2 * c4, c5, n3, shortcut=False)

    def construct(self, p3, p4, p5):
        lateral5 = self.lateral5(p5)
        x = self.top_down4(ops.concat((upsample_nearest_2x(lateral5), p4), axis=1))
        lateral4 = self.lateral4(x)
        out3 = self.top_down3(ops.concat((upsample_nearest_2x(lateral4), p3), axis=1))
        out4 = self.bottom_up4(ops.concat((self.down3(out3), lateral4), axis=1))
        out5 = self.bottom_up5(ops.concat((self.down4(out4), lateral5), axis=1))
        return out3, out4, out5


class DetectionHead(nn.Cell):
    """YOLOv5's Detect convolutions: a 1x1 conv with bias per stride, outputs flattened per anchor row."""

    def __init__(self, in_channels, num_classes: int, num_anchors: int = NUM_ANCHORS):
        super().__init__()
        outputs = num_anchors * (5 + num_classes)
        self.num_anchors = num_anchors
        self.detect_s8 = nn.Conv2d(in_channels[0], outputs, 1, has_bias=True, weight_init="zeros", bias_init="zeros")
        self.detect_s16 = nn.Conv2d(in_channels[1], outputs, 1, has_bias=True, weight_init="zeros", bias_init="zeros")
        self.detect_s32 = nn.Conv2d(in_channels[2], outputs, 1, has_bias=True, weight_init="zeros", bias_init="zeros")

    def construct(self, out3, out4, out5):
        return (flatten_head_output(self.detect_s8(out3), self.num_anchors),
                flatten_head_output(self.detect_s16(out4), self.num_anchors),
                flatten_head_output(self.detect_s32(out5), self.num_anchors))


class YOLOv5(nn.Cell):
    """YOLOv5 network; ``construct(images)`` -> three raw float32 (B, 3 * H_s * W_s, 5 + C) outputs.

    ``images``: uint8 (B, H, W, 3) RGB, H and W multiples of 32. Attributes used by the loss, decode and
    tools: ``version``, ``layout`` (one of YOLOV5_LAYOUTS), ``num_classes``, ``strides`` (8, 16, 32),
    ``anchors`` (float32 numpy (3, 3, 2), input pixels), ``num_anchors``.
    """

    def __init__(self, version: str, num_classes: int, *, seed: int = 0, layout: str = DEFAULT_LAYOUT,
                 anchors=None):
        super().__init__()
        version, num_classes = validate_model_args(version, num_classes)
        layout = normalize_layout(layout)
        depth_multiple, width_multiple = YOLOV5_VERSIONS[version]
        widths = tuple(make_divisible(c * width_multiple, 8) for c in BASE_CHANNELS)
        self.version = version
        self.layout = layout
        self.num_classes = num_classes
        self.num_anchors = NUM_ANCHORS
        self.strides = tuple(int(s) for s in STRIDES)
        self.anchors = validate_anchors(YOLOV5_ANCHORS if anchors is None else anchors)
        self.backbone = (Backbone if layout == LAYOUT_V5 else BackboneV6)(widths, depth_multiple)
        self.neck = Neck(widths, depth_multiple)
        self.head = DetectionHead(widths[2:], num_classes, NUM_ANCHORS)
        self.initialise_parameters(seed)

    def initialise_parameters(self, seed: int) -> None:
        """YOLOv5's initialisation, drawn from ``keyed_rng(seed, name)``: identical for equal seeds.

        Conv weights (and head biases) uniform in +-1/sqrt(fan_in), PyTorch's default that YOLOv5
        keeps; BatchNorm gamma 1, beta 0 (the cells' defaults); head biases plus the objectness and
        class priors of ``detection_bias_prior``.
        """
        head_strides = {"head.detect_s8": 8, "head.detect_s16": 16, "head.detect_s32": 32}
        weight_shapes = {name[:-len(".weight")]: param.shape for name, param in self.parameters_and_names()
                         if name.endswith(".weight") and len(param.shape) == 4}
        for name, param in self.parameters_and_names():
            if name.endswith(".weight") and len(param.shape) == 4:
                values = uniform_init(seed, name, param.shape, conv_init_bound(param.shape))
            elif name.endswith(".bias"):
                prefix = name[:-len(".bias")]
                values = uniform_init(seed, name, param.shape, conv_init_bound(weight_shapes[prefix]))
                if prefix in head_strides:
                    values = values + detection_bias_prior(self.num_classes, head_strides[prefix], self.num_anchors)
            else:
                continue
            param.set_data(Tensor(values))

    def construct(self, images):
        if len(images.shape) != 4 or images.shape[3] != 3:
            raise ValueError("YOLOv5 expects images shaped (B, H, W, 3) RGB, as the yolodata pipeline gives")
        if images.dtype != ms.uint8:
            raise ValueError("YOLOv5 expects uint8 images (0..255); pass the pipeline's batch unnormalised")
        if images.shape[1] % INPUT_MULTIPLE != 0 or images.shape[2] % INPUT_MULTIPLE != 0:
            raise ValueError("YOLOv5 input height and width must be multiples of 32; resize or letterbox")
        p3, p4, p5 = self.backbone(images)
        out3, out4, out5 = self.neck(p3, p4, p5)
        return self.head(out3, out4, out5)


class InferenceNet(nn.Cell):
    """Wraps a YOLOv5 for inference and export: uint8 (B, H, W, 3) -> float32 (B, sum_s 3*H_s*W_s, 5 + C).

    Rows are the strides 8, 16, 32 in order, each in the head's row order; columns cx, cy, w, h (input
    pixels), objectness probability, class probabilities. Puts the network in inference mode
    (BatchNorm uses its moving statistics). Parameter names stay the wrapped network's.
    """

    def __init__(self, net: YOLOv5):
        super().__init__(auto_prefix=False)
        self.net = net
        self.strides = tuple(int(s) for s in net.strides)
        self.anchors = Tensor(np.asarray(net.anchors, np.float32))
        self.set_train(False)

    def construct(self, images):
        height, width = images.shape[1], images.shape[2]
        raw = self.net(images)
        decoded = ()
        for level in range(len(self.strides)):
            stride = self.strides[level]
            decoded = decoded + (decode_head_output(raw[level], self.anchors[level], stride,
                                                    height // stride, width // stride),)
        return ops.concat(decoded, axis=1)


def create_yolov5(version: str, num_classes: int, *, seed: int = 0, layout: str = DEFAULT_LAYOUT,
                  anchors=None) -> YOLOv5:
    """A YOLOv5 network: ``version`` in YOLOV5_VERSIONS, ``num_classes`` >= 1, ``layout`` in YOLOV5_LAYOUTS.

    ``seed`` fixes the initial weights (see ``YOLOv5.initialise_parameters``); ``anchors`` (pixels,
    (3, 3, 2)) default to YOLOv5's.
    """
    return YOLOv5(version, num_classes, seed=seed, layout=layout, anchors=anchors)


def layer_parameter_prefixes(layout: str, layer_indices) -> tuple[str, ...]:
    """The parameter-name prefixes (``backbone.stem.`` ...) of YOLOv5's layers ``layer_indices`` in ``layout``.

    Layers without parameters (Upsample, Concat) contribute nothing; an index outside 0..24 is a ValueError.
    """
    cells = YOLOV5_LAYER_CELLS[normalize_layout(layout)]
    prefixes = []
    for index in layer_indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(cells):
            raise ValueError(f"YOLOv5 layer indices run from 0 to {len(cells) - 1} (0-9 backbone, 10-23 neck, 24 "
                             f"Detect); got {index!r}")
        if cells[index] is not None:
            prefixes.append(cells[index] + ".")
    return tuple(prefixes)
