"""Which anchors a training run uses, and why: the ones --resume / --weights record, YOLOv5's defaults, or
new ones from AutoAnchor (``yolodata.anchors``).

AutoAnchor runs, as YOLOv5's train.py runs ``check_anchors``, before the first step unless
``--noautoanchor`` is given, but only where the anchors are free to change: when training from scratch
(no ``--weights``) or when ``--weights`` holds another class count than the training shards (its heads
start afresh anyway). With ``--weights`` of the same class count the anchors its heads were trained
with are kept; with ``--resume`` the checkpoint's anchors are kept (the run continues exactly). The
anchors in effect go into the network, hence into the loss and the target assignment of the input
pipeline, the checkpoints (``anchors`` entry: eval, infer, export and resume use them) and config.yaml.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from tqdm import tqdm

from yolodata import anchors as anchors_lib
from yolodata.manifest import Manifest
from yolodata.pipeline.targets import YOLOV5_ANCHORS
from yolomodel.checkpoint.loading import classes_from_weights

from .hyp import anchor_t_of

logger = logging.getLogger(__name__)
DEFAULT_ANCHOR_T = 4.0


@dataclasses.dataclass(frozen=True)
class AnchorChoice:
    """The anchors a run uses (pixels (3, 3, 2); None = YOLOv5's defaults) and a sentence saying why."""

    anchors: np.ndarray | None
    reason: str
    seconds: float = 0.0       # time spent by AutoAnchor (reading labels included)


def weights_num_classes(start) -> int | None:
    """The class count --weights was trained for (recorded, else read off its heads), or None."""
    recorded = start.metadata.get("num_classes")
    return int(recorded) if recorded is not None else classes_from_weights(start.weights)


def autoanchor_reason(args, start, manifest: Manifest) -> str | None:
    """Why AutoAnchor runs for this run, or None when it does not."""
    if args.resume or getattr(args, "noautoanchor", False):
        return None
    if start is None:
        return "training from scratch"
    held = weights_num_classes(start)
    if held is not None and held != manifest.num_classes:
        return f"--weights has {held} classes, the shards {manifest.num_classes}"
    return None


def choose_anchors(args, choice, manifest: Manifest, training_shape: int, labels, log=logger.info) -> AnchorChoice:
    """The anchors for ``choice`` (a ``session.ModelChoice``) and why; runs AutoAnchor when due on
    ``labels`` (a ``train.labels.TrainingLabels``)."""
    current = choice.anchors
    if args.resume:
        source = "--resume (the run continues with the anchors it was trained with)"
    elif choice.start is not None and current is not None:
        source = "--weights"
    else:
        source = "YOLOv5's defaults" if current is None else "--weights"
    reason = autoanchor_reason(args, choice.start, manifest)
    if reason is None:
        why = ("--noautoanchor" if getattr(args, "noautoanchor", False) and not args.resume else
               "resuming" if args.resume else "fine-tuning with the same class count keeps the trained anchors")
        return AnchorChoice(current, f"anchors from {source} ({why}; AutoAnchor not run)")
    started = time.perf_counter()
    anchor_t = anchor_t_of(getattr(args, "hyp", None), DEFAULT_ANCHOR_T)
    boxes = anchors_lib.box_sizes(labels.rows(), training_shape)
    given = YOLOV5_ANCHORS if current is None else current
    result = anchors_lib.check_anchors(
        boxes, given, anchor_t=anchor_t, training_shape=training_shape, seed=int(args.seed), log=log,
        progress=lambda generations: tqdm(generations, desc=f"{anchors_lib.PREFIX}evolving anchors", leave=False))
    seconds = time.perf_counter() - started
    if result.changed:
        text = (f"anchors from AutoAnchor ({reason}; {result.reason}, anchor_t {anchor_t:g}): "
                f"{anchors_lib.format_anchors(result.anchors)}")
        return AnchorChoice(result.anchors, text, seconds)
    return AnchorChoice(current, f"anchors from {source} (AutoAnchor, {reason}: {result.reason})", seconds)
