"""benchmarks/train_step.py --breakdown: every part is timed and written under the keys issue 15 names."""
from __future__ import annotations

import json

import mindspore as ms
import pytest

from benchmarks import train_step

BREAKDOWN_KEYS = ("forward_ms", "network_forward_backward_ms", "loss_forward_backward_ms", "update_ms", "step_ms")


@pytest.mark.slow
def test_breakdown_writes_every_part(tmp_path, capsys):
    out = tmp_path / "breakdown.json"
    try:
        result = train_step.main(["--breakdown", "--yolov5_version", "yolov5n", "--training_shape", "64",
                                  "--per_batch_size", "2", "--rounds", "2", "--steps", "1", "--max_boxes", "4",
                                  "--num_classes", "2", "--json", str(out)])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    for key in BREAKDOWN_KEYS:
        assert written[key] > 0 and len(written["rounds_ms"][key]) == 2
        low, high = written["ranges_ms"][key]
        assert low <= written[key] <= high
    assert written["max_boxes"] == 4 and written["loss_scale"] == 1.0        # the CPU default: float32
    assert written["images_per_second"] == pytest.approx(2 * 1000.0 / written["step_ms"], rel=1e-2)
    table = capsys.readouterr().out
    assert "| full step |" in table and "| loss forward + backward |" in table


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        train_step.parse_args(["--training_shape", "100"])
    with pytest.raises(SystemExit):
        train_step.parse_args(["--breakdown", "--rounds", "0"])
