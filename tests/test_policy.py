"""YOLOv5's augmentation policy (yolodata.augment.policy): its settings and its random decisions.

What the policy renders is checked by the shared harness (tests/test_transform_harness.py, the
``policy-*`` cases) and, bitwise through the whole pipeline, by tests/test_pipeline.py's pinned batches.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from yolodata.augment.policy import AugmentConfig, apply_decision, augment_sample, decide_sample

# YOLOv5's data/hyps/hyp.scratch-low.yaml, the augmentation entries (copy_paste and mixup are 0 there)
HYP_SCRATCH_LOW = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                       perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0)


def test_defaults_are_yolov5_hyp_scratch_low():
    config = AugmentConfig()
    assert {name: getattr(config, name) for name in HYP_SCRATCH_LOW} == HYP_SCRATCH_LOW
    assert config.extras == 0.01   # YOLOv5's albumentations list: Blur, MedianBlur, ToGray, CLAHE at p=0.01


def test_from_mapping_keeps_defaults_converts_numbers_and_refuses_unknown_names():
    config = AugmentConfig.from_mapping({"mosaic": 0, "degrees": "5"})   # yaml may give ints or strings
    assert config == dataclasses.replace(AugmentConfig(), mosaic=0.0, degrees=5.0)
    assert isinstance(config.mosaic, float)
    assert AugmentConfig.from_mapping(None) == AugmentConfig.from_mapping({}) == AugmentConfig()
    with pytest.raises(ValueError, match=r"unknown augmentation option\(s\) \['mosiac'\]; valid ones are"):
        AugmentConfig.from_mapping({"mosiac": 1.0})
    with pytest.raises(ValueError, match="mapping"):
        AugmentConfig.from_mapping([("mosaic", 1.0)])


@pytest.mark.parametrize("options, message", [
    (dict(mosaic=1.5), r"mosaic=1.5 must be within \[0, 1\]"),
    (dict(fliplr=-0.1), "fliplr"),
    (dict(translate=2.0), "translate"),
    (dict(scale=1.0), r"scale=1.0 must be within \[0, 1\)"),
    (dict(degrees=-1.0), "degrees must not be negative"),
    (dict(hsv_v=-0.4), "hsv_v must not be negative"),
    (dict(shear=90.0), "shear=90.0 must be below 90 degrees"),
    (dict(extras=float("nan")), "extras must be a finite number"),
    (dict(hsv_s="strong"), "hsv_s must be a number, got 'strong'"),
])
def test_bad_settings_are_refused_when_made(options, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**options)
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_mapping(options)


HWS = [(480, 640), (640, 427), (375, 500), (333, 500), (612, 612)]


def decide(config, position, index=0, hws=HWS, size=320, seed=0, epoch=0):
    return decide_sample(config, seed=seed, epoch=epoch, position=position, index=index, image_hws=hws,
                         size=size)


def test_mosaic_uses_the_sample_first_and_three_other_images_of_the_batch():
    for index in range(len(HWS)):
        for position in range(20):
            decision = decide(AugmentConfig(mosaic=1.0), position, index=index)
            assert decision.sources[0] == index and len(decision.sources) == 4
            partners = decision.sources[1:]
            assert len(set(partners)) == 3 and index not in partners
            assert all(0 <= j < len(HWS) for j in partners)
            assert decision.mosaic is not None


def test_small_batches_repeat_mosaic_partners():
    for position in range(20):
        decision = decide(AugmentConfig(mosaic=1.0), position, index=1, hws=HWS[:2])
        assert decision.sources[0] == 1 and len(decision.sources) == 4
        assert set(decision.sources[1:]) <= {0, 1}


def test_letterbox_path_maps_the_source_into_the_output():
    config = AugmentConfig(mosaic=0.0, translate=0.0, scale=0.0, fliplr=0.0)   # letterbox only
    decision = decide(config, position=3, index=1)
    assert decision.sources == (1,) and decision.mosaic is None
    height, width = HWS[1]
    # the 427 x 640 image letterboxed into 320 x 320: scale 0.5 (214 px wide once resized), centred
    # horizontally with a whole-pixel pad of (320 - 214) // 2 = 53
    corners = decision.matrix @ np.array([[0, width, width], [0, height, 0], [1, 1, 1]], np.float64)
    np.testing.assert_allclose(corners[:2] / corners[2], [[53, 266.5, 266.5], [0, 320, 0]], atol=1e-9)


def test_mosaic_probability_is_honoured():
    uses = [decide(AugmentConfig(mosaic=0.3), position).mosaic is not None for position in range(1000)]
    assert 240 <= sum(uses) <= 360   # binomial(1000, 0.3): mean 300, sd 14.5


def test_a_decision_depends_only_on_its_key():
    config = AugmentConfig(mosaic=0.5, degrees=10.0, extras=0.5)
    for position in range(30):
        first, again = decide(config, position), decide(config, position)
        assert first.sources == again.sources and first.mosaic == again.mosaic and first.extras == again.extras
        np.testing.assert_array_equal(first.matrix, again.matrix)
        np.testing.assert_array_equal(first.hsv_gains, again.hsv_gains)
    keys = [dict(position=1), dict(position=2), dict(position=1, epoch=1), dict(position=1, seed=1)]
    matrices = [decide(config, **key).matrix for key in keys]
    assert all(not np.array_equal(a, b) for i, a in enumerate(matrices) for b in matrices[i + 1:])


def test_no_hsv_draw_when_every_limit_is_zero():
    assert decide(AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0), 0).hsv_gains is None
    assert decide(AugmentConfig(), 0).hsv_gains.shape == (3,)


def test_augment_sample_is_decide_then_apply_and_leaves_its_inputs_alone():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=hw + (3,), dtype=np.uint8) for hw in HWS]
    labels = [np.array([[10, 20, 200, 220, k % 3, 0]], np.float32) for k in range(len(HWS))]
    copies = [a.copy() for a in images + labels]
    config = AugmentConfig(mosaic=0.5, extras=0.5)
    for position in range(6):
        out_a = np.zeros((256, 256, 3), np.uint8)
        labels_a = augment_sample(config, images, labels, seed=3, epoch=1, position=position, index=2, out=out_a)
        decision = decide_sample(config, seed=3, epoch=1, position=position, index=2,
                                 image_hws=[image.shape[:2] for image in images], size=256)
        out_b = np.zeros((256, 256, 3), np.uint8)
        labels_b = apply_decision(decision, images, labels, out_b)
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    for before, after in zip(copies, images + labels):
        np.testing.assert_array_equal(before, after)
