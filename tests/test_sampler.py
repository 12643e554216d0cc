"""The deterministic distributed sampler and the multi-scale schedule (yolodata.pipeline.sampler).

The tests state the invariants a distributed, resumable training run relies on, for several dataset
sizes (including one smaller than a global batch) and group sizes 1, 2, 4 and 8.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from yolodata.pipeline import sampler

DATASET_ID = hashlib.sha256(b"coco128 as converted").hexdigest()   # shaped like a manifest dataset_id
OTHER_DATASET_ID = hashlib.sha256(b"coco128 with one image more").hexdigest()
GLOBAL_BATCH = 16
GROUP_SIZES = (1, 2, 4, 8)
SIZES = (128, 100, 17, 5)          # 128 divides into global batches of 16; the others need padding


def full_epoch(num_samples, *, seed=0, epoch=0, per_batch_size, group_size, dataset_key=DATASET_ID,
               start_step=0, image_weights=None):
    """Every rank's schedule of one epoch."""
    return [sampler.rank_schedule(num_samples, seed=seed, epoch=epoch, per_batch_size=per_batch_size,
                                  rank=rank, group_size=group_size, dataset_key=dataset_key,
                                  start_step=start_step, image_weights=image_weights)
            for rank in range(group_size)]


def global_batches(schedules, per_batch_size):
    """list over steps of the global batch rows in rank order, from every rank's schedule."""
    # rows (S*B,) per rank -> (S, B), then ranks side by side -> (S, G)
    per_rank = [s.rows.reshape(-1, per_batch_size) for s in schedules]
    return np.concatenate(per_rank, axis=1)


# --- epoch order ----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_samples", SIZES)
def test_epoch_order_is_a_permutation_that_repeats_for_the_same_key(num_samples):
    order = sampler.epoch_order(num_samples, seed=3, epoch=2, dataset_key=DATASET_ID)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(num_samples))
    again = sampler.epoch_order(num_samples, seed=3, epoch=2, dataset_key=DATASET_ID)
    np.testing.assert_array_equal(order, again)


def test_epoch_order_changes_with_epoch_seed_and_dataset():
    base = sampler.epoch_order(128, seed=0, epoch=0, dataset_key=DATASET_ID)
    orders = [sampler.epoch_order(128, seed=0, epoch=e, dataset_key=DATASET_ID) for e in range(1, 6)]
    orders.append(sampler.epoch_order(128, seed=1, epoch=0, dataset_key=DATASET_ID))
    orders.append(sampler.epoch_order(128, seed=0, epoch=0, dataset_key=OTHER_DATASET_ID))
    for order in orders:
        assert not np.array_equal(order, base)
    # the epochs are not mere rotations of one another: consecutive pairs differ too
    assert len({tuple(o) for o in orders}) == len(orders)


def test_dataset_key_as_hex_string_is_case_insensitive_and_matches_its_integer_value():
    upper = sampler.epoch_order(50, seed=0, epoch=0, dataset_key=DATASET_ID.upper())
    lower = sampler.epoch_order(50, seed=0, epoch=0, dataset_key=DATASET_ID)
    as_int = sampler.epoch_order(50, seed=0, epoch=0, dataset_key=int(DATASET_ID, 16))
    np.testing.assert_array_equal(upper, lower)
    np.testing.assert_array_equal(as_int, lower)
    # every part of the 256-bit identity counts, not only its low 64 bits
    high_bit_flipped = int(DATASET_ID, 16) ^ (1 << 255)
    assert not np.array_equal(sampler.epoch_order(50, seed=0, epoch=0, dataset_key=high_bit_flipped), lower)


def test_order_for_a_given_key_is_pinned():
    """The exact order is part of the contract: a change (here or in numpy's PCG64 permutation) would
    make every resumed run read a different order than the one it was interrupted in."""
    order = sampler.epoch_order(10, seed=0, epoch=0, dataset_key="a" * 64)
    np.testing.assert_array_equal(order, [1, 9, 2, 4, 3, 7, 8, 6, 0, 5])


# --- rank schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("num_samples", SIZES)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_each_sample_once_per_epoch_plus_the_documented_wrap_around_pad(num_samples, group_size):
    per_batch_size = GLOBAL_BATCH // group_size
    schedules = full_epoch(num_samples, per_batch_size=per_batch_size, group_size=group_size)
    rows = global_batches(schedules, per_batch_size).reshape(-1)
    num_steps = sampler.steps_per_epoch(num_samples, GLOBAL_BATCH)
    assert num_steps == -(-num_samples // GLOBAL_BATCH)
    assert len(rows) == num_steps * GLOBAL_BATCH
    order = sampler.epoch_order(num_samples, seed=0, epoch=0, dataset_key=DATASET_ID)
    # the epoch order first (each sample once), then its own beginning again, repeatedly if needed
    np.testing.assert_array_equal(rows[:num_samples], order)
    np.testing.assert_array_equal(rows, np.resize(order, len(rows)))
    counts = np.bincount(rows, minlength=num_samples)
    assert counts.min() >= 1 and counts.sum() == len(rows)


@pytest.mark.parametrize("num_samples", SIZES)
def test_global_batch_sets_are_the_same_for_every_group_size(num_samples):
    reference = None
    for group_size in GROUP_SIZES:
        per_batch_size = GLOBAL_BATCH // group_size
        batches = global_batches(full_epoch(num_samples, seed=5, epoch=1, per_batch_size=per_batch_size,
                                            group_size=group_size), per_batch_size)
        as_sets = [sorted(batch.tolist()) for batch in batches]
        if reference is None:
            reference = as_sets
        assert as_sets == reference, f"group_size {group_size} changes the global batches"


@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_ranks_parts_are_disjoint_and_their_union_is_the_global_batch(group_size):
    num_samples, per_batch_size = 100, GLOBAL_BATCH // group_size
    padded = sampler.padded_epoch_order(num_samples, seed=0, epoch=0, dataset_key=DATASET_ID,
                                        global_batch_size=GLOBAL_BATCH)
    schedules = full_epoch(num_samples, per_batch_size=per_batch_size, group_size=group_size)
    for step in range(sampler.steps_per_epoch(num_samples, GLOBAL_BATCH)):
        parts = [s.positions.reshape(-1, per_batch_size)[step] for s in schedules]
        positions = np.concatenate(parts)
        np.testing.assert_array_equal(np.sort(positions), np.arange(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH))
        for schedule, part in zip(schedules, parts):
            np.testing.assert_array_equal(schedule.rows.reshape(-1, per_batch_size)[step], padded[part])
    for schedule in schedules:
        assert schedule.rows.dtype == schedule.positions.dtype == schedule.steps.dtype == np.int64
        np.testing.assert_array_equal(schedule.steps, np.arange(len(schedule.rows) // per_batch_size))


def test_global_batches_are_consecutive_slices_of_the_epoch_order():
    """Not only the same sets for every group size: the documented positions, so a batch is predictable."""
    order = sampler.epoch_order(64, seed=0, epoch=0, dataset_key=DATASET_ID)
    batches = global_batches(full_epoch(64, per_batch_size=4, group_size=4), 4)
    np.testing.assert_array_equal(batches, order.reshape(4, 16))


@pytest.mark.parametrize("group_size", (1, 2, 8))
@pytest.mark.parametrize("start_step", (0, 1, 3, 6, 7))
def test_resume_from_start_step_equals_the_tail_of_an_uninterrupted_epoch(group_size, start_step):
    num_samples, per_batch_size = 100, GLOBAL_BATCH // group_size    # 7 steps, the last one padded
    for rank in range(group_size):
        kwargs = dict(seed=9, epoch=4, per_batch_size=per_batch_size, rank=rank, group_size=group_size,
                      dataset_key=DATASET_ID)
        full = sampler.rank_schedule(num_samples, **kwargs)
        resumed = sampler.rank_schedule(num_samples, start_step=start_step, **kwargs)
        cut = start_step * per_batch_size
        np.testing.assert_array_equal(resumed.rows, full.rows[cut:])
        np.testing.assert_array_equal(resumed.positions, full.positions[cut:])
        np.testing.assert_array_equal(resumed.steps, full.steps[start_step:])


def test_resume_at_the_end_of_an_epoch_gives_an_empty_schedule():
    schedule = sampler.rank_schedule(100, seed=0, epoch=0, per_batch_size=8, rank=1, group_size=2,
                                     dataset_key=DATASET_ID, start_step=7)
    assert schedule.rows.shape == schedule.positions.shape == (0,) and schedule.steps.shape == (0,)


def test_order_depends_only_on_seed_epoch_and_dataset_key():
    """Per-batch size, group size and rank only cut the same padded order; nothing else enters it."""
    order = sampler.epoch_order(90, seed=2, epoch=3, dataset_key=DATASET_ID)
    np.random.seed(12345)                    # global RNG state must not matter
    np.random.random(7)
    for per_batch_size, group_size in ((1, 1), (3, 1), (5, 2), (2, 4), (1, 8), (45, 2)):
        batches = global_batches(full_epoch(90, seed=2, epoch=3, per_batch_size=per_batch_size,
                                            group_size=group_size), per_batch_size)
        np.testing.assert_array_equal(batches.reshape(-1)[:90], order)


def test_check_resume_accepts_the_same_dataset_and_names_the_change_otherwise():
    sampler.check_resume(DATASET_ID, DATASET_ID)
    sampler.check_resume(DATASET_ID.upper(), DATASET_ID)
    with pytest.raises(ValueError, match="dataset changed since the checkpoint") as error:
        sampler.check_resume(DATASET_ID, OTHER_DATASET_ID)
    assert DATASET_ID in str(error.value) and OTHER_DATASET_ID in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=2, group_size=2), r"rank must be in \[0, group_size\)"),
    (dict(rank=-1), "rank must be at least 0"),
    (dict(per_batch_size=0), "per_batch_size must be at least 1"),
    (dict(group_size=0, rank=0), "group_size"),
    (dict(start_step=8), r"start_step must be in \[0, 7\]"),
    (dict(start_step=-1), "start_step must be at least 0"),
    (dict(epoch=-1), "epoch must be at least 0"),
    (dict(seed=-5), "seed must be at least 0"),
    (dict(per_batch_size=2.5), "per_batch_size must be an integer"),
    (dict(dataset_key=""), "dataset_key must not be empty"),
    (dict(dataset_key=1.5), "dataset_key"),
    (dict(num_samples=0), "num_samples must be at least 1"),
])
def test_rank_schedule_rejects_bad_arguments_saying_what_to_fix(kwargs, message):
    arguments = dict(num_samples=100, seed=0, epoch=0, per_batch_size=8, rank=0, group_size=2,
                     dataset_key=DATASET_ID, start_step=0)
    arguments.update(kwargs)
    num_samples = arguments.pop("num_samples")
    with pytest.raises(ValueError, match=message):
        sampler.rank_schedule(num_samples, **arguments)


# --- multi-scale ----------------------------------------------------------------------------------

def test_multiscale_shapes_default_from_half_to_the_training_shape():
    assert sampler.multiscale_shapes(640) == tuple(range(320, 641, 32))
    assert sampler.multiscale_shapes(416) == (224, 256, 288, 320, 352, 384, 416)   # half (208) rounded up
    assert sampler.multiscale_shapes(32) == (32,)
    assert sampler.multiscale_shapes(640, min_shape=512) == (512, 544, 576, 608, 640)


@pytest.mark.parametrize("training_shape, min_shape, message", [
    (600, None, "training_shape must be a multiple of 32"),
    (0, None, "training_shape must be at least 32"),
    (640, 100, "min_shape must be a multiple of 32"),
    (320, 640, "must not exceed training_shape"),
])
def test_multiscale_shapes_reject_sizes_that_are_not_multiples_of_32(training_shape, min_shape, message):
    with pytest.raises(ValueError, match=message):
        sampler.multiscale_shapes(training_shape, min_shape)


def _shape_schedule(*, seed=0, epoch=0, num_steps=60, resize_rate=10, training_shape=640):
    shapes = sampler.multiscale_shapes(training_shape)
    return [sampler.batch_shape(seed=seed, epoch=epoch, step=t, resize_rate=resize_rate, shapes=shapes,
                                training_shape=training_shape) for t in range(num_steps)]


def test_multiscale_shape_is_constant_within_each_window_and_uses_only_the_list():
    shapes = sampler.multiscale_shapes(640)
    schedule = _shape_schedule(resize_rate=10, num_steps=200)
    assert all(s in shapes and s % 32 == 0 for s in schedule)
    windows = np.asarray(schedule).reshape(20, 10)
    assert (windows == windows[:, :1]).all()
    assert len(set(windows[:, 0].tolist())) > 3          # the shape does change between windows
    assert _shape_schedule(resize_rate=10, num_steps=200) == schedule
    assert _shape_schedule(resize_rate=10, num_steps=200, epoch=1) != schedule


def test_multiscale_schedule_is_identical_on_every_rank_for_every_group_size():
    """The shape is a function of (seed, epoch, step) alone: evaluate it at every rank's steps."""
    shapes = sampler.multiscale_shapes(640)
    expected = _shape_schedule(seed=4, epoch=2, num_steps=7, resize_rate=2)
    for group_size in GROUP_SIZES:
        for schedule in full_epoch(100, seed=4, epoch=2, per_batch_size=GLOBAL_BATCH // group_size,
                                   group_size=group_size):
            got = [sampler.batch_shape(seed=4, epoch=2, step=int(t), resize_rate=2, shapes=shapes,
                                       training_shape=640) for t in schedule.steps]
            assert got == expected


def test_resize_rate_zero_keeps_the_training_shape():
    assert set(_shape_schedule(resize_rate=0, training_shape=416)) == {416}


@pytest.mark.parametrize("kwargs, message", [
    (dict(resize_rate=-1), "resize_rate"),
    (dict(training_shape=650), "training_shape must be a multiple of 32"),
    (dict(shapes=(320, 330)), "multiple of 32"),
    (dict(shapes=()), "at least one input size"),
    (dict(step=-1), "step must be at least 0"),
])
def test_batch_shape_rejects_bad_arguments(kwargs, message):
    arguments = dict(seed=0, epoch=0, step=0, resize_rate=10, shapes=(320, 640), training_shape=640)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sampler.batch_shape(**arguments)


# --- image weights (YOLOv5's --image-weights) ----------------------------------------------------------

def class_count_table(num_samples, num_classes=5, seed=0):
    """(N, C) box counts per image and class: class 0 in every image, class C-1 (rare) in a few."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3, size=(num_samples, num_classes))
    counts[:, 0] += 1
    counts[:, -1] = 0
    counts[rng.choice(num_samples, size=max(1, num_samples // 16), replace=False), -1] = 1
    return counts


def test_image_weights_follow_yolov5_formulas():
    counts = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0], [3, 0, 0]])
    # labels_to_class_weights: per-class box counts 6, 1, 0 (-> 1); 1/count normalised
    inverse = np.array([1 / 6, 1.0, 1.0])
    class_weights = inverse / inverse.sum()
    np.testing.assert_allclose(sampler.class_weights_from_counts(counts.sum(0)), class_weights, rtol=1e-12)
    # labels_to_image_weights: (class_weights * per-image class counts).sum(1)
    expected = [2 * class_weights[0], class_weights[0] + class_weights[1], 0.0, 3 * class_weights[0]]
    np.testing.assert_allclose(sampler.image_weights_from_classes(counts), expected, rtol=1e-12)
    maps = np.array([0.5, 0.9, 0.0])
    np.testing.assert_allclose(sampler.class_weights_from_counts(counts.sum(0), maps),
                               class_weights * (1 - maps) ** 2, rtol=1e-12)


@pytest.mark.parametrize("num_samples", SIZES)
def test_weighted_global_batches_are_the_same_for_every_group_size(num_samples):
    weights = sampler.image_weights_from_classes(class_count_table(num_samples))
    reference = global_batches(full_epoch(num_samples, per_batch_size=GLOBAL_BATCH, group_size=1,
                                          image_weights=weights), GLOBAL_BATCH)
    for group_size in GROUP_SIZES[1:]:
        per_batch = GLOBAL_BATCH // group_size
        batches = global_batches(full_epoch(num_samples, per_batch_size=per_batch, group_size=group_size,
                                            image_weights=weights), per_batch)
        np.testing.assert_array_equal(np.sort(batches, axis=1), np.sort(reference, axis=1))
    # drawn with replacement from the weights: not the plain permutation
    plain = global_batches(full_epoch(num_samples, per_batch_size=GLOBAL_BATCH, group_size=1), GLOBAL_BATCH)
    assert num_samples < 8 or not np.array_equal(np.sort(plain.ravel()), np.sort(reference.ravel()))


@pytest.mark.parametrize("group_size", (1, 2, 8))
@pytest.mark.parametrize("start_step", (0, 3, 7))
def test_weighted_resume_equals_the_tail_of_an_uninterrupted_epoch(group_size, start_step):
    weights = sampler.image_weights_from_classes(class_count_table(128))
    per_batch = GLOBAL_BATCH // group_size
    whole = full_epoch(128, epoch=3, per_batch_size=per_batch, group_size=group_size, image_weights=weights)
    tail = full_epoch(128, epoch=3, per_batch_size=per_batch, group_size=group_size, image_weights=weights,
                      start_step=start_step)
    for rank in range(group_size):
        np.testing.assert_array_equal(tail[rank].rows, whole[rank].rows[start_step * per_batch:])
        np.testing.assert_array_equal(tail[rank].positions, whole[rank].positions[start_step * per_batch:])


def test_weighted_order_changes_with_the_epoch_and_skips_images_without_boxes():
    counts = class_count_table(100)
    counts[:10] = 0                                         # ten background images weigh 0
    weights = sampler.image_weights_from_classes(counts)
    orders = [sampler.epoch_order(100, seed=1, epoch=e, dataset_key=DATASET_ID, image_weights=weights)
              for e in range(3)]
    assert not np.array_equal(orders[0], orders[1])
    assert all(np.all(order >= 10) for order in orders)
    np.testing.assert_array_equal(orders[2], sampler.epoch_order(100, seed=1, epoch=2, dataset_key=DATASET_ID,
                                                                 image_weights=weights))


def test_image_weights_raise_a_rare_class_share_to_what_the_weights_say():
    """Over many epochs the share of drawn images that hold the rare class is a binomial proportion with
    p = (weight of the images holding it) / (total weight); it stays within 4.5 standard errors of p
    (a false failure has probability below 1e-5) and far above its share without weights."""
    num_samples, num_epochs = 400, 50
    counts = class_count_table(num_samples, seed=3)
    weights = sampler.image_weights_from_classes(counts)
    holds_rare = counts[:, -1] > 0
    expected_share = weights[holds_rare].sum() / weights.sum()
    plain_share = holds_rare.mean()
    drawn = np.concatenate([sampler.epoch_order(num_samples, seed=0, epoch=e, dataset_key=DATASET_ID,
                                                image_weights=weights) for e in range(num_epochs)])
    share = holds_rare[drawn].mean()
    standard_error = np.sqrt(expected_share * (1 - expected_share) / len(drawn))
    assert abs(share - expected_share) < 4.5 * standard_error
    assert expected_share > 3 * plain_share and share > 3 * plain_share


@pytest.mark.parametrize("weights, message", [
    (np.ones(3), "one weight per image"),
    (np.zeros(5), "not all zero"),
    (np.array([1.0, -1.0, 1.0, 1.0, 1.0]), "non-negative"),
])
def test_bad_image_weights_are_explained(weights, message):
    with pytest.raises(ValueError, match=message):
        sampler.epoch_order(5, seed=0, epoch=0, dataset_key=DATASET_ID, image_weights=weights)
