"""benchmarks/large_photos.py's third baseline, the work of YOLOv5's loader per training image: four full
decodes (the sample and three others, none reduced), each resized to the training size, then one
training-size picture out (CHW RGB). The README's "24.7x the loader users have" rests on it."""
from __future__ import annotations

import cv2
import numpy as np

from benchmarks import large_photos

SIZE = 64
COLOURS_BGR = ((0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255))


def encoded_pictures() -> list:
    """Five solid-colour JPEGs of 120x160 (each larger than SIZE, so each is shrunk)."""
    buffers = []
    for colour in COLOURS_BGR:
        ok, buffer = cv2.imencode(".jpg", np.full((120, 160, 3), colour, np.uint8))
        assert ok
        buffers.append(np.frombuffer(buffer.tobytes(), np.uint8))
    return buffers


def test_each_training_image_decodes_four_pictures_in_full_and_resizes_them(monkeypatch):
    decodes, resizes = [], []
    real_decode, real_resize = cv2.imdecode, cv2.resize

    def counting_decode(buffer, flags):
        decodes.append(flags)
        return real_decode(buffer, flags)

    def recording_resize(picture, size, **kwargs):
        resizes.append((picture.shape[:2], size))
        return real_resize(picture, size, **kwargs)

    monkeypatch.setattr(large_photos.cv2, "imdecode", counting_decode)
    monkeypatch.setattr(large_photos.cv2, "resize", recording_resize)
    buffers = encoded_pictures()
    for index in range(len(buffers)):
        sample = large_photos._yolov5_sample(buffers, index, SIZE)
        assert sample.shape == (3, SIZE, SIZE) and sample.dtype == np.uint8 and sample.flags["C_CONTIGUOUS"]
    assert decodes == [cv2.IMREAD_COLOR] * 4 * len(buffers)      # full decodes, never a reduced one
    assert resizes == [((120, 160), (SIZE, 48))] * 4 * len(buffers)   # long side to the training size


def test_the_output_is_rgb():
    """Red pictures (BGR 0, 0, 255) come out with red as the largest channel of every coloured pixel
    (HSV jitter moves hue by at most 1.5%, which keeps red red)."""
    ok, buffer = cv2.imencode(".png", np.full((120, 160, 3), (0, 0, 255), np.uint8))
    buffers = [np.frombuffer(buffer.tobytes(), np.uint8)] * 4
    for index in range(4):
        pixels = large_photos._yolov5_sample(buffers, index, SIZE).reshape(3, -1).T.astype(int)
        coloured = pixels[np.abs(pixels - pixels[:, :1]).max(axis=1) > 40]
        assert len(coloured) > 0 and (np.argmax(coloured, axis=1) == 0).all()
