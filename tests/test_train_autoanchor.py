"""AutoAnchor in training: when it runs, what the log says, and that the anchors in effect reach the
checkpoint, config.yaml and the networks eval / infer / export build from the checkpoint."""
from __future__ import annotations

import argparse
import json
import logging

import cv2
import numpy as np
import pytest

from yolodata.convert import convert_coco
from yolodata.pipeline.targets import YOLOV5_ANCHORS
from yolomodel.checkpoint import loading
from yolomodel.train import autoanchor
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train.labels import TrainingLabels, boxes_per_image_and_class, image_weights_for
from yolomodel.train.session import ModelChoice


def write_thin_box_coco(folder, *, num_images=12, seed=0):
    """COCO images (gray, 160 x 160) each with two long thin bars, one lying and one standing."""
    rng = np.random.default_rng(seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in range(num_images):
        canvas = np.full((160, 160, 3), 128, np.uint8)
        length, thickness = int(rng.integers(100, 150)), int(rng.integers(6, 10))
        bars = [(5, 10, length, thickness), (150 - thickness, 5, thickness, length)]
        for number, (x, y, w, h) in enumerate(bars):
            canvas[y:y + h, x:x + w] = (0, 0, 255)
            annotations.append({"id": 2 * index + number + 1, "image_id": index + 1, "category_id": 1,
                                "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": 0})
        cv2.imwrite(str(image_dir / f"bar_{index:03d}.png"), canvas)
        images.append({"id": index + 1, "file_name": f"bar_{index:03d}.png", "height": 160, "width": 160})
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "bar"}]}))
    return image_dir, ann_file


@pytest.fixture(scope="module")
def thin_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("thin")
    image_dir, ann_file = write_thin_box_coco(root)
    out = root / "shards"
    convert_coco(image_dir, ann_file, out, shard_num=1)
    return out


def _args(shards, **overrides):
    values = dict(mindrecord=str(shards), num_parallel_workers=1, seed=0, resume="", noautoanchor=False)
    values.update(overrides)
    return argparse.Namespace(**values)


class FakeWeights:
    """What ``loading.read_weights`` returns, reduced to what AutoAnchor looks at."""

    def __init__(self, num_classes):
        self.metadata = {"num_classes": num_classes}
        self.weights = {}


def test_from_scratch_thin_boxes_get_new_anchors_and_the_log_says_why(thin_shards):
    from yolodata.manifest import load_manifest

    manifest = load_manifest(thin_shards)
    messages = []
    chosen = autoanchor.choose_anchors(_args(thin_shards), ModelChoice("yolov5n", "v5.0", None, None), manifest,
                                       320, TrainingLabels(thin_shards), log=messages.append)
    assert chosen.anchors is not None and not np.array_equal(chosen.anchors, YOLOV5_ANCHORS)
    assert "AutoAnchor (training from scratch" in chosen.reason and "new anchors" in chosen.reason
    assert any("Best Possible Recall (BPR)" in m and "poor fit" in m for m in messages)
    again = autoanchor.choose_anchors(_args(thin_shards), ModelChoice("yolov5n", "v5.0", None, None), manifest,
                                      320, TrainingLabels(thin_shards), log=lambda _: None)
    assert np.array_equal(again.anchors, chosen.anchors)


def test_autoanchor_runs_only_where_the_anchors_are_free_to_change(thin_shards):
    from yolodata.manifest import load_manifest

    manifest = load_manifest(thin_shards)
    trained = np.asarray(YOLOV5_ANCHORS, np.float32) * 1.5
    same_classes = ModelChoice("yolov5n", "v5.0", trained, FakeWeights(1))
    labels = TrainingLabels(thin_shards)
    kept = autoanchor.choose_anchors(_args(thin_shards), same_classes, manifest, 320, labels, log=lambda _: None)
    assert kept.anchors is trained and "--weights" in kept.reason and "AutoAnchor not run" in kept.reason
    other_classes = ModelChoice("yolov5n", "v5.0", None, FakeWeights(80))
    changed = autoanchor.choose_anchors(_args(thin_shards), other_classes, manifest, 320, labels, log=lambda _: None)
    assert "--weights has 80 classes, the shards 1" in changed.reason and changed.anchors is not None
    skipped = autoanchor.choose_anchors(_args(thin_shards, noautoanchor=True),
                                        ModelChoice("yolov5n", "v5.0", None, None), manifest, 320, labels,
                                        log=lambda _: None)
    assert skipped.anchors is None and "--noautoanchor" in skipped.reason


def test_image_weights_come_from_the_stored_boxes(thin_shards):
    rows = TrainingLabels(thin_shards).rows()
    assert len(rows) == 12 and all(len(labels) == 2 for _, _, labels in rows)
    np.testing.assert_array_equal(boxes_per_image_and_class(rows, 1), np.full((12, 1), 2))
    messages = []
    weights = image_weights_for(TrainingLabels(thin_shards), 1, log=messages.append)
    np.testing.assert_allclose(weights, np.full(12, 2.0))   # one class: class weight 1, two boxes each
    assert "class frequencies only" in messages[0]


@pytest.mark.slow
def test_training_stores_the_new_anchors_where_eval_and_resume_read_them(thin_shards, tmp_path):
    from yolomodel.cli import train as train_cli

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        code = train_cli.main(["--mindrecord", str(thin_shards), "--yolov5_version", "yolov5n", "--training_shape",
                               "64", "--per_batch_size", "4", "--max_epoch", "1", "--warmup_epochs", "0",
                               "--num_parallel_workers", "1", "--ckpt_path", str(tmp_path), "--image_weights"])
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 0
    messages = [r.getMessage() for r in records]
    reason = [m for m in messages if m.startswith("anchors from AutoAnchor")]
    assert reason, messages
    assert any(m.startswith("--image_weights: each epoch draws 12 images") for m in messages)
    checkpoint = tmp_path / "ckpt_0" / "last.ckpt"          # the file --resume reads
    _, metadata = ckpt_lib.read_checkpoint(checkpoint)
    assert metadata["image_weights"] == 1     # a resume draws the same weighted order
    stored = ckpt_lib.decode_anchors(metadata)
    assert stored is not None and not np.array_equal(stored, YOLOV5_ANCHORS)
    config_text = (tmp_path / "config.yaml").read_text()
    assert "# anchors: " + str(stored.reshape(3, -1).tolist()) in config_text
    for readable in (checkpoint, tmp_path / "ckpt_0" / "best_weights.ckpt"):   # what eval/infer/export read
        net = loading.load_inference_net(readable).network
        assert np.array_equal(np.asarray(net.anchors, np.float32), stored), readable


def test_checkpoints_record_image_weights_and_older_ones_read_as_without():
    state = ckpt_lib.TrainState(epoch=1, step=2, steps_completed=5, seed=0, dataset_id="ab" * 32,
                                yolov5_version="yolov5n", num_classes=1, training_shape=64, global_batch_size=4,
                                image_weights=1)
    metadata = state.metadata()
    assert ckpt_lib.train_state_from(metadata, "x.ckpt").image_weights == 1
    del metadata["image_weights"]
    assert ckpt_lib.train_state_from(metadata, "x.ckpt").image_weights == 0
