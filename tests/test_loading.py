"""yolomodel.checkpoint.loading: one reader for every checkpoint; training's weights-only loads go through it.

Complete loads (eval, infer, export) are tested with their tools (test_eval_tool.py, test_export.py);
the loads of a real training checkpoint in test_train.py. Here: a checkpoint with EMA weights made
directly, no network compiled.
"""
from __future__ import annotations

import numpy as np
import pytest

from yolomodel.checkpoint import loading
from yolomodel.network import create_yolov5
from yolomodel.checkpoint.format import save_checkpoint_atomic


@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory):
    """yolov5n, 5 classes: plain weights of seed 0, EMA weights of seed 1, the metadata training writes."""
    model, ema = create_yolov5("yolov5n", 5, seed=0), create_yolov5("yolov5n", 5, seed=1)
    entries = [{"name": p.name, "data": p} for p in model.get_parameters()]
    entries += [{"name": "ema." + p.name, "data": p} for p in ema.get_parameters()]
    path = save_checkpoint_atomic(tmp_path_factory.mktemp("loading") / "run.ckpt", entries,
                                  {"yolov5_version": "yolov5n", "num_classes": 5})
    return path, {p.name: p.asnumpy() for p in ema.get_parameters()}, {p.name: p.asnumpy() for p in
                                                                       model.get_parameters()}


def test_read_weights_gives_the_ema_under_network_names_unless_asked_otherwise(ema_checkpoint):
    path, ema, plain = ema_checkpoint
    read = loading.read_weights(path)
    assert read.is_ema and set(read.weights) == set(ema) and read.metadata["num_classes"] == 5
    name = "backbone.stem.conv.conv.weight"
    np.testing.assert_array_equal(read.weights[name].asnumpy(), ema[name])
    raw = loading.read_weights(path, use_ema=False)
    assert not raw.is_ema and set(raw.weights) == set(plain)
    np.testing.assert_array_equal(raw.weights[name].asnumpy(), plain[name])
    assert loading.describe_weights(read.weights) == "a yolov5n with 5 classes"


def test_finetune_to_other_classes_loads_the_ema_and_keeps_fresh_heads(ema_checkpoint):
    path, ema, _ = ema_checkpoint
    net = create_yolov5("yolov5n", 3, seed=9)
    heads_before = {p.name: p.asnumpy().copy() for p in net.get_parameters() if p.name.startswith("head.")}
    messages = []
    report = loading.load_finetune_weights(net, path, 3, log=messages.append)
    assert report["skipped_heads"] and report["ema"] and not report["absent"]
    assert any("head.*" in m and "NOT" in m for m in messages)
    for param in net.get_parameters():
        expected = heads_before[param.name] if param.name.startswith("head.") else ema[param.name]
        np.testing.assert_array_equal(param.asnumpy(), expected)


def test_partial_loads_of_another_size_or_no_checkpoint_are_explained(ema_checkpoint, tmp_path):
    path, _, _ = ema_checkpoint
    with pytest.raises(loading.ModelLoadError, match="another model size.*weights look like a yolov5n with 5 classes"):
        loading.load_finetune_weights(create_yolov5("yolov5s", 5), path, 5)
    with pytest.raises(loading.ModelLoadError, match="backbone parameters fit"):
        loading.load_pretrained_backbone(create_yolov5("yolov5s", 5), path)
    with pytest.raises(loading.ModelLoadError, match="does not exist"):
        loading.load_pretrained_backbone(create_yolov5("yolov5n", 5), tmp_path / "missing.ckpt")
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(loading.ModelLoadError, match="cannot read checkpoint"):
        loading.load_finetune_weights(create_yolov5("yolov5n", 5), not_a_checkpoint, 5)
