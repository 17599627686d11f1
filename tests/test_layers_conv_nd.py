"""Convolution, Deconvolution and Im2col over other than 2 spatial axes (Caffe's im2col_nd
path): forward values and gradients against PyTorch CPU (conv1d, conv3d, conv_transpose1d,
conv_transpose3d; 4 spatial axes through conv3d), Caffe's gradient check on every backend,
per-axis parameter errors, and a 3-d net trained through the solver."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from layertest import (assert_close, blobs, check_gradient, fails, forward_backward,
                       make_layer, run_forward, tops)
from netkit import TRAIN, Net
from netkit import netkit_pb2 as pb
from netkit.layer import LayerSetupError
from netkit.layers import convolution
from netkit.solvers import get_solver

RS = np.random.RandomState(23)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def layer_text(kind, num_output, extra="", bias=True):
    return ('type: "%s" convolution_param { num_output: %d %s bias_term: %s '
            'weight_filler { type: "gaussian" std: 0.3 } '
            'bias_filler { type: "gaussian" std: 1 } }'
            % (kind, num_output, extra, "true" if bias else "false"))


TORCH = {("Convolution", 1): F.conv1d, ("Convolution", 3): F.conv3d,
         ("Deconvolution", 1): F.conv_transpose1d, ("Deconvolution", 3): F.conv_transpose3d}


def torch_reference(function, x, weight, bias, dy, kwargs):
    """(top, bottom diff, [weight diff, bias diff]) of `function` (a torch.nn.functional
    convolution) for the top diff dy."""
    xt, wt = t(x).requires_grad_(), t(weight).requires_grad_()
    bt = None if bias is None else t(bias).requires_grad_()
    y = function(xt, wt, bt, **kwargs)
    y.backward(t(dy))
    grads = [wt.grad.numpy()] + ([] if bias is None else [bt.grad.numpy()])
    return y.detach().numpy(), xt.grad.numpy(), grads


def check_against_torch(backend, kind, shape, num_output, params, kwargs, bias=True):
    """The layer's top, bottom diff and parameter diffs match torch's; returns the layer."""
    x = rand(*shape)
    layer = make_layer(layer_text(kind, num_output, params, bias), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight = backend.asnumpy(layer.blobs[0].data)
    bias_data = backend.asnumpy(layer.blobs[1].data) if bias else None
    groups = kwargs.get("groups", 1)
    channels = (num_output, shape[1] // groups) if kind == "Convolution" \
        else (shape[1], num_output // groups)
    assert weight.shape == channels + weight.shape[2:] and weight.ndim == len(shape)
    assert len(layer.blobs) == 1 + bias
    function = TORCH[kind, len(shape) - 2]
    y_ref, dx_ref, grads_ref = torch_reference(function, x, weight, bias_data, dy, kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    assert len(grads) == len(grads_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)
    return layer


# (bottom shape, num_output, params, torch kwargs, bias_term)
CONV_CASES = {
    "3d": ((2, 3, 5, 6, 7), 4, "kernel_size: 3", {}, True),
    "3d_pad_stride": ((2, 2, 6, 7, 5), 3, "kernel_size: 3 pad: 1 stride: 2",
                      dict(padding=1, stride=2), True),
    "3d_aniso": ((1, 2, 5, 8, 6), 4, "kernel_size: 2 kernel_size: 3 kernel_size: 1 "
                 "pad: 0 pad: 1 pad: 2 stride: 1 stride: 2 stride: 3",
                 dict(padding=(0, 1, 2), stride=(1, 2, 3)), False),
    "3d_dilation_groups": ((2, 4, 7, 7, 6), 6, "kernel_size: 3 dilation: 2 dilation: 1 "
                           "dilation: 2 pad: 2 group: 2",
                           dict(dilation=(2, 1, 2), padding=2, groups=2), True),
    "3d_one_per_group": ((2, 3, 4, 5, 5), 3, "kernel_size: 2 group: 3 stride: 2 pad: 1",
                         dict(groups=3, stride=2, padding=1), True),
    "3d_tiles": ((2, 2, 5, 6, 4), 3, "kernel_size: 2 stride: 2", dict(stride=2), True),
    "3d_pointwise": ((2, 5, 3, 4, 2), 3, "kernel_size: 1", {}, True),
    "3d_wide": ((1, 20, 4, 4, 4), 8, "kernel_size: 3 pad: 1", dict(padding=1), False),
    "1d": ((3, 2, 11), 4, "kernel_size: 3", {}, True),
    "1d_all": ((2, 4, 13), 6, "kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2",
               dict(padding=2, stride=2, dilation=2, groups=2), False),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_matches_torch(backend, case):
    shape, num_output, params, kwargs, bias = CONV_CASES[case]
    layer = check_against_torch(backend, "Convolution", shape, num_output, params, kwargs, bias)
    # N-d takes Caffe's channels-first columns, never the 2-d layouts.
    assert not (layer.channels_last or layer.depthwise or layer.cuda)
    assert layer.pointwise == case.endswith("pointwise")


# (bottom shape, num_output, params, torch kwargs, bias_term)
DECONV_CASES = {
    "3d": ((2, 2, 2, 3, 3), 2, "kernel_size: 2 stride: 2", dict(stride=2), True),
    "3d_pad_stride": ((2, 3, 3, 4, 2), 4, "kernel_size: 3 pad: 1 stride: 2",
                      dict(padding=1, stride=2), True),
    "3d_aniso_groups": ((1, 4, 3, 2, 4), 6, "kernel_size: 3 kernel_size: 2 kernel_size: 1 "
                        "stride: 2 stride: 1 stride: 3 pad: 1 pad: 0 pad: 0 dilation: 1 "
                        "dilation: 2 dilation: 1 group: 2",
                        dict(stride=(2, 1, 3), padding=(1, 0, 0), dilation=(1, 2, 1),
                             groups=2), False),
    "1d": ((2, 3, 6), 2, "kernel_size: 4 stride: 2 pad: 1", dict(stride=2, padding=1), True),
    "1d_groups_dilation": ((2, 4, 5), 4, "kernel_size: 3 dilation: 2 group: 4",
                           dict(dilation=2, groups=4), False),
}


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconvolution_matches_torch(backend, case):
    shape, num_output, params, kwargs, bias = DECONV_CASES[case]
    check_against_torch(backend, "Deconvolution", shape, num_output, params, kwargs, bias)


def test_convolution_four_spatial_axes_matches_conv3d(backend):
    """4 spatial axes with a kernel of 1 on the last: conv3d of each slice along it."""
    x = rand(2, 4, 5, 4, 6, 3)
    layer = make_layer(layer_text("Convolution", 4, "kernel_size: 3 kernel_size: 2 "
                                  "kernel_size: 3 kernel_size: 1 stride: 2 stride: 1 stride: 1 "
                                  "stride: 1 pad: 1 pad: 0 pad: 2 pad: 0 dilation: 1 "
                                  "dilation: 2 dilation: 1 dilation: 1 group: 2"), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    assert probe[0].shape == (2, 4, 3, 2, 8, 3)
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    assert weight.shape == (4, 2, 3, 2, 3, 1)

    def slices(a):  # (n, c, ..., L) -> (n L, c, ...)
        return np.moveaxis(a, -1, 1).reshape((-1,) + a.shape[1:-1])

    def unslice(a, like):
        return np.moveaxis(a.reshape((like.shape[0], like.shape[-1]) + like.shape[1:-1]), 1, -1)

    y_ref, dx_ref, grads_ref = torch_reference(
        F.conv3d, slices(x), weight[..., 0], bias, slices(dy),
        dict(stride=(2, 1, 1), padding=(1, 0, 2), dilation=(1, 2, 1), groups=2))
    assert_close(y, unslice(y_ref, y))
    assert_close(dx, unslice(dx_ref, x))
    assert_close(grads[0][..., 0], grads_ref[0])
    assert_close(grads[1], grads_ref[1])


def test_convolution_leading_axes_and_chunks(backend, monkeypatch):
    """axis: 2 on a 6-axis bottom (two image axes, 3 spatial), a column budget of under one
    image (one chunk per image), and a second bottom sharing the weights."""
    monkeypatch.setattr(convolution, "COLUMN_BUDGET", 10)
    x1, x2 = rand(2, 3, 2, 4, 5, 4), rand(2, 3, 2, 4, 5, 4)
    layer = make_layer(layer_text("Convolution", 3, "kernel_size: 2 pad: 1 axis: 2"),
                       backend)
    dy1, dy2 = rand(2, 3, 3, 5, 6, 5), rand(2, 3, 3, 5, 6, 5)
    (y1, y2), (dx1, dx2), grads = forward_backward(layer, backend, [x1, x2], [dy1, dy2])
    assert layer.chunk == 1
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    refs = [torch_reference(F.conv3d, x.reshape(6, 2, 4, 5, 4), weight, bias,
                            dy.reshape(6, 3, 5, 6, 5), dict(padding=1))
            for x, dy in ((x1, dy1), (x2, dy2))]
    assert_close(y1, refs[0][0].reshape(y1.shape))
    assert_close(y2, refs[1][0].reshape(y2.shape))
    assert_close(dx1, refs[0][1].reshape(x1.shape))
    assert_close(dx2, refs[1][1].reshape(x2.shape))
    assert_close(grads[0], refs[0][2][0] + refs[1][2][0])
    assert_close(grads[1], refs[0][2][1] + refs[1][2][1])


def test_deconvolution_parameter_gradients_without_bottom_gradient(backend):
    x, dy = rand(2, 3, 2, 3, 2), rand(2, 2, 5, 7, 5)
    layer = make_layer(layer_text("Deconvolution", 2, "kernel_size: 3 stride: 2"), backend)
    _, (dx,), grads = forward_backward(layer, backend, [x], [dy], [False])
    weight, bias = (backend.asnumpy(p.data) for p in layer.blobs)
    _, _, grads_ref = torch_reference(F.conv_transpose3d, x, weight, bias, dy, dict(stride=2))
    assert not dx.any()
    assert_close(grads[0], grads_ref[0])
    assert_close(grads[1], grads_ref[1])


# -------------------------------------------------------------------------------- Im2col

def one_hot_filters(channels, kernel):
    """Weights whose convolution is im2col: output channel c * offsets + k copies input
    channel c at kernel offset k."""
    offsets = int(np.prod(kernel))
    weight = np.zeros((channels * offsets, channels, offsets), np.float32)
    for c in range(channels):
        weight[c * offsets:(c + 1) * offsets, c] = np.eye(offsets, dtype=np.float32)
    return weight.reshape((channels * offsets, channels) + tuple(kernel))


@pytest.mark.parametrize("shape,params,kernel,kwargs", [
    ((2, 3, 4, 5, 4), "kernel_size: 2", (2, 2, 2), {}),
    ((1, 2, 5, 6, 7), "kernel_size: 3 kernel_size: 2 kernel_size: 3 pad: 1 stride: 2 "
     "stride: 1 stride: 3 dilation: 1 dilation: 2 dilation: 1", (3, 2, 3),
     dict(padding=1, stride=(2, 1, 3), dilation=(1, 2, 1))),
    ((2, 2, 9), "kernel_size: 3 pad: 2 stride: 2 dilation: 2", (3,),
     dict(padding=2, stride=2, dilation=2)),
])
def test_im2col_matches_torch_one_hot_convolution(backend, shape, params, kernel, kwargs):
    x = rand(*shape)
    layer = make_layer('type: "Im2col" convolution_param { %s }' % params, backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    dy = rand(*probe[0].shape)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    function = F.conv3d if len(kernel) == 3 else F.conv1d
    y_ref, dx_ref, _ = torch_reference(function, x, one_hot_filters(shape[1], kernel), None,
                                       dy, kwargs)
    np.testing.assert_array_equal(y, y_ref)
    assert_close(dx, dx_ref)


# ------------------------------------------------------------------- Caffe's gradient check

@pytest.mark.parametrize("kind,shape,params", [
    ("Convolution", (2, 2, 4, 5, 4), "kernel_size: 3 pad: 1 stride: 2 group: 2"),
    ("Convolution", (1, 3, 5, 4, 6), "kernel_size: 2 kernel_size: 3 kernel_size: 1 "
     "dilation: 2 dilation: 1 dilation: 1 pad: 0 pad: 1 pad: 0"),
    ("Convolution", (2, 3, 9), "kernel_size: 3 dilation: 2 pad: 1 stride: 2"),
    ("Deconvolution", (2, 2, 2, 3, 3), "kernel_size: 2 stride: 2 group: 2"),
    ("Deconvolution", (1, 3, 3, 2, 3), "kernel_size: 3 pad: 1 stride: 2"),
    ("Deconvolution", (2, 2, 5), "kernel_size: 4 stride: 2 pad: 1"),
])
def test_gradient(backend, kind, shape, params):
    layer = make_layer(layer_text(kind, 4, params), backend)
    check_gradient(layer, blobs(backend, rand(*shape)), tops(backend, 1), max_checks=40)


def test_im2col_gradient(backend):
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 2 pad: 1 stride: 1 '
                       'stride: 2 stride: 1 }', backend)
    check_gradient(layer, blobs(backend, rand(1, 2, 3, 4, 3)), tops(backend, 1),
                   max_checks=40)


# ------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution", "Im2col"])
@pytest.mark.parametrize("params,shape,match", [
    ("kernel_size: 3 kernel_size: 3", (1, 2, 5, 5, 5),
     r"kernel_size must be given once or once per spatial axis \(3\), got 2 values"),
    ("kernel_size: 3 pad: 1 pad: 1", (1, 2, 5, 5, 5), r"pad must be given .* got 2 values"),
    ("kernel_size: 3 stride: 1 stride: 2 stride: 1 stride: 2", (1, 2, 5, 5, 5),
     r"stride must be given once or once per spatial axis \(3\), got 4"),
    ("kernel_size: 2 dilation: 1 dilation: 2", (1, 2, 6), r"dilation .* axis \(1\), got 2"),
    ("kernel_h: 3 kernel_w: 3", (1, 2, 5, 5, 5), "kernel_h/kernel_w are for 2 spatial axes"),
    ("kernel_size: 3 pad_h: 1 pad_w: 1", (1, 2, 5, 5, 5), "pad_h/pad_w are for 2 spatial"),
    ("kernel_size: 3 stride_h: 2 stride_w: 1", (1, 2, 5), "stride_h/stride_w are for 2"),
    ("kernel_size: 3 kernel_size: 0 kernel_size: 3", (1, 2, 5, 5, 5), "kernel_size .* positive"),
    ("kernel_size: 2", (2, 3), "needs a spatial axis after convolution_param axis 1"),
    ("kernel_size: 2 axis: -1", (2, 3, 4, 4, 4), "needs a spatial axis"),
])
def test_per_axis_errors(backend, kind, params, shape, match):
    fails(backend, 'type: "%s" convolution_param { num_output: 2 %s }' % (kind, params),
          rand(*shape), match=match)


@pytest.mark.parametrize("kind", ["Convolution", "Im2col"])
def test_kernel_exceeding_a_spatial_axis(backend, kind):
    fails(backend, 'type: "%s" convolution_param { num_output: 2 kernel_size: 3 '
          'kernel_size: 3 kernel_size: 5 }' % kind, rand(1, 1, 4, 4, 4),
          match=r"extent \(3, 3, 5\) exceeds the padded input \(4, 4, 4\)")


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution", "Im2col"])
def test_bottom_must_keep_its_axes(backend, kind):
    layer = make_layer(layer_text(kind, 2, "kernel_size: 2"), backend)
    run_forward(layer, blobs(backend, rand(1, 2, 3, 3, 3)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="bottom must keep 5 axes"):
        layer.reshape(blobs(backend, rand(1, 2, 3, 3)), tops(backend, 1))


# ------------------------------------------------------------------------------ a 3-d net

NET = """
name: "volumetric"
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 1 dim: 1 dim: 4 dim: 8 dim: 8 }
                      shape { dim: 1 dim: 1 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 stride: 2 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
        convolution_param { num_output: 1 kernel_size: 1 kernel_size: 2 kernel_size: 2
                            stride: 1 stride: 2 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "up" bottom: "target" top: "loss" }
"""


def test_3d_net_trains_with_sgd(backend, tmp_path):
    net = Net(NET, TRAIN, backend=backend)
    assert [tuple(b.shape) for b in net.params["conv"]] == [(4, 1, 3, 3, 3), (4,)]
    assert [tuple(b.shape) for b in net.params["up"]] == [(4, 1, 1, 2, 2), (1,)]
    assert net.blobs["conv"].shape == (1, 4, 4, 4, 4) and net.blobs["up"].shape == (1, 1, 4, 8, 8)
    # The weights travel through a .caffemodel with their 5-axis shapes.
    weights = str(tmp_path / "volumetric.caffemodel")
    net.save(weights)

    x = rand(1, 1, 4, 8, 8)
    target = np.tanh(x).astype(np.float32)
    param = text_format.Parse('base_lr: 0.002 lr_policy: "fixed" momentum: 0.9 '
                              'snapshot_prefix: "unused"', pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(NET, pb.NetParameter()))
    solver = get_solver(param, backend=backend, weights=weights)
    solver.net.blobs["data"].data[...] = backend.asarray(x)
    solver.net.blobs["target"].data[...] = backend.asarray(target)
    first = float(solver.net.forward()["loss"])
    reloaded = Net(NET, TRAIN, weights=weights, backend=backend)
    assert float(reloaded.forward(data=x, target=target)["loss"]) == pytest.approx(first)
    solver.net.backward()
    assert all(np.abs(backend.asnumpy(p.diff)).sum() > 0 for name in ("conv", "up")
               for p in solver.net.params[name])
    solver.step(10)
    assert float(solver.net.forward()["loss"]) < 0.6 * first
