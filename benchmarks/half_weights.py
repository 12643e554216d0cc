"""Do half-precision weights files reproduce the float32 detections? Measured with the real COCO weights.

    python benchmarks/half_weights.py [--testing_shape 640] [--weights yolov5n_v6.1_coco.pt] [--checkpoint last.ckpt]

Training writes its final ``best_weights.ckpt`` / ``last_weights.ckpt`` in half precision
(``yolomodel.checkpoint.format.save_weights_file``); readers turn the values back into float32 and the
network runs in float32. This script imports the real yolov5n (``yolov5n_v6.1_coco.pt``, the project's
importer, no torch), writes the same weights as a float32 and a float16 weights file, loads both the way
yolo-eval / yolo-infer / yolo-export do (``load_inference_net``) and runs all 128 coco128 images through
both (letterboxed to ``--testing_shape``). YOLOv5's ``.pt`` files store float16 values, so their
import survives the rounding exactly; ``--checkpoint`` takes the EMA weights of a training checkpoint
instead (e.g. ``last.ckpt`` of ``benchmarks/train_memory.py --keep DIR``, yolov5n fine-tuned from those
weights on coco128), whose float32 values are not on the float16 grid: the meaningful comparison.
It prints the largest difference of the raw decoded outputs
(boxes in pixels, objectness and class scores), the detections yolo-infer would draw (score >= 0.25,
NMS 0.45) that are not matched one to one (same class, IoU >= 0.99), the largest score and box-corner
differences among matched ones, and COCO mAP@0.5:0.95 / mAP@0.5 of both on coco128 (yolo-eval's settings).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import REAL_DATA  # noqa: E402
from yolodata.convert import convert_coco  # noqa: E402
from yolomodel.checkpoint.format import METADATA_KEYS, save_weights_file  # noqa: E402
from yolomodel.checkpoint.loading import load_inference_net, network_predictor, read_weights  # noqa: E402
from yolomodel.checkpoint.yolov5_import import read_yolov5_pt  # noqa: E402
from yolomodel.evaluation import evaluate  # noqa: E402
from yolomodel.infer import letterbox_input, read_image  # noqa: E402
from yolomodel.nms import NmsOptions, iou_one_to_many  # noqa: E402

COCO128 = REAL_DATA / "coco128"
DISPLAY = NmsOptions(conf_thresh=0.25, nms_thresh=0.45)
MATCH_IOU = 0.99


def match(reference: np.ndarray, other: np.ndarray) -> tuple[int, float, float]:
    """(unmatched detections, largest score difference, largest corner difference in pixels) between two
    (M, 6) detection lists of one image, matched greedily by class and IoU >= ``MATCH_IOU``."""
    unmatched, score_diff, corner_diff = 0, 0.0, 0.0
    free = np.ones(len(other), bool)
    for row in reference:
        candidates = np.flatnonzero(free & (other[:, 5] == row[5])) if len(other) else np.array([], int)
        if len(candidates):
            ious = iou_one_to_many(row[:4], other[candidates, :4])
            best = int(np.argmax(ious))
            if ious[best] >= MATCH_IOU:
                index = candidates[best]
                free[index] = False
                score_diff = max(score_diff, abs(float(row[4] - other[index, 4])))
                corner_diff = max(corner_diff, float(np.abs(row[:4] - other[index, :4]).max()))
                continue
        unmatched += 1
    return unmatched + int(free.sum()), score_diff, corner_diff


def compare(nets: dict, shape: int) -> None:
    predict = {name: network_predictor(loaded.network) for name, loaded in nets.items()}
    raw = np.zeros(3)
    unmatched = total = 0
    score_diff = corner_diff = 0.0
    for image_path in sorted((COCO128 / "val2017").glob("*.jpg")):
        image, _, _ = letterbox_input(read_image(image_path), shape)
        full = predict["float32"](image[None])
        half = predict["float16"](image[None])
        delta = np.abs(full - half)
        raw = np.maximum(raw, [delta[..., :4].max(), delta[..., 4].max(), delta[..., 5:].max()])
        reference, other = DISPLAY.apply(full)[0], DISPLAY.apply(half)[0]
        missing, scores, corners = match(reference, other)
        unmatched, total = unmatched + missing, total + len(reference)
        score_diff, corner_diff = max(score_diff, scores), max(corner_diff, corners)
    print(f"raw outputs, largest |float16 file - float32 file|: boxes {raw[0]:.4f} px, objectness {raw[1]:.5f}, "
          f"class scores {raw[2]:.5f}")
    print(f"detections (score >= 0.25): {total} from the float32 file; {unmatched} not matched one to one "
          f"(same class, IoU >= {MATCH_IOU}); matched: largest score difference {score_diff:.5f}, largest corner "
          f"difference {corner_diff:.3f} px (letterboxed {shape} px input)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testing_shape", type=int, default=640)
    parser.add_argument("--weights", default=str(REAL_DATA / "yolov5_pt" / "yolov5n_v6.1_coco.pt"))
    parser.add_argument("--checkpoint", default="", help="a training checkpoint whose EMA weights to use instead")
    parser.add_argument("--skip_map", action="store_true", help="compare detections only")
    args = parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE)
    if args.checkpoint:
        read = read_weights(args.checkpoint)
        # the network's weights (training's numeric metadata entries read as 0-d integers are left out)
        weights = {name: value.asnumpy() for name, value in read.weights.items()
                   if np.issubdtype(value.asnumpy().dtype, np.floating)}
        metadata = {key: read.metadata[key] for key in METADATA_KEYS if key in read.metadata}
        print(f"EMA weights of {args.checkpoint}: "
              f"{sum(int((v != v.astype(np.float16).astype(np.float32)).sum()) for v in weights.values())} of "
              f"{sum(v.size for v in weights.values())} values change when rounded to float16")
    else:
        imported = read_yolov5_pt(args.weights)
        weights, metadata = imported.weights, imported.metadata()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        files = {name: save_weights_file(folder / f"{name}.ckpt", weights, metadata,
                                         half=name == "float16") for name in ("float32", "float16")}
        for name, path in files.items():
            print(f"{name} weights file: {path.stat().st_size / 1e6:.2f} MB")
        nets = {name: load_inference_net(path) for name, path in files.items()}
        compare(nets, args.testing_shape)
        if args.skip_map:
            return 0
        shards = folder / "coco128"
        convert_coco(COCO128 / "val2017", COCO128 / "annotations" / "instances_val2017.json", shards, shard_num=1)
        for name, loaded in nets.items():
            report = evaluate(loaded.network, shards, testing_shape=args.testing_shape, per_batch_size=16,
                              show_progress=False)
            stats = report.scores.stats
            print(f"{name} weights file on coco128 ({args.testing_shape} px, yolo-eval's settings): "
                  f"mAP@0.5:0.95 {stats[0]:.4f}, mAP@0.5 {stats[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
