"""Shared test fixtures.

Real data lives in ../shared/data (relative to the project root). A user's fresh clone lacks it: the
tests that need it skip there, saying why. In CI (CI=true) it must be present: a missing folder fails
instead of skipping, so CI never silently skips what its machine can run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip (fail in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        reason = f"real test data not found at {path} (a fresh clone has no ../shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI must have it")
        pytest.skip(reason)
    return path


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
