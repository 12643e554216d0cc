"""What the train pipeline loads when it is built, not inside its batches."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import write_rectangle_coco
from yolodata.convert import convert_coco

# Run in a fresh interpreter: this test process may have imported albumentations already.
PROBE = textwrap.dedent("""
    import sys
    from yolodata.augment.policy import AugmentConfig
    from yolodata.pipeline import create_train_dataset

    folder = sys.argv[1]
    create_train_dataset(folder, per_batch_size=2, training_shape=64, num_parallel_workers=1,
                         augment=AugmentConfig(extras=0.0))
    print("without extras:", "albumentations" in sys.modules)
    dataset = create_train_dataset(folder, per_batch_size=2, training_shape=64, num_parallel_workers=1)
    print("with extras, before the first batch:", "albumentations" in sys.modules)
""")


def test_albumentations_is_imported_when_the_pipeline_is_built_and_only_if_extras_can_apply(tmp_path):
    # A sample that draws an extra (about 4% of them at YOLOv5's p=0.01) needs albumentations, whose
    # import takes about 0.3 s of CPU holding the GIL: inside a batch it would stall every pipeline
    # thread. Building the pipeline imports it instead, and only when extras can apply.
    image_dir, ann_file = write_rectangle_coco(tmp_path, num_images=4, seed=1)
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=tmp_path / "shards", progress=False)
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "shards")], capture_output=True,
                            text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "without extras: False" in result.stdout, result.stdout
    assert "with extras, before the first batch: True" in result.stdout, result.stdout
