"""Per-sample augmentations of the YOLOv5 input pipeline: pure numpy/OpenCV functions.

Each transform separates *sampling* (a Generator from ``yolodata.rng.keyed_rng`` -> small picklable
parameters or a matrix) from *applying* (parameters -> new pixels and boxes), never modifies its
inputs, and passes the shared harness in tests/test_transform_harness.py.

- ``geometry``: what the geometric transforms share: argument checks, the edge-coordinate convention
  of every matrix, boxes through a matrix and cut to the output (then ``yolodata.boxes.sanitize_boxes``),
  pixel warps and the cheap axis-aligned drawing.
- ``affine``: YOLOv5's random affine/perspective with the flips in the same matrix; ``warp``.
- ``letterbox``: aspect-preserving resize + centred 114 padding, its matrix and exact inverse.
- ``mosaic``: the 4-image mosaic rendered straight into the output (no 2s x 2s canvas).
- ``color``: HSV jitter and BGR -> RGB. ``extras``: albumentations' rare pixel extras.
- ``policy``: ``AugmentConfig`` and YOLOv5's training policy, which chains the transforms above
  for one sample of a batch (decide every draw first, then render).

Submodules are imported by name (``from yolodata.augment import mosaic``); importing this package
loads none of them.
"""
