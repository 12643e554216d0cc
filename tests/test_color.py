"""Colour augmentations: HSV jitter (yolodata.augment.color) and the albumentations extras
(yolodata.augment.extras), on real COCO images."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from yolodata.augment import color, extras
from yolodata.rng import keyed_rng


@pytest.fixture
def coco_images(coco128_dir):
    """Three real BGR images (one grayscale JPEG among coco128 is decoded to 3 channels too)."""
    paths = sorted((coco128_dir / "val2017").glob("*.jpg"))[:3]
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
    assert all(image is not None for image in images)
    return images


def yolov5_augment_hsv(image_bgr, gains):
    """Reference: YOLOv5's augment_hsv written out step by step (split, three LUTs, merge)."""
    hue, sat, val = cv2.split(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV))
    levels = np.arange(256, dtype=np.float64)
    gains = np.asarray(gains, np.float64)
    lut_hue = ((levels * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


# --- sample_hsv ----------------------------------------------------------------------------------

def test_sample_hsv_gains_lie_in_yolov5_ranges_and_repeat_for_the_same_key():
    limits = np.array([0.015, 0.7, 0.4])
    samples = np.stack([color.sample_hsv(keyed_rng(3, i, purpose="hsv")) for i in range(500)])
    assert samples.dtype == np.float32 and samples.shape == (500, 3)
    assert np.all(samples >= 1 - limits - 1e-6) and np.all(samples <= 1 + limits + 1e-6)
    # the range is actually used on both sides of 1, not a constant
    assert np.all(samples.min(0) < 1 - limits / 2) and np.all(samples.max(0) > 1 + limits / 2)
    again = color.sample_hsv(keyed_rng(3, 7, purpose="hsv"))
    np.testing.assert_array_equal(again, samples[7])


def test_sample_hsv_with_zero_limits_gives_exact_ones_and_consumes_the_same_draws():
    rng_zero, rng_default = keyed_rng(0, purpose="hsv"), keyed_rng(0, purpose="hsv")
    gains = color.sample_hsv(rng_zero, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(gains, np.ones(3, np.float32))
    color.sample_hsv(rng_default)
    assert rng_zero.random() == rng_default.random()


@pytest.mark.parametrize("limits", [(-0.1, 0.7, 0.4), (0.015, float("nan"), 0.4)])
def test_sample_hsv_rejects_bad_limits(limits):
    with pytest.raises(ValueError, match="hgain, sgain and vgain"):
        color.sample_hsv(keyed_rng(0, purpose="hsv"), *limits)


# --- apply_hsv -----------------------------------------------------------------------------------

@pytest.mark.parametrize("gains", [(1.012, 0.45, 1.3), (0.986, 1.6, 0.7), (1.0, 1.0, 0.999)])
def test_apply_hsv_equals_yolov5_augment_hsv_in_bgr_and_rgb(coco_images, gains):
    gains = np.asarray(gains, np.float32)  # what sample_hsv returns; both sides see the same values
    for image in coco_images:
        before = image.copy()
        expected_bgr = yolov5_augment_hsv(image, gains)
        out_bgr = color.apply_hsv(image, gains)
        out_rgb = color.apply_hsv(image, gains, to_rgb=True)
        np.testing.assert_array_equal(out_bgr, expected_bgr)
        np.testing.assert_array_equal(out_rgb, expected_bgr[:, :, ::-1])
        np.testing.assert_array_equal(image, before)  # input untouched
        assert out_bgr.dtype == np.uint8 and out_bgr.shape == image.shape
        assert out_rgb.flags.c_contiguous


def test_apply_hsv_with_unit_gains_returns_the_same_pixels_in_a_new_array(coco_images):
    image = coco_images[0]
    out = color.apply_hsv(image, np.ones(3, np.float32))
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(color.apply_hsv(image, (1, 1, 1), to_rgb=True), image[:, :, ::-1])


def test_hsv_round_trip_of_every_8bit_colour_stays_within_six_levels():
    # What gains just off 1 (identity lookup tables) guarantee: only the 8-bit BGR->HSV->BGR
    # round trip's error, measured here over all 2**24 colours.
    levels = np.arange(256, dtype=np.uint8)
    # (4096, 4096, 3): every (b, g, r) triple once
    every_colour = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(4096, 4096, 3)
    out = color.apply_hsv(every_colour, (1.0, 1.0, 1.0 + 1e-6))
    error = np.abs(out.astype(np.int16) - every_colour.astype(np.int16))
    assert error.max() <= 6
    assert error.mean() < 1.0


def test_hsv_lookup_table_wraps_hue_and_clips_saturation_and_value():
    table = color.hsv_lookup_table((1.1, 1.5, 0.5))
    assert table.shape == (256, 1, 3) and table.dtype == np.uint8
    assert table[170, 0, 0] == int(170 * 1.1) % 180  # 187 wraps to 7
    assert table[100, 0, 0] == 110
    assert table[200, 0, 1] == 255 and table[100, 0, 1] == 150
    assert table[255, 0, 2] == 127 and table[0, 0, 2] == 0


def test_apply_hsv_moves_colours_the_way_the_gains_say(coco_images):
    image = coco_images[1]
    hsv_in = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float64)
    darker = cv2.cvtColor(color.apply_hsv(image, (1.0, 1.0, 0.5)), cv2.COLOR_BGR2HSV)
    greyer = cv2.cvtColor(color.apply_hsv(image, (1.0, 0.3, 1.0)), cv2.COLOR_BGR2HSV)
    assert darker[:, :, 2].mean() == pytest.approx(hsv_in[:, :, 2].mean() * 0.5, rel=0.05)
    assert greyer[:, :, 1].mean() == pytest.approx(hsv_in[:, :, 1].mean() * 0.3, rel=0.1)
    assert np.all(color.apply_hsv(image, (1.0, 1.0, 0.0)) == 0)  # value gain 0: black


@pytest.mark.parametrize("bad_image", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                       np.zeros((8, 8, 4), np.uint8)])
def test_apply_hsv_rejects_images_that_are_not_uint8_bgr(bad_image):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        color.apply_hsv(bad_image, (1.01, 1, 1))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        color.bgr_to_rgb(bad_image)


@pytest.mark.parametrize("bad_gains", [(1.0, 1.0), (1.0, -0.5, 1.0), (1.0, np.inf, 1.0)])
def test_apply_hsv_rejects_bad_gains(bad_gains):
    with pytest.raises(ValueError, match="gains"):
        color.apply_hsv(np.zeros((4, 4, 3), np.uint8), bad_gains)


def test_bgr_to_rgb_reverses_channels_into_a_new_array(coco_images):
    image = coco_images[2]
    before = image.copy()
    out = color.bgr_to_rgb(image)
    np.testing.assert_array_equal(out, image[:, :, ::-1])
    assert out.flags.c_contiguous and not np.shares_memory(out, image)
    np.testing.assert_array_equal(image, before)


# --- extras --------------------------------------------------------------------------------------

def only(name, seed=11):
    return extras.ExtrasParams(**{n: n == name for n in extras.EXTRA_NAMES}, seed=seed)


def test_sample_extras_p0_gives_none_and_p1_applies_all_four():
    for index in range(200):
        assert extras.sample_extras(keyed_rng(0, index, purpose="extras"), p=0.0) is None
    params = extras.sample_extras(keyed_rng(0, 1, purpose="extras"), p=1.0)
    assert params.applied() == extras.EXTRA_NAMES


def test_sample_extras_at_default_p_applies_to_about_four_percent():
    sampled = [extras.sample_extras(keyed_rng(5, i, purpose="extras")) for i in range(4000)]
    fraction = np.mean([params is not None for params in sampled])
    assert 0.025 < fraction < 0.055  # 1 - 0.99**4 = 0.039
    applied = [params for params in sampled if params is not None]
    assert all(len(params.applied()) >= 1 for params in applied)


def test_sample_extras_consumes_the_same_draws_whatever_the_outcome():
    rng_never, rng_always = keyed_rng(2, purpose="extras"), keyed_rng(2, purpose="extras")
    extras.sample_extras(rng_never, p=0.0)
    extras.sample_extras(rng_always, p=1.0)
    assert rng_never.random() == rng_always.random()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_sample_extras_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match="probability"):
        extras.sample_extras(keyed_rng(0, purpose="extras"), p=p)


@pytest.mark.parametrize("name", extras.EXTRA_NAMES)
def test_each_extra_is_deterministic_changes_pixels_and_leaves_the_input_alone(coco_images, name):
    image = coco_images[0]
    before = image.copy()
    first = extras.apply_extras(image, only(name))
    second = extras.apply_extras(image, pickle.loads(pickle.dumps(only(name))))
    np.testing.assert_array_equal(first, second)
    assert first.shape == image.shape and first.dtype == np.uint8
    assert not np.array_equal(first, image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("name", ["blur", "median_blur", "clahe"])
def test_the_seed_drives_the_inner_randomness(coco_images, name):
    outputs = {extras.apply_extras(coco_images[1], only(name, seed)).tobytes() for seed in range(8)}
    assert len(outputs) > 1


def test_to_gray_weights_channels_as_rgb(coco_images):
    image = coco_images[1]
    out = extras.apply_extras(image, only("to_gray"))
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
    expected = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1


def test_all_four_extras_are_deterministic_and_params_pickle(coco_images):
    params = extras.sample_extras(keyed_rng(9, 0, purpose="extras"), p=1.0)
    restored = pickle.loads(pickle.dumps(params))
    assert restored == params
    image = coco_images[2]
    np.testing.assert_array_equal(extras.apply_extras(image, params), extras.apply_extras(image, restored))


def test_apply_extras_without_params_returns_a_copy(coco_images):
    image = coco_images[0]
    out = extras.apply_extras(image, None)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)
