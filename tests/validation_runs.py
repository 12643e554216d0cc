"""The small train/val data and command line shared by the tests that run yolov5n with validation.

8 train and 4 val synthetic pictures (96x128, large objects), converted once per module, with a config
that turns every augmentation off so that runs differ only by what a test changes.
"""
from __future__ import annotations

import yaml

from yolodata.convert import convert_coco
from yolodata.synthetic import make_synthetic_coco

NO_AUGMENT = {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
              "hsv_v": 0.0, "extras": 0.0}
# the files a finished run leaves in ckpt_0 without periodic checkpoints
FINAL_FILES = ["best.ckpt", "best_weights.ckpt", "last.ckpt", "last_weights.ckpt"]
TIME_COLUMNS = {"time/epoch_s", "speed/images_per_s", "time/val_s"}
INTERRUPT_AT = 5            # iteration (epoch 2 of 3, step 2 of 4)
# after a few steps from scratch every score is below COCO's 0.001: a lower threshold lets the network's
# boxes be scored, so that equal numbers mean something
CONF_THRESH = 1e-5


def make_validation_splits(root):
    """(shards {"train", "val"}, config file, SyntheticCoco) under ``root``."""
    synthetic = make_synthetic_coco(root / "syn", num_images=12, seed=4, image_size=(96, 128), val_fraction=0.34,
                                    background_fraction=0.0, object_size=(0.3, 0.6))
    shards = {}
    for split, ann_file in (("train", synthetic.train_json), ("val", synthetic.val_json)):
        shards[split] = root / split
        convert_coco(synthetic.image_dir, ann_file, shards[split])
    config_file = root / "no_augment.yaml"
    config_file.write_text(yaml.safe_dump({"augment": NO_AUGMENT, "max_boxes": 16}))
    return shards, config_file, synthetic


def validation_train_argv(splits, run_dir, *extra) -> list[str]:
    """yolo-train arguments: yolov5n at 64 px, 3 epochs of 4 steps, validation after each epoch."""
    shards, config_file, _ = splits
    return ["--config", str(config_file), "--mindrecord", str(shards["train"]), "--val_mindrecord",
            str(shards["val"]), "--yolov5_version", "yolov5n", "--training_shape", "64", "--per_batch_size", "2",
            "--max_epoch", "3", "--warmup_epochs", "0", "--lr", "0.01", "--log_interval", "1",
            "--num_parallel_workers", "1", "--testing_shape", "64", "--val_conf_thresh", str(CONF_THRESH),
            "--ckpt_path", str(run_dir), *extra]
