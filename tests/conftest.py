"""Shared test fixtures.

Real data lives in ``benchmarks.real_data.REAL_DATA`` (``shared/data`` beside the project, or the folder
the environment variable YOLO_REAL_DATA names). A user's fresh clone lacks it: the
tests that need it skip there, saying why. In CI (CI=true) it must be present: a missing folder fails
instead of skipping, so CI never silently skips what its machine can run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.real_data import REAL_DATA

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REAL_DATA


def shared_data_path(*parts: str) -> Path:
    """Path under the real-data folder, or skip (fail in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        reason = f"real test data not found at {path} (a fresh clone has no shared/data beside it; YOLO_REAL_DATA may name the folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI must have it")
        pytest.skip(reason)
    return path


@pytest.fixture
def graph_mode():
    """Run the test in MindSpore's graph mode (compiled cells), restoring PyNative afterwards."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def coco128_dir() -> Path:
    return shared_data_path("coco128")


@pytest.fixture
def labelme_dir() -> Path:
    return shared_data_path("labelme_voc3")


@pytest.fixture
def quirks_dir() -> Path:
    return shared_data_path("image_quirks")


@pytest.fixture
def cocoapi_dir() -> Path:
    return shared_data_path("cocoapi_val2014_100")


RECT_COLOURS_BGR = ((0, 0, 255), (0, 255, 0), (255, 0, 0))


def write_rectangle_coco(folder: Path, *, num_images: int, seed: int = 0, size_range=(300, 700)):
    """A COCO dataset of filled rectangles in distinct saturated colours on a gray background.

    Category id k (1, 2, 3; contiguous class k-1) is drawn in RECT_COLOURS_BGR[k-1], so a box's class
    names its colour: after any geometric transform, a box must equal the pixel extent of its colour.
    Returns (image_dir, ann_file).
    """
    import json

    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for index in range(num_images):
        height, width = (int(v) for v in rng.integers(size_range[0], size_range[1], size=2))
        canvas = np.full((height, width, 3), 128, np.uint8)
        cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
        for k, (cy, cx) in enumerate(cells[: int(rng.integers(1, 5))]):
            # one rectangle per quadrant so that rectangles never overlap
            x1 = int(cx * width / 2 + rng.integers(5, width // 8))
            y1 = int(cy * height / 2 + rng.integers(5, height // 8))
            x2 = int(min((cx + 1) * width / 2 - 5, x1 + rng.integers(40, width // 2 - width // 8)))
            y2 = int(min((cy + 1) * height / 2 - 5, y1 + rng.integers(40, height // 2 - height // 8)))
            class_index = int(rng.integers(0, len(RECT_COLOURS_BGR)))
            canvas[y1:y2, x1:x2] = RECT_COLOURS_BGR[class_index]
            annotations.append({"id": ann_id, "image_id": index + 1, "category_id": class_index + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                                "iscrowd": 0})
            ann_id += 1
        name = f"rect_{index:04d}.png"
        cv2.imwrite(str(image_dir / name), canvas)
        images.append({"id": index + 1, "file_name": name, "height": height, "width": width})
    categories = [{"id": i, "name": f"class{i}"} for i in (1, 2, 3)]
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return image_dir, ann_file


@pytest.fixture(scope="session")
def validation_splits(tmp_path_factory):
    """tests/validation_runs.py's small train/val shards and config, converted once for the whole session."""
    from validation_runs import make_validation_splits

    made = make_validation_splits(tmp_path_factory.mktemp("validation_data"))
    assert (made[2].num_train, made[2].num_val) == (8, 4)
    return made


@pytest.fixture(scope="session")
def uninterrupted_validation_run(validation_splits, tmp_path_factory):
    """One finished yolov5n run on ``validation_splits`` (3 epochs, validated after each, a periodic
    checkpoint after every epoch), shared by test_train_validation.py and test_checkpoint_policy.py: both
    compare their interrupted-and-resumed runs with it, and it is the suite's most expensive fixture."""
    from validation_runs import validation_train_argv
    from yolomodel.cli import train as train_cli

    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert train_cli.main(validation_train_argv(validation_splits, run_dir, "--save_period", "1")) == 0
    return run_dir


SHARED_RUN_FIXTURES = ("validation_splits", "uninterrupted_validation_run")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs two workers with ``--dist loadgroup``), every test that uses
    the session's shared validation data or run goes to one worker, so that fixture is built once."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SHARED_RUN_FIXTURES):
            item.add_marker(pytest.mark.xdist_group("shared_validation_run"))
