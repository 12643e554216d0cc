"""AutoAnchor: how well anchors fit a dataset's boxes, and new anchors when they fit badly (numpy only).

What YOLOv5's ``utils/autoanchor.py`` computes, written for this project's label arrays:

* Box sizes (``box_sizes``): every non-crowd box's width and height in pixels of the training shape,
  each image scaled so that its long side is ``training_shape`` (YOLOv5 scales ``dataset.shapes`` so).
  Crowd boxes are left out because the training pipeline drops them before target assignment.
* The ratio metric of a box and an anchor: ``min(w/aw, aw/w, h/ah, ah/h)``; a box can be assigned to an
  anchor when it exceeds ``1 / anchor_t`` (target assignment's rule ``max(ratios) < anchor_t``).
* ``anchor_fit``: best possible recall (BPR, the share of boxes with at least one anchor past the
  threshold) and anchors above threshold per box (AAT). ``check_anchors`` measures both on sizes
  multiplied per image by a uniform factor in [0.9, 1.1] (YOLOv5's "augment scale") drawn from
  ``keyed_rng(seed, purpose=...)``, so the same data and seed give the same figures.
* When BPR is not above ``RECOMPUTE_BELOW_BPR`` (0.98): k-means on the whitened sizes of boxes at least
  2 px on one side (30 seeded restarts, the lowest distortion kept; random anchors when k-means cannot
  give 9 clusters), then ``DEFAULT_GENERATIONS`` generations of mutation (each anchor coordinate
  mutated with probability 0.9 by a factor ``1 + r * N(0, 1) * 0.1`` clipped to [0.3, 3.0], ``r``
  uniform per generation; anchors at least 2 px), keeping a mutation when it raises the fitness
  ``mean(best * (best > 1 / anchor_t))``. The new anchors are sorted by area (small to large, which is
  the stride order P3, P4, P5) and kept only when their BPR beats the current one.

The messages follow YOLOv5's wording so users recognise them (``AutoAnchor: 4.45 anchors/target, 0.995
Best Possible Recall (BPR). Current anchors are a good fit to dataset``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

from .rng import keyed_rng

PREFIX = "AutoAnchor: "
RECOMPUTE_BELOW_BPR = 0.98      # YOLOv5 recomputes unless BPR > 0.98
DEFAULT_GENERATIONS = 1000
KMEANS_RESTARTS = 30            # scipy.cluster.vq.kmeans(iter=30), which YOLOv5 calls
KMEANS_THRESHOLD = 1e-5         # stop when the mean distance improves by no more than this
MUTATION_PROBABILITY = 0.9
MUTATION_SIGMA = 0.1
MUTATION_CLIP = (0.3, 3.0)
MIN_ANCHOR_PIXELS = 2.0         # evolved anchors and the boxes k-means sees: at least 2 px
SMALL_BOX_PIXELS = 3.0          # boxes below this on a side are reported as "extremely small"
AUGMENT_SCALE = (0.9, 1.1)
NUM_LEVELS, ANCHORS_PER_LEVEL = 3, 3


@dataclasses.dataclass(frozen=True)
class BoxSizes:
    """float32 (N, 2) widths/heights in training-shape pixels and int64 (N,) the image of each box."""

    sizes: np.ndarray
    image_of_box: np.ndarray
    num_images: int


@dataclasses.dataclass(frozen=True)
class AnchorFit:
    bpr: float      # best possible recall
    aat: float      # anchors above threshold per box


@dataclasses.dataclass(frozen=True)
class AutoAnchorResult:
    """What ``check_anchors`` decided: ``anchors`` (3, 3, 2) pixels in effect, whether they are new,
    the fit of the given anchors and of the ones in effect, and a one-line reason for the log."""

    anchors: np.ndarray
    changed: bool
    before: AnchorFit
    after: AnchorFit
    reason: str


def box_sizes(rows: Iterable, training_shape: int) -> BoxSizes:
    """Sizes of the non-crowd boxes of ``rows`` ((height, width, label array (n, 6) xyxy class iscrowd)
    per image) with each image scaled so that its long side is ``training_shape``."""
    if int(training_shape) < 1:
        raise ValueError(f"training_shape must be a positive number of pixels, got {training_shape}")
    sizes, images, num_images = [], [], 0
    for height, width, labels in rows:
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"image {num_images} has size {height}x{width}; every image needs a positive size")
        labels = np.asarray(labels, np.float32).reshape(-1, 6)
        labels = labels[labels[:, 5] == 0]
        gain = float(training_shape) / max(int(height), int(width))
        sizes.append((labels[:, 2:4] - labels[:, 0:2]) * np.float32(gain))
        images.append(np.full(len(labels), num_images, np.int64))
        num_images += 1
    if not sizes:
        return BoxSizes(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), 0)
    return BoxSizes(np.concatenate(sizes).astype(np.float32), np.concatenate(images), num_images)


def ratio_metric(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """float32 (N, K): ``min(w/aw, aw/w, h/ah, ah/h)`` of every box against every anchor."""
    sizes = np.asarray(sizes, np.float32)[:, None, :]
    anchors = np.asarray(anchors, np.float32).reshape(1, -1, 2)
    ratio = sizes / anchors
    return np.minimum(ratio, 1.0 / ratio).min(axis=2)


def anchor_fit(sizes: np.ndarray, anchors, anchor_t: float) -> AnchorFit:
    """Best possible recall and anchors above threshold of ``anchors`` for boxes of ``sizes``."""
    if len(sizes) == 0:
        return AnchorFit(bpr=0.0, aat=0.0)
    metric = ratio_metric(sizes, anchors)
    threshold = np.float32(1.0 / float(anchor_t))
    return AnchorFit(bpr=float((metric.max(axis=1) > threshold).mean()),
                     aat=float((metric > threshold).sum(axis=1).mean()))


def augmented_sizes(boxes: BoxSizes, seed: int) -> np.ndarray:
    """The sizes with each image's boxes scaled by one factor uniform in [0.9, 1.1] (keyed on seed)."""
    scale = keyed_rng(seed, purpose="autoanchor-scale").uniform(*AUGMENT_SCALE, size=boxes.num_images)
    return (boxes.sizes * scale[boxes.image_of_box, None]).astype(np.float32)


# --- new anchors --------------------------------------------------------------------------------------

def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centre, distance to it) of every point (squared distances expanded as
    |p|^2 - 2 p.c + |c|^2: one small matrix product instead of an (N, K, 2) difference)."""
    squared = (points ** 2).sum(axis=1)[:, None] - 2.0 * points @ centres.T + (centres ** 2).sum(axis=1)[None, :]
    nearest = squared.argmin(axis=1)
    return nearest, np.sqrt(np.maximum(squared[np.arange(len(points)), nearest], 0.0))


def _lloyd(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd iterations until the mean distance improves by at most KMEANS_THRESHOLD; clusters that
    lose every point are dropped (as scipy's kmeans does)."""
    previous = np.inf
    while True:
        nearest, distance = _nearest(points, centres)
        mean_distance = float(distance.mean())
        if previous - mean_distance <= KMEANS_THRESHOLD:
            return centres, mean_distance
        previous = mean_distance
        counts = np.bincount(nearest, minlength=len(centres))
        sums = np.stack([np.bincount(nearest, weights=points[:, axis], minlength=len(centres))
                         for axis in range(points.shape[1])], axis=1)
        keep = counts > 0
        centres = sums[keep] / counts[keep, None]


def kmeans(points: np.ndarray, num_clusters: int, rng: np.random.Generator,
           restarts: int = KMEANS_RESTARTS) -> np.ndarray:
    """float64 (<= num_clusters, 2) centres: the lowest-distortion result of ``restarts`` runs, each
    started from ``num_clusters`` distinct points drawn from ``rng``."""
    points = np.asarray(points, np.float64)
    best, best_distortion = None, np.inf
    for _ in range(restarts):
        start = points[rng.choice(len(points), size=num_clusters, replace=False)]
        centres, distortion = _lloyd(points, start)
        if distortion < best_distortion:
            best, best_distortion = centres, distortion
    return best


def _fitness(log_sizes: np.ndarray, anchors: np.ndarray, threshold: float) -> float:
    """YOLOv5's evolution fitness ``mean(best * (best > threshold))`` with the ratio metric in log space:
    ``min(w/aw, aw/w, h/ah, ah/h) = exp(-max(|log w - log aw|, |log h - log ah|))``, the same number up
    to float32 rounding, at a fraction of the cost on a million boxes (two (N, K) passes instead of an
    (N, K, 2) division)."""
    log_anchors = np.log(np.asarray(anchors, np.float64)).astype(np.float32)
    distance = np.abs(log_sizes[:, 0, None] - log_anchors[None, :, 0])
    np.maximum(distance, np.abs(log_sizes[:, 1, None] - log_anchors[None, :, 1]), out=distance)
    best = np.exp(-distance.min(axis=1))
    return float((best * (best > threshold)).mean(dtype=np.float64))


def evolve(sizes: np.ndarray, anchors: np.ndarray, *, anchor_t: float, rng: np.random.Generator,
           generations: int = DEFAULT_GENERATIONS, progress: Callable | None = None) -> np.ndarray:
    """The anchors after ``generations`` rounds of mutation, each kept only when it raises the fitness."""
    threshold = np.float32(1.0 / float(anchor_t))
    log_sizes = np.log(np.asarray(sizes, np.float32))
    best = np.asarray(anchors, np.float64)
    best_fitness = _fitness(log_sizes, best, threshold)
    low, high = MUTATION_CLIP
    rounds = range(int(generations)) if progress is None else progress(range(int(generations)))
    for _ in rounds:
        factors = np.ones(best.shape)
        while (factors == 1).all():  # mutate until something changes
            mutate = rng.random(best.shape) < MUTATION_PROBABILITY
            factors = (mutate * rng.random() * rng.standard_normal(best.shape) * MUTATION_SIGMA + 1).clip(low, high)
        candidate = (best * factors).clip(min=MIN_ANCHOR_PIXELS)
        fitness = _fitness(log_sizes, candidate, threshold)
        if fitness > best_fitness:
            best, best_fitness = candidate, fitness
    return best


def sorted_by_area(anchors: np.ndarray) -> np.ndarray:
    """float32 (3, 3, 2): anchors small to large, three per level P3, P4, P5."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    return anchors[np.argsort(anchors.prod(axis=1), kind="stable")].astype(np.float32).reshape(
        NUM_LEVELS, ANCHORS_PER_LEVEL, 2)


def kmean_anchors(sizes: np.ndarray, *, training_shape: int, anchor_t: float, seed: int,
                  generations: int = DEFAULT_GENERATIONS, log: Callable = print,
                  progress: Callable | None = None) -> np.ndarray:
    """New anchors (3, 3, 2) pixels for boxes of ``sizes``: k-means, then evolution; seeded."""
    num_anchors = NUM_LEVELS * ANCHORS_PER_LEVEL
    sizes = np.asarray(sizes, np.float32)
    num_small = int((sizes < SMALL_BOX_PIXELS).any(axis=1).sum())
    if num_small:
        log(f"{PREFIX}WARNING: Extremely small objects found: {num_small} of {len(sizes)} labels are "
            f"< {SMALL_BOX_PIXELS:g} pixels in size")
    usable = sizes[(sizes >= MIN_ANCHOR_PIXELS).any(axis=1)]
    rng = keyed_rng(seed, purpose="autoanchor-kmeans")
    log(f"{PREFIX}Running kmeans for {num_anchors} anchors on {len(usable)} points...")
    centres = None
    if len(usable) >= num_anchors:
        sigma = usable.std(axis=0).astype(np.float64)
        if np.all(sigma > 0):
            centres = kmeans(usable / sigma, num_anchors, rng) * sigma
    if centres is None or len(centres) != num_anchors:
        log(f"{PREFIX}WARNING: switching strategies from kmeans to random init")
        centres = np.sort(rng.random(num_anchors * 2)).reshape(num_anchors, 2) * float(training_shape)
    centres = sorted_by_area(centres).reshape(-1, 2)
    evolved = evolve(usable if len(usable) else sizes, centres, anchor_t=anchor_t,
                     rng=keyed_rng(seed, purpose="autoanchor-evolve"), generations=generations, progress=progress)
    return sorted_by_area(evolved)


def fit_message(fit: AnchorFit) -> str:
    return f"{PREFIX}{fit.aat:.2f} anchors/target, {fit.bpr:.3f} Best Possible Recall (BPR). "


def format_anchors(anchors) -> str:
    """'10,13, 16,30, ...' (rounded pixels, as YOLOv5 prints them)."""
    return ", ".join(f"{round(float(w))},{round(float(h))}" for w, h in np.asarray(anchors).reshape(-1, 2))


def check_anchors(boxes: BoxSizes, anchors, *, anchor_t: float, training_shape: int, seed: int = 0,
                  generations: int = DEFAULT_GENERATIONS, log: Callable = print,
                  progress: Callable | None = None) -> AutoAnchorResult:
    """YOLOv5's check: BPR of ``anchors`` on the augmented box sizes; new anchors when BPR <= 0.98 and
    the new ones have a higher BPR. Logs what it found with ``log``."""
    anchors = np.asarray(anchors, np.float32).reshape(NUM_LEVELS, ANCHORS_PER_LEVEL, 2)
    if len(boxes.sizes) == 0:
        fit = AnchorFit(0.0, 0.0)
        return AutoAnchorResult(anchors, False, fit, fit, "the dataset has no boxes to fit anchors to")
    sizes = augmented_sizes(boxes, seed)
    before = anchor_fit(sizes, anchors, anchor_t)
    if before.bpr > RECOMPUTE_BELOW_BPR:
        log(fit_message(before) + "Current anchors are a good fit to dataset")
        return AutoAnchorResult(anchors, False, before, before,
                                f"best possible recall {before.bpr:.3f} > {RECOMPUTE_BELOW_BPR}: kept")
    log(fit_message(before) + "Anchors are a poor fit to dataset, attempting to improve...")
    new = kmean_anchors(boxes.sizes, training_shape=training_shape, anchor_t=anchor_t, seed=seed,
                        generations=generations, log=log, progress=progress)
    after = anchor_fit(sizes, new, anchor_t)
    if after.bpr > before.bpr:
        log(f"{PREFIX}thr={1 / float(anchor_t):.2f}: {after.bpr:.4f} best possible recall, {after.aat:.2f} "
            f"anchors past thr; new anchors {format_anchors(new)}")
        log(f"{PREFIX}Done (the new anchors are stored in the model, its checkpoints and config.yaml)")
        return AutoAnchorResult(new, True, before, after,
                                f"best possible recall {before.bpr:.3f} <= {RECOMPUTE_BELOW_BPR}: new anchors by "
                                f"k-means + evolution raise it to {after.bpr:.3f}")
    log(f"{PREFIX}Done (original anchors better than new anchors, proceeding with original anchors)")
    return AutoAnchorResult(anchors, False, before, before,
                            f"best possible recall {before.bpr:.3f} <= {RECOMPUTE_BELOW_BPR}, but new anchors "
                            f"reached only {after.bpr:.3f}: kept")
