"""Deconvolution and the depthwise convolution types: forward values and gradients against
PyTorch CPU (conv_transpose2d, conv2d with groups), a deploy net against OpenCV's Caffe
importer, Caffe's gradient check on every backend, and error cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import layertest
from layertest import assert_close, blobs, check_gradient, make_layer, run_forward, tops
from netkit import TEST, Net
from netkit.blob import Blob
from netkit.layer import LayerSetupError
from netkit.layers import convolution

RS = np.random.RandomState(5)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))




def forward_backward(layer, backend, bottoms, top_diffs, propagate=None):
    """layertest.forward_backward, with the parameters' values before the gradients."""
    outputs, bottom_diffs, param_diffs = layertest.forward_backward(
        layer, backend, bottoms, top_diffs, propagate)
    return outputs, bottom_diffs, [backend.asnumpy(p.data) for p in layer.blobs], param_diffs


def deconv_text(num_output, extra="", bias=True):
    return ('type: "Deconvolution" convolution_param { num_output: %d %s bias_term: %s '
            'weight_filler { type: "gaussian" std: 0.3 } '
            'bias_filler { type: "gaussian" std: 1 } }'
            % (num_output, extra, "true" if bias else "false"))


def torch_deconv(x, weight, bias, dy, kwargs):
    xt, wt = t(x).requires_grad_(), t(weight).requires_grad_()
    bt = None if bias is None else t(bias).requires_grad_()
    y = F.conv_transpose2d(xt, wt, bt, **kwargs)
    y.backward(t(dy))
    grads = [wt.grad.numpy()] + ([] if bias is None else [bt.grad.numpy()])
    return y.detach().numpy(), xt.grad.numpy(), grads


def layout(layer):
    """Column layouts of the convolution a Deconvolution runs backwards: forward / gradient
    ('dw': one channel per group, no columns)."""
    conv = layer.conv
    if conv.depthwise:
        return "dw"
    forward = "cl" if conv.channels_last else "cf"
    gradient = "cl" if conv.gradient_channels_last else "cf"
    return forward if forward == gradient else forward + "/" + gradient


# (bottom shape, num_output, params, torch kwargs, inner convolution layout)
DECONV_CASES = {
    "stride_pad": ((2, 3, 5, 6), 4, "kernel_size: 3 stride: 2 pad: 1",
                   dict(stride=2, padding=1), "cl/cf"),
    "unit_stride": ((2, 3, 6, 10), 2, "kernel_size: 3", {}, "cf"),
    "groups_dilation": ((2, 4, 5, 5), 6, "kernel_size: 3 stride: 2 dilation: 2 group: 2 pad: 1",
                        dict(stride=2, padding=1, dilation=2, groups=2), "cl/cf"),
    "hw_forms": ((2, 2, 4, 5), 3, "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 "
                 "pad_w: 0", dict(stride=(2, 1), padding=(1, 0)), "cl/cf"),
    "fcn_upsample": ((2, 32, 8, 8), 20, "kernel_size: 4 stride: 2 pad: 1",
                     dict(stride=2, padding=1), "cl"),
    "per_channel": ((2, 4, 3, 3), 4, "kernel_size: 4 stride: 2 group: 4",
                    dict(stride=2, groups=4), "dw"),
}


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconvolution_matches_torch_conv_transpose2d(backend, case):
    shape, num_output, params, kwargs, expected = DECONV_CASES[case]
    x = rand(*shape)
    layer = make_layer(deconv_text(num_output, params), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    assert layout(layer) == expected
    dy = rand(*probe[0].shape)
    (y,), (dx,), (weight, bias), grads = forward_backward(layer, backend, [x], [dy])
    assert weight.shape == (shape[1], num_output // kwargs.get("groups", 1)) + weight.shape[2:]
    y_ref, dx_ref, grads_ref = torch_deconv(x, weight, bias, dy, kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.parametrize("case", ["stride_pad", "groups_dilation", "unit_stride", "per_channel"])
def test_deconvolution_gradient(backend, case):
    shape, num_output, params, _, _ = DECONV_CASES[case]
    layer = make_layer(deconv_text(num_output, params), backend)
    check_gradient(layer, blobs(backend, rand(*shape)), tops(backend, 1), max_checks=40)


@pytest.mark.parametrize("params,expected", [
    ("kernel_size: 3 stride: 2 pad: 1", "cl/cf"), ("kernel_size: 3 pad: 1", "cf")])
def test_deconvolution_without_bias_and_in_chunks(backend, monkeypatch, params, expected):
    """A column budget of under one image forces one chunk per image, so the weight gradient
    gathers its own columns instead of reusing those of the bottom gradient."""
    monkeypatch.setattr(convolution, "COLUMN_BUDGET", 10)
    x = rand(3, 4, 4, 12)
    layer = make_layer(deconv_text(3, params, bias=False), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    assert (layer.conv.chunk, layout(layer), len(layer.blobs)) == (1, expected, 1)
    dy = rand(*probe[0].shape)
    (y,), (dx,), (weight,), (dw,) = forward_backward(layer, backend, [x], [dy])
    kwargs = dict(padding=1, stride=2 if "stride" in params else 1)
    y_ref, dx_ref, grads_ref = torch_deconv(x, weight, None, dy, kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    assert_close(dw, grads_ref[0])


def test_deconvolution_parameter_gradients_without_bottom_gradient(backend):
    x, dy = rand(2, 3, 4, 4), rand(2, 5, 9, 9)
    layer = make_layer(deconv_text(5, "kernel_size: 3 stride: 2"), backend)
    (_,), (dx,), (weight, bias), grads = forward_backward(layer, backend, [x], [dy], [False])
    _, _, grads_ref = torch_deconv(x, weight, bias, dy, dict(stride=2))
    assert not dx.any()
    assert_close(grads[0], grads_ref[0])
    assert_close(grads[1], grads_ref[1])


def test_deconvolution_several_bottoms_share_weights(backend):
    x1, x2 = rand(2, 3, 4, 4), rand(2, 3, 4, 4)
    dy1, dy2 = rand(2, 4, 9, 9), rand(2, 4, 9, 9)
    layer = make_layer(deconv_text(4, "kernel_size: 3 stride: 2"), backend)
    (y1, y2), (dx1, dx2), (weight, bias), grads = forward_backward(layer, backend, [x1, x2],
                                                                   [dy1, dy2])
    r1 = torch_deconv(x1, weight, bias, dy1, dict(stride=2))
    r2 = torch_deconv(x2, weight, bias, dy2, dict(stride=2))
    assert_close(y2, r2[0])
    assert_close(dx1, r1[1])
    assert_close(dx2, r2[1])
    assert_close(grads[0], r1[2][0] + r2[2][0])
    assert_close(grads[1], r1[2][1] + r2[2][1])


def test_deconvolution_leading_axes_before_channel_axis(backend):
    x = rand(2, 3, 2, 4, 3)
    layer = make_layer(deconv_text(3, "kernel_size: 3 axis: 2 stride: 2"), backend)
    dy = rand(2, 3, 3, 9, 7)
    (y,), (dx,), (weight, bias), grads = forward_backward(layer, backend, [x], [dy])
    y_ref, dx_ref, grads_ref = torch_deconv(x.reshape(6, 2, 4, 3), weight, bias,
                                            dy.reshape(6, 3, 9, 7), dict(stride=2))
    assert_close(y, y_ref.reshape(y.shape))
    assert_close(dx, dx_ref.reshape(x.shape))
    assert_close(grads[0], grads_ref[0])


def test_deconvolution_output_size(backend):
    """stride (H - 1) + dilation (kernel - 1) + 1 - 2 pad, per axis."""
    for (size, kernel, pad, stride, dilation), expected in [
            ((4, 3, 0, 1, 1), 6), ((4, 4, 1, 2, 1), 8), ((5, 3, 1, 2, 2), 11),
            ((3, 2, 0, 2, 1), 6), ((1, 1, 0, 1, 1), 1), ((6, 16, 4, 8, 1), 48)]:
        layer = make_layer(deconv_text(2, "kernel_size: %d pad: %d stride: %d dilation: %d"
                                       % (kernel, pad, stride, dilation)), backend)
        (y,) = run_forward(layer, blobs(backend, rand(1, 1, size, size)), tops(backend, 1))
        assert y.shape == (1, 2, expected, expected)


def test_deconvolution_bilinear_upsampling(backend):
    """FCN's fixed upsampling (bilinear filler, one group per channel) doubles a linear ramp
    into a linear ramp away from the border."""
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 2 group: 2 '
                       'kernel_size: 4 stride: 2 pad: 1 bias_term: false '
                       'weight_filler { type: "bilinear" } }', backend)
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32), (1, 2, 6, 6))
    (y,) = run_forward(layer, blobs(backend, ramp), tops(backend, 1))
    assert y.shape == (1, 2, 12, 12)
    np.testing.assert_allclose(y[0, :, 1:-1, 1:-1], np.broadcast_to(
        (np.arange(1, 11) - 0.5) / 2, (2, 10, 10)), atol=1e-6)


def test_deconvolution_uses_the_weight_blob_it_holds_now(backend):
    """The Net swaps in a shared parameter blob after setup; the next pass must use it."""
    x = rand(1, 2, 3, 3)
    layer = make_layer(deconv_text(2, "kernel_size: 2", bias=False), backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    run_forward(layer, bottom, top)
    shared = Blob(layer.blobs[0].shape, backend)
    shared.data[...] = backend.asarray(rand(*shared.shape))
    layer.blobs[0] = shared
    layer.forward(bottom, top)
    y_ref, _, _ = torch_deconv(x, backend.asnumpy(shared.data), None,
                               np.zeros((1, 2, 4, 4), np.float32), {})
    assert_close(backend.asnumpy(top[0].data), y_ref)


@pytest.mark.parametrize("params,message", [
    ("num_output: 0 kernel_size: 3", "num_output must be positive"),
    ("num_output: 3 kernel_size: 3 group: 2", "group 2 must divide"),
    ("num_output: 2 kernel_size: 2 pad: 3", "leaves no output"),
    ("num_output: 2", "needs kernel_size"),
    ("num_output: 2 kernel_size: 3 stride: 0", "stride"),
])
def test_deconvolution_errors(backend, params, message):
    layer = make_layer('type: "Deconvolution" convolution_param { %s }' % params, backend)
    with pytest.raises(LayerSetupError, match=message):
        run_forward(layer, blobs(backend, rand(1, 4, 2, 2)), tops(backend, 1))


def test_deconvolution_rejects_wrong_channels_after_setup(backend):
    layer = make_layer(deconv_text(2, "kernel_size: 2"), backend)
    run_forward(layer, blobs(backend, rand(1, 3, 2, 2)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="bottom has 4 channels, the weights expect 3"):
        layer.reshape(blobs(backend, rand(1, 4, 2, 2)), tops(backend, 1))


DEPLOY = """
name: "tiny_deconv"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 5 dim: 6 } } }
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "relu" type: "ReLU" bottom: "up" top: "up" }
layer { name: "up2" type: "Deconvolution" bottom: "up" top: "up2"
        convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 stride: 1 pad_h: 1 pad_w: 0
                            bias_term: false } }
"""


def test_deconvolution_net_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the importer")
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    net = Net(str(deploy), TEST)
    for params in net.params.values():
        for blob in params:
            blob.data[...] = RS.standard_normal(blob.shape).astype(np.float32) * 0.3
    weights = str(tmp_path / "tiny.caffemodel")
    net.save(weights)
    x = rand(2, 4, 5, 6)
    ours = Net(str(deploy), TEST, weights=weights)
    ours.forward(data=x)
    theirs = cv2.dnn.readNetFromCaffe(str(deploy), weights)
    theirs.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    theirs.setInput(x)
    relu, up2 = theirs.forward(["relu", "up2"])
    assert ours.blobs["up2"].data.shape == up2.shape == (2, 3, 10, 13)
    assert_close(ours.blobs["up"].data, relu)
    assert_close(ours.blobs["up2"].data, up2)
