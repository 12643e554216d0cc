"""YOLOv5's training augmentation policy: which transforms a sample goes through, in what order, and
with which settings (``AugmentConfig``, YOLOv5's hyp.scratch-low by default).

For a sample at batch index ``i``, of an s x s batch:

1. with probability ``mosaic``: the sample's image and three partners drawn from the same batch (a
   mosaic then costs no decode of its own; batches of fewer than four images repeat partners) form
   YOLOv5's 4-image mosaic on the 2s x 2s canvas, which the random affine maps to s x s
   (``mosaic.render_mosaic``); otherwise the image is letterboxed into s x s (upscaling allowed) and
   goes through the random affine (``affine.warp``, one matrix for both steps). The flips are part of
   that affine matrix;
2. with probability ``mixup``, and only after a mosaic (as YOLOv5's ``mixup``): a second mosaic (of a
   partner image drawn from the same batch like the mosaic partners, with its own three partners,
   centre and affine) is blended in, ``image * r + second * (1 - r)`` with ``r ~ Beta(32, 32)``
   truncated to uint8, and the two label arrays are concatenated (``mixup.blend``);
3. albumentations' rare pixel extras (``extras``);
4. HSV jitter, written as RGB straight into the sample's slot of the batch (``color``).

Every random decision is drawn first (``decide_sample`` -> ``SampleDecision``), each from its own
Generator keyed on (seed, epoch, position in the epoch order, purpose: ``PURPOSES``), then applied
(``apply_decision``). A sample's pixels and boxes therefore depend only on its key, its batch's
images and the config, never on the worker or thread that computes it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from ..rng import keyed_rng
from . import affine, color, extras, letterbox, mixup, mosaic

# Names of the keyed Generators of a sample, one per random decision.
PURPOSE_USE_MOSAIC = "use-mosaic"
PURPOSE_MOSAIC_PARTNERS = "mosaic-partners"
PURPOSE_MOSAIC = "mosaic"
PURPOSE_AFFINE = "affine"
PURPOSE_EXTRAS = "extras"
PURPOSE_HSV = "hsv"
PURPOSE_USE_MIXUP = "use-mixup"
PURPOSE_MIXUP_PARTNERS = "mixup-partners"
PURPOSE_MIXUP_MOSAIC = "mixup-mosaic"
PURPOSE_MIXUP_AFFINE = "mixup-affine"
PURPOSE_MIXUP_RATIO = "mixup-ratio"
PURPOSES = (PURPOSE_USE_MOSAIC, PURPOSE_MOSAIC_PARTNERS, PURPOSE_MOSAIC, PURPOSE_AFFINE, PURPOSE_EXTRAS,
            PURPOSE_HSV, PURPOSE_USE_MIXUP, PURPOSE_MIXUP_PARTNERS, PURPOSE_MIXUP_MOSAIC, PURPOSE_MIXUP_AFFINE,
            PURPOSE_MIXUP_RATIO)

PROBABILITY_OPTIONS = ("mosaic", "fliplr", "flipud", "extras", "mixup")
FRACTION_OPTIONS = ("translate", "perspective")    # within [0, 1]
NON_NEGATIVE_OPTIONS = ("degrees", "shear", "hsv_h", "hsv_s", "hsv_v")
MAX_SHEAR_DEGREES = 90.0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are YOLOv5's hyp.scratch-low. Validated when made.

    Probabilities: ``mosaic`` (a 4-image mosaic, else letterbox + affine), ``fliplr``, ``flipud``,
    ``extras`` (each of albumentations' Blur, MedianBlur, ToGray, CLAHE). Affine ranges as YOLOv5's
    ``random_perspective``: ``degrees`` and ``shear`` (degrees) and ``perspective`` are half-widths
    around 0, the scale gain is uniform in [1 - scale, 1 + scale], ``translate`` a fraction of the
    output. ``hsv_h``, ``hsv_s``, ``hsv_v``: limits of the HSV gains. ``mixup``: probability of
    blending a second mosaic into a mosaic sample (YOLOv5's hyp ``mixup``; 0 in hyp.scratch-low).
    """

    mosaic: float = 1.0
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.0
    extras: float = 0.01
    mixup: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"augmentation option {field.name} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"augmentation option {field.name} must be a finite number, got {value!r}")
            object.__setattr__(self, field.name, number)
        for name in PROBABILITY_OPTIONS + FRACTION_OPTIONS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation option {name}={value} must be within [0, 1]")
        for name in NON_NEGATIVE_OPTIONS:
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation option {name} must not be negative")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"augmentation option scale={self.scale} must be within [0, 1)")
        if self.shear >= MAX_SHEAR_DEGREES:
            raise ValueError(f"augmentation option shear={self.shear} must be below {MAX_SHEAR_DEGREES:g} degrees")

    @classmethod
    def from_mapping(cls, options: Mapping | None) -> "AugmentConfig":
        """The config for a mapping of option names to values (a yaml ``augment:`` section, flags);
        missing options keep their defaults, unknown names are refused."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError(f"augmentation options must be a mapping of option names to numbers, got {options!r}")
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in options if key not in names)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {unknown}; valid ones are {sorted(names)}")
        return cls(**options)


@dataclasses.dataclass(frozen=True)
class SampleDecision:
    """Every random decision for one sample (``decide_sample``); ``apply_decision`` applies it.

    ``sources``: batch indices of the images used, the sample's own first (one, or four for a mosaic).
    ``mosaic``: the mosaic's centre, or None for the letterbox path.
    ``matrix``: float64 (3, 3) to the s x s output: from the 2s x 2s mosaic canvas, or from the source
    image (letterbox, then the affine).
    ``extras``: the albumentations extras that apply, or None. ``hsv_gains``: float32 (3,), or None when
    every HSV limit is zero. ``mixup``: the second mosaic blended in, or None.
    """

    sources: tuple[int, ...]
    mosaic: mosaic.MosaicParams | None
    matrix: np.ndarray
    extras: extras.ExtrasParams | None
    hsv_gains: np.ndarray | None
    mixup: mixup.MixupParams | None = None


def _mosaic_partners(rng: np.random.Generator, index: int, batch_size: int) -> list[int]:
    """Three batch indices other than ``index`` (repeats only when the batch has fewer than four images)."""
    others = [j for j in range(batch_size) if j != index]
    if len(others) >= 3:
        partners = rng.choice(others, size=3, replace=False)
    else:
        partners = rng.choice(batch_size, size=3, replace=True)
    return [int(j) for j in partners]


def decide_sample(config: AugmentConfig, *, seed: int, epoch: int, position: int, index: int,
                  image_hws, size: int) -> SampleDecision:
    """The random decisions for the sample at batch ``index`` of a batch of images of sizes ``image_hws``
    ((height, width) per image), output ``size`` x ``size``; keyed on (seed, epoch, position)."""
    def rng(purpose: str) -> np.random.Generator:
        return keyed_rng(seed, epoch, position, purpose=purpose)

    out_hw = (size, size)
    if config.mosaic in (0.0, 1.0):  # a certain outcome: the draw would not change it
        use_mosaic = config.mosaic == 1.0
    else:
        use_mosaic = rng(PURPOSE_USE_MOSAIC).random() < config.mosaic
    affine_ranges = dict(degrees=config.degrees, translate=config.translate, scale=config.scale,
                         shear=config.shear, perspective=config.perspective, flip_lr=config.fliplr,
                         flip_ud=config.flipud)
    if use_mosaic:
        sources = (index, *_mosaic_partners(rng(PURPOSE_MOSAIC_PARTNERS), index, len(image_hws)))
        mosaic_params = mosaic.sample_mosaic(rng(PURPOSE_MOSAIC), out_hw)
        matrix = affine.random_affine_matrix(rng(PURPOSE_AFFINE), out_hw, (2 * size, 2 * size), **affine_ranges)
    else:
        sources = (index,)
        mosaic_params = None
        letterboxing, _, _ = letterbox.letterbox_matrix(tuple(image_hws[index]), out_hw, scaleup=True)
        matrix = affine.random_affine_matrix(rng(PURPOSE_AFFINE), out_hw, out_hw, **affine_ranges) @ letterboxing
    mixup_params = None
    if use_mosaic and _happens(config.mixup, rng, PURPOSE_USE_MIXUP):
        mixup_params = _decide_mixup(rng, index, len(image_hws), size, affine_ranges)
    extra_params = extras.sample_extras(rng(PURPOSE_EXTRAS), p=config.extras)
    hsv_gains = None
    if config.hsv_h or config.hsv_s or config.hsv_v:
        hsv_gains = color.sample_hsv(rng(PURPOSE_HSV), config.hsv_h, config.hsv_s, config.hsv_v)
    return SampleDecision(sources=sources, mosaic=mosaic_params, matrix=matrix, extras=extra_params,
                          hsv_gains=hsv_gains, mixup=mixup_params)


def _happens(probability: float, rng, purpose: str) -> bool:
    """A draw with ``probability``; no draw for 0 and 1, whose outcome is certain."""
    if probability in (0.0, 1.0):
        return probability == 1.0
    return bool(rng(purpose).random() < probability)


def _decide_mixup(rng, index: int, batch_size: int, size: int, affine_ranges: dict) -> mixup.MixupParams:
    """The second mosaic of a mixup: a partner image of the batch (another than ``index`` when there is
    one) with three partners of its own, its own mosaic centre and affine, and the blend ratio."""
    partners_rng = rng(PURPOSE_MIXUP_PARTNERS)
    others = [j for j in range(batch_size) if j != index] or [index]
    partner = int(others[int(partners_rng.integers(len(others)))])
    sources = (partner, *_mosaic_partners(partners_rng, partner, batch_size))
    out_hw = (size, size)
    return mixup.MixupParams(
        sources=sources, mosaic=mosaic.sample_mosaic(rng(PURPOSE_MIXUP_MOSAIC), out_hw),
        matrix=affine.random_affine_matrix(rng(PURPOSE_MIXUP_AFFINE), out_hw, (2 * size, 2 * size), **affine_ranges),
        ratio=mixup.sample_ratio(rng(PURPOSE_MIXUP_RATIO)))


def apply_decision(decision: SampleDecision, images, labels, out: np.ndarray) -> np.ndarray:
    """Render the sample into ``out`` (uint8 s x s x 3, RGB) and return its new label array.

    ``images``: the batch's uint8 BGR images; ``labels``: their (N, 6) label arrays in their pixels.
    Neither is modified.
    """
    out_hw = out.shape[:2]
    if decision.mosaic is not None:
        image, sample_labels = mosaic.render_mosaic([images[j] for j in decision.sources],
                                                    [labels[j] for j in decision.sources],
                                                    decision.mosaic, decision.matrix, out_hw)
    else:
        own = decision.sources[0]
        image, sample_labels = affine.warp(images[own], labels[own], decision.matrix, out_hw)
    if decision.mixup is not None:
        second = decision.mixup
        second_image, second_labels = mosaic.render_mosaic([images[j] for j in second.sources],
                                                           [labels[j] for j in second.sources],
                                                           second.mosaic, second.matrix, out_hw)
        image, sample_labels = mixup.blend(image, sample_labels, second_image, second_labels, second.ratio)
    if decision.extras is not None:
        image = extras.apply_extras(image, decision.extras)
    if decision.hsv_gains is not None:
        color.apply_hsv(image, decision.hsv_gains, to_rgb=True, out=out)
    else:
        color.bgr_to_rgb(image, out=out)
    return sample_labels


def augment_sample(config: AugmentConfig, images, labels, *, seed: int, epoch: int, position: int, index: int,
                   out: np.ndarray) -> np.ndarray:
    """The policy for the sample at batch ``index``: decide, then render into ``out`` (its RGB batch
    slot, s x s x 3); returns its label array in those pixels."""
    decision = decide_sample(config, seed=seed, epoch=epoch, position=position, index=index,
                             image_hws=[image.shape[:2] for image in images], size=out.shape[0])
    return apply_decision(decision, images, labels, out)
