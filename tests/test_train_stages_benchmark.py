"""benchmarks/train_stages.py: the stages add up to the batch function, and the process is left as it was."""
from __future__ import annotations

import json

import cv2
import pytest

from benchmarks import train_stages
from conftest import write_rectangle_coco
from yolodata.convert import convert_coco
from yolodata.pipeline import rows as rows_lib


def test_stages_add_up_and_the_timers_and_margin_are_removed_afterwards(tmp_path, capsys):
    image_dir, ann_file = write_rectangle_coco(tmp_path, num_images=8, seed=2, size_range=(100, 200))
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=tmp_path / "shards", progress=False)
    originals = {(module, name): getattr(module, name) for _, module, name in train_stages.STAGES}
    margin = rows_lib.REDUCED_DECODE_MARGIN
    out = tmp_path / "stages.json"
    assert train_stages.main(["--mindrecord", str(tmp_path / "shards"), "--training_shape", "64",
                              "--per_batch_size", "2", "--num_batches", "3", "--rounds", "1",
                              "--compare_margin", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for profile in (figures, figures["compared_margin"]):
        stages = profile["stages_ms"]
        assert stages["decode (cv2.imdecode)"] > 0 and stages["HSV jitter + RGB"] > 0 and stages["mosaic"] > 0
        top_level = sum(value for label, value in stages.items() if not label.startswith(" "))
        assert top_level == pytest.approx(profile["total_ms"], rel=1e-9)  # "rest" closes the sum exactly
        # a part is never more than the stage it belongs to
        assert stages["  tiles: resize, flip, copy"] <= stages["mosaic"]
        assert stages["    cv2.resize"] <= stages["  tiles: resize, flip, copy"]
    assert figures["num_images"] == 6 and figures["reduced_decode_margin"] == margin
    assert figures["compared_margin"]["reduced_decode_margin"] == 1
    one_worker = figures["pipeline_1_worker"]
    # process CPU time advances in clock ticks (10 ms): 6 tiny images may all fit in one, giving 0
    assert one_worker["images_per_s"] > 0 and one_worker["cpu_ms_per_image"] >= 0
    # nothing of the measurement stays in the process: original functions, the rule's margin
    assert all(getattr(module, name) is function for (module, name), function in originals.items())
    assert cv2.resize is originals[(cv2, "resize")] and rows_lib.REDUCED_DECODE_MARGIN == margin
    assert "= batch function" in capsys.readouterr().out
