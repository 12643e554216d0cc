"""Write a synthetic COCO-format detection dataset (coloured shapes with exact boxes).

    yolo-make-synthetic-coco --output_dir data/shapes --num_images 2000 --seed 0
    (or: python tools/make_synthetic_coco.py ...)

Produces DIR/images/*.jpg and DIR/annotations/instances_{train,val}.json; see yolodata/synthetic.py
for what the images contain and how the boxes are defined. Each split converts to MindRecord like any
COCO dataset (tools/coco2mindrecord.py), with DIR/images as the image folder.
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from yolodata import synthetic


def side_range(text: str) -> tuple[int, int]:
    """'480' -> (480, 480); '360-480' -> (360, 480)."""
    try:
        parts = [int(part) for part in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected a side like 480 or a range like 360-480, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder to create (must be empty or new)")
    parser.add_argument("--num_images", type=int, required=True, help="images in both splits together")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="share of images in the val split")
    parser.add_argument("--image_size", type=side_range, nargs=2, default=[(480, 480), (640, 640)],
                        metavar=("HEIGHT", "WIDTH"),
                        help="image height and width, each a number or a range MIN-MAX drawn per image "
                             "(default: 480 640)")
    parser.add_argument("--background_fraction", type=float, default=0.05,
                        help="share of images without objects")
    parser.add_argument("--objects_per_image", type=int, nargs=2, default=[1, 8], metavar=("MIN", "MAX"))
    parser.add_argument("--object_size", type=float, nargs=2, default=[0.08, 0.4], metavar=("MIN", "MAX"),
                        help="object size as a fraction of the shorter image side (log-uniform)")
    parser.add_argument("--jpeg_quality", type=int, default=synthetic.JPEG_QUALITY)
    parser.add_argument("--num_workers", type=int, default=None,
                        help="threads (default: the CPU count, up to 8; at most the CPU count)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty output_dir, replacing files of the same name")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tqdm(total=args.num_images, unit="img", desc="synthetic images") as bar:
        try:
            result = synthetic.make_synthetic_coco(
                args.output_dir, num_images=args.num_images, seed=args.seed,
                image_size=tuple(args.image_size), val_fraction=args.val_fraction,
                background_fraction=args.background_fraction,
                objects_per_image=tuple(args.objects_per_image), object_size=tuple(args.object_size),
                jpeg_quality=args.jpeg_quality, num_workers=args.num_workers, overwrite=args.overwrite,
                progress=bar.update)
        except ValueError as error:
            bar.close()
            print(f"error: {error}", file=sys.stderr)
            return 2
    total_boxes = sum(result.boxes_per_category.values())
    print(f"images: {result.num_train + result.num_val} ({result.num_train} train, {result.num_val} val, "
          f"{result.num_background} without objects)")
    print(f"boxes: {total_boxes}")
    for category in synthetic.CATEGORIES:
        print(f"  {category['name']:<10} id {category['id']}: {result.boxes_per_category[category['name']]}")
    print(f"images:      {result.image_dir}")
    print(f"train json:  {result.train_json}")
    print(f"val json:    {result.val_json}")
    return 0
