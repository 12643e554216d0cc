"""YOLOv5's mixup: a second mosaic blended into a mosaic sample, labels of both kept.

YOLOv5 (``utils/augmentations.mixup``) draws the blend ratio ``r`` from Beta(32, 32) (so ``r`` is
close to 0.5: mean 0.5, standard deviation about 0.062), computes ``image * r + second * (1 - r)`` in
float64 and truncates to uint8, and concatenates the two label arrays. Here the second mosaic's
images come from the same batch (``policy._decide_mixup``), so mixup decodes nothing of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mosaic import MosaicParams

BETA_ALPHA = BETA_BETA = 32.0


@dataclass(frozen=True)
class MixupParams:
    """The second mosaic (``sources``: batch indices, its own image first; centre; matrix to the output)
    and the weight ``ratio`` of the first image in the blend."""

    sources: tuple[int, ...]
    mosaic: MosaicParams
    matrix: np.ndarray
    ratio: float


def sample_ratio(rng: np.random.Generator) -> float:
    """The blend weight of the first image: Beta(32, 32)."""
    return float(rng.beta(BETA_ALPHA, BETA_BETA))


def blend(image: np.ndarray, labels: np.ndarray, second_image: np.ndarray, second_labels: np.ndarray,
          ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 ``image * ratio + second_image * (1 - ratio)`` truncated, labels of both). Inputs unchanged."""
    if image.shape != second_image.shape:
        raise ValueError(f"mixup blends images of one shape, got {image.shape} and {second_image.shape}")
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"mixup ratio must be within [0, 1], got {ratio}")
    ratio = float(ratio)
    mixed = (image * ratio + second_image * (1.0 - ratio)).astype(np.uint8)   # float64, as YOLOv5
    return mixed, np.concatenate([labels, second_labels]).astype(np.float32, copy=False)
