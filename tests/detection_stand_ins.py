"""Stand-ins for a network in the inference tests: pictures with one pure red rectangle, and a predictor
that 'detects' the red pixels, so that geometry and bookkeeping are checked exactly without a network."""
from __future__ import annotations

import numpy as np

RED_BGR = (0, 0, 255)


def rectangle_image(height: int, width: int, box) -> np.ndarray:
    """BGR image, gray noise-free background, one pure red filled rectangle over [x1, x2) x [y1, y2)."""
    image = np.full((height, width, 3), 90, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = RED_BGR
    return image


def red_extent_predictor(num_classes: int = 3, class_index: int = 1, calls=None):
    """A stand-in network: finds the pure red pixels of its RGB input and 'detects' their extent.

    Returns (1, 2, 5 + C): the red extent as cx, cy, w, h with objectness 0.9 and a one-hot class, and
    a junk row with objectness 0.01 (below any threshold used here). Finding red in channel 0 only
    works when the input is RGB.
    """
    def predict(images):
        if calls is not None:
            calls.append(images)
        rgb = images[0].astype(np.int32)
        mask = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
        out = np.zeros((1, 2, 5 + num_classes), np.float32)
        if mask.any():
            ys, xs = np.nonzero(mask)
            x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            out[0, 0, :5] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.9)
            out[0, 0, 5 + class_index] = 1.0
        out[0, 1, :5] = (10, 10, 4, 4, 0.01)
        out[0, 1, 5] = 1.0
        return out

    return predict
