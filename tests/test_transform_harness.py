"""The one shared harness every transform of yolodata.augment passes.

A transform enters as one ``Case`` in ``CASES``: a ``sample`` callable (Generator, source image sizes
-> parameters) and an ``apply`` callable (images, labels, parameters -> (image, labels)), both
module-level functions or ``functools.partial`` of them, so that they pickle like the pipeline's
functions must. Adding a transform is one more entry in ``CASES``.

Scenes are filled rectangles in distinct colours on a plain 114-gray background (the padding colour,
so a rectangle can only ever blend with gray), each rectangle's box known exactly; the class column
names the rectangle's colour. For every case and 20 seeds the harness checks:

- inputs unmodified (compared with copies) and outputs not sharing memory with them;
- parameters and callables picklable: a pickle round trip gives the same parameters and bitwise the
  same result; the same seed gives the same parameters and result (determinism);
- output dtype and shape, label array dtype and shape;
- geometric cases: every surviving box equals the pixel extent of its rectangle's colour in the output
  within 2 px, classes and iscrowd flags travel with their boxes, and every rectangle that is clearly
  visible away from the output border has a box;
- colour cases: boxes unchanged, image shape unchanged;
- blending cases (mixup): the output is the blend of its two parts, each part rendered on its own
  passes the geometric check, and the labels are the two parts' labels.
"""
from __future__ import annotations

import copy
import functools
import pickle
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pytest

from yolodata.augment import affine, color, extras, letterbox, mosaic, policy
from yolodata.rng import keyed_rng

SEEDS = range(20)
BACKGROUND = (114, 114, 114)
# The eight corners of the colour cube: a bilinear blend of any of them with the 114 background is
# always nearer to one of the two blended colours than to any other (test_palette_is_unambiguous).
PALETTE = ((0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0),
           (255, 255, 255), (0, 0, 0))
BOX_TOLERANCE = 2.0
MIN_MIX = 0.25  # a pixel shows a rectangle when it is at least this much of its colour


# --- scenes ----------------------------------------------------------------------------------------

def make_scene(seed: int, num_images: int, size_range, rects_per_image: int):
    """(images, labels): rectangles of distinct PALETTE colours, at most one per image quadrant.

    Rectangles keep 4 px of background from each other and from the image edges, so every bilinear
    sample mixes at most one rectangle colour with the background. Class = palette index; iscrowd
    alternates with the class so that the harness can check that flags travel with their boxes.
    """
    if num_images * rects_per_image > len(PALETTE):
        raise ValueError(f"at most {len(PALETTE)} rectangles per scene (one colour each)")
    rng = np.random.default_rng(seed)
    colours = rng.permutation(len(PALETTE))
    images, labels, used = [], [], 0
    for _ in range(num_images):
        height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        image = np.empty((height, width, 3), np.uint8)
        image[:] = np.array(BACKGROUND, np.uint8)
        rows = []
        quadrants = rng.permutation(4)[:rects_per_image]
        for quadrant in quadrants:
            qx, qy = (quadrant % 2) * width // 2, (quadrant // 2) * height // 2
            qw, qh = width // 2, height // 2
            rect_w = int(rng.integers(max(6, qw // 4), qw - 8 + 1))
            rect_h = int(rng.integers(max(6, qh // 4), qh - 8 + 1))
            x1 = qx + 4 + int(rng.integers(0, qw - 8 - rect_w + 1))
            y1 = qy + 4 + int(rng.integers(0, qh - 8 - rect_h + 1))
            class_index = int(colours[used])
            used += 1
            image[y1:y1 + rect_h, x1:x1 + rect_w] = PALETTE[class_index]
            rows.append([x1, y1, x1 + rect_w, y1 + rect_h, class_index, class_index % 2])
        images.append(image)
        labels.append(np.asarray(rows, np.float32).reshape(-1, 6))
    return images, labels


def colour_classes(image: np.ndarray) -> np.ndarray:
    """(H, W) palette index of every pixel that shows at least MIN_MIX of a rectangle colour, else -1.

    Bilinear interpolation mixes a rectangle colour c with the background b: pixels lie on the segment
    b + t (c - b). A pixel belongs to rectangle c when it lies on that segment (within 20 levels) with
    t >= MIN_MIX. A threshold below one half keeps the tip of a slanted edge that meets the output
    border (its last pixel centre sees only part of it) within the box tolerance.
    """
    background = np.asarray(BACKGROUND, np.float32)
    directions = np.asarray(PALETTE, np.float32) - background              # (K, 3)
    offsets = image.astype(np.float32) - background                        # (H, W, 3)
    # mix: (H, W, K) position along each segment; residual: distance from it
    mix = offsets @ directions.T / (directions ** 2).sum(axis=1)
    residual = np.linalg.norm(offsets[:, :, None, :] - mix[..., None] * directions, axis=-1)
    member = (mix >= MIN_MIX) & (mix <= 1.05) & (residual < 20)
    classes = np.where(member, mix, -np.inf).argmax(axis=-1)
    return np.where(member.any(axis=-1), classes, -1)


def pixel_extent(classes: np.ndarray, class_index: int):
    """(x1, y1, x2, y2) edge coordinates of the pixels of ``class_index``'s colour, or None."""
    ys, xs = np.nonzero(classes == class_index)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def box_problems(out_image: np.ndarray, out_labels: np.ndarray, in_labels) -> list[str]:
    """Mismatches between boxes and rectangle pixels (empty list when the output is right)."""
    problems = []
    pixel_classes = colour_classes(out_image)
    height, width = out_image.shape[:2]
    flags = {int(row[4]): float(row[5]) for lab in in_labels for row in lab}
    classes = [int(c) for c in out_labels[:, 4]]
    if len(set(classes)) != len(classes):
        problems.append(f"a rectangle has several boxes: classes {sorted(classes)}")
    for row in out_labels:
        class_index = int(row[4])
        if class_index not in flags:
            problems.append(f"box of class {class_index} that no input had")
            continue
        if row[5] != flags[class_index]:
            problems.append(f"class {class_index}: iscrowd {row[5]} became separated from its box")
        extent = pixel_extent(pixel_classes, class_index)
        if extent is None:
            problems.append(f"class {class_index}: box {row[:4].round(2).tolist()} but no pixel of its colour")
            continue
        error = np.abs(np.asarray(extent) - row[:4]).max()
        if error > BOX_TOLERANCE:
            problems.append(f"class {class_index}: box {row[:4].round(2).tolist()} vs pixel extent {extent} "
                            f"(off by {error:.2f} px)")
    for class_index in flags:
        if class_index in classes:
            continue
        extent = pixel_extent(pixel_classes, class_index)
        if extent is None:
            continue
        x1, y1, x2, y2 = extent
        w, h = x2 - x1, y2 - y1
        clearly_visible = min(w, h) >= 4 and max(w, h) / min(w, h) < 20
        away_from_border = x1 >= 2 and y1 >= 2 and x2 <= width - 2 and y2 <= height - 2
        if clearly_visible and away_from_border:
            problems.append(f"class {class_index}: rectangle visible at {extent} but it has no box")
    return problems


# --- the transforms, as picklable (sample, apply) pairs ----------------------------------------------

def sample_nothing(rng, source_hws):
    """For deterministic transforms: no parameters."""
    return None


def apply_letterbox(images, labels, params, *, dst_hw, scaleup):
    image, lab, _, _ = letterbox.letterbox(images[0], labels[0], dst_hw, scaleup=scaleup)
    return image, lab


def sample_affine(rng, source_hws, **settings):
    return affine.sample_affine(rng, **settings)


def apply_letterbox_affine(images, labels, params, *, out_hw):
    """The pipeline's non-mosaic path: letterbox matrix, then the random affine, one warp."""
    box_matrix, _, _ = letterbox.letterbox_matrix(images[0].shape[:2], out_hw, scaleup=True)
    matrix = affine.affine_matrix(params, out_hw, out_hw) @ box_matrix
    return affine.warp(images[0], labels[0], matrix, out_hw)


def sample_mosaic(rng, source_hws, *, out_hw, **settings):
    return mosaic.sample_mosaic(rng, out_hw), affine.sample_affine(rng, **settings)


def apply_mosaic(images, labels, params, *, out_hw):
    mosaic_params, affine_params = params
    canvas_hw = (2 * out_hw[0], 2 * out_hw[1])
    matrix = affine.affine_matrix(affine_params, out_hw, canvas_hw)
    return mosaic.render_mosaic(images, labels, mosaic_params, matrix, out_hw)


def sample_hsv(rng, source_hws, **gains):
    return color.sample_hsv(rng, **gains)


def apply_hsv(images, labels, params, *, to_rgb):
    return color.apply_hsv(images[0], params, to_rgb=to_rgb), labels[0].copy()


def sample_extras(rng, source_hws, *, p):
    return extras.sample_extras(rng, p=p)


def apply_extras(images, labels, params):
    return extras.apply_extras(images[0], params), labels[0].copy()


def sample_policy(rng, source_hws, *, out_size, **settings):
    """The whole training policy for the sample at batch index 0 of the scene's images (its mosaic
    partners are the other images), keyed on a seed drawn from ``rng``."""
    return policy.decide_sample(policy.AugmentConfig(**settings), seed=int(rng.integers(2**31)), epoch=0,
                                position=0, index=0, image_hws=source_hws, size=out_size)


def apply_policy(images, labels, decision, *, out_size):
    out = np.empty((out_size, out_size, 3), np.uint8)
    out_labels = policy.apply_decision(decision, images, labels, out)
    return np.ascontiguousarray(out[..., ::-1]), out_labels   # the policy writes RGB; the scenes are BGR


@dataclass(frozen=True)
class Case:
    name: str
    sample: Callable      # (rng, list of source (h, w)) -> parameters
    apply: Callable       # (images, labels, parameters) -> (image, labels)
    geometric: bool       # False: pixel-only, boxes must come back unchanged
    num_images: int = 1
    out_hw: tuple | None = None          # None: the output has the input's shape
    size_range: tuple = (200, 480)       # source image sides
    rects_per_image: int = 4
    blended: bool = False                # two geometric parts blended (mixup): checked part by part


OUT = (320, 320)
ROTATE_SHEAR_PERSPECTIVE = dict(degrees=20.0, shear=8.0, perspective=0.0005)
POLICY_GEOMETRY_ONLY = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, extras=0.0)

CASES = [
    Case("letterbox-scaleup", sample_nothing, functools.partial(apply_letterbox, dst_hw=OUT, scaleup=True),
         geometric=True, out_hw=OUT, size_range=(120, 480)),
    Case("letterbox-eval-no-scaleup-nonsquare", sample_nothing,
         functools.partial(apply_letterbox, dst_hw=(256, 384), scaleup=False), geometric=True,
         out_hw=(256, 384), size_range=(100, 600)),
    Case("affine-default", functools.partial(sample_affine, flip_lr=0.5),
         functools.partial(apply_letterbox_affine, out_hw=OUT), geometric=True, out_hw=OUT),
    Case("affine-rotate-shear-perspective-flips",
         functools.partial(sample_affine, flip_lr=0.5, flip_ud=0.5, **ROTATE_SHEAR_PERSPECTIVE),
         functools.partial(apply_letterbox_affine, out_hw=OUT), geometric=True, out_hw=OUT),
    Case("mosaic-default", functools.partial(sample_mosaic, out_hw=OUT, flip_lr=0.5),
         functools.partial(apply_mosaic, out_hw=OUT), geometric=True, num_images=4, out_hw=OUT,
         rects_per_image=2),
    Case("mosaic-rotate-shear-perspective-flips",
         functools.partial(sample_mosaic, out_hw=OUT, flip_lr=0.5, flip_ud=0.5, **ROTATE_SHEAR_PERSPECTIVE),
         functools.partial(apply_mosaic, out_hw=OUT), geometric=True, num_images=4, out_hw=OUT,
         rects_per_image=2),
    Case("mosaic-nonsquare-small-sources-rotate",
         functools.partial(sample_mosaic, out_hw=(256, 320), flip_lr=0.5, degrees=10.0),
         functools.partial(apply_mosaic, out_hw=(256, 320)), geometric=True, num_images=4, out_hw=(256, 320),
         size_range=(60, 160), rects_per_image=2),
    Case("mosaic-nonsquare-large-sources", functools.partial(sample_mosaic, out_hw=(256, 320), flip_ud=0.5),
         functools.partial(apply_mosaic, out_hw=(256, 320)), geometric=True, num_images=4, out_hw=(256, 320),
         size_range=(300, 700), rects_per_image=2),
    # the policy's geometry (no colour jitter or extras, which would change the rectangles' colours)
    Case("policy-mosaic-flips", functools.partial(sample_policy, out_size=OUT[0], **POLICY_GEOMETRY_ONLY),
         functools.partial(apply_policy, out_size=OUT[0]), geometric=True, num_images=4, out_hw=OUT,
         rects_per_image=2),
    Case("policy-letterbox-rotate-shear-perspective-flips",
         functools.partial(sample_policy, out_size=OUT[0], **dict(POLICY_GEOMETRY_ONLY, mosaic=0.0, flipud=0.5),
                           **ROTATE_SHEAR_PERSPECTIVE),
         functools.partial(apply_policy, out_size=OUT[0]), geometric=True, out_hw=OUT),
    Case("policy-either-rotate", functools.partial(sample_policy, out_size=OUT[0], degrees=10.0,
                                                   **dict(POLICY_GEOMETRY_ONLY, mosaic=0.5)),
         functools.partial(apply_policy, out_size=OUT[0]), geometric=True, num_images=4, out_hw=OUT,
         rects_per_image=2),
    Case("policy-mixup-rotate", functools.partial(sample_policy, out_size=OUT[0], degrees=10.0,
                                                  **dict(POLICY_GEOMETRY_ONLY, mixup=1.0)),
         functools.partial(apply_policy, out_size=OUT[0]), geometric=True, num_images=4, out_hw=OUT,
         rects_per_image=2, blended=True),
    Case("hsv", functools.partial(sample_hsv), functools.partial(apply_hsv, to_rgb=False), geometric=False),
    Case("hsv-to-rgb", functools.partial(sample_hsv, hgain=0.5, sgain=0.9, vgain=0.9),
         functools.partial(apply_hsv, to_rgb=True), geometric=False),
    Case("extras-all", functools.partial(sample_extras, p=1.0), apply_extras, geometric=False),
    Case("extras-default", functools.partial(sample_extras, p=0.01), apply_extras, geometric=False),
]
GEOMETRIC = [case for case in CASES if case.geometric and not case.blended]
BLENDED = [case for case in CASES if case.blended]
PIXEL_ONLY = [case for case in CASES if not case.geometric]


def scene_for(case: Case, seed: int):
    return make_scene(seed, case.num_images, case.size_range, case.rects_per_image)


def run(case: Case, seed: int, images, labels):
    params = case.sample(keyed_rng(seed, purpose=f"harness-{case.name}"), [im.shape[:2] for im in images])
    return params, case.apply(images, labels, params)


def by_name(cases):
    return pytest.mark.parametrize("case", cases, ids=[case.name for case in cases])


# --- the checks ------------------------------------------------------------------------------------

def test_palette_is_unambiguous():
    """The colour classification the box check relies on: a blend of a palette colour with the
    background is classified as that colour when it holds MIN_MIX of it or more, never as another."""
    for index, colour in enumerate(PALETTE):
        mix = np.linspace(0, 1, 201)
        # blends: (201, 1, 3) image column from the background to this colour
        blends = np.asarray(BACKGROUND) + mix[:, None] * (np.asarray(colour) - np.asarray(BACKGROUND))
        classes = colour_classes(np.round(blends).astype(np.uint8)[:, None, :])[:, 0]
        assert np.all(classes[mix >= MIN_MIX + 0.01] == index), f"palette colour {colour}"
        assert np.all(classes[mix < MIN_MIX - 0.01] == -1), f"palette colour {colour}"


def test_scene_boxes_equal_their_rectangles():
    """The harness's own ground truth: in an untouched scene every box is exactly its pixel extent."""
    for seed in SEEDS:
        images, labels = make_scene(seed, 2, (60, 480), 4)
        for image, lab in zip(images, labels):
            assert box_problems(image, lab, [lab]) == []


@by_name(CASES)
def test_inputs_are_not_modified_nor_shared(case):
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        images_before, labels_before = copy.deepcopy(images), copy.deepcopy(labels)
        params, (out_image, out_labels) = run(case, seed, images, labels)
        for before, after in zip(images_before + labels_before, images + labels):
            assert np.array_equal(before, after), f"seed {seed}: an input was modified"
        for source in images + labels:
            assert not np.shares_memory(out_image, source), f"seed {seed}: output image shares an input's memory"
            assert not np.shares_memory(out_labels, source), f"seed {seed}: output labels share an input's memory"


@by_name(CASES)
def test_parameters_and_functions_pickle_and_results_repeat(case):
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        params, (out_image, out_labels) = run(case, seed, images, labels)
        sample, apply, params_copy = pickle.loads(pickle.dumps((case.sample, case.apply, params)))
        assert pickle.dumps(params_copy) == pickle.dumps(params), f"seed {seed}: parameters changed in pickling"
        image_copy, labels_copy = apply(images, labels, params_copy)
        assert np.array_equal(image_copy, out_image) and np.array_equal(labels_copy, out_labels), \
            f"seed {seed}: pickled function/parameters give a different result"
        resampled = sample(keyed_rng(seed, purpose=f"harness-{case.name}"), [im.shape[:2] for im in images])
        assert pickle.dumps(resampled) == pickle.dumps(params), f"seed {seed}: same seed, different parameters"
        again_image, again_labels = case.apply(images, labels, resampled)
        assert np.array_equal(again_image, out_image) and np.array_equal(again_labels, out_labels), \
            f"seed {seed}: same seed, different result"


@by_name(CASES)
def test_output_types_and_shapes(case):
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        _, (out_image, out_labels) = run(case, seed, images, labels)
        expected_hw = case.out_hw if case.out_hw is not None else images[0].shape[:2]
        assert out_image.dtype == np.uint8 and out_image.shape == tuple(expected_hw) + (3,), f"seed {seed}"
        assert out_labels.dtype == np.float32 and out_labels.ndim == 2 and out_labels.shape[1] == 6, f"seed {seed}"
        assert np.all(np.isfinite(out_labels)), f"seed {seed}"
        height, width = expected_hw
        assert np.all(out_labels[:, [0, 2]] >= 0) and np.all(out_labels[:, [0, 2]] <= width), f"seed {seed}"
        assert np.all(out_labels[:, [1, 3]] >= 0) and np.all(out_labels[:, [1, 3]] <= height), f"seed {seed}"


@by_name(GEOMETRIC)
def test_boxes_equal_the_pixel_extent_of_their_rectangles(case):
    total_boxes = 0
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        _, (out_image, out_labels) = run(case, seed, images, labels)
        problems = box_problems(out_image, out_labels, labels)
        assert problems == [], f"seed {seed}: " + "; ".join(problems)
        total_boxes += len(out_labels)
    # the check must have had something to check: most rectangles survive the transforms
    assert total_boxes >= len(SEEDS) * 2


def blend_parts(decision):
    """The two decisions a mixup decision blends: the first mosaic and the second one, each without mixup."""
    second = decision.mixup
    first = replace(decision, mixup=None)
    return first, replace(decision, sources=second.sources, mosaic=second.mosaic, matrix=second.matrix, mixup=None)


@by_name(BLENDED)
def test_blends_are_the_blend_of_two_correct_parts(case):
    ratios = []
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        decision, (out_image, out_labels) = run(case, seed, images, labels)
        assert decision.mixup is not None, f"seed {seed}: mixup=1.0 must always blend"
        ratios.append(decision.mixup.ratio)
        parts = [case.apply(images, labels, part) for part in blend_parts(decision)]
        for part_image, part_labels in parts:
            problems = box_problems(part_image, part_labels, labels)
            assert problems == [], f"seed {seed}: " + "; ".join(problems)
        ratio = decision.mixup.ratio
        expected = np.floor(parts[0][0].astype(np.float64) * ratio + parts[1][0].astype(np.float64) * (1 - ratio))
        assert np.array_equal(out_image, expected.astype(np.uint8)), f"seed {seed}: not the blend of its two parts"
        assert np.array_equal(out_labels, np.concatenate([parts[0][1], parts[1][1]])), f"seed {seed}"
    # Beta(32, 32): mean 0.5, sd 0.0620; the mean of 20 draws is within 4 standard errors (0.055) of 0.5
    assert abs(np.mean(ratios) - 0.5) < 4 * 0.0620 / np.sqrt(len(ratios))
    assert 0.3 < min(ratios) and max(ratios) < 0.7   # each draw within 3.2 sd: P(any outside) < 0.03


@by_name(PIXEL_ONLY)
def test_pixel_only_transforms_keep_boxes_and_shape(case):
    for seed in SEEDS:
        images, labels = scene_for(case, seed)
        _, (out_image, out_labels) = run(case, seed, images, labels)
        assert np.array_equal(out_labels, labels[0]), f"seed {seed}"
        assert out_image.shape == images[0].shape, f"seed {seed}"


# --- the harness can fail --------------------------------------------------------------------------

def apply_flip_pixels_only(images, labels, params):
    """A broken transform: pixels mirrored, boxes forgotten."""
    return np.ascontiguousarray(images[0][:, ::-1]), labels[0].copy()


def test_the_box_check_catches_boxes_that_do_not_follow_the_pixels():
    caught = 0
    for seed in SEEDS:
        images, labels = make_scene(seed, 1, (200, 480), 4)
        out_image, out_labels = apply_flip_pixels_only(images, labels, None)
        caught += bool(box_problems(out_image, out_labels, labels))
    assert caught >= len(SEEDS) - 2  # a scene that is symmetric by chance may pass


def test_the_box_check_catches_a_lost_box_and_a_shifted_box():
    images, labels = make_scene(0, 1, (300, 300), 4)
    assert any("no box" in p for p in box_problems(images[0], labels[0][1:], labels))
    shifted = labels[0].copy()
    shifted[0, [0, 2]] += 3
    assert any("off by" in p for p in box_problems(images[0], shifted, labels))
