"""Vision layers (Convolution, Pooling, InnerProduct, LRN): forward values and gradients
against PyTorch CPU, or against closed-form numpy written here from Caffe's loops where
PyTorch differs from Caffe; Caffe's gradient check on every backend; Caffe's own shape and
value cases; error cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import (assert_close, blobs, check_gradient, forward_backward, make_layer,
                       run_forward, tops)
from netkit.layer import LayerSetupError
from netkit.layers import convolution

RS = np.random.RandomState(11)
FLT_MAX = float(np.finfo(np.float32).max)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def distinct(*shape, spacing=0.1):
    """Values with no ties and gaps wider than the gradient checker's step (MAX pooling)."""
    n = int(np.prod(shape))
    return (RS.permutation(n).reshape(shape) * spacing - n * spacing / 2).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))






# ------------------------------------------------------------------------- Convolution

def conv_text(num_output, extra="", bias=True):
    return ('type: "Convolution" convolution_param { num_output: %d %s bias_term: %s '
            'weight_filler { type: "gaussian" std: 0.3 } '
            'bias_filler { type: "gaussian" std: 1 } }'
            % (num_output, extra, "true" if bias else "false"))


# (bottom shape, num_output, params, torch kwargs, expected layout: see layout())
CONV_CASES = {
    "lenet1": ((3, 1, 12, 12), 4, "kernel_size: 5", {}, "cf"),
    "lenet2": ((3, 6, 8, 8), 5, "kernel_size: 5", {}, "cl/cf"),
    "wide": ((2, 20, 8, 8), 5, "kernel_size: 5", {}, "cl"),
    "pad_stride": ((2, 3, 9, 8), 4, "kernel_size: 3 pad: 1 stride: 2",
                   dict(padding=1, stride=2), "cl/cf"),
    "hw_forms": ((2, 2, 9, 10), 3, "kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride_h: 2 "
                 "stride_w: 1", dict(padding=(2, 1), stride=(2, 1)), "cf"),
    "repeated": ((2, 2, 9, 10), 3, "kernel_size: 3 kernel_size: 2 pad: 0 pad: 1 stride: 1 "
                 "stride: 3", dict(padding=(0, 1), stride=(1, 3)), "cl/cf"),
    "dilation": ((2, 2, 11, 12), 3, "kernel_size: 3 dilation: 2 pad: 2",
                 dict(padding=2, dilation=2), "cf"),
    "wide_dilation": ((1, 16, 7, 7), 3, "kernel_size: 3 dilation: 2 pad: 1",
                      dict(padding=1, dilation=2), "cl"),
    "groups": ((2, 6, 7, 7), 4, "kernel_size: 3 group: 2 pad: 1", dict(padding=1, groups=2),
               "cf"),
    "groups_cl": ((2, 12, 4, 4), 4, "kernel_size: 3 group: 2 pad: 1", dict(padding=1, groups=2),
                  "cl/cf"),
    "wide_groups": ((1, 32, 5, 5), 4, "kernel_size: 3 group: 2 pad: 1 stride: 2",
                    dict(padding=1, groups=2, stride=2), "cl"),
    # one channel in and out per group: a multiply-add per kernel offset, no columns
    "depthwise": ((2, 4, 6, 6), 4, "kernel_size: 3 group: 4", dict(groups=4), "dw"),
    "depthwise_pad_stride": ((2, 6, 9, 8), 6, "kernel_size: 3 group: 6 pad: 1 stride: 2",
                             dict(groups=6, padding=1, stride=2), "dw"),
    "depthwise_dilation": ((1, 5, 11, 10), 5, "kernel_size: 3 group: 5 pad: 2 dilation: 2",
                           dict(groups=5, padding=2, dilation=2), "dw"),
    "depthwise_rect": ((2, 3, 8, 9), 3, "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 "
                       "pad_h: 0 pad_w: 1 group: 3", dict(groups=3, stride=(2, 1),
                                                          padding=(0, 1)), "dw"),
    # two outputs per input channel: still columns
    "depthwise_multiplier": ((2, 4, 6, 6), 8, "kernel_size: 3 group: 4", dict(groups=4), "cf"),
    "tiles_cl": ((2, 6, 8, 6), 3, "kernel_size: 2 stride: 2", dict(stride=2), "cl/cf"),
    "wide_tiles": ((1, 32, 7, 6), 4, "kernel_size: 2 stride: 2 group: 2",
                   dict(stride=2, groups=2), "cl"),
    "tiles_cf": ((2, 2, 9, 12), 4, "kernel_size: 3 stride: 3 group: 2", dict(stride=3, groups=2),
                 "cf"),
    "one_by_one": ((2, 5, 4, 3), 6, "kernel_size: 1", {}, "cf"),
    # channels-last with >= DIRECT_TOP_POSITIONS outputs per image: products per image
    "wide_output_cl": ((2, 3, 70, 70), 8, "kernel_size: 3 stride: 2", dict(stride=2), "cl/cf"),
    "wide_output_cl_groups": ((1, 34, 66, 66), 4, "kernel_size: 3 stride: 2 group: 2",
                              dict(stride=2, groups=2), "cl"),
    # weights outweigh the columns (few positions): channels-first, bias added, not folded
    "deep_small": ((2, 24, 3, 3), 16, "kernel_size: 3 pad: 1", dict(padding=1), "cf"),
    "deep_one": ((1, 24, 2, 2), 16, "kernel_size: 1", {}, "cf"),
    # 1x1, stride 1, no pad: the image is its own columns (no gather, no scatter)
    "pointwise": ((3, 8, 5, 6), 6, "kernel_size: 1", {}, "cf"),
    "pointwise_groups": ((2, 8, 4, 4), 6, "kernel_size: 1 group: 2", dict(groups=2), "cf"),
}


def layout(layer):
    """The column layouts a Convolution picked: forward / bottom gradient, 'cf' or 'cl';
    'dw' for the depthwise path, which has none."""
    if layer.depthwise:
        return "dw"
    forward = "cl" if layer.channels_last else "cf"
    gradient = "cl" if layer.gradient_channels_last else "cf"
    return forward if forward == gradient else forward + "/" + gradient


def torch_conv(x, weight, bias, dy, kwargs):
    xt, wt = t(x).requires_grad_(), t(weight).requires_grad_()
    bt = None if bias is None else t(bias).requires_grad_()
    y = F.conv2d(xt, wt, bt, **kwargs)
    y.backward(t(dy))
    grads = [wt.grad.numpy()] + ([] if bias is None else [bt.grad.numpy()])
    return y.detach().numpy(), xt.grad.numpy(), grads


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_matches_torch(backend, case):
    shape, num_output, params, kwargs, expected = CONV_CASES[case]
    x = rand(*shape)
    layer = make_layer(conv_text(num_output, params), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    assert layout(layer) == expected
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    y_ref, dx_ref, grads_ref = torch_conv(x, weight, bias, dy, kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


def test_wide_channels_last_outputs_multiply_per_image():
    """The cases above that should take the per-image product into the top do (and the
    others do not), so the torch comparison covers both channels-last forwards."""
    from netkit.backend import get_backend
    be = get_backend("cpu")
    for case, (shape, num_output, params, _, _) in CONV_CASES.items():
        layer = make_layer(conv_text(num_output, params), be)
        run_forward(layer, blobs(be, rand(*shape)), tops(be, 1))
        assert layer.direct_top == case.startswith("wide_output_cl"), case


@pytest.mark.parametrize("shape,params,expected", [
    ((3, 4, 7, 6), "kernel_size: 3 pad: 1 group: 2", "cf"),
    ((3, 4, 7, 6), "kernel_size: 3 pad: 1 stride: 2 group: 2", "cl/cf"),
    ((3, 16, 5, 4), "kernel_size: 3 pad: 1", "cl"),
])
def test_convolution_without_bias_and_in_chunks(backend, monkeypatch, shape, params, expected):
    """No bias blob; a column budget of under one image forces one chunk per image."""
    monkeypatch.setattr(convolution, "COLUMN_BUDGET", 10)
    x = rand(*shape)
    layer = make_layer(conv_text(4, params, bias=False), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    assert (layer.chunk, layout(layer), len(layer.blobs)) == (1, expected, 1)
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    kwargs = dict(padding=1, groups=2 if "group" in params else 1,
                  stride=2 if "stride" in params else 1)
    y_ref, dx_ref, grads_ref = torch_conv(x, backend.asnumpy(layer.blobs[0].data), None, dy,
                                          kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    assert_close(grads[0], grads_ref[0])


def test_convolution_output_size_rounds_down(backend):
    for (size, kernel, pad, stride, dilation), expected in [
            ((7, 3, 0, 2, 1), 3), ((8, 3, 0, 2, 1), 3), ((8, 3, 1, 2, 1), 4),
            ((10, 3, 0, 1, 3), 4), ((5, 5, 0, 1, 1), 1), ((6, 2, 0, 3, 1), 2)]:
        layer = make_layer(conv_text(2, "kernel_size: %d pad: %d stride: %d dilation: %d"
                                     % (kernel, pad, stride, dilation)), backend)
        (y,) = run_forward(layer, blobs(backend, rand(1, 1, size, size)), tops(backend, 1))
        assert y.shape == (1, 2, expected, expected)


def test_convolution_blob_shapes_and_fillers(backend):
    layer = make_layer('type: "Convolution" convolution_param { num_output: 6 kernel_h: 3 '
                       'kernel_w: 2 group: 3 weight_filler { type: "constant" value: 0.5 } '
                       'bias_filler { type: "constant" value: -2 } }', backend)
    run_forward(layer, blobs(backend, rand(1, 9, 5, 5)), tops(backend, 1))
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    assert weight.shape == (6, 3, 3, 2) and bias.shape == (6,)
    assert (weight == 0.5).all() and (bias == -2).all()


def test_convolution_several_bottoms_share_weights(backend):
    x1, x2 = rand(2, 3, 6, 6), rand(2, 3, 6, 6)
    layer = make_layer(conv_text(4, "kernel_size: 3"), backend)
    dy1, dy2 = rand(2, 4, 4, 4), rand(2, 4, 4, 4)
    (y1, y2), (dx1, dx2), grads = forward_backward(layer, backend, [x1, x2], [dy1, dy2])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    r1 = torch_conv(x1, weight, bias, dy1, {})
    r2 = torch_conv(x2, weight, bias, dy2, {})
    assert_close(y1, r1[0])
    assert_close(y2, r2[0])
    assert_close(dx2, r2[1])
    assert_close(grads[0], r1[2][0] + r2[2][0])
    assert_close(grads[1], r1[2][1] + r2[2][1])


def test_convolution_leading_axes_before_channel_axis(backend):
    """axis: 2 on a 5-axis bottom: the first two axes are both images."""
    x = rand(2, 3, 2, 6, 5)
    layer = make_layer(conv_text(3, "kernel_size: 3 axis: 2"), backend)
    dy = rand(2, 3, 3, 4, 3)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    y_ref, dx_ref, grads_ref = torch_conv(x.reshape(6, 2, 6, 5), weight, bias,
                                          dy.reshape(6, 3, 4, 3), {})
    assert_close(y, y_ref.reshape(y.shape))
    assert_close(dx, dx_ref.reshape(x.shape))
    assert_close(grads[0], grads_ref[0])


@pytest.mark.parametrize("shape", [(2, 1, 6, 6), (2, 6, 4, 4)])   # both column layouts
def test_convolution_param_diffs_accumulate(backend, shape):
    """A second backward (no forward between) adds the same gradients again."""
    layer = make_layer(conv_text(3, "kernel_size: 3"), backend)
    bottom, top = blobs(backend, rand(*shape)), tops(backend, 1)
    run_forward(layer, bottom, top)
    top[0].diff[...] = backend.asarray(rand(*top[0].shape))
    layer.backward(top, [True], bottom)
    once = [backend.asnumpy(p.diff).copy() for p in layer.blobs]
    dx = backend.asnumpy(bottom[0].diff).copy()
    layer.backward(top, [True], bottom)
    for p, g in zip(layer.blobs, once):
        assert_close(backend.asnumpy(p.diff), 2 * g)
    assert_close(backend.asnumpy(bottom[0].diff), dx)


@pytest.mark.parametrize("shape,params,expected", [
    ((2, 1, 6, 7), "kernel_size: 3 pad: 1", "cf"),
    ((2, 6, 5, 5), "kernel_size: 3 pad: 1 stride: 2", "cl/cf"),
    ((2, 4, 6, 6), "kernel_size: 2 stride: 2 group: 2", "cl/cf"),      # tiling
    ((1, 16, 4, 4), "kernel_size: 3 pad: 1", "cl"),
    ((1, 32, 3, 3), "kernel_size: 2 stride: 1 pad: 1 group: 2", "cl"),
    ((1, 4, 7, 7), "kernel_h: 3 kernel_w: 2 dilation: 2 pad_h: 1 group: 2", "cf"),
    ((2, 4, 7, 6), "kernel_size: 3 pad: 1 stride: 2 group: 4", "dw"),
    ((1, 4, 8, 8), "kernel_size: 3 dilation: 2 pad: 2 group: 4", "dw"),
])
def test_convolution_gradient(backend, shape, params, expected):
    layer = make_layer(conv_text(4, params), backend)
    bottom, top = blobs(backend, rand(*shape)), tops(backend, 1)
    check_gradient(layer, bottom, top, max_checks=60)
    assert layout(layer) == expected


@pytest.mark.parametrize("params,message", [
    ("num_output: 2", "kernel_size"),
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", "kernel_size and kernel_h"),
    ("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3", "kernel_size"),
    ("num_output: 2 kernel_size: 3 stride: 0", "stride"),
    ("num_output: 2 kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1", "pad and pad_h"),
    ("num_output: 3 kernel_size: 3 group: 2", "group"),
    ("kernel_size: 3", "num_output"),
    ("num_output: 2 kernel_size: 9", "exceeds"),
])
def test_convolution_errors(backend, params, message):
    layer = make_layer('type: "Convolution" convolution_param { %s }' % params, backend)
    with pytest.raises(LayerSetupError, match=message):
        run_forward(layer, blobs(backend, rand(1, 4, 6, 6)), tops(backend, 1))


# ----------------------------------------------------------------------------- Pooling

def caffe_pool(x, method, kernel, pad, stride, ceil_mode=True):
    """Caffe's PoolingLayer::Forward_cpu, loop for loop; returns (top, mask)."""
    (kh, kw), (ph, pw), (sh, sw) = kernel, pad, stride
    n, c, height, width = x.shape
    rnd = np.ceil if ceil_mode else np.floor
    out_h = int(rnd((height + 2 * ph - kh) / sh)) + 1
    out_w = int(rnd((width + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (out_h - 1) * sh >= height + ph:
            out_h -= 1
        if (out_w - 1) * sw >= width + pw:
            out_w -= 1
    top = np.zeros((n, c, out_h, out_w), np.float64)
    mask = -np.ones((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            hs, ws = i * sh - ph, j * sw - pw
            if method == "MAX":
                he, we = min(hs + kh, height), min(ws + kw, width)
                hs, ws = max(hs, 0), max(ws, 0)
                top[:, :, i, j] = -FLT_MAX
                for h in range(hs, he):
                    for w in range(ws, we):
                        better = x[:, :, h, w] > top[:, :, i, j]
                        top[:, :, i, j][better] = x[:, :, h, w][better]
                        mask[:, :, i, j][better] = h * width + w
            else:
                he, we = min(hs + kh, height + ph), min(ws + kw, width + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
                top[:, :, i, j] = x[:, :, hs:he, ws:we].astype(np.float64).sum(axis=(2, 3)) / size
    return top, mask


def pool_text(method, params):
    return 'type: "Pooling" pooling_param { pool: %s %s }' % (method, params)


# (bottom shape, kernel, pad, stride); torch agrees with Caffe on these.
POOL_CASES = [
    ((2, 3, 24, 24), 2, 0, 2),      # LeNet
    ((2, 2, 13, 13), 3, 0, 2),      # CaffeNet: 13x13 -> 6x6
    ((2, 2, 7, 9), 3, 1, 2),
    ((2, 2, 6, 5), 3, 1, 2),
    ((1, 2, 6, 6), 2, 1, 2),
    ((1, 2, 9, 9), 3, 1, 3),
    ((1, 2, 8, 7), 4, 2, 3),
    ((2, 3, 5, 5), 5, 0, 1),        # one window over the whole image
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,kernel,pad,stride", POOL_CASES)
def test_pooling_matches_torch(backend, method, shape, kernel, pad, stride):
    x = distinct(*shape)
    layer = make_layer(pool_text(method, "kernel_size: %d pad: %d stride: %d"
                                 % (kernel, pad, stride)), backend)
    xt = t(x).requires_grad_()
    if method == "MAX":
        ref = F.max_pool2d(xt, kernel, stride, pad, ceil_mode=True)
    else:
        ref = F.avg_pool2d(xt, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
    dy = rand(*ref.shape)
    ref.backward(t(dy))
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    assert_close(y, ref.detach().numpy(), rtol=1e-6)
    assert_close(dx, xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,kernel,pad,stride,round_mode", [
    ((1, 2, 3, 3), (3, 3), (2, 2), (2, 2), "CEIL"),   # pad above kernel / 2: torch refuses
    ((2, 2, 7, 6), (4, 3), (3, 2), (2, 3), "CEIL"),
    ((2, 2, 7, 8), (3, 3), (1, 1), (2, 2), "FLOOR"),
    ((2, 2, 9, 6), (2, 3), (0, 0), (3, 2), "FLOOR"),
])
def test_pooling_matches_caffe_loops(backend, method, shape, kernel, pad, stride, round_mode):
    x = distinct(*shape)
    params = ("kernel_h: %d kernel_w: %d pad_h: %d pad_w: %d stride_h: %d stride_w: %d "
              "round_mode: %s" % (kernel + pad + stride + (round_mode,)))
    layer = make_layer(pool_text(method, params), backend)
    y = run_forward(layer, blobs(backend, x), tops(backend, 1))[0]
    ref, _ = caffe_pool(x, method, kernel, pad, stride, round_mode == "CEIL")
    assert_close(y, ref, rtol=1e-6)
    check_gradient(layer, blobs(backend, x), tops(backend, 1), stepsize=1e-2, threshold=1e-2,
                   max_checks=40, setup=False)


@pytest.mark.parametrize("shape,kernel,pad,stride", [
    ((2, 3, 11, 11), 3, 0, 2), ((2, 3, 8, 9), 3, 1, 1), ((1, 2, 9, 7), 4, 1, 2)])
def test_max_pooling_backward_adds_in_caffes_order(backend, shape, kernel, pad, stride):
    """Where windows overlap, a cell's diffs are float32 sums in top order, as Caffe's
    Backward_cpu adds them (bottom_diff[mask] += top_diff for each top index): same bits."""
    x = distinct(*shape)
    layer = make_layer(pool_text("MAX", "kernel_size: %d pad: %d stride: %d"
                                 % (kernel, pad, stride)), backend)
    _, mask = caffe_pool(x, "MAX", (kernel,) * 2, (pad,) * 2, (stride,) * 2)
    dy = (rand(*mask.shape) * 1000).astype(np.float32)
    expect = np.zeros(shape, np.float32)
    flat = expect.reshape(shape[0], shape[1], -1)
    for n, c, i, j in np.ndindex(*mask.shape):
        flat[n, c, int(mask[n, c, i, j])] += dy[n, c, i, j]
    (_,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    np.testing.assert_array_equal(dx, expect)


def test_pooling_caffe_shapes(backend):
    for shape, params, expected in [
            ((2, 3, 6, 5), "kernel_size: 3 stride: 2", (3, 2)),           # TestSetup
            ((2, 3, 6, 5), "kernel_size: 3 stride: 2 pad: 1", (4, 3)),    # TestSetupPadded
            ((2, 3, 6, 5), "global_pooling: true", (1, 1)),               # TestSetupGlobal
            ((1, 1, 13, 13), "kernel_size: 3 stride: 2", (6, 6)),
            ((1, 1, 55, 55), "kernel_size: 3 stride: 2", (27, 27)),
            ((1, 1, 112, 112), "kernel_size: 3 stride: 2", (56, 56)),     # ceil rounds up
            ((1, 1, 112, 112), "kernel_size: 3 stride: 2 round_mode: FLOOR", (55, 55)),
            ((1, 1, 3, 3), "kernel_size: 3 stride: 2 pad: 2", (3, 3)),
            ((1, 1, 4, 4), "kernel_size: 2 stride: 2 pad: 1", (3, 3)),    # last start dropped
    ]:
        layer = make_layer(pool_text("MAX", params), backend)
        (y,) = run_forward(layer, blobs(backend, rand(*shape)), tops(backend, 1))
        assert y.shape == shape[:2] + expected, params


def test_pooling_caffe_values(backend):
    # Caffe's TestForwardSquare: 2x2 MAX, stride 1, on 3x5, with the mask as a second top.
    image = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], np.float32)
    layer = make_layer(pool_text("MAX", "kernel_size: 2"), backend)
    y, mask = run_forward(layer, blobs(backend, np.tile(image, (2, 2, 1, 1))), tops(backend, 2))
    np.testing.assert_array_equal(y[1, 1], [[9, 5, 5, 8], [9, 5, 5, 8]])
    np.testing.assert_array_equal(mask[0, 1], [[5, 2, 2, 9], [5, 12, 12, 9]])
    # TestForwardMaxPadded: kernel 3, stride 2, pad 2.
    layer = make_layer(pool_text("MAX", "kernel_size: 3 stride: 2 pad: 2"), backend)
    image = np.array([[1, 2, 4], [2, 3, 2], [4, 2, 1]], np.float32).reshape(1, 1, 3, 3)
    (y,) = run_forward(layer, blobs(backend, image), tops(backend, 1))
    np.testing.assert_array_equal(y[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])
    # TestForwardAve: 3x3, stride 1, pad 1 on a constant 2: borders divide by 9.
    layer = make_layer(pool_text("AVE", "kernel_size: 3 stride: 1 pad: 1"), backend)
    (y,) = run_forward(layer, blobs(backend, np.full((1, 1, 3, 3), 2, np.float32)),
                       tops(backend, 1))
    np.testing.assert_allclose(y[0, 0], [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3],
                                         [8 / 9, 4 / 3, 8 / 9]], rtol=1e-6)


@pytest.mark.parametrize("shape,params", [
    ((2, 3, 8, 8), "kernel_size: 2 stride: 2"),
    ((2, 3, 7, 7), "kernel_size: 3 stride: 2 pad: 1"),
    ((2, 3, 9, 8), "kernel_size: 3 stride: 2"),
    ((2, 3, 5, 4), "global_pooling: true"),
])
def test_pooling_mask_top(backend, shape, params):
    x = distinct(*shape)
    layer = make_layer(pool_text("MAX", params), backend)
    y, mask = run_forward(layer, blobs(backend, x), tops(backend, 2))
    kernel = (shape[2], shape[3]) if "global" in params else (layer.kernel[0],) * 2
    ref, ref_mask = caffe_pool(x, "MAX", kernel, layer.pad, layer.stride)
    assert_close(y, ref, rtol=0)
    np.testing.assert_array_equal(mask, ref_mask)
    check_gradient(layer, blobs(backend, x), tops(backend, 2), max_checks=40, setup=False)


def test_pooling_ties_go_to_the_first_maximum(backend):
    x = np.zeros((1, 1, 4, 4), np.float32)
    layer = make_layer(pool_text("MAX", "kernel_size: 2 stride: 2"), backend)
    (_, mask), (dx,), _ = forward_backward(layer, backend, [x], [np.ones((1, 1, 2, 2)),
                                                              np.zeros((1, 1, 2, 2))])
    np.testing.assert_array_equal(mask[0, 0], [[0, 2], [8, 10]])
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]] * 2)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,params", [
    ((2, 2, 6, 6), "kernel_size: 2 stride: 2"),
    ((2, 2, 7, 6), "kernel_h: 3 kernel_w: 4 stride: 2 pad: 1"),
    ((1, 2, 6, 5), "kernel_size: 3 stride: 1 pad: 2"),
    ((2, 2, 4, 5), "global_pooling: true"),
])
def test_pooling_gradient(backend, method, shape, params):
    layer = make_layer(pool_text(method, params), backend)
    check_gradient(layer, blobs(backend, distinct(*shape)), tops(backend, 1), stepsize=1e-2,
                   threshold=1e-2, max_checks=60)


@pytest.mark.parametrize("params,message,n_top", [
    ("pool: MAX stride: 2", "kernel_size", 1),
    ("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel_size and kernel_h", 1),
    ("pool: MAX kernel_h: 2", "kernel_size", 1),
    ("pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "pad and pad_h", 1),
    ("pool: MAX kernel_size: 2 stride_h: 2", "stride_h and stride_w", 1),
    ("pool: MAX kernel_size: 2 pad: 2", "pad", 1),
    ("pool: MAX global_pooling: true kernel_size: 2", "global_pooling", 1),
    ("pool: MAX global_pooling: true stride: 2", "global_pooling", 1),
    ("pool: STOCHASTIC kernel_size: 2", "second top", 2),
    ("pool: AVE kernel_size: 2", "second top", 2),
])
def test_pooling_errors(backend, params, message, n_top):
    layer = make_layer('type: "Pooling" pooling_param { %s }' % params, backend)
    with pytest.raises(LayerSetupError, match=message):
        run_forward(layer, blobs(backend, rand(1, 1, 6, 6)), tops(backend, n_top))


def test_pooling_needs_four_axes(backend):
    layer = make_layer(pool_text("MAX", "kernel_size: 2"), backend)
    with pytest.raises(LayerSetupError, match="4 axes"):
        run_forward(layer, blobs(backend, rand(2, 6, 6)), tops(backend, 1))


# ------------------------------------------------------------------------ InnerProduct

def ip_text(num_output, extra=""):
    return ('type: "InnerProduct" inner_product_param { num_output: %d %s '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 1 } }'
            % (num_output, extra))


@pytest.mark.parametrize("shape,extra,rows", [
    ((4, 3, 2, 2), "", 4),
    ((2, 3, 5), "axis: 2", 6),
    ((2, 3, 5), "axis: -1 transpose: true", 6),
    ((5, 7), "transpose: true", 5),
])
def test_inner_product_matches_torch(backend, shape, extra, rows):
    x = rand(*shape)
    layer = make_layer(ip_text(4, extra), backend)
    axis = len(shape) - 1 if "axis" in extra else 1
    dy = rand(*(shape[:axis] + (4,)))
    (y,), (dx,), (dw, db) = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    assert weight.shape == ((x[0].size if axis == 1 else shape[-1], 4) if "transpose" in extra
                            else (4, x[0].size if axis == 1 else shape[-1]))
    w_nk = weight.T if "transpose" in extra else weight
    xt, wt, bt = t(x.reshape(rows, -1)).requires_grad_(), t(w_nk).requires_grad_(), \
        t(bias).requires_grad_()
    ref = F.linear(xt, wt, bt)
    ref.backward(t(dy.reshape(rows, 4)))
    assert_close(y, ref.detach().numpy().reshape(y.shape))
    assert_close(dx, xt.grad.numpy().reshape(shape))
    assert_close(dw, wt.grad.numpy().T if "transpose" in extra else wt.grad.numpy())
    assert_close(db, bt.grad.numpy())


@pytest.mark.parametrize("extra", ["", "transpose: true", "bias_term: false"])
def test_inner_product_gradient(backend, extra):
    layer = make_layer(ip_text(3, extra), backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 2, 2)), tops(backend, 1), max_checks=40)


def test_inner_product_param_diffs_accumulate(backend):
    layer = make_layer(ip_text(3), backend)
    bottom, top = blobs(backend, rand(2, 5)), tops(backend, 1)
    run_forward(layer, bottom, top)
    top[0].diff[...] = backend.asarray(rand(2, 3))
    layer.backward(top, [True], bottom)
    once = [backend.asnumpy(p.diff).copy() for p in layer.blobs]
    layer.backward(top, [True], bottom)
    for p, g in zip(layer.blobs, once):
        assert_close(backend.asnumpy(p.diff), 2 * g)


def test_inner_product_errors(backend):
    layer = make_layer('type: "InnerProduct" inner_product_param { }', backend)
    with pytest.raises(LayerSetupError, match="num_output"):
        run_forward(layer, blobs(backend, rand(2, 3)), tops(backend, 1))
    layer = make_layer(ip_text(2), backend)
    bottom, top = blobs(backend, rand(2, 3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="inputs per row"):
        layer.reshape(blobs(backend, rand(2, 4)), top)


# --------------------------------------------------------------------------------- LRN

def caffe_lrn_within(x, size, alpha, beta):
    """Caffe's WITHIN_CHANNEL composition: square, AVE pool (pad (n-1)/2), power, product."""
    half = (size - 1) // 2
    pooled, _ = caffe_pool(x.astype(np.float64) ** 2, "AVE", (size, size), (half, half), (1, 1))
    return x * (1.0 + alpha * pooled) ** -beta


def test_lrn_across_channels_matches_torch(backend):
    x = rand(2, 7, 4, 5) * 2
    layer = make_layer('type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }',
                       backend)
    dy = rand(*x.shape)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    xt = t(x).requires_grad_()
    ref = F.local_response_norm(xt, 5, alpha=0.5, beta=0.75, k=2)
    ref.backward(t(dy))
    assert_close(y, ref.detach().numpy())
    assert_close(dx, xt.grad.numpy())


def test_lrn_within_channel_matches_caffe_composition(backend):
    x = rand(2, 3, 6, 5) * 2
    layer = make_layer('type: "LRN" lrn_param { local_size: 3 alpha: 0.7 beta: 0.6 k: 5 '
                       'norm_region: WITHIN_CHANNEL }', backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert_close(y, caffe_lrn_within(x, 3, 0.7, 0.6))


@pytest.mark.parametrize("region,size", [("ACROSS_CHANNELS", 3), ("ACROSS_CHANNELS", 5),
                                         ("WITHIN_CHANNEL", 3)])
def test_lrn_gradient(backend, region, size):
    layer = make_layer('type: "LRN" lrn_param { local_size: %d alpha: 0.8 beta: 0.75 k: 1.5 '
                       'norm_region: %s }' % (size, region), backend)
    check_gradient(layer, blobs(backend, rand(2, 6, 4, 3)), tops(backend, 1), stepsize=1e-2,
                   threshold=1e-2, max_checks=60)


# ------------------------------------------------------------- OpenCV's Caffe importer

OPENCV_CASES = [
    ('type: "LRN" lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 }', (2, 7, 5, 6)),
    # Caffe's WITHIN_CHANNEL composition uses shift 1: k must have no effect.
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.7 beta: 0.6 k: 5 '
     'norm_region: WITHIN_CHANNEL }', (2, 3, 6, 5)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 3, 6, 5)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }', (2, 3, 8, 8)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 }', (1, 2, 3, 3)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_h: 4 kernel_w: 3 stride_h: 2 '
     'stride_w: 3 pad_h: 3 pad_w: 2 }', (2, 2, 7, 6)),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', (2, 3, 7, 9)),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', (2, 3, 5, 4)),
]


@pytest.mark.parametrize("text,shape", OPENCV_CASES)
def test_matches_opencv_caffe_importer(backend, tmp_path, text, shape):
    """OpenCV's dnn module reimplements Caffe's layers; a weightless net runs from text."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 has the Caffe importer")
    x = rand(*shape)
    (y,) = run_forward(make_layer(text, backend), blobs(backend, x), tops(backend, 1))
    path = tmp_path / "net.prototxt"
    path.write_text('input: "data" input_shape { dim: %d dim: %d dim: %d dim: %d }\n'
                    'layer { name: "l" bottom: "data" top: "out" %s }\n' % (shape + (text,)))
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    assert_close(y, net.forward())


def test_lrn_errors(backend):
    layer = make_layer('type: "LRN" lrn_param { local_size: 4 }', backend)
    with pytest.raises(LayerSetupError, match="local_size"):
        run_forward(layer, blobs(backend, rand(1, 5, 3, 3)), tops(backend, 1))
    layer = make_layer('type: "LRN"', backend)
    with pytest.raises(LayerSetupError, match="4 axes"):
        run_forward(layer, blobs(backend, rand(5, 3, 3)), tops(backend, 1))
