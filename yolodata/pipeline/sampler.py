"""Deterministic distributed sample order, exact resume, and the multi-scale shape schedule.

Guarantees
----------
* The sample order of an epoch is a permutation drawn from ``keyed_rng(seed, epoch, <dataset key>)``:
  it depends only on (seed, epoch, the dataset's identity), never on the number of ranks, workers or
  shards.
* Global batch ``b`` of an epoch is positions ``[b*G, (b+1)*G)`` of the *padded* epoch order, with
  ``G = per_batch_size * group_size``; rank ``r`` takes positions ``[b*G + r*B, b*G + (r+1)*B)``. So for
  the same global batch size the set of samples in each global batch is the same for every
  ``group_size``, and the ranks' parts of a global batch are disjoint and cover it.
* Last partial global batch: the epoch order is padded up to a multiple of ``G`` by wrapping around to
  its own start (position ``i`` holds ``order[i % num_samples]``, repeatedly if ``num_samples < G``).
  Every sample appears once per epoch, plus the first ``padded - num_samples`` samples of the order
  once more. Shapes stay static (no partial batch reaches the graph) and, because padding depends only
  on the order and ``G``, it is the same for every ``group_size``.
* Resume: the schedule from ``start_step`` is exactly the tail of the schedule from step 0, because it
  is computed from the same order and simply starts later. Resuming against a different dataset
  (changed shards, hence a different ``dataset_id``) would silently reorder everything, so
  ``check_resume`` refuses it.

Why a precomputed row list (MindDataset accepts no Python sampler)
------------------------------------------------------------------
``MindDataset`` rejects user-defined Python samplers, and its own ``DistributedSampler`` /
``num_shards`` split the dataset by rank, so its order would depend on ``group_size``. Instead the whole
order is computed here, in pure numpy, before the dataset is built: ``rank_schedule`` returns the exact
MindRecord row indices this rank reads, in order (repeats allowed), and the pipeline hands them to the
built-in ``ds.SubsetSampler``, which yields exactly the given indices in the given order. Each row's
global ``position`` travels beside it, so every random augmentation decision can be keyed on
(seed, epoch, position) instead of on worker state: batches are bitwise identical for any
``num_parallel_workers``. Row indices are global rows in image-id order: MindDataset's index over the
manifest's file list (``MindDataset(dataset_files=[...])``, files in manifest order), the same for one
file or many; each row's ``row_index`` column is checked against it (``Manifest.stored_row_index``).

Image weights (YOLOv5's ``--image-weights``)
--------------------------------------------
With per-image weights (``image_weights_from_classes``: YOLOv5's ``labels_to_class_weights`` and
``labels_to_image_weights``, an image weighs the sum over its boxes of its classes' inverse frequencies)
the epoch order is instead ``num_samples`` draws *with replacement*, each image drawn with probability
proportional to its weight (YOLOv5's ``random.choices(range(n), weights=iw, k=n)``), from
``keyed_rng(seed, epoch, <dataset key>, purpose="weighted-epoch-order")``. Everything else (padding,
global batches, ranks, resume) works on that order as on the permutation, so the guarantees above hold
unchanged as long as the weights are a function of the dataset (they are: class counts from its labels).
Images without boxes weigh 0 and are not drawn, as in YOLOv5.

Multi-scale
-----------
``resize_rate = R > 0`` picks a new square input size every ``R`` steps from a fixed list of multiples
of 32 (``multiscale_shapes``, by default half of ``training_shape`` up to ``training_shape``); the size
of step ``t`` of epoch ``e`` is drawn from ``keyed_rng(seed, e, t // R)``, so every rank picks the same
size at the same step for any ``group_size``. The fixed list bounds the number of compiled graphs.
The windows of ``R`` steps restart at every epoch. ``R = 0`` keeps ``training_shape``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Sequence

import numpy as np

from ..checks import INPUT_MULTIPLE, check_int, check_multiple_of
from ..rng import keyed_rng

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_WORD_MASK = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class RankSchedule:
    """What one rank reads in one epoch, from ``start_step`` on.

    ``rows``: int64 (S*B,) MindRecord row indices in reading order; ``positions``: int64 (S*B,) their
    global positions in the padded epoch order (the key for per-sample randomness); ``steps``: int64 (S,)
    the step number within the epoch of each of the S per-rank batches (each batch is B consecutive rows).
    """

    rows: np.ndarray
    positions: np.ndarray
    steps: np.ndarray


def dataset_key_int(dataset_key) -> int:
    """A stable non-negative int for a dataset identity.

    A 64-digit hex string (the manifest's ``dataset_id``, a sha256) is read as the number it spells (case
    does not matter); any other string is hashed with sha256; a non-negative int is used as it is.
    Stable across processes and Python versions (unlike ``hash``).
    """
    if isinstance(dataset_key, str):
        if _HEX_SHA256.match(dataset_key):
            return int(dataset_key, 16)
        if not dataset_key:
            raise ValueError("dataset_key must not be empty: pass the manifest's dataset_id")
        return int.from_bytes(hashlib.sha256(dataset_key.encode("utf-8")).digest(), "big")
    return check_int("dataset_key (the manifest's dataset_id, a str)", dataset_key, minimum=0)


def _dataset_key_words(dataset_key) -> list[int]:
    """The dataset key split into 64-bit words (at least four, so all 256 bits of a sha256 count)."""
    number = dataset_key_int(dataset_key)
    num_words = max(4, -(-number.bit_length() // 64))
    return [(number >> (64 * i)) & _WORD_MASK for i in range(num_words)]


def _check_seed_epoch(seed, epoch) -> tuple[int, int]:
    seed = check_int("seed", seed, minimum=0, maximum=_WORD_MASK)
    epoch = check_int("epoch", epoch, minimum=0)
    return seed, epoch


# --- sample order ---------------------------------------------------------------------------------

def epoch_order(num_samples: int, *, seed: int, epoch: int, dataset_key, image_weights=None) -> np.ndarray:
    """int64 (num_samples,): the rows visited in ``epoch``: a permutation, or with ``image_weights``
    (num_samples,) ``num_samples`` weighted draws with replacement.

    Depends only on (seed, epoch, dataset_key), ``num_samples`` (which the dataset identity fixes) and the
    weights.
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    seed, epoch = _check_seed_epoch(seed, epoch)
    if image_weights is not None:
        probabilities = _sampling_probabilities(image_weights, num_samples)
        rng = keyed_rng(seed, epoch, *_dataset_key_words(dataset_key), purpose="weighted-epoch-order")
        return rng.choice(num_samples, size=num_samples, replace=True, p=probabilities).astype(np.int64)
    rng = keyed_rng(seed, epoch, *_dataset_key_words(dataset_key), purpose="epoch-order")
    return rng.permutation(num_samples).astype(np.int64)


def _sampling_probabilities(image_weights, num_samples: int) -> np.ndarray:
    weights = np.asarray(image_weights, np.float64)
    if weights.shape != (num_samples,):
        raise ValueError(f"image_weights must hold one weight per image ({num_samples}), got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("image_weights must be finite, non-negative and not all zero (does the dataset have boxes?)")
    return weights / weights.sum()


def class_weights_from_counts(boxes_per_class, class_maps=None) -> np.ndarray:
    """float64 (C,): YOLOv5's class weights: inverse box counts (a class without boxes counts 1),
    normalised to sum 1; with ``class_maps`` (per-class mAP from validation) times ``(1 - mAP)^2``
    (YOLOv5's ``class_weights * (1 - maps) ** 2``)."""
    counts = np.asarray(boxes_per_class, np.float64).copy()
    counts[counts == 0] = 1
    weights = 1.0 / counts
    weights /= weights.sum()
    if class_maps is not None:
        maps = np.asarray(class_maps, np.float64)
        if maps.shape != weights.shape:
            raise ValueError(f"class_maps must hold one mAP per class ({len(weights)}), got shape {maps.shape}")
        weights = weights * (1.0 - maps) ** 2
    return weights


def image_weights_from_classes(boxes_per_image_and_class, class_maps=None) -> np.ndarray:
    """float64 (N,): YOLOv5's image weights: each image's box count per class (N, C) times the class
    weights (``class_weights_from_counts`` of the column sums), summed over classes."""
    counts = np.asarray(boxes_per_image_and_class, np.float64)
    if counts.ndim != 2:
        raise ValueError(f"boxes_per_image_and_class must be (images, classes), got shape {counts.shape}")
    return counts @ class_weights_from_counts(counts.sum(axis=0), class_maps)


def steps_per_epoch(num_samples: int, global_batch_size: int) -> int:
    """Number of global batches in an epoch: ceil(num_samples / global_batch_size) (last one padded)."""
    num_samples = check_int("num_samples", num_samples, minimum=1)
    global_batch_size = check_int("global_batch_size (per_batch_size * group_size)", global_batch_size,
                                minimum=1)
    return -(-num_samples // global_batch_size)


def padded_epoch_order(num_samples: int, *, seed: int, epoch: int, dataset_key,
                       global_batch_size: int, image_weights=None) -> np.ndarray:
    """int64 (steps_per_epoch * global_batch_size,): the epoch order wrapped around to fill the last batch.

    Position ``i`` holds ``epoch_order[i % num_samples]``.
    """
    order = epoch_order(num_samples, seed=seed, epoch=epoch, dataset_key=dataset_key, image_weights=image_weights)
    padded_length = steps_per_epoch(num_samples, global_batch_size) * int(global_batch_size)
    return order[np.arange(padded_length) % num_samples]


def rank_schedule(num_samples: int, *, seed: int, epoch: int, per_batch_size: int, rank: int,
                  group_size: int, dataset_key, start_step: int = 0, image_weights=None) -> RankSchedule:
    """The rows ``rank`` of ``group_size`` reads in ``epoch``, from ``start_step`` to the end of the epoch.

    ``start_step`` may equal ``steps_per_epoch`` (a checkpoint taken after the last step): the schedule
    is then empty. ``image_weights``: per-image sampling weights (see the module docstring), or None.
    """
    per_batch_size = check_int("per_batch_size", per_batch_size, minimum=1)
    group_size = check_int("group_size (the number of ranks)", group_size, minimum=1)
    rank = check_int("rank", rank, minimum=0)
    if rank >= group_size:
        raise ValueError(f"rank must be in [0, group_size) = [0, {group_size}), got {rank}")
    global_batch_size = per_batch_size * group_size
    padded = padded_epoch_order(num_samples, seed=seed, epoch=epoch, dataset_key=dataset_key,
                                global_batch_size=global_batch_size, image_weights=image_weights)
    num_steps = len(padded) // global_batch_size
    start_step = check_int("start_step", start_step, minimum=0)
    if start_step > num_steps:
        raise ValueError(f"start_step must be in [0, {num_steps}] (steps per epoch for {num_samples} samples "
                         f"in global batches of {global_batch_size}), got {start_step}")
    steps = np.arange(start_step, num_steps, dtype=np.int64)
    # positions (S, B): global batch start + this rank's offset + index within the per-rank batch
    positions = (steps[:, None] * global_batch_size + rank * per_batch_size
                 + np.arange(per_batch_size, dtype=np.int64)[None, :]).reshape(-1)
    return RankSchedule(rows=padded[positions], positions=positions, steps=steps)


def check_resume(saved_dataset_key, dataset_key) -> None:
    """Raise ValueError when a checkpoint's dataset identity differs from the dataset being resumed."""
    if dataset_key_int(saved_dataset_key) != dataset_key_int(dataset_key):
        raise ValueError(
            f"cannot resume: the dataset changed since the checkpoint (checkpoint dataset_id "
            f"{saved_dataset_key}, current shards dataset_id {dataset_key}). The sample order of an "
            f"epoch depends on the dataset's identity, so start_epoch/start_step would not continue the "
            f"interrupted run. Resume with the shards the checkpoint was trained on, or start a new "
            f"schedule without the saved dataset_id.")


# --- multi-scale ----------------------------------------------------------------------------------

def multiscale_shapes(training_shape: int, min_shape: int | None = None) -> tuple[int, ...]:
    """The fixed list of square input sizes for multi-scale training: multiples of 32 in
    [min_shape, training_shape]; ``min_shape`` defaults to half of ``training_shape`` rounded up to 32."""
    training_shape = check_multiple_of("training_shape", training_shape)
    if min_shape is None:
        min_shape = max(INPUT_MULTIPLE, -(-(training_shape // 2) // INPUT_MULTIPLE) * INPUT_MULTIPLE)
    min_shape = check_multiple_of("min_shape", min_shape)
    if min_shape > training_shape:
        raise ValueError(f"min_shape ({min_shape}) must not exceed training_shape ({training_shape})")
    return tuple(range(min_shape, training_shape + 1, INPUT_MULTIPLE))


def batch_shape(*, seed: int, epoch: int, step: int, resize_rate: int, shapes: Sequence[int],
                training_shape: int) -> int:
    """The square input size of step ``step`` of ``epoch``: the same on every rank for any group size.

    ``resize_rate == 0``: always ``training_shape``. Otherwise one of ``shapes``, drawn from
    keyed_rng(seed, epoch, step // resize_rate), so it changes at most every ``resize_rate`` steps.
    """
    training_shape = check_multiple_of("training_shape", training_shape)
    resize_rate = check_int("resize_rate (0 for a fixed shape, else batches between changes)", resize_rate,
                          minimum=0)
    seed, epoch = _check_seed_epoch(seed, epoch)
    step = check_int("step", step, minimum=0)
    if resize_rate == 0:
        return training_shape
    shapes = tuple(check_multiple_of("every multi-scale shape", s) for s in shapes)
    if not shapes:
        raise ValueError("shapes must list at least one input size (see multiscale_shapes)")
    rng = keyed_rng(seed, epoch, step // resize_rate, purpose="multiscale")
    return shapes[int(rng.integers(len(shapes)))]
