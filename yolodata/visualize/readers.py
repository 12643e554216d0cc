"""What a grid or a statistics figure shows, read from a converter output folder (shards + manifest.json).

The only code of ``yolodata.visualize`` that touches files. Three stages of samples:

* ``raw``: the stored images with their stored boxes, in the order epoch 0 of the seed visits them;
  each stored image at most once (a grid asking for more tiles than the dataset has images is capped);
* ``mosaic``: the train pipeline's geometry (mosaic, affine) without colour jitter, flips and extras;
* ``full``: the train pipeline exactly as training with these settings sees it.

The pipeline stages show the first samples of training from epoch 0 on. Training pads each epoch to
whole batches by repeating the start of the epoch's order and then goes on to the next epoch; so a grid
with more samples than the dataset has images repeats images, each time with its own augmentation
draw. ``sample_span`` says how many samples a grid shows and over how many epochs; ``span_note`` turns
a capped or repeating span into a sentence for the user.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ..augment.policy import AugmentConfig
from ..checks import check_int, resolve_num_workers
from ..image_io import decode_stored
from ..manifest import Manifest, load_manifest
from ..pipeline import TRAIN_COLUMNS, create_train_dataset, resolve_mindrecord
from ..pipeline.sampler import epoch_order, steps_per_epoch
from ..schema import row_labels
from .drawing import Sample
from .statistics import LabelStatistics, label_statistics

STAGES = ("raw", "mosaic", "full")


# --- which samples a grid shows (pure) --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SampleSpan:
    """The part of a dataset a grid of ``num_requested`` samples of ``stage`` covers.

    ``num_shown``: tiles the grid gets (``raw``: at most ``num_images``). ``per_batch_size``: the batch
    size the pipeline stages draw in (1 for ``raw``, which has no batches). ``samples_per_epoch``: the
    samples of one epoch (``raw``: the images; pipeline stages: the images padded to whole batches).
    ``num_epochs``: how many epochs, from epoch 0, the shown samples come from.
    """

    stage: str
    num_requested: int
    num_images: int
    per_batch_size: int
    num_shown: int
    samples_per_epoch: int
    num_epochs: int

    @property
    def num_steps(self) -> int:
        """Batches the pipeline stages read (the last one may hold more samples than are shown)."""
        return -(-self.num_shown // self.per_batch_size)

    @property
    def is_capped(self) -> bool:
        return self.num_shown < self.num_requested

    @property
    def repeats_images(self) -> bool:
        """More samples than stored images: some image is shown more than once."""
        return self.num_shown > self.num_images


def sample_span(stage: str, *, num: int, num_images: int, per_batch_size: int | None = None) -> SampleSpan:
    """Which samples a grid of ``num`` tiles of ``stage`` shows in a dataset of ``num_images`` images.

    ``per_batch_size`` (pipeline stages only; default ``num``) is the batch size of the train pipeline.
    """
    check_stage(stage)
    num = check_int("num (the number of samples)", num, minimum=1)
    num_images = check_int("num_images", num_images, minimum=1)
    if stage == "raw":
        return SampleSpan(stage, num, num_images, per_batch_size=1, num_shown=min(num, num_images),
                          samples_per_epoch=num_images, num_epochs=1)
    batch = check_int("per_batch_size", num if per_batch_size is None else per_batch_size, minimum=1)
    steps_in_epoch = steps_per_epoch(num_images, batch)
    steps_needed = -(-num // batch)
    return SampleSpan(stage, num, num_images, per_batch_size=batch, num_shown=num,
                      samples_per_epoch=steps_in_epoch * batch, num_epochs=-(-steps_needed // steps_in_epoch))


def span_note(span: SampleSpan) -> str | None:
    """A sentence for the user when the grid is capped or shows an image more than once, else None."""
    images = f"{span.num_images} stored image{'s' if span.num_images != 1 else ''}"
    if span.is_capped:
        return (f"the dataset has {images}: the {span.stage} grid shows each once, {span.num_shown} "
                f"tile{'s' if span.num_shown != 1 else ''} instead of the {span.num_requested} asked for")
    if not span.repeats_images:
        return None
    padding = (f"{span.num_images} images padded to whole batches of {span.per_batch_size}"
               if span.samples_per_epoch > span.num_images else "")
    if span.num_epochs > 1:
        epochs = "0 and 1" if span.num_epochs == 2 else f"0 to {span.num_epochs - 1}"
        where = (f"the samples span epochs {epochs} of training "
                 f"({span.samples_per_epoch} samples per epoch{': ' + padding if padding else ''})")
    else:
        where = (f"epoch 0 of training pads its {span.num_images} images to {span.samples_per_epoch} samples "
                 f"(whole batches of {span.per_batch_size})")
    return (f"{span.num_shown} {span.stage} samples from {images}, so images repeat, each with its own "
            f"augmentation draw: {where}")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage


def stage_augment(stage: str, augment=None) -> AugmentConfig:
    """The augmentation of a pipeline stage from ``augment`` (an AugmentConfig, a mapping of options or
    None for the defaults): ``full`` keeps it; ``mosaic`` keeps the geometry (mosaic, affine) and turns
    off the colour jitter, flips and pixel extras."""
    config = augment if isinstance(augment, AugmentConfig) else AugmentConfig.from_mapping(augment)
    if stage == "mosaic":
        return dataclasses.replace(config, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, flipud=0.0, extras=0.0)
    if stage != "full":
        raise ValueError(f"stage must be 'mosaic' or 'full' for the train pipeline, got {stage!r}")
    return config


def first_rows(num_images: int, *, num: int, seed: int, dataset_id: str) -> np.ndarray:
    """int64 (min(num, num_images),): the rows at the first ``num`` positions of epoch 0's sample order
    for ``seed`` (the images the train pipeline starts from), each row once."""
    order = epoch_order(int(num_images), seed=seed, epoch=0, dataset_key=dataset_id)
    return order[:check_int("num (the number of samples)", num, minimum=1)]


def batch_boxes_to_labels(boxes: np.ndarray) -> np.ndarray:
    """float32 (n, 6) label array (iscrowd 0) from one image's ``boxes`` batch column (max_boxes, 6):
    x1, y1, x2, y2, class, valid -> the valid rows."""
    boxes = np.asarray(boxes, np.float32)
    valid = boxes[boxes[:, 5] > 0]
    labels = valid.copy()
    labels[:, 5] = 0
    return labels


# --- reading from the shards ------------------------------------------------------------------------

def _scalar(value):
    """A Python value from MindDataset's numpy output (0-d/1-element arrays, bytes of strings)."""
    value = np.asarray(value)
    value = value.reshape(-1)[0] if value.size == 1 else value
    if isinstance(value, np.ndarray):
        return value
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_label_rows(folder, *, num_workers: int | None = None):
    """Yield (image_id, height, width, label array) for every stored row, in row order.

    Reads only the small columns (no image bytes) with MindDataset; ``schema.row_labels`` honours
    ``num_boxes`` so the placeholder of a background row is never counted.
    """
    import mindspore.dataset as ds  # on first read: importing yolodata.visualize must not load MindSpore

    files = load_manifest(folder).shard_paths
    dataset = ds.MindDataset([str(p) for p in files], shuffle=False,
                             num_parallel_workers=resolve_num_workers(num_workers),
                             columns_list=["image_id", "height", "width", "num_boxes", "boxes", "classes",
                                           "iscrowd"])
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        yield (int(_scalar(row["image_id"])), int(_scalar(row["height"])), int(_scalar(row["width"])),
               row_labels(row["num_boxes"], row["boxes"], row["classes"], row["iscrowd"]))


def dataset_label_statistics(folder, *, num_workers: int | None = None) -> tuple[LabelStatistics, Manifest]:
    """(statistics of every stored box of a converter output folder, its manifest)."""
    manifest = load_manifest(folder)
    stats = label_statistics(read_label_rows(folder, num_workers=num_workers), manifest.num_classes)
    if stats.num_images != manifest.num_images:
        raise ValueError(f"{folder}: the shards hold {stats.num_images} rows but the manifest says "
                         f"{manifest.num_images}; the folder is damaged (re-run tools/coco2mindrecord.py)")
    return stats, manifest


def raw_samples(folder, *, num: int, seed: int = 0) -> list[Sample]:
    """The stored images and boxes of the rows the train pipeline visits first (epoch 0, ``seed``),
    captioned with image id and file name; each stored image once, so at most ``num_images`` samples
    (``sample_span`` / ``span_note`` say when ``num`` was capped)."""
    import mindspore.dataset as ds  # as in read_label_rows

    num = check_int("num (the number of samples)", num, minimum=1)
    files, manifest, _ = resolve_mindrecord(folder)
    rows = [int(r) for r in first_rows(manifest.num_images, num=num, seed=seed, dataset_id=manifest.dataset_id)]
    dataset = ds.MindDataset(list(files), sampler=ds.SubsetSampler(rows),
                             columns_list=["image", "image_id", "file_name", "num_boxes", "boxes", "classes",
                                           "iscrowd", "row_index"])
    samples, stored = [], []
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):  # SubsetSampler: in ``rows`` order
        image = cv2.cvtColor(decode_stored(row["image"]), cv2.COLOR_BGR2RGB)
        labels = row_labels(row["num_boxes"], row["boxes"], row["classes"], row["iscrowd"])
        caption = f"id {int(_scalar(row['image_id']))}  {_scalar(row['file_name'])}"
        samples.append(Sample(image, labels, caption))
        stored.append(int(_scalar(row["row_index"])))
    if stored != manifest.stored_row_index(rows).tolist():
        raise ValueError(f"{folder}: rows {rows[:5]} read back as row_index {stored[:5]}; the folder is damaged")
    return samples


def pipeline_samples(folder, *, num: int, stage: str = "full", seed: int = 0, training_shape: int = 640,
                     per_batch_size: int | None = None, resize_rate: int = 0, num_workers: int | None = None,
                     augment: dict | None = None) -> list[Sample]:
    """The first ``num`` samples of the train pipeline for ``seed`` from epoch 0 on (batches of
    ``per_batch_size``, default ``num``; into later epochs when ``num`` needs them, as training goes
    on), with the labels of the batch's ``boxes`` column, captioned with the image id (and the epoch
    after the first).

    ``stage="full"``: exactly what training with these settings sees. ``stage="mosaic"``: the same
    geometry without colour jitter, flips and pixel extras (``stage_augment``).
    """
    config = stage_augment(stage, augment)
    num = check_int("num (the number of samples)", num, minimum=1)
    _, manifest, _ = resolve_mindrecord(folder)
    span = sample_span(stage, num=num, num_images=manifest.num_images, per_batch_size=per_batch_size)
    dataset = create_train_dataset(folder, per_batch_size=span.per_batch_size, training_shape=training_shape,
                                   resize_rate=resize_rate, num_parallel_workers=num_workers, seed=seed,
                                   num_epochs=span.num_epochs, augment=config)
    samples = []
    for columns in dataset.take(span.num_steps).create_tuple_iterator(output_numpy=True, num_epochs=1):
        named = dict(zip(TRAIN_COLUMNS, columns))
        for image, image_id, boxes in zip(named["image"], named["image_id"], named["boxes"]):
            epoch = len(samples) // span.samples_per_epoch
            caption = f"id {int(image_id)}" + (f"  epoch {epoch}" if epoch else "")
            samples.append(Sample(image, batch_boxes_to_labels(boxes), caption))
    return samples[:num]


def read_samples(folder, *, stage: str, num: int, seed: int = 0, **pipeline_options) -> list[Sample]:
    """Samples for a grid: ``raw_samples`` for ``stage="raw"``, else ``pipeline_samples``."""
    if check_stage(stage) == "raw":
        return raw_samples(folder, num=num, seed=seed)
    return pipeline_samples(folder, num=num, stage=stage, seed=seed, **pipeline_options)
