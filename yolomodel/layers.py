"""The YOLOv5 building blocks: Conv-BN-SiLU, Focus and the 6x6 stem, Bottleneck, C3, SPP, SPPF, 2x upsample.

Each block mirrors the module of the same name in YOLOv5's ``models/common.py`` (v5.0 for Focus and
SPP, v6.0 for the 6x6 stem ``Conv(3, 64, 6, 2, 2)`` and SPPF), with the same attribute names, so the
parameter shapes, and therefore the parameter count, are the reference's. Convolution weights are left
at a cheap placeholder here: ``network.YOLOv5`` initialises every parameter from the keyed RNG by its
name, so the initial weights do not depend on MindSpore's global seed.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

# YOLOv5's initialize_weights(): BatchNorm2d eps=1e-3, momentum=0.03 in PyTorch's convention
# (new = (1 - m) * old + m * batch); MindSpore weights the old statistic instead: 1 - 0.03.
BN_EPS = 1e-3
BN_MOMENTUM = 0.97


class ConvBNSiLU(nn.Cell):
    """YOLOv5's ``Conv``: a bias-free k x k convolution (padding k // 2 unless given), BatchNorm, SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                              padding=padding, has_bias=False, weight_init="zeros")
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def construct(self, x):
        return silu(self.bn(self.conv(x)))


# SiLU's two kernels, recomputed in the backward pass (``Primitive.recompute``, graph mode) instead of kept
# from the forward one: the step then stores only each BatchNorm output, not also its sigmoid and the SiLU
# output beside it. For yolov5n at 320 px, batch 16 this lowers MindSpore's peak step memory from 846 MB to
# 534 MB and the resident set by about 450 MB, for about 1% more step time (benchmarks/train_memory.py
# --compare_silu); recomputing elementwise kernels on the same inputs gives the same bits, so the weights
# after a step are bitwise those of the stored version (tested).
_SILU_SIGMOID = ops.Sigmoid().recompute()
_SILU_MUL = ops.Mul().recompute()


def silu(x):
    """SiLU, x * sigmoid(x): the same values and gradients as ``nn.SiLU``, cheaper on MindSpore 2.8's CPU
    kernels (forward + backward of a (16, 32, 64, 64) activation: about 19 ms against 25 ms), and recomputed
    in a compiled backward pass rather than stored (see ``_SILU_SIGMOID``)."""
    return _SILU_MUL(x, _SILU_SIGMOID(x))


def images_to_focus_input(images):
    """uint8 (B, H, W, C) images -> float32 (B, 4C, H/2, W/2) in [0, 1]: YOLOv5's Focus space-to-depth.

    Channel block k holds the pixels (dy, dx) = (0, 0), (1, 0), (0, 1), (1, 1) for k = 0..3, YOLOv5's
    order (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]). The scaling to
    [0, 1] and the NHWC -> NCHW transpose happen in the same reshapes, so the pipeline can hand over its
    uint8 batch untouched.
    """
    _, height, width, channels = images.shape
    x = images.astype(ms.float32) / 255.0
    # (B, H, W, C) -> (B, H/2, dy, W/2, dx, C)
    # -1 for the batch: an exported ONNX graph then runs with any batch (``yolo-export --dynamic_batch``)
    x = x.reshape(-1, height // 2, 2, width // 2, 2, channels)
    # -> (B, dx, dy, C, H/2, W/2) -> (B, 4C, H/2, W/2): channel = (dx * 2 + dy) * C + c
    x = x.transpose(0, 4, 2, 5, 1, 3)
    return x.reshape(-1, 4 * channels, height // 2, width // 2)


class Focus(nn.Cell):
    """YOLOv5's ``Focus`` stem on the raw uint8 (B, H, W, 3) batch: images_to_focus_input, then k x k Conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = ConvBNSiLU(4 * in_channels, out_channels, kernel_size)

    def construct(self, images):
        return self.conv(images_to_focus_input(images))


def images_to_nchw_float(images):
    """uint8 (B, H, W, C) images -> float32 (B, C, H, W) in [0, 1] (YOLOv5's input: RGB / 255)."""
    return images.astype(ms.float32).transpose(0, 3, 1, 2) / 255.0


class ConvStem(ConvBNSiLU):
    """The v6.0 stem on the raw uint8 (B, H, W, 3) batch: /255 and NCHW, then YOLOv5's Conv(3, c, 6, 2, 2).

    A ``ConvBNSiLU`` itself, so its parameters are named like YOLOv5's ``model.0`` (``conv``, ``bn``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 6, stride: int = 2,
                 padding: int = 2):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding)

    def construct(self, images):
        return silu(self.bn(self.conv(images_to_nchw_float(images))))


class Bottleneck(nn.Cell):
    """YOLOv5's ``Bottleneck`` with expansion 1.0 as C3 uses it: 1x1 then 3x3, residual if asked."""

    def __init__(self, channels: int, shortcut: bool):
        super().__init__()
        self.cv1 = ConvBNSiLU(channels, channels, 1)
        self.cv2 = ConvBNSiLU(channels, channels, 3)
        self.shortcut = shortcut

    def construct(self, x):
        y = self.cv2(self.cv1(x))
        if self.shortcut:
            return x + y
        return y


class C3(nn.Cell):
    """YOLOv5's ``C3``: two 1x1 branches of out/2 channels, n Bottlenecks on one, concat, 1x1 to out."""

    def __init__(self, in_channels: int, out_channels: int, num_bottlenecks: int, shortcut: bool = True):
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, hidden, 1)
        self.cv2 = ConvBNSiLU(in_channels, hidden, 1)
        self.cv3 = ConvBNSiLU(2 * hidden, out_channels, 1)
        self.m = nn.SequentialCell([Bottleneck(hidden, shortcut) for _ in range(num_bottlenecks)])

    def construct(self, x):
        return self.cv3(ops.concat((self.m(self.cv1(x)), self.cv2(x)), axis=1))


class SPP(nn.Cell):
    """YOLOv5's ``SPP``: 1x1 to in/2 channels, max-pools (stride 1, same size) 5/9/13 concatenated, 1x1."""

    def __init__(self, in_channels: int, out_channels: int, pool_sizes=(5, 9, 13)):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, hidden, 1)
        self.cv2 = ConvBNSiLU(hidden * (len(pool_sizes) + 1), out_channels, 1)
        # stride 1 with 'same' padding pads by k // 2 on each side for odd k, as YOLOv5's padding=k//2
        self.pools = nn.CellList([nn.MaxPool2d(kernel_size=k, stride=1, pad_mode="same") for k in pool_sizes])
        self.chained = pools_chain(pool_sizes)

    def construct(self, x):
        x = self.cv1(x)
        pooled = (x,)
        if self.chained:
            # k-pool applied n times = the n(k-1)+1 pool (YOLOv5's SPPF identity), at a fraction of the
            # cost: MaxPoolGrad of the 9 and 13 windows dominated the step's pooling time
            y = x
            for _ in range(len(self.pools)):
                y = self.pools[0](y)
                pooled = pooled + (y,)
        else:
            for pool in self.pools:
                pooled = pooled + (pool(x),)
        return self.cv2(ops.concat(pooled, axis=1))


def pools_chain(pool_sizes) -> bool:
    """True when stride-1 max-pools of ``pool_sizes`` equal the first one applied 1, 2, 3... times.

    A k x k max over a k x k max covers 2k - 1 (the borders clip alike with 'same' padding), so (5, 9, 13)
    is 5, 5 twice, 5 three times.
    """
    first = pool_sizes[0]
    return first > 1 and all(size == (i + 1) * (first - 1) + 1 for i, size in enumerate(pool_sizes))
class SPPF(nn.Cell):
    """YOLOv5's ``SPPF`` (v6.0): 1x1 to in/2, three chained k x k max-pools (stride 1), concat all four, 1x1.

    Equal to SPP(k, 2k - 1, 3k - 2) in value (chained 5x5 pools are 9x9 and 13x13 pools), cheaper.
    """

    def __init__(self, in_channels: int, out_channels: int, pool_size: int = 5):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBNSiLU(in_channels, hidden, 1)
        self.cv2 = ConvBNSiLU(hidden * 4, out_channels, 1)
        self.pool = nn.MaxPool2d(kernel_size=pool_size, stride=1, pad_mode="same")

    def construct(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(ops.concat((x, y1, y2, self.pool(y2)), axis=1))


def upsample_nearest_2x(x):
    """Nearest-neighbour 2x upsampling of NCHW ``x`` (YOLOv5's nn.Upsample(None, 2, 'nearest')).

    Written as reshape + broadcast + reshape, which copies each pixel into its 2x2 block exactly as
    ResizeNearestNeighbor does; its backward is a sum over the block instead of MindSpore 2.8's slow
    ResizeNearestNeighborGrad (forward + backward at (16, 32, 16, 16): 5 ms against 14 ms on CPU).
    (``nn.Upsample(scale_factor=2)`` raises for 4-D input in MindSpore 2.8.) Exports to ONNX as
    Reshape, Expand, Reshape.
    """
    _, channels, height, width = x.shape
    # (B, C, H, W) -> (B, C, H, 1, W, 1) -> (B, C, H, 2, W, 2) -> (B, C, 2H, 2W)
    # -1 for the batch (kept by broadcast_to): an exported ONNX graph then runs with any batch
    blocks = ops.broadcast_to(x.reshape(-1, channels, height, 1, width, 1), (-1, channels, height, 2, width, 2))
    return blocks.reshape(-1, channels, 2 * height, 2 * width)
