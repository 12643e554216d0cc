"""The main job end to end on the built-in synthetic dataset (what `make demo` runs).

1. generate a synthetic COCO-format dataset (shapes on textured backgrounds, exact boxes);
2. convert its train and val splits to sharded MindRecord (tools/coco2mindrecord.py);
3. verify every shard with plain MindDataset against the manifest;
4. stream the training pipeline (mosaic, affine, multi-scale, HSV, flips, YOLOv5 targets) and the eval
   pipeline, and report their throughput;
and print where everything went.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_pipeline(name, dataset, per_batch_size):
    from tqdm import tqdm

    start = time.perf_counter()
    count = 0
    first = None
    for batch in tqdm(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1), total=dataset.num_steps,
                      desc=f"{name} pipeline", unit="batch"):
        first = first if first is not None else batch
        count += per_batch_size
    elapsed = time.perf_counter() - start
    return count / elapsed, first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--training_shape", type=int, default=320)
    parser.add_argument("--per_batch_size", type=int, default=16)
    args = parser.parse_args(argv)

    from yolodata.convert import convert_coco
    from yolodata.pipeline import EVAL_COLUMNS, TRAIN_COLUMNS, create_eval_dataset, create_train_dataset
    from yolodata.synthetic import make_synthetic_coco
    from yolodata.verify import verify_output

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/4] synthetic dataset: {args.num_images} images -> {out / 'synthetic'}")
    synthetic_dir = out / "synthetic"
    if synthetic_dir.exists():
        shutil.rmtree(synthetic_dir)
    synthetic = make_synthetic_coco(synthetic_dir, num_images=args.num_images, seed=args.seed)

    shards = {}
    for split, ann_file in (("train", synthetic.train_json), ("val", synthetic.val_json)):
        shards[split] = out / f"mindrecord_{split}"
        print(f"[2/4] convert {split}: {ann_file} -> {shards[split]}")
        summary = convert_coco(synthetic.image_dir, ann_file, shards[split], shard_num=2, progress=True,
                               log=print)
        del summary

    for split, folder in shards.items():
        print(f"[3/4] verify {folder}")
        report = verify_output(folder)
        if not report.ok:
            raise SystemExit(report.format())
        print("      " + report.format().splitlines()[0])

    print(f"[4/4] pipelines at {args.training_shape}x{args.training_shape}, batch {args.per_batch_size}")
    train = create_train_dataset(shards["train"], per_batch_size=args.per_batch_size,
                                 training_shape=args.training_shape, resize_rate=10, seed=args.seed)
    train_ips, train_batch = run_pipeline("train", train, args.per_batch_size)
    evaluation = create_eval_dataset(shards["val"], per_batch_size=args.per_batch_size,
                                     testing_shape=args.training_shape)
    eval_ips, eval_batch = run_pipeline("eval", evaluation, args.per_batch_size)

    print("\ntrain batch columns:")
    for name, value in zip(TRAIN_COLUMNS, train_batch):
        print(f"  {name:<22}{str(value.dtype):<9}{value.shape}")
    print("eval batch columns:")
    for name, value in zip(EVAL_COLUMNS, eval_batch):
        print(f"  {name:<22}{str(value.dtype):<9}{value.shape}")
    print(f"\nsummary ({time.perf_counter() - started:.1f} s in all)")
    print(f"  synthetic COCO     {synthetic.output_dir}")
    print(f"  train shards       {shards['train']}  ({train.manifest['num_images']} images)")
    print(f"  val shards         {shards['val']}  ({evaluation.manifest['num_images']} images)")
    print(f"  train pipeline     {train_ips:.0f} images/s ({train.num_steps} batches, one epoch)")
    print(f"  eval pipeline      {eval_ips:.0f} images/s")


if __name__ == "__main__":
    main()
