r"""COCO bbox evaluation of a YOLOv5 checkpoint on converted MindRecord shards, or of a results file.

Evaluate a checkpoint (runs the network):

    python tools/eval.py --mindrecord VAL_DIR --pretrained CKPT --testing_shape 640 \
        [--per_batch_size 16] [--conf_thresh 0.001] [--nms_thresh 0.65] [--max_det 300] [--multi_label]
        [--results_file PATH] [--device_target CPU] [--is_distributed 0|1]
        [--yolov5_version yolov5s] [--num_classes N]

VAL_DIR is a folder written by tools/coco2mindrecord.py. Every image is letterboxed into
testing_shape (no upscaling), run through the network (the EMA weights when the checkpoint has
``ema.*`` parameters), decoded, reduced by class-aware NMS, mapped back to original image pixels and
written as a COCO results json (original image and category ids) to --results_file (default
outputs/eval/results.json); that file is then scored with pycocotools against VAL_DIR/annotations.json
(or --ann_file). The model size and class count are those the checkpoint records (tools/train.py writes them); for a
plain weights file --yolov5_version names the size, and the class count defaults to the dataset's.

Score an existing results file (no model):

    python tools/eval.py --ann_file GT.json --results_file DETS.json

Both print the 12 COCO summary lines, then the time taken.

Distributed (--is_distributed 1, started with msrun): each rank evaluates a contiguous block of the
images (every rank runs the same number of batches; padding rows are marked and skipped); the
detections of all ranks are then collected on rank 0 with two AllGather operations (row counts, then
the rows padded to the longest rank, carried bit for bit as int32 words), so every image is counted
exactly once and no shared file system is needed. Rank 0 writes the results file, scores and
prints; the other ranks print a line and exit 0. Example:

    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --join=True \
        tools/eval.py --mindrecord VAL_DIR --pretrained CKPT --is_distributed 1

Exit codes: 0 done; 2 a user error (message on stderr, no traceback); 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import yolomodel  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR = 0, 1, 2
RESULT_HEADER = "=============coco eval result========="
DEFAULT_RESULTS_FILE = Path("outputs") / "eval" / "results.json"


class EvalUserError(ValueError):
    """A mistake in the user's input (arguments, checkpoint, dataset); reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", "--data_dir", dest="mindrecord", type=Path, default=None,
                        help="converted val folder (tools/coco2mindrecord.py output)")
    parser.add_argument("--pretrained", type=Path, default=None, help="checkpoint of the YOLOv5 network")
    parser.add_argument("--ann_file", type=Path, default=None,
                        help="ground-truth COCO json (default with --mindrecord: VAL_DIR/annotations.json)")
    parser.add_argument("--results_file", type=Path, default=None,
                        help=f"results json: written with --mindrecord (default {DEFAULT_RESULTS_FILE}), "
                             f"read and scored without it")
    parser.add_argument("--testing_shape", type=int, default=640, help="square input size, multiple of 32")
    parser.add_argument("--per_batch_size", type=int, default=16, help="images per batch (per rank)")
    parser.add_argument("--conf_thresh", type=float, default=0.001, help="minimum objectness * class score")
    parser.add_argument("--nms_thresh", type=float, default=0.65, help="IoU above which NMS suppresses")
    parser.add_argument("--max_det", type=int, default=300, help="detections kept per image")
    parser.add_argument("--multi_label", action="store_true",
                        help="every class above conf_thresh is a candidate (default: each box's best class)")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--is_distributed", type=int, default=0, choices=(0, 1),
                        help="1: split the images over the ranks of an msrun launch")
    parser.add_argument("--yolov5_version", default=None,
                        help="yolov5n/s/m/l/x (default: the one the checkpoint records; needed for a plain weights file)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the checkpoint (default: the dataset's category count)")
    parser.add_argument("--num_parallel_workers", type=int, default=None,
                        help="pipeline threads (default and ceiling: the CPU count)")
    return parser


# ---------------------------------------------------------------------------------------------
# Checkpoint
# ---------------------------------------------------------------------------------------------

def load_network(checkpoint: Path, args, dataset_classes: int):
    """(InferenceNet with the checkpoint's weights, EMA when present; description string).

    The network is the one the checkpoint records (``tools/train.py`` writes ``yolov5_version`` and
    ``num_classes``); the flags name it for a plain weights file and must agree with a recorded one. The
    class count defaults to the dataset's and must equal it.
    """
    from yolomodel.export import ModelLoadError, load_inference_net

    try:
        loaded = load_inference_net(checkpoint, version=args.yolov5_version, num_classes=args.num_classes,
                                    default_num_classes=dataset_classes)
    except ModelLoadError as error:
        raise EvalUserError(str(error)) from error
    if loaded.num_classes != dataset_classes:
        raise EvalUserError(f"the network has {loaded.num_classes} classes but the dataset has {dataset_classes} "
                            f"categories: evaluate a checkpoint trained on this dataset's categories")
    return loaded.network, loaded.describe()


# ---------------------------------------------------------------------------------------------
# Running the network over the eval pipeline
# ---------------------------------------------------------------------------------------------

def predict_results(dataset, predict, category_ids: np.ndarray, nms_options: dict) -> list[dict]:
    """COCO results entries of every image in ``dataset`` (an eval dataset of ``create_eval_dataset``).

    ``predict(batch)`` takes the batch dict of numpy columns and returns the decoded float32
    (B, N, 5 + C) predictions (``InferenceNet``'s output); a parameter so that the chain can be
    checked without a trained network.
    """
    from yolomodel.coco_eval import batch_results
    from yolomodel.nms import non_max_suppression

    results = []
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        kept = non_max_suppression(predict(batch), **nms_options)
        results.extend(batch_results(kept, batch["image_id"], batch["orig_hw"], batch["scale"], batch["pad"],
                                     category_ids))
    return results


def network_predictor(inference_net):
    """``predict(batch)`` for ``predict_results`` running a MindSpore ``InferenceNet``."""
    import mindspore as ms

    def predict(batch):
        return inference_net(ms.Tensor(batch["image"])).asnumpy()

    return predict


RESULT_WORDS = 14  # int32 words per results row: image_id, category_id (int64) + x, y, w, h, score (float64)


def results_to_words(results: list[dict]) -> np.ndarray:
    """int32 (K, 14): each results entry's int64 ids and float64 values as raw int32 words.

    Collectives carry the rows as int32 because on CPU (MindSpore 2.8) AllGather of int64 and float64
    tensors loses precision (measured: 129.011 arrived as 129.01100158691406, 2**53 + 1 changed),
    while int32 arrives bit for bit.
    """
    ids = np.asarray([(r["image_id"], r["category_id"]) for r in results], np.int64).reshape(-1, 2)
    values = np.asarray([r["bbox"] + [r["score"]] for r in results], np.float64).reshape(-1, 5)
    # (K, 2) int64 -> (K, 4) int32 and (K, 5) float64 -> (K, 10) int32: the same bytes
    return np.concatenate([np.ascontiguousarray(ids).view(np.int32),
                           np.ascontiguousarray(values).view(np.int32)], axis=1)


def words_to_results(words: np.ndarray) -> list[dict]:
    """Inverse of ``results_to_words`` (bit exact)."""
    words = np.ascontiguousarray(np.asarray(words, np.int32).reshape(-1, RESULT_WORDS))
    ids = np.ascontiguousarray(words[:, :4]).view(np.int64).tolist()
    values = np.ascontiguousarray(words[:, 4:]).view(np.float64).tolist()
    return [{"image_id": i[0], "category_id": i[1], "bbox": v[:4], "score": v[4]} for i, v in zip(ids, values)]


def merge_rank_parts(parts: list[np.ndarray]) -> list[dict]:
    """Results of all ranks in rank order (rank r evaluated the r-th contiguous block of images)."""
    return [entry for words in parts for entry in words_to_results(words)]


def gather_to_rank0(results: list[dict], group_size: int) -> list[dict]:
    """Every rank's results, in rank order, via AllGather (all ranks get them; rank 0 uses them).

    Two collectives: the row counts, then each rank's rows padded to the largest count.
    """
    import mindspore as ms
    from mindspore import ops

    words = results_to_words(results)
    counts = ops.AllGather()(ms.Tensor(np.asarray([len(words)], np.int32))).asnumpy()
    longest = max(1, int(counts.max()))
    padded = np.zeros((longest, RESULT_WORDS), np.int32)
    padded[:len(words)] = words
    # (group_size * longest, 14) -> per rank (longest, 14), cut to that rank's count
    gathered = ops.AllGather()(ms.Tensor(padded)).asnumpy().reshape(group_size, longest, RESULT_WORDS)
    return merge_rank_parts([gathered[r, :counts[r]] for r in range(group_size)])


# ---------------------------------------------------------------------------------------------
# The two modes
# ---------------------------------------------------------------------------------------------

def print_scores(scores, started: float) -> None:
    print(RESULT_HEADER)
    print(scores.text)
    seconds = time.perf_counter() - started
    print(f"testing cost time {seconds / 3600:.2f}h ({seconds:.1f} s)", flush=True)


def run_results_file(args, started: float) -> int:
    from yolomodel.coco_eval import evaluate

    scores = evaluate(args.ann_file, args.results_file)
    print_scores(scores, started)
    return EXIT_OK


def check_model_args(args) -> None:
    if args.pretrained is None:
        raise EvalUserError("--mindrecord needs --pretrained CKPT (the checkpoint to evaluate)")
    from yolodata.checks import check_multiple_of

    try:
        check_multiple_of("--testing_shape", args.testing_shape)
    except ValueError as error:
        raise EvalUserError(str(error)) from None
    if args.per_batch_size < 1:
        raise EvalUserError(f"--per_batch_size must be at least 1, got {args.per_batch_size}")
    if args.num_classes is not None and args.num_classes < 1:
        raise EvalUserError(f"--num_classes must be at least 1, got {args.num_classes}")
    from yolomodel.nms import check_nms_arguments

    check_nms_arguments(args.conf_thresh, args.nms_thresh, args.max_det, 1)


def run_model(args, started: float) -> int:
    import mindspore as ms

    from yolodata.manifest import load_manifest
    from yolodata.pipeline import create_eval_dataset
    from yolomodel.coco_eval import load_ground_truth, score_detections, write_results_json

    check_model_args(args)
    manifest = load_manifest(args.mindrecord)  # names a missing annotations.json, shard or manifest
    ann_file = args.ann_file or manifest.annotations_path
    ground_truth = load_ground_truth(ann_file)  # fail on a bad ground truth before the long run
    category_ids = manifest.category_ids
    results_file = args.results_file or DEFAULT_RESULTS_FILE

    ms.set_device(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    rank, group_size = 0, 1
    if args.is_distributed:
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, group_size = get_rank(), get_group_size()

    inference_net, description = load_network(args.pretrained, args, len(category_ids))
    if rank == 0:
        print(f"evaluating {description} on {args.mindrecord} ({manifest.num_images} images, "
              f"{group_size} rank(s)) at {args.testing_shape}", flush=True)
    dataset = create_eval_dataset(args.mindrecord, per_batch_size=args.per_batch_size,
                                  testing_shape=args.testing_shape, num_parallel_workers=args.num_parallel_workers,
                                  rank=rank, group_size=group_size)
    nms_options = dict(conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh, max_det=args.max_det,
                       multi_label=args.multi_label)
    results = predict_results(dataset, network_predictor(inference_net), category_ids, nms_options)
    if group_size > 1:
        results = gather_to_rank0(results, group_size)
        if rank != 0:
            print(f"rank {rank}: detections sent to rank 0", flush=True)
            return EXIT_OK
    write_results_json(results, results_file)
    print(f"{len(results)} detections written to {results_file}", flush=True)
    print_scores(score_detections(ground_truth, results), started)
    return EXIT_OK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from yolodata.manifest import ManifestError
    from yolomodel.coco_eval import CocoEvalError

    try:
        if args.mindrecord is not None:
            return run_model(args, started)
        if args.pretrained is not None:
            parser.error("--pretrained needs --mindrecord VAL_DIR (the images to run the network on)")
        if args.ann_file is None or args.results_file is None:
            parser.error("give --mindrecord VAL_DIR --pretrained CKPT to evaluate a checkpoint, or "
                         "--ann_file GT.json --results_file DETS.json to score a results file")
        return run_results_file(args, started)
    except (EvalUserError, CocoEvalError, ManifestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # e.g. the results file's folder is not writable, the disk is full
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
