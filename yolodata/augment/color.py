"""Colour augmentation: YOLOv5's HSV jitter, and the BGR -> RGB step the pipeline ends with.

Sampling and applying are separate: ``sample_hsv`` turns a Generator into three gains, ``apply_hsv``
applies given gains to pixels. The same gains always give the same pixels.

The jitter follows YOLOv5 (``augment_hsv``): each gain is ``uniform(-1, 1) * gain_limit + 1``; the
image goes to 8-bit OpenCV HSV (hue 0..179), every channel goes through a lookup table (hue is
multiplied and wraps modulo 180, saturation and value are multiplied and clipped to 255), and the
result goes back to BGR, or straight to RGB when the caller wants RGB next (one conversion saved).
"""
from __future__ import annotations

import cv2
import numpy as np

# OpenCV's 8-bit HSV stores hue in 0..179 (degrees / 2).
HUE_PERIOD = 180


def sample_hsv(rng: np.random.Generator, hgain: float = 0.015, sgain: float = 0.7,
               vgain: float = 0.4) -> np.ndarray:
    """Random multiplicative gains for hue, saturation and value: float32 (3,).

    Each gain is uniform in [1 - limit, 1 + limit]. Three uniforms are always drawn, also for zero
    limits, so that the Generator's later draws do not depend on the hyper-parameters' values.
    """
    limits = np.array([hgain, sgain, vgain], np.float64)
    if not np.all(np.isfinite(limits)) or np.any(limits < 0):
        raise ValueError(f"hgain, sgain and vgain must be finite and >= 0, got {limits.tolist()}")
    gains = rng.uniform(-1.0, 1.0, 3) * limits + 1.0
    return gains.astype(np.float32)


def hsv_lookup_table(gains) -> np.ndarray:
    """Per-channel lookup table uint8 (256, 1, 3) for 8-bit HSV pixels (``cv2.LUT`` layout).

    Column 0 maps hue (multiplied, wraps modulo 180), column 1 saturation and column 2 value
    (multiplied, clipped to 0..255). Values are truncated toward zero like YOLOv5's ``astype``.
    """
    hue_gain, sat_gain, val_gain = (float(g) for g in np.asarray(gains, np.float64).reshape(3))
    levels = np.arange(256, dtype=np.float64)
    table = np.empty((256, 1, 3), np.uint8)
    table[:, 0, 0] = np.mod(levels * hue_gain, HUE_PERIOD).astype(np.uint8)
    table[:, 0, 1] = np.clip(levels * sat_gain, 0, 255).astype(np.uint8)
    table[:, 0, 2] = np.clip(levels * val_gain, 0, 255).astype(np.uint8)
    return table


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got dtype {image.dtype} and shape "
                         f"{image.shape}; decode with cv2.IMREAD_COLOR")
    return image


def _check_gains(gains) -> np.ndarray:
    gains = np.asarray(gains, np.float64)
    if gains.shape != (3,) or not np.all(np.isfinite(gains)) or np.any(gains < 0):
        raise ValueError(f"gains must be three finite non-negative numbers (hue, saturation, value), "
                         f"got {np.asarray(gains).tolist()}; use sample_hsv to make them")
    return gains


def _check_out(out, image: np.ndarray) -> np.ndarray:
    """``out`` must be a uint8 array of ``image``'s shape that does not overlap it."""
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape):
        raise ValueError(f"out must be a uint8 array of the image's shape {image.shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if np.shares_memory(out, image):
        raise ValueError("out must not overlap the input image; the input is never modified")
    return out


def _written(result: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` holding ``result`` (OpenCV writes into a given ``dst`` unless it cannot use it)."""
    if result is not out and not np.shares_memory(result, out):
        out[:] = result
    return out


def bgr_to_rgb(image: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """New contiguous uint8 RGB image from a BGR one (the pipeline's last pixel step without HSV).

    With ``out`` (a uint8 array of the image's shape, e.g. one slot of a batch array), the result is
    written there and ``out`` is returned; no new array is made.
    """
    image = _check_image(image)
    if out is None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return _written(cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=_check_out(out, image)), out)


def _hsv_into(image_bgr: np.ndarray, table: np.ndarray, to_rgb: bool, out: np.ndarray) -> None:
    """The jitter of ``image_bgr`` through ``table`` written into ``out`` (same shape, no overlap)."""
    # One buffer for the three steps: the LUT and the back conversion are per pixel, so they run in
    # place (fresh buffers would cost page faults). cv2.LUT with a 3-channel table maps each channel
    # through its own column: no split/merge.
    _written(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV, dst=out), out)
    _written(cv2.LUT(out, table, dst=out), out)
    _written(cv2.cvtColor(out, cv2.COLOR_HSV2RGB if to_rgb else cv2.COLOR_HSV2BGR, dst=out), out)


def apply_hsv(image_bgr: np.ndarray, gains, *, to_rgb: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """New uint8 image with the HSV ``gains`` applied; BGR out, or RGB when ``to_rgb`` is true.

    Gains of exactly (1, 1, 1) return the input pixels unchanged (no 8-bit HSV round trip, which is
    lossy: YOLOv5 likewise skips the step when all its gain limits are zero). The input is never
    modified. With ``out`` (a uint8 array of the image's shape that does not overlap it, e.g. one
    slot of a batch array), the result is written there and ``out`` is returned: the pipeline renders
    each sample's colours straight into its batch, with no new image and no copy into a stack.
    """
    image_bgr = _check_image(image_bgr)
    gains = _check_gains(gains)
    if out is not None:
        _check_out(out, image_bgr)
    if np.all(gains == 1.0):
        if to_rgb:
            return bgr_to_rgb(image_bgr, out=out)
        if out is None:
            return image_bgr.copy()
        out[:] = image_bgr
        return out
    if out is None:
        out = np.empty_like(image_bgr)
    _hsv_into(image_bgr, hsv_lookup_table(gains), to_rgb, out)
    return out
