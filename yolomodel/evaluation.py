"""COCO evaluation of a network on converted shards: predict over the eval pipeline, gather the ranks, score.

``evaluate`` is the one entry point (the eval command and validation during training call it): every
image of a shard folder is letterboxed as ``geometry`` says (``yolodata.pipeline.eval_batches.EvalGeometry``:
square ``testing_shape`` batches without enlarging by default, or YOLOv5 val.py's rectangular batches
with enlarging; the eval pipeline of ``yolodata.pipeline``), run through the ``InferenceNet``, reduced by class-aware NMS
(``yolomodel.nms``), mapped back to original image pixels and turned into COCO results entries with
the original image and category ids (``yolomodel.coco_eval``); the entries are scored with pycocotools
against the folder's ``annotations.json`` (or another ground truth).

Distributed (several ranks started by msrun, ``yolomodel.device.setup_device(..., distributed=True)``):
each rank evaluates a contiguous block of the images (every rank runs the same number of batches;
padding rows are marked and skipped); the results of all ranks are then collected with two AllGather
operations (row counts, then the rows padded to the longest rank, carried bit for bit as int32
words), so every image is counted exactly once and no shared file system is needed. Rank 0 writes the
results file and scores; the other ranks return without scores, unless ``score_on_every_rank``
(training: every rank then takes the same best-checkpoint and early-stopping decisions).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from yolodata.checks import check_int
from yolodata.pipeline.eval_batches import EvalGeometry
from yolodata.manifest import load_manifest
from yolodata.pipeline import create_eval_dataset

from .checkpoint.loading import ModelLoadError, load_inference_net, network_predictor
from .coco_eval import batch_results, load_ground_truth, score_detections, write_results_json
from .nms import DEFAULT_MAX_DET, EVAL_CONF_THRESH, EVAL_NMS_THRESH, YOLOV5_VAL_NMS_THRESH, NmsOptions

RESULT_WORDS = 14  # int32 words per results row: image_id, category_id (int64) + x, y, w, h, score (float64)


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """What ``evaluate`` did: the scores (rank 0; None on the other ranks) and what they were computed on."""

    scores: object | None          # yolomodel.coco_eval.CocoScores on rank 0
    num_images: int                # images of the shard folder (all ranks together)
    num_detections: int            # results entries of all ranks together
    results_file: Path | None      # written by rank 0 when asked for
    images_evaluated: int = 0      # distinct images the ranks ran the network on (== num_images)
    first_batch: "FirstBatch | None" = None   # this rank's first batch, with ``keep_first_batch``


@dataclasses.dataclass(frozen=True)
class FirstBatch:
    """The first eval batch as the network saw it and what NMS kept of it (for the val batch pictures)."""

    images: np.ndarray             # uint8 (B, S, S, 3) RGB, letterboxed
    image_ids: np.ndarray          # int64 (B,), -1 for padding rows
    scale: np.ndarray              # float32 (B,): original pixels * scale + pad = letterboxed pixels
    pad: np.ndarray                # float32 (B, 2)
    detections: tuple              # per image float32 (M, 6) x1, y1, x2, y2, score, class in letterboxed pixels


# ---------------------------------------------------------------------------------------------
# Running a network over the eval pipeline
# ---------------------------------------------------------------------------------------------

def predict_results(dataset, predict_batch: Callable[[dict], np.ndarray], category_ids: np.ndarray,
                    nms: NmsOptions, progress: Callable[[], None] = lambda: None,
                    seen_image_ids: list | None = None, first_batch: list | None = None) -> list[dict]:
    """COCO results entries of every image in ``dataset`` (an eval dataset of ``create_eval_dataset``).

    ``predict_batch(batch)`` takes the batch dict of numpy columns and returns the decoded float32
    (B, N, 5 + C) predictions (``InferenceNet``'s output); a parameter so that the chain can be
    checked without a trained network. ``progress`` is called after each batch; ``seen_image_ids``
    (a list) receives the id of every real image the network ran on; ``first_batch`` (a list) receives
    the ``FirstBatch`` of the first batch.
    """
    results = []
    batches = dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
    try:
        for batch in batches:
            if seen_image_ids is not None:
                seen_image_ids.extend(int(i) for i in batch["image_id"] if i >= 0)
            kept = nms.apply(predict_batch(batch))
            if first_batch is not None and not first_batch:
                first_batch.append(FirstBatch(np.array(batch["image"]), np.array(batch["image_id"], np.int64),
                                              np.array(batch["scale"]), np.array(batch["pad"]), tuple(kept)))
            results.extend(batch_results(kept, batch["image_id"], batch["orig_hw"], batch["scale"], batch["pad"],
                                         category_ids))
            progress()
    finally:
        # the pipeline's threads and queues go now, not when a garbage collection finds them (training
        # validates every epoch; a pipeline left alive between validations is memory held for nothing)
        batches.stop()
    return results


# ---------------------------------------------------------------------------------------------
# Collecting the ranks' results
# ---------------------------------------------------------------------------------------------

def results_to_words(results: list[dict]) -> np.ndarray:
    """int32 (K, 14): each results entry's int64 ids and float64 values as raw int32 words.

    Collectives carry the rows as int32 because on CPU (MindSpore 2.8) AllGather of int64 and float64
    tensors loses precision (129.011 arrived as 129.01100158691406, 2**53 + 1 changed), while int32
    arrives bit for bit.
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


def gather_words(words: np.ndarray, group_size: int) -> list[np.ndarray]:
    """Every rank's int32 (K_r, W) rows, in rank order, on every rank (AllGather; call it on all ranks).

    Two collectives: the row counts, then each rank's rows padded to the largest count.
    """
    import mindspore as ms
    from mindspore import ops

    words = np.ascontiguousarray(words, np.int32)
    width = words.shape[1]
    counts = ops.AllGather()(ms.Tensor(np.asarray([len(words)], np.int32))).asnumpy()
    longest = max(1, int(counts.max()))
    padded = np.zeros((longest, width), np.int32)
    padded[:len(words)] = words
    # (group_size * longest, W) -> per rank (longest, W), cut to that rank's count
    gathered = ops.AllGather()(ms.Tensor(padded)).asnumpy().reshape(group_size, longest, width)
    return [gathered[r, :counts[r]] for r in range(group_size)]


def gather_results(results: list[dict], group_size: int) -> list[dict]:
    """Every rank's results, in rank order, on every rank (AllGather; call it on all ranks)."""
    return merge_rank_parts(gather_words(results_to_words(results), group_size))


def gather_image_ids(image_ids: list[int], group_size: int) -> list[int]:
    """Every rank's evaluated image ids, in rank order, on every rank (int64 ids as two int32 words)."""
    words = np.ascontiguousarray(np.asarray(image_ids, np.int64).reshape(-1, 1)).view(np.int32)
    return [int(i) for part in gather_words(words, group_size)
            for i in np.ascontiguousarray(part).view(np.int64).reshape(-1)]


def check_each_image_once(image_ids: list[int], num_images: int) -> int:
    """The number of distinct evaluated images; RuntimeError when one was evaluated twice or one is missing
    (a broken rank split would bias the scores silently)."""
    distinct = len(set(image_ids))
    if distinct != len(image_ids) or distinct != num_images:
        raise RuntimeError(f"evaluation ran the network on {len(image_ids)} rows ({distinct} distinct images) of a "
                           f"{num_images}-image folder: every image must be evaluated exactly once")
    return distinct


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

def eval_settings(*, rect: bool = False, scaleup: bool = False, interpolation: str | None = None,
                  multi_label: bool = False, nms_thresh: float | None = None, conf_thresh: float = EVAL_CONF_THRESH,
                  max_det: int = DEFAULT_MAX_DET, yolov5_val: bool = False) -> tuple[EvalGeometry, NmsOptions]:
    """(geometry, NMS options) from the eval flags; ``yolov5_val`` switches on YOLOv5 val.py's settings
    (rect batches, enlarged small images, area shrinking, multi-label NMS at IoU 0.6), and a value given
    explicitly still wins. ValueError naming the flag when one is out of range."""
    geometry = EvalGeometry(rect=bool(rect or yolov5_val), scaleup=bool(scaleup or yolov5_val),
                            interpolation=interpolation or ("yolov5" if yolov5_val else "linear"))
    if nms_thresh is None:
        nms_thresh = YOLOV5_VAL_NMS_THRESH if yolov5_val else EVAL_NMS_THRESH
    try:
        nms = NmsOptions(conf_thresh=conf_thresh, nms_thresh=nms_thresh, max_det=max_det,
                         multi_label=bool(multi_label or yolov5_val))
    except ValueError as error:
        raise ValueError(f"--{error}") from None
    return geometry, nms


def describe_settings(geometry: EvalGeometry, nms: NmsOptions) -> str:
    """One line for logs: the geometry and the NMS settings."""
    return (f"{geometry.describe()}; NMS conf {nms.conf_thresh:g}, IoU {nms.nms_thresh:g}, "
            f"{'multi-label' if nms.multi_label else 'best class'}, at most {nms.max_det} per image")


# ---------------------------------------------------------------------------------------------
# Model for a dataset, and the whole evaluation
# ---------------------------------------------------------------------------------------------

def load_model_for_dataset(checkpoint, num_categories: int, *, version=None, num_classes=None):
    """``loading.load_inference_net`` for a dataset of ``num_categories``: a ``LoadedModel``.

    The class count defaults to the dataset's (for a plain weights file) and must equal it;
    ``ModelLoadError`` saying so otherwise.
    """
    loaded = load_inference_net(checkpoint, version=version, num_classes=num_classes,
                                default_num_classes=num_categories)
    check_class_count(loaded.num_classes, num_categories)
    return loaded


def check_class_count(num_classes: int, num_categories: int) -> None:
    """ModelLoadError when a network's class count is not the dataset's category count."""
    if int(num_classes) != int(num_categories):
        raise ModelLoadError(f"the network has {num_classes} classes but the dataset has {num_categories} "
                             f"categories: evaluate a checkpoint trained on this dataset's categories")


def evaluate(inference_net, mindrecord, *, testing_shape: int, per_batch_size: int,
             nms: NmsOptions = NmsOptions(), geometry: EvalGeometry = EvalGeometry(), rank: int = 0,
             group_size: int = 1, results_file: str | os.PathLike | None = None, ground_truth=None,
             num_parallel_workers: int | None = None, show_progress: bool = True,
             score_on_every_rank: bool = False, keep_evaluator: bool = False,
             keep_first_batch: bool = False) -> EvalReport:
    """COCO bbox scores of ``inference_net`` on every image of the shard folder ``mindrecord``.

    ``inference_net``: an ``InferenceNet`` (``yolomodel.checkpoint.loading.load_inference_net``) whose class count is
    the folder's category count. ``nms``: the NMS settings (COCO evaluation's by default). With
    ``group_size`` > 1 every rank calls this with its ``rank`` and gets its share of the images; the
    results are gathered and rank 0 scores them. ``results_file``: where rank 0 writes the COCO results
    json (atomically); None writes none. ``ground_truth``: a COCO json path, or a ``COCO`` of
    ``coco_eval.load_ground_truth`` already loaded; None means the folder's ``annotations.json``.
    ``show_progress``: a progress bar on rank 0 (only on a terminal). ``keep_evaluator``: the scores carry
    their COCOeval (``CocoScores.evaluator``), from which ``yolomodel.metrics.class_metrics`` reads the
    per-class numbers; ``keep_first_batch``: the report carries this rank's first batch (``FirstBatch``).

    Bad arguments, a bad folder or ground truth, or a network of another class count raise ValueError
    (or its subclasses ``ManifestError``, ``CocoEvalError``, ``ModelLoadError``) before the network runs.
    """
    check_int("group_size", group_size, minimum=1)
    check_int("rank", rank, minimum=0, maximum=int(group_size) - 1)
    manifest = load_manifest(mindrecord)  # names a missing annotations.json, shard or manifest
    if ground_truth is None or isinstance(ground_truth, (str, os.PathLike)):
        ground_truth = load_ground_truth(ground_truth if ground_truth is not None else manifest.annotations_path)
    category_ids = manifest.category_ids
    network_classes = getattr(getattr(inference_net, "net", None), "num_classes", None)
    if network_classes is not None:
        check_class_count(network_classes, len(category_ids))
    dataset = create_eval_dataset(mindrecord, per_batch_size=per_batch_size, testing_shape=testing_shape,
                                  geometry=geometry, num_parallel_workers=num_parallel_workers, rank=rank,
                                  group_size=group_size)
    predict = network_predictor(inference_net)
    seen, first = [], ([] if keep_first_batch else None)
    with tqdm(total=dataset.num_steps, unit="batch", desc="eval", file=sys.stderr,
              disable=None if show_progress and rank == 0 else True) as bar:
        results = predict_results(dataset, lambda batch: predict(batch["image"]), category_ids, nms,
                                  progress=bar.update, seen_image_ids=seen, first_batch=first)
    if group_size > 1:
        results = gather_results(results, group_size)
        seen = gather_image_ids(seen, group_size)
    images_evaluated = check_each_image_once(seen, manifest.num_images)
    first = first[0] if first else None
    if rank != 0:
        scores = (score_detections(ground_truth, results, keep_evaluator=keep_evaluator) if score_on_every_rank
                  else None)
        return EvalReport(scores, manifest.num_images, len(results), None, images_evaluated, first)
    written = write_results_json(results, results_file) if results_file is not None else None
    return EvalReport(score_detections(ground_truth, results, keep_evaluator=keep_evaluator), manifest.num_images,
                      len(results), written, images_evaluated, first)
