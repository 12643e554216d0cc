"""YOLOv5 network, both layouts: reference parameter counts, output layout, decode, graph mode, ONNX export, init."""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from yolodata.rng import keyed_rng
from yolodata.pipeline.targets import YOLOV5_ANCHORS
from yolomodel import YOLOV5_VERSIONS, InferenceNet, create_yolov5
from yolomodel.layers import SPP, SPPF, ConvStem, images_to_focus_input, pools_chain, silu, upsample_nearest_2x
from yolomodel.network import (YOLOV5_LAYER_CELLS, YOLOV5_LAYOUTS, decode_head_output, detection_bias_prior,
                               flatten_head_output, layer_parameter_prefixes, make_divisible, normalize_layout,
                               scaled_depth)

from float32_tolerance import network_rtol

# Trainable parameters at 80 classes of the reference PyTorch YOLOv5 (yolov5{n,s,m,l,x}.yaml of release
# v5.0, and of v6.0 and later), the counts its model summary prints
REFERENCE_PARAMS = {
    "v5.0": {"yolov5n": 1_882_525, "yolov5s": 7_276_605, "yolov5m": 21_375_645, "yolov5l": 47_056_765,
             "yolov5x": 87_775_965},
    "v6.0": {"yolov5n": 1_872_157, "yolov5s": 7_235_389, "yolov5m": 21_190_557, "yolov5l": 46_563_709,
             "yolov5x": 86_749_405},
}


def trainable_count(net) -> int:
    """PyTorch's count: conv weights and biases, BatchNorm gamma and beta (no moving statistics)."""
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


# Two executions of yolov5n (graph mode against PyNative, ms.jit against op by op) may add the
# convolutions' products in different orders: at most 3*3*256 = 2304 products per output, about 60
# layers in sequence (float32_tolerance.network_rtol), relative to the scale of the outputs.
YOLOV5N_RTOL = network_rtol(max_terms_per_layer=2304, num_layers=60)


def random_images(shape, key=0) -> Tensor:
    return Tensor(keyed_rng(0, key, purpose="test_images").integers(0, 256, shape, dtype=np.uint8))


@pytest.fixture(scope="module", params=YOLOV5_LAYOUTS)
def parameter_counts(request):
    counts = {}
    for version in ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"):
        net = create_yolov5(version, 80, layout=request.param)
        counts[version] = trainable_count(net)
        del net
    return request.param, counts


@pytest.fixture(scope="module")
def yolov5n():
    return create_yolov5("yolov5n", 80)


def test_parameter_counts_match_the_reference_for_every_size_and_layout(parameter_counts):
    layout, counts = parameter_counts
    assert counts == REFERENCE_PARAMS[layout]
    assert set(counts) == set(YOLOV5_VERSIONS)


def test_v5_0_stays_the_default_layout():
    net = create_yolov5("yolov5n", 80)
    assert net.layout == "v5.0" and trainable_count(net) == REFERENCE_PARAMS["v5.0"]["yolov5n"]


@pytest.mark.parametrize("given, layout", [("v5.0", "v5.0"), ("5.0", "v5.0"), ("v6.0", "v6.0"), ("v6.1", "v6.0"),
                                           ("v6.2", "v6.0"), ("V7.0", "v6.0"), ("yolov5-v7.0", "v6.0")])
def test_layout_names_accept_the_release_a_user_knows(given, layout):
    assert normalize_layout(given) == layout


@pytest.mark.parametrize("given", ["v4.0", "v8", "", None, 6.5, True])
def test_unknown_layouts_say_which_exist(given):
    with pytest.raises(ValueError, match="must be v5.0 .* or v6.0"):
        normalize_layout(given)


@pytest.mark.parametrize("layout", YOLOV5_LAYOUTS)
def test_every_parameter_belongs_to_one_yolov5_layer(layout):
    net = create_yolov5("yolov5n", 3, layout=layout)
    names = [p.name for p in net.get_parameters()]
    cells = YOLOV5_LAYER_CELLS[layout]
    assert len(cells) == 25 and sum(cell is None for cell in cells) == 6       # 2 Upsample + 4 Concat layers
    owners = {name: [i for i, prefix in enumerate(layer_parameter_prefixes(layout, range(25)))
                     if name.startswith(prefix)] for name in names}
    assert all(len(found) == 1 for found in owners.values()), {n: f for n, f in owners.items() if len(f) != 1}
    backbone = layer_parameter_prefixes(layout, range(10))
    assert {n for n in names if n.startswith(backbone)} == {n for n in names if n.startswith("backbone.")}
    with pytest.raises(ValueError, match="from 0 to 24"):
        layer_parameter_prefixes(layout, [25])


def test_v6_layout_stem_and_sppf_follow_yolov5():
    net = create_yolov5("yolov5n", 80, layout="v6.0")
    names = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert names["backbone.stem.conv.weight"] == (16, 3, 6, 6) and "backbone.stem.bn.gamma" in names
    assert "backbone.sppf.cv2.conv.weight" in names and not any(".spp." in n for n in names)
    assert len(net.backbone.c3_3.m) == 2 and len(net.backbone.c3_5.m) == 1 and net.backbone.c3_5.m[0].shortcut
    # the stem is YOLOv5's Conv(3, 16, 6, 2, 2) on RGB / 255 in NCHW
    images = keyed_rng(5, purpose="stem").integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    stem = net.backbone.stem
    stem.set_train(False)
    expected = silu(stem.bn(stem.conv(Tensor(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))))
    np.testing.assert_allclose(stem(Tensor(images)).asnumpy(), expected.asnumpy(), rtol=1e-6, atol=1e-6)
    assert isinstance(stem, ConvStem) and stem(Tensor(images)).shape == (1, 16, 32, 32)


def test_sppf_equals_spp_5_9_13_with_the_same_weights():
    spp, sppf = SPP(16, 16, (5, 9, 13)), SPPF(16, 16, 5)
    for cell in (spp, sppf):
        cell.set_train(False)
    rng = keyed_rng(6, purpose="sppf")
    for (name, param), (_, other) in zip(spp.parameters_and_names(), sppf.parameters_and_names()):
        values = rng.normal(0, 0.3, param.shape).astype(np.float32)
        param.set_data(Tensor(values))
        other.set_data(Tensor(values))
    x = Tensor(rng.normal(0, 1, (2, 16, 12, 10)).astype(np.float32))
    np.testing.assert_allclose(sppf(x).asnumpy(), spp(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_yolov5_rounding_rules():
    # yolov5s widths 64..1024 * 0.5, yolov5n's 0.25; C3 repeats 3 and 9 at depth 0.33 / 0.67 / 1.33
    assert [make_divisible(c * 0.5) for c in (64, 128, 256, 512, 1024)] == [32, 64, 128, 256, 512]
    assert [make_divisible(c * 0.25) for c in (64, 128, 256, 512, 1024)] == [16, 32, 64, 128, 256]
    assert make_divisible(64 * 0.75) == 48 and make_divisible(64 * 1.25) == 80
    assert [scaled_depth(n, 0.33) for n in (1, 3, 9)] == [1, 1, 3]
    assert [scaled_depth(n, 0.67) for n in (3, 9)] == [2, 6]
    assert [scaled_depth(n, 1.33) for n in (3, 9)] == [4, 12]


@pytest.mark.parametrize("version, num_classes, message", [
    ("yolov5q", 80, "version must be one of"),
    (5, 80, "version must be one of"),
    ("yolov5n", 0, "num_classes must be a positive integer"),
    ("yolov5n", 2.0, "num_classes must be a positive integer"),
    ("yolov5n", True, "num_classes must be a positive integer"),
])
def test_bad_arguments_say_what_to_fix(version, num_classes, message):
    with pytest.raises(ValueError, match=message):
        create_yolov5(version, num_classes)


@pytest.mark.parametrize("shape, dtype, message", [
    ((1, 48, 64, 3), np.uint8, "multiples of 32"),
    ((1, 64, 64, 3), np.float32, "uint8"),
    ((1, 3, 64, 64), np.uint8, r"\(B, H, W, 3\)"),
])
def test_bad_input_batches_are_rejected(yolov5n, shape, dtype, message):
    with pytest.raises(ValueError, match=message):
        yolov5n(Tensor(np.zeros(shape, dtype)))


@pytest.mark.parametrize("version, layout", [("yolov5n", "v5.0"), ("yolov5s", "v5.0"), ("yolov5n", "v6.0")])
def test_output_shapes(version, layout):
    num_classes = 3
    net = create_yolov5(version, num_classes, layout=layout)
    outputs = net(random_images((2, 64, 96, 3)))
    assert len(outputs) == 3
    for output, stride in zip(outputs, (8, 16, 32)):
        assert output.dtype == ms.float32
        assert output.shape == (2, 3 * (64 // stride) * (96 // stride), 5 + num_classes)


def test_parameter_names_split_into_backbone_neck_head(yolov5n):
    names = [p.name for p in yolov5n.get_parameters()]
    parts = {name.split(".")[0] for name in names}
    assert parts == {"backbone", "neck", "head"}
    assert sorted(n for n in names if n.startswith("head.")) == sorted(
        f"head.detect_s{s}.{kind}" for s in (8, 16, 32) for kind in ("weight", "bias"))
    # the backbone ends with SPP and the C3 after it; the neck starts with the 1x1 lateral on P5
    assert "backbone.spp.cv2.conv.weight" in names and "backbone.c3_5.cv3.conv.weight" in names
    assert "neck.lateral5.conv.weight" in names
    backbone_names = {p.name for p in yolov5n.backbone.get_parameters()}
    assert backbone_names == {n for n in names if n.startswith("backbone.")}


def test_other_class_count_changes_only_the_head(yolov5n):
    other = create_yolov5("yolov5n", 3)
    shapes80 = {p.name: p.shape for p in yolov5n.get_parameters()}
    shapes3 = {p.name: p.shape for p in other.get_parameters()}
    assert shapes80.keys() == shapes3.keys()
    differing = {name for name in shapes80 if shapes80[name] != shapes3[name]}
    assert differing == {f"head.detect_s{s}.{kind}" for s in (8, 16, 32) for kind in ("weight", "bias")}


def test_focus_input_is_yolov5_space_to_depth():
    images = keyed_rng(1, purpose="focus").integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
    nchw = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    expected = np.concatenate([nchw[..., ::2, ::2], nchw[..., 1::2, ::2], nchw[..., ::2, 1::2],
                               nchw[..., 1::2, 1::2]], axis=1)
    result = images_to_focus_input(Tensor(images)).asnumpy()
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-7)


def test_flattened_rows_are_anchor_major_then_row_then_column():
    num_anchors, outputs, height, width = 3, 6, 2, 4
    # value = a*1000 + channel*100 + gy*10 + gx at (0, a*outputs + channel, gy, gx)
    a, c, y, x = np.meshgrid(np.arange(num_anchors), np.arange(outputs), np.arange(height), np.arange(width),
                             indexing="ij")
    conv_out = (a * 1000 + c * 100 + y * 10 + x).reshape(1, num_anchors * outputs, height, width)
    flat = flatten_head_output(Tensor(conv_out.astype(np.float32)), num_anchors).asnumpy()
    assert flat.shape == (1, num_anchors * height * width, outputs)
    for anchor, gy, gx in [(0, 0, 0), (1, 1, 2), (2, 1, 3), (2, 0, 1)]:
        row = anchor * height * width + gy * width + gx
        np.testing.assert_array_equal(flat[0, row], anchor * 1000 + np.arange(outputs) * 100 + gy * 10 + gx)


def test_decode_follows_yolov5_formula():
    height, width, stride, num_classes = 2, 3, 16, 2
    anchors = YOLOV5_ANCHORS[1]
    raw = keyed_rng(2, purpose="decode").normal(0, 2, (1, 3 * height * width, 5 + num_classes)).astype(np.float32)
    decoded = decode_head_output(Tensor(raw), Tensor(anchors), stride, height, width).asnumpy()
    sig = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
    for anchor, gy, gx in [(0, 0, 0), (1, 1, 2), (2, 0, 1)]:
        row = anchor * height * width + gy * width + gx
        p = sig[0, row]
        expected = [(2 * p[0] - 0.5 + gx) * stride, (2 * p[1] - 0.5 + gy) * stride,
                    (2 * p[2]) ** 2 * anchors[anchor, 0], (2 * p[3]) ** 2 * anchors[anchor, 1], *p[4:]]
        np.testing.assert_allclose(decoded[0, row], expected, rtol=1e-5, atol=1e-5)


def test_inference_net_concatenates_decoded_strides(yolov5n):
    images = random_images((1, 64, 96, 3), key=3)
    raw = yolov5n(images)
    predictions = InferenceNet(yolov5n)(images).asnumpy()
    assert predictions.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 85)
    assert predictions.dtype == np.float32
    start = 0
    for level, stride in enumerate((8, 16, 32)):
        rows = raw[level].shape[1]
        expected = decode_head_output(raw[level], Tensor(YOLOV5_ANCHORS[level]), stride, 64 // stride, 96 // stride)
        np.testing.assert_allclose(predictions[:, start:start + rows], expected.asnumpy(), rtol=1e-6, atol=1e-5)
        start += rows
    assert np.all((predictions[..., 4:] >= 0) & (predictions[..., 4:] <= 1))


@pytest.mark.slow
def test_graph_mode_matches_pynative_for_several_input_sizes(yolov5n, graph_mode):
    for shape in [(2, 64, 96, 3), (1, 128, 64, 3)]:
        images = random_images(shape, key=shape[1])
        ms.set_context(mode=ms.PYNATIVE_MODE)
        expected = [o.asnumpy() for o in yolov5n(images)]
        ms.set_context(mode=ms.GRAPH_MODE)
        outputs = yolov5n(images)
        for output, reference, stride in zip(outputs, expected, (8, 16, 32)):
            assert output.shape == (shape[0], 3 * (shape[1] // stride) * (shape[2] // stride), 85)
            # graph mode fuses and schedules the kernels its own way, so the convolutions' sums may be
            # added in another order than op by op: compare to the rounding of the whole network, relative
            # to the output's scale (an element near zero has no relative precision of its own)
            np.testing.assert_allclose(output.asnumpy(), reference, rtol=0,
                                       atol=YOLOV5N_RTOL * np.abs(reference).max())


@pytest.mark.slow
def test_inference_net_under_ms_jit_matches_pynative(yolov5n):
    inference = InferenceNet(yolov5n)
    images = random_images((2, 64, 64, 3), key=4)
    expected = inference(images).asnumpy()

    @ms.jit
    def predict(batch):
        return inference(batch)

    # compiled against op by op: the logits agree to the rounding of the whole network (YOLOV5N_RTOL of
    # their scale); a sigmoid passes on at most a quarter of a logit's error, and a box coordinate
    # ((2 sigmoid - 0.5 + cell) * stride, (2 sigmoid)^2 * anchor) at most twice its logit's error relative
    # to the box's own size, so both are bounded by the logits' scale
    logit_error = YOLOV5N_RTOL * max(float(np.abs(o.asnumpy()).max()) for o in yolov5n(images))
    got = predict(images).asnumpy()
    np.testing.assert_allclose(got[..., :4], expected[..., :4], rtol=0,
                               atol=2 * logit_error * np.abs(expected[..., :4]).max())
    np.testing.assert_allclose(got[..., 4:], expected[..., 4:], rtol=0, atol=0.25 * logit_error)


@pytest.mark.slow
def test_onnx_export_matches_mindspore(yolov5n, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import mindspore.onnx

    inference = InferenceNet(yolov5n)
    images = random_images((1, 320, 320, 3), key=5)
    expected = inference(images).asnumpy()
    path = tmp_path / "yolov5n.onnx"
    mindspore.onnx.export(inference, images, file_name=str(path), input_names=["images"],
                          output_names=["predictions"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    result = session.run(["predictions"], {"images": images.asnumpy()})[0]
    assert result.shape == expected.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 85)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)


def test_initialisation_is_keyed_by_seed_and_follows_yolov5():
    first = create_yolov5("yolov5n", 80, seed=7)
    again = create_yolov5("yolov5n", 80, seed=7)
    other = create_yolov5("yolov5n", 80, seed=8)
    for p, q in zip(first.get_parameters(), again.get_parameters()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=p.name)
    weight = first.backbone.down3.conv.weight.asnumpy()
    assert not np.array_equal(weight, other.backbone.down3.conv.weight.asnumpy())
    bound = 1.0 / math.sqrt(np.prod(weight.shape[1:]))
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.9 * bound

    for stride in (8, 16, 32):
        conv = getattr(first.head, f"detect_s{stride}")
        bound = 1.0 / math.sqrt(conv.weight.shape[1])
        prior = detection_bias_prior(80, stride)
        offset = conv.bias.asnumpy() - prior
        assert np.abs(offset).max() <= bound + 1e-6
        per_anchor = prior.reshape(3, 85)
        np.testing.assert_allclose(per_anchor[:, 4], math.log(8 / (640 / stride) ** 2), rtol=1e-6)
        np.testing.assert_allclose(per_anchor[:, 5:], math.log(0.6 / (80 - 0.99)), rtol=1e-6)
        np.testing.assert_array_equal(per_anchor[:, :4], 0)


def test_batchnorm_uses_yolov5_eps_and_momentum(yolov5n):
    norms = [cell for _, cell in yolov5n.cells_and_names() if isinstance(cell, nn.BatchNorm2d)]
    assert norms and all(abs(bn.eps - 1e-3) < 1e-12 for bn in norms)
    # behaviour, not the attribute (MindSpore stores 1 - momentum): after one training step on a
    # batch of constant 10, the moving mean is 0.03 * 10 as in PyTorch with momentum=0.03
    stem = create_yolov5("yolov5n", 1).backbone.stem.conv.bn
    stem.set_train(True)
    stem(Tensor(np.full((2, 16, 4, 4), 10.0, np.float32)))
    np.testing.assert_allclose(stem.moving_mean.asnumpy(), 0.3, rtol=1e-5)


# --- the cheaper layers equal the ones they replaced ------------------------------------------------

def value_and_input_grad(function, x, weights):
    """(value of sum(function(x) * weights), its gradient to x) in PyNative mode."""
    def weighted(inputs):
        return (function(inputs) * weights).sum()
    value, grad = ms.value_and_grad(weighted)(x)
    return float(value.asnumpy()), grad.asnumpy()


def test_upsample_equals_resize_nearest_neighbor():
    from mindspore import ops

    x = Tensor(keyed_rng(0, purpose="test_upsample").normal(size=(2, 3, 5, 7)).astype(np.float32))
    expected = ops.ResizeNearestNeighbor((10, 14))(x).asnumpy()
    got = upsample_nearest_2x(x).asnumpy()
    assert got.shape == (2, 3, 10, 14) and np.array_equal(got, expected)
    assert np.array_equal(got[:, :, 1::2, 1::2], x.asnumpy())
    weights = Tensor(keyed_rng(1, purpose="test_upsample").normal(size=(2, 3, 10, 14)).astype(np.float32))
    resize = ops.ResizeNearestNeighbor((10, 14))
    value, grad = value_and_input_grad(upsample_nearest_2x, x, weights)
    expected_value, expected_grad = value_and_input_grad(resize, x, weights)
    assert value == pytest.approx(expected_value, rel=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-6)


def test_silu_equals_the_silu_primitive():
    x = Tensor(np.concatenate([np.linspace(-30, 30, 601), [0.0, -1e-8, 88.0, -88.0]]).astype(np.float32))
    got, expected = silu(x).asnumpy(), nn.SiLU()(x).asnumpy()
    assert np.array_equal(got[:-1], expected[:-1])
    assert abs(got[-1] - expected[-1]) < 1e-35          # -88: a denormal against the primitive's -0
    weights = Tensor(np.linspace(-1, 1, x.shape[0]).astype(np.float32))
    value, grad = value_and_input_grad(silu, x, weights)
    expected_value, expected_grad = value_and_input_grad(nn.SiLU(), x, weights)
    assert value == pytest.approx(expected_value, rel=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)


def stored_silu(x):
    """SiLU differentiated as written: the backward pass keeps x and sigmoid(x) from the forward one."""
    return x * ops.sigmoid(x)


class _WeightedSumGradients(nn.Cell):
    """(sum(net(x) * weights), its gradients to x and to the net's trainable weights), compiled in graph mode."""

    def __init__(self, net, weights):
        super().__init__()
        from mindspore import ParameterTuple

        self.net = net
        self.weights = weights
        self.grad_fn = ops.value_and_grad(self.weighted_sum, 0, ParameterTuple(net.trainable_params()))

    def weighted_sum(self, x):
        return (self.net(x) * self.weights).sum()

    def construct(self, x):
        return self.grad_fn(x)


def _conv_silu_gradients(x, weights):
    """Value, input and weight gradients of sum(ConvBNSiLU(ConvBNSiLU(x)) * weights) in training mode, and the
    BatchNorm statistics after that pass; the layers' parameters drawn from the keyed RNG."""
    from yolomodel.layers import ConvBNSiLU

    net = nn.SequentialCell([ConvBNSiLU(4, 8, 3), ConvBNSiLU(8, 8, 1)])
    for index, param in enumerate(net.get_parameters()):
        values = keyed_rng(8, index, purpose="test_recomputed_silu").normal(0.5, 0.5, size=param.shape)
        param.set_data(Tensor(values.astype(np.float32)))
    step = _WeightedSumGradients(net, weights)
    step.set_train(True)
    value, (input_grad, weight_grads) = step(x)
    return ([value.asnumpy(), input_grad.asnumpy()] + [g.asnumpy() for g in weight_grads]
            + [p.asnumpy() for p in net.get_parameters() if "moving" in p.name])


@pytest.mark.slow
def test_recomputed_silu_gives_the_bits_of_stored_silu(graph_mode, monkeypatch):
    """silu's kernels are recomputed in the backward pass (the train step's memory saving): values,
    gradients and BatchNorm statistics are bitwise those of SiLU kept from the forward pass."""
    from yolomodel import layers

    assert layers._SILU_SIGMOID.attrs.get("recompute") and layers._SILU_MUL.attrs.get("recompute")
    rng = keyed_rng(4, purpose="test_recomputed_silu")
    x = Tensor(rng.normal(size=(2, 4, 12, 12)).astype(np.float32))
    weights = Tensor(rng.normal(size=(2, 8, 12, 12)).astype(np.float32))
    recomputed = _conv_silu_gradients(x, weights)
    with monkeypatch.context() as patched:
        patched.setattr(layers, "silu", stored_silu)
        stored = _conv_silu_gradients(x, weights)
    assert len(recomputed) == len(stored) == 2 + 6 + 4       # value, input gradient, 6 weights, 4 statistics
    for got, expected in zip(recomputed, stored):
        assert np.array_equal(got, expected)
    assert np.abs(recomputed[1]).max() > 0 and all(np.abs(g).max() > 0 for g in recomputed[2:8])


def test_spp_chained_pools_equal_the_three_pools():
    assert pools_chain((5, 9, 13)) and pools_chain((3, 5, 7)) and not pools_chain((5, 9, 11))
    rng = keyed_rng(2, purpose="test_spp")
    chained, direct = SPP(16, 16), SPP(16, 16)
    for a, b in zip(chained.get_parameters(), direct.get_parameters()):
        if len(a.shape) == 4:
            a.set_data(Tensor(rng.normal(size=a.shape).astype(np.float32) * 0.3))
        b.set_data(a.data.copy())
    direct.chained = False
    assert chained.chained
    x = Tensor(rng.normal(size=(2, 16, 9, 11)).astype(np.float32))   # odd sizes: the borders clip alike
    np.testing.assert_array_equal(chained(x).asnumpy(), direct(x).asnumpy())
    weights = Tensor(rng.normal(size=(2, 16, 9, 11)).astype(np.float32))
    value, grad = value_and_input_grad(chained, x, weights)
    expected_value, expected_grad = value_and_input_grad(direct, x, weights)
    assert value == pytest.approx(expected_value, rel=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-5 * np.abs(expected_grad).max())
