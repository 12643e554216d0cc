"""YOLOv5's optional pixel extras: albumentations Blur, MedianBlur, ToGray and CLAHE, each at p=0.01.

YOLOv5 lets albumentations decide with its own global random state whether each extra applies. Here
every decision and the transforms' inner randomness (kernel size, clip limit) come from the caller's
Generator, so the same keys give the same pixels for any number of workers:

- ``sample_extras(rng, p)`` decides which extras apply and draws one integer seed; it returns ``None``
  when none applies (about 96% of samples at p=0.01), so the common path costs nothing.
- ``apply_extras(image_bgr, params)`` builds the chosen albumentations 2.0.8 transforms with p=1,
  seeds each from ``params.seed`` (``set_random_seed``), and applies them in YOLOv5's order.

Pixel-only: boxes are unchanged by all four transforms.

ToGray (weighted average) and CLAHE (on the L channel of LAB) assume RGB input, so the chain runs on
the RGB view of the image and the result is returned as BGR. YOLOv5 feeds them its BGR image, which
weights blue as if it were red; this module does not copy that slip.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

# Order of YOLOv5's albumentations list (only the four entries with p > 0).
EXTRA_NAMES = ("blur", "median_blur", "to_gray", "clahe")


@dataclass(frozen=True)
class ExtrasParams:
    """Which extras apply (in ``EXTRA_NAMES`` order) and the seed of their inner randomness."""

    blur: bool
    median_blur: bool
    to_gray: bool
    clahe: bool
    seed: int

    def applied(self) -> tuple[str, ...]:
        """Names of the extras that apply, in application order."""
        return tuple(name for name in EXTRA_NAMES if getattr(self, name))


def sample_extras(rng: np.random.Generator, p: float = 0.01) -> ExtrasParams | None:
    """Decide each extra with probability ``p``; ``None`` when none applies.

    The Generator is advanced by the same amount whatever ``p`` is (four uniforms and one integer),
    so later draws from it do not depend on the outcome.
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    decisions = rng.random(len(EXTRA_NAMES)) < p
    seed = int(rng.integers(0, 2**31 - 1))
    if not decisions.any():
        return None
    return ExtrasParams(*(bool(d) for d in decisions), seed=seed)


def _albumentations():
    # Imported on first use (or by ``preload``): albumentations is slow to import and needed by ~4% of
    # samples. Its import would otherwise ask PyPI for a newer version (network access in a data loader).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def preload() -> None:
    """Import albumentations now, where a one-time cost is harmless (building a pipeline).

    Left to the first sample that draws an extra, the import (about 0.3 s of CPU, holding the GIL)
    would run inside a batch: it stalls every pipeline thread for that time, in the first epoch.
    """
    _albumentations()


def _build_transform(name: str):
    A = _albumentations()
    # Default arguments as in YOLOv5 (its albumentations 1.x defaults equal these 2.0.8 ones).
    if name == "blur":
        return A.Blur(blur_limit=(3, 7), p=1.0)
    if name == "median_blur":
        return A.MedianBlur(blur_limit=(3, 7), p=1.0)
    if name == "to_gray":
        return A.ToGray(num_output_channels=3, method="weighted_average", p=1.0)
    if name == "clahe":
        return A.CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=1.0)
    raise ValueError(f"unknown extra {name!r}; expected one of {EXTRA_NAMES}")


def apply_extras(image_bgr: np.ndarray, params: ExtrasParams | None) -> np.ndarray:
    """New uint8 BGR image with the extras of ``params`` applied (a copy when ``params`` is None).

    Deterministic: the same image and params give the same pixels. The input is never modified.
    """
    image_bgr = np.asarray(image_bgr)
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got dtype {image_bgr.dtype} and shape "
                         f"{image_bgr.shape}")
    if params is None or not params.applied():
        return image_bgr.copy()
    # A new contiguous RGB array: the transforms then never see (or write to) the caller's memory.
    # cv2.cvtColor swaps the channels much faster than numpy's strided copy of image[:, :, ::-1],
    # with the same bytes.
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    for position, name in enumerate(EXTRA_NAMES):
        if not getattr(params, name):
            continue
        transform = _build_transform(name)
        # One seed per position: an extra's randomness does not depend on which others apply.
        transform.set_random_seed(params.seed + position)
        image_rgb = transform(image=image_rgb)["image"]
    return cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
