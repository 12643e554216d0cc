"""`make demo` end to end at a toy size: every stage runs and leaves the output the summary points to."""
from __future__ import annotations

import json

import pytest

from yolodata.manifest import load_manifest
from yolomodel.cli import demo


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_prints_where_everything_went(tmp_path, capsys):
    out = tmp_path / "demo"
    status = demo.main(["--output_dir", str(out), "--num_images", "24", "--epochs", "1",
                        "--training_shape", "64", "--per_batch_size", "4"])
    printed = capsys.readouterr().out
    assert status == 0

    assert load_manifest(out / "mindrecord_train").num_images + load_manifest(out / "mindrecord_val").num_images == 24
    for figure in ("train_batches.jpg", "labels.png", "results.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    checkpoints = sorted(p.name for p in (out / "train" / "ckpt_0").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "best_weights.ckpt", "last.ckpt", "last_weights.ckpt"]
    best = out / "train" / "ckpt_0" / "best.ckpt"
    rows = (out / "train" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("epoch,")   # the header and epoch 1, validated
    results = json.loads((out / "eval" / "results.json").read_text())
    assert isinstance(results, list)
    val_ids = {row["id"] for row in json.loads((out / "mindrecord_val" / "annotations.json").read_text())["images"]}
    assert {entry["image_id"] for entry in results} <= val_ids
    assert (out / "detections" / "detections.json").is_file()
    onnx_files = list((out / "export").glob("*.onnx"))
    assert len(onnx_files) == 1 and onnx_files[0].stat().st_size > 100_000

    summary = printed[printed.index("\nsummary"):]
    assert "mAP@0.5 " in summary and "mAP@0.5:0.95 " in summary
    for where in (out / "mindrecord_train", out / "figures" / "labels.png", best, onnx_files[0],
                  out / "eval" / "results.json", out / "train" / "results.csv", out / "figures" / "results.png"):
        assert str(where) in summary
