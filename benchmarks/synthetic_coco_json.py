"""A synthetic COCO-format instances json of COCO-train's size (or a multiple), written as a stream.

Why: the converter's memory on a large json is measured on a json of COCO-train's shape (118,287
images, 828,009 boxes at scale 1; about 2.6 KB of polygon per box like COCO's) without the 18 GB of
COCO's pictures. The pictures are a pool of ``num_pictures`` tiny JPEGs (distinct colours); the image
records name them in turn, so many records share a file name (``check_images`` checks ids, not names)
and the disk holds a few hundred small files whatever the scale.

Records carry COCO's members (license, coco_url, date_captured...; segmentation, area, iscrowd), ids
in shuffled order (like COCO, whose images are not listed by id), and boxes with float coordinates
inside the picture. Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_BOXES = 828_009
PICTURE_HEIGHT, PICTURE_WIDTH = 48, 64
NUM_CATEGORIES = 80
POLYGON_POINTS = 14                  # points per box polygon: COCO-train's json is about 370 B per box


def write_pictures(image_dir: Path, num_pictures: int) -> list[str]:
    """``num_pictures`` tiny JPEGs of distinct colours in ``image_dir``; their file names."""
    import cv2

    image_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(num_pictures):
        name = f"{index:04d}.jpg"
        colour = ((index * 37) % 256, (index * 91) % 256, (index * 151) % 256)
        picture = np.full((PICTURE_HEIGHT, PICTURE_WIDTH, 3), colour, np.uint8)
        cv2.rectangle(picture, (index % 20, 5), (40 + index % 20, 30), (255 - colour[0], 128, colour[2]), -1)
        if not (image_dir / name).is_file():
            cv2.imwrite(str(image_dir / name), picture)
        names.append(name)
    return names


def image_record(image_id: int, file_name: str) -> dict:
    return {"license": 1 + image_id % 8, "file_name": file_name,
            "coco_url": f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg",
            "height": PICTURE_HEIGHT, "width": PICTURE_WIDTH, "date_captured": "2013-11-14 11:18:45",
            "flickr_url": f"http://farm4.staticflickr.com/1/{image_id}_0123456789_z.jpg", "id": image_id}


def annotation_record(annotation_id: int, image_id: int, rng: np.random.Generator) -> dict:
    x, y = rng.uniform(0, PICTURE_WIDTH - 8), rng.uniform(0, PICTURE_HEIGHT - 8)
    width, height = rng.uniform(2, PICTURE_WIDTH - x), rng.uniform(2, PICTURE_HEIGHT - y)
    polygon = rng.uniform([x, y], [x + width, y + height], size=(POLYGON_POINTS, 2)).round(2).ravel().tolist()
    return {"segmentation": [polygon], "area": float(width * height * 0.7), "iscrowd": 0, "image_id": image_id,
            "bbox": [round(float(x), 2), round(float(y), 2), round(float(width), 2), round(float(height), 2)],
            "category_id": 1 + int(rng.integers(NUM_CATEGORIES)), "id": annotation_id}


def write_json_list(out, key: str, records, first: bool) -> None:
    """Write ``"key":[record,...]`` to the text file ``out``, one record at a time."""
    out.write(("" if first else ",") + json.dumps(key) + ":[")
    for position, record in enumerate(records):
        out.write(("," if position else "") + json.dumps(record, separators=(",", ":")))
    out.write("]")


def write_synthetic_coco(ann_file: Path, image_dir: Path, *, scale: float = 1.0, num_pictures: int = 256,
                         seed: int = 0, annotations_first: bool = False) -> dict:
    """Write the json (``scale`` times COCO-train's image and box counts) and the picture pool; returns
    the counts. ``annotations_first`` puts the ``annotations`` member before ``images``."""
    rng = np.random.default_rng(seed)
    num_images, num_boxes = round(COCO_TRAIN_IMAGES * scale), round(COCO_TRAIN_BOXES * scale)
    names = write_pictures(image_dir, num_pictures)
    image_ids = rng.permutation(num_images * 4)[:num_images] + 1       # sparse, shuffled like COCO's ids
    owners = image_ids[rng.integers(num_images, size=num_boxes)]
    images = (image_record(int(image_id), names[position % len(names)])
              for position, image_id in enumerate(image_ids.tolist()))
    annotations = (annotation_record(position + 1, int(owner), rng) for position, owner in enumerate(owners.tolist()))
    categories = [{"supercategory": "thing", "id": index + 1, "name": f"class{index}"}
                  for index in range(NUM_CATEGORIES)]
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    with open(ann_file, "w", encoding="utf-8") as out:
        out.write('{"info":' + json.dumps({"description": "synthetic COCO-train-sized json", "year": 2026}))
        out.write(',"licenses":' + json.dumps([{"id": i, "name": f"license {i}"} for i in range(1, 9)]))
        members = [("annotations", annotations), ("images", images)]
        for key, records in (members if annotations_first else members[::-1]):
            write_json_list(out, key, records, first=False)
        out.write(',"categories":' + json.dumps(categories) + "}")
    return {"num_images": num_images, "num_boxes": num_boxes, "num_pictures": len(names),
            "json_bytes": ann_file.stat().st_size}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann_file", type=Path, required=True)
    parser.add_argument("--image_dir", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--annotations_first", action="store_true")
    args = parser.parse_args(argv)
    print(write_synthetic_coco(args.ann_file, args.image_dir, scale=args.scale,
                               annotations_first=args.annotations_first))


if __name__ == "__main__":
    main()
