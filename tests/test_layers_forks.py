"""Inference layers of the popular Caffe forks: Interp (PSPNet / DeepLab-v2), Upsample
(SegNet's max-unpooling and the YOLOv3 ports' nearest neighbour), ShuffleChannel
(ShuffleNet), ReLU6 (MobileNet-v2 ports), Axpy (SENet), PSROIPooling (R-FCN) and Reorg
(YOLOv2 ports).

Forward values against PyTorch CPU, closed-form numpy and plain-loop transcriptions of each
fork's arithmetic written here; OpenCV's Caffe importer (an implementation we did not
write) on small whole nets with netkit-saved weights, where it supports the layer; Caffe's
gradient check on every backend; the forks' schema fields; error cases naming the field;
and SegNet- and PSPNet-style nets built from prototxt text, forward and backward through
netkit.Net against PyTorch autograd."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from layertest import (assert_close, blobs, check_gradient, fails, forward_backward,
                       make_layer, run_forward, tops)
from netkit import TEST, Net
from netkit import netkit_pb2 as pb
from netkit.layer import LayerSetupError

torch = pytest.importorskip("torch")
F = torch.nn.functional

RS = np.random.RandomState(23)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def t(array):
    return torch.from_numpy(np.array(array, np.float32))


# ------------------------------------------------------------------------------ schema

def test_fork_field_numbers_and_defaults():
    fields = pb.LayerParameter.DESCRIPTOR.fields_by_name
    numbers = {"interp_param": 1143, "upsample_param": 149, "shuffle_channel_param": 164,
               "relu6_param": 211, "psroi_pooling_param": 10002, "reorg_param": 159}
    assert {name: fields[name].number for name in numbers} == numbers
    assert fields["relu6_param"].message_type is pb.ReLUParameter.DESCRIPTOR
    ip = pb.InterpParameter()
    assert (ip.height, ip.width, ip.zoom_factor, ip.shrink_factor, ip.pad_beg,
            ip.pad_end) == (0, 0, 1, 1, 0, 0)
    up = pb.UpsampleParameter()
    assert (up.scale, up.scale_h, up.scale_w, up.pad_out_h, up.pad_out_w, up.upsample_h,
            up.upsample_w) == (2, 0, 0, False, False, 0, 0)
    assert pb.ShuffleChannelParameter().group == 1
    assert (pb.ReorgParameter().stride, pb.ReorgParameter().reverse) == (0, False)
    psroi = pb.PSROIPoolingParameter.DESCRIPTOR.fields_by_name
    assert [psroi[f].number for f in ("spatial_scale", "output_dim", "group_size")] == [1, 2, 3]
    assert all(psroi[f].is_required for f in psroi)


def test_parse_fork_layers():
    net = text_format.Parse("""
        layer { name: "interp" type: "Interp" bottom: "conv5_4" top: "interp"
                interp_param { zoom_factor: 8 pad_beg: 0 pad_end: 0 } }
        layer { name: "up" type: "Upsample" bottom: "conv5" bottom: "pool5_mask" top: "up"
                upsample_param { scale: 2 upsample_w: 30 upsample_h: 23 } }
        layer { name: "up2" type: "Upsample" bottom: "conv" top: "up2"
                upsample_param { scale: 2 } }
        layer { name: "shuffle2" type: "ShuffleChannel" bottom: "c" top: "s"
                shuffle_channel_param { group: 3 } }
        layer { name: "relu6" type: "ReLU6" bottom: "c" top: "c" }
        layer { name: "relu6b" type: "ReLU6" bottom: "c" top: "c"
                relu6_param { negative_slope: 0.1 } }
        layer { name: "axpy" type: "Axpy" bottom: "s" bottom: "x" bottom: "y" top: "z" }
        layer { name: "psroi" type: "PSROIPooling" bottom: "rfcn_cls" bottom: "rois"
                top: "psroipooled_cls_rois"
                psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 } }
        layer { name: "reorg" type: "Reorg" bottom: "conv20" top: "reorg"
                reorg_param { stride: 2 } }
        """, pb.NetParameter())
    layer = {l.name: l for l in net.layer}
    assert layer["interp"].interp_param.zoom_factor == 8
    assert not layer["interp"].interp_param.HasField("shrink_factor")
    up = layer["up"].upsample_param
    assert (up.upsample_h, up.upsample_w, up.scale) == (23, 30, 2)
    assert layer["shuffle2"].shuffle_channel_param.group == 3
    assert layer["relu6b"].relu6_param.negative_slope == pytest.approx(0.1)
    ps = layer["psroi"].psroi_pooling_param
    assert (ps.spatial_scale, ps.output_dim, ps.group_size) == (0.0625, 21, 7)
    assert layer["reorg"].reorg_param.stride == 2


# ------------------------------------------------------------------------------ Interp

def fork_interp(x, pad_beg, pad_end, out_h, out_w):
    """A plain-loop transcription of the fork's bilinear interpolation: crop by the pads,
    then per output pixel the float32 ratio, source position and weights."""
    height = x.shape[2] + pad_beg + pad_end
    width = x.shape[3] + pad_beg + pad_end
    src = x[:, :, -pad_beg:-pad_beg + height, -pad_beg:-pad_beg + width]
    f32 = np.float32
    rh = f32(height - 1) / f32(out_h - 1) if out_h > 1 else f32(0)
    rw = f32(width - 1) / f32(out_w - 1) if out_w > 1 else f32(0)
    out = np.zeros(x.shape[:2] + (out_h, out_w), np.float32)
    for i in range(out_h):
        hr = rh * f32(i)
        h = int(hr)
        hp = 1 if h < height - 1 else 0
        hl = hr - f32(h)
        for j in range(out_w):
            wr = rw * f32(j)
            w = int(wr)
            wp = 1 if w < width - 1 else 0
            wl = wr - f32(w)
            out[:, :, i, j] = ((f32(1) - hl) * ((f32(1) - wl) * src[:, :, h, w]
                                                + wl * src[:, :, h, w + wp])
                               + hl * ((f32(1) - wl) * src[:, :, h + hp, w]
                                       + wl * src[:, :, h + hp, w + wp]))
    return out


@pytest.mark.parametrize("params,shape,size", [
    ("zoom_factor: 2", (2, 3, 5, 7), (9, 13)),
    ("zoom_factor: 8", (1, 2, 3, 4), (17, 25)),
    ("shrink_factor: 2", (1, 2, 9, 8), (5, 4)),                # (in - 1) / 2 + 1, rounded down
    ("shrink_factor: 3 zoom_factor: 2", (1, 2, 10, 7), (7, 5)),  # shrink, then zoom
    ("height: 6 width: 11", (2, 2, 4, 5), (6, 11)),
    ("height: 3 width: 2", (1, 2, 7, 9), (3, 2)),               # downsampling
    ("height: 1 width: 1", (1, 2, 4, 5), (1, 1)),               # the top-left pixel
    ("height: 5 width: 5 zoom_factor: 2", (1, 1, 3, 4), (5, 7)),  # zoom wins over height
    ("zoom_factor: 2 pad_beg: -1 pad_end: -2", (1, 2, 7, 8), (7, 9)),
    ("height: 6 width: 6 pad_end: -1", (1, 2, 4, 5), (6, 6)),
    ("height: 4 width: 5", (1, 2, 4, 5), (4, 5)),               # same size: a copy
])
def test_interp_matches_fork_loops_and_torch(backend, params, shape, size):
    x = rand(*shape)
    layer = make_layer('type: "Interp" interp_param { %s }' % params, backend)
    out, = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert out.shape == shape[:2] + size
    p = layer.layer_param.interp_param
    assert_close(out, fork_interp(x, p.pad_beg, p.pad_end, *size), rtol=1e-6)
    crop = x[:, :, -p.pad_beg:shape[2] + p.pad_end, -p.pad_beg:shape[3] + p.pad_end]
    ref = F.interpolate(t(crop), size=size, mode="bilinear", align_corners=True)
    assert_close(out, ref.numpy(), rtol=1e-6)


def test_interp_second_bottom_gives_the_size(backend):
    x, like, dtop = rand(2, 3, 4, 6), rand(2, 5, 7, 3), rand(2, 3, 7, 3)
    layer = make_layer('type: "Interp" interp_param { pad_beg: -1 }', backend)
    (out,), (grad, like_grad), _ = forward_backward(layer, backend, [x, like], [dtop],
                                                    propagate=[True, True])
    assert out.shape == (2, 3, 7, 3)
    assert_close(out, fork_interp(x, -1, 0, 7, 3), rtol=1e-6)
    assert not like_grad.any()
    assert not grad[:, :, 0].any() and not grad[:, :, :, 0].any()  # the cropped border
    assert grad[:, :, 1:, 1:].any()


def test_interp_backward_is_the_adjoint_of_torch(backend):
    x, dtop = rand(2, 2, 6, 5), rand(2, 2, 3, 9)
    layer = make_layer('type: "Interp" interp_param { height: 3 width: 9 pad_beg: -1 '
                       'pad_end: -1 }', backend)
    _, (grad,), _ = forward_backward(layer, backend, [x], [dtop])
    xt = t(x).requires_grad_()
    F.interpolate(xt[:, :, 1:-1, 1:-1], size=(3, 9), mode="bilinear",
                  align_corners=True).backward(t(dtop))
    assert_close(grad, xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("params,two", [
    ("zoom_factor: 2", False),
    ("shrink_factor: 2 zoom_factor: 3 pad_beg: -1 pad_end: -1", False),
    ("height: 4 width: 3", False),
    ("", True),
])
def test_interp_gradient(backend, params, two):
    x = [rand(2, 2, 5, 6)] + ([rand(2, 1, 7, 4)] if two else [])
    layer = make_layer('type: "Interp" interp_param { %s }' % params, backend)
    check_gradient(layer, blobs(backend, *x), tops(backend, 1), check_bottom=[0],
                   max_checks=60)


@pytest.mark.parametrize("params,shapes,match", [
    ("zoom_factor: 2 pad_beg: 1", [(1, 1, 4, 4)], "interp_param.pad_beg must be <= 0"),
    ("zoom_factor: 2 pad_end: 2", [(1, 1, 4, 4)], "interp_param.pad_end must be <= 0"),
    ("", [(1, 1, 4, 4)], "Interp needs interp_param zoom_factor"),
    ("height: 5", [(1, 1, 4, 4)], "Interp needs interp_param zoom_factor"),
    ("zoom_factor: 0", [(1, 1, 4, 4)], "interp_param.zoom_factor must be >= 1"),
    ("shrink_factor: 0", [(1, 1, 4, 4)], "interp_param.shrink_factor must be >= 1"),
    ("height: 0 width: 3", [(1, 1, 4, 4)], "output size must be positive"),
    ("zoom_factor: 2 pad_beg: -2 pad_end: -2", [(1, 1, 4, 6)], "crop all of a 4 x 6"),
    ("zoom_factor: 2", [(1, 1, 4, 4), (1, 1, 8, 8)], r"from bottom\[1\] or from "
                                                      r"interp_param, not both \(zoom_factor"),
    ("", [(2, 1, 4, 4), (1, 1, 8, 8)], r"bottom\[1\] must be 4-D with bottom\[0\]'s num 2"),
    ("zoom_factor: 2", [(1, 4, 4)], r"bottom\[0\] must be 4-D"),
])
def test_interp_errors(backend, params, shapes, match):
    fails(backend, 'type: "Interp" interp_param { %s }' % params,
          *[rand(*s) for s in shapes], match=match)


# ---------------------------------------------------------------------------- Upsample

def pool_with_mask(backend, x, kernel=2, stride=2):
    """netkit's MAX Pooling with Caffe's mask top: (pooled, mask) host arrays."""
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: %d stride: %d }'
                       % (kernel, stride), backend)
    return run_forward(layer, blobs(backend, x), tops(backend, 2))


@pytest.mark.parametrize("shape,params,size", [
    ((2, 3, 8, 6), "scale: 2", (8, 6)),
    ((1, 2, 7, 5), "scale: 2 pad_out_h: true pad_out_w: true", (7, 5)),  # ceil-mode pools
    ((1, 2, 7, 6), "scale_h: 2 scale_w: 2 pad_out_h: true", (7, 6)),
    ((2, 2, 9, 7), "upsample_h: 9 upsample_w: 7", (9, 7)),
])
def test_upsample_unpools_like_torch(backend, shape, params, size):
    x = rand(*shape)
    pooled, mask = pool_with_mask(backend, x)
    ref_pooled, index = F.max_pool2d(t(x), 2, 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(pooled, ref_pooled.numpy())
    np.testing.assert_array_equal(mask, index.numpy())
    values, dtop = rand(*pooled.shape), rand(*shape[:2] + size)
    layer = make_layer('type: "Upsample" upsample_param { %s }' % params, backend)
    (out,), (grad, mask_grad), _ = forward_backward(layer, backend, [values, mask], [dtop])
    vt = t(values).requires_grad_()
    ref = F.max_unpool2d(vt, index, 2, 2, output_size=size)
    ref.backward(t(dtop))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(grad, vt.grad.numpy())
    assert not mask_grad.any()


def test_upsample_mask_position_named_twice_keeps_the_later_value():
    # caffe-segnet's CPU loop writes in order; on a GPU either value may win.
    from netkit.backend import get_backend
    backend = get_backend("cpu")
    values = np.array([[[[1, 2], [3, 4]]]], np.float32)
    mask = np.array([[[[0, 5], [5, 15]]]], np.float32)
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', backend)
    (out,), (grad, _), _ = forward_backward(layer, backend, [values, mask],
                                            [np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)])
    assert out.reshape(-1).tolist() == [1, 0, 0, 0, 0, 3] + [0] * 9 + [4]
    assert grad.reshape(-1).tolist() == [0, 5, 5, 15]  # each reads its position's diff


@pytest.mark.parametrize("params,scales", [
    ("scale: 2", (2, 2)),
    ("scale: 3", (3, 3)),
    ("scale_h: 2 scale_w: 3", (2, 3)),
    ("scale: 1", (1, 1)),
    ("", (2, 2)),
])
def test_upsample_nearest_matches_torch(backend, params, scales):
    x, dtop = rand(2, 3, 4, 5), rand(2, 3, 4 * scales[0], 5 * scales[1])
    layer = make_layer('type: "Upsample" upsample_param { %s }' % params, backend)
    (out,), (grad,), _ = forward_backward(layer, backend, [x], [dtop])
    xt = t(x).requires_grad_()
    ref = F.interpolate(xt, scale_factor=scales, mode="nearest")
    ref.backward(t(dtop))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    assert_close(grad, xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "unpool"])
def test_upsample_gradient(backend, mode):
    x = rand(2, 3, 6, 4)
    bottom = [x]
    if mode == "unpool":
        _, mask = pool_with_mask(backend, rand(2, 3, 12, 8))
        bottom = [rand(2, 3, 6, 4), mask]
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', backend)
    check_gradient(layer, blobs(backend, *bottom), tops(backend, 1), check_bottom=[0],
                   max_checks=60)


@pytest.mark.parametrize("params,shapes,match", [
    ("scale: 2 scale_h: 2 scale_w: 2", 2, "upsample_h and upsample_w, or scale, or scale_h"),
    ("scale_h: 2", 2, "upsample_h and upsample_w, or scale, or scale_h"),
    ("scale: 1", 2, "upsample_param scale must be >= 2, got 1 x 1"),
    ("scale: 0", 1, "upsample_param scale must be >= 1, got 0 x 0"),
    ("upsample_h: 1 upsample_w: 4", 2, "upsample_h and upsample_w must be > 1"),
    ("upsample_h: 4 upsample_w: 4", 1, "upsample_h/upsample_w need the SegNet form"),
    ("scale: 2 pad_out_w: true", 1, "pad_out_h/pad_out_w need the SegNet form"),
    ("scale: 3 pad_out_h: true", 2, "pad_out_h needs scale_h 2, got 3"),
    ("scale_h: 2 scale_w: 4 pad_out_w: true", 2, "pad_out_w needs scale_w 2, got 4"),
])
def test_upsample_param_errors(backend, params, shapes, match):
    x = rand(1, 1, 2, 2)
    fails(backend, 'type: "Upsample" upsample_param { %s }' % params,
          *([x, np.zeros_like(x)][:shapes]), match=match)


def test_upsample_bottom_errors(backend):
    x = rand(1, 2, 2, 2)
    text = 'type: "Upsample" upsample_param { scale: 2 }'
    fails(backend, text, x, np.zeros((1, 2, 2, 3), np.float32),
          match=r"bottom\[1\] \(the pooling mask\) must have bottom\[0\]'s shape")
    fails(backend, text, x, np.full_like(x, 16), match="index outside the 4 x 4 output plane")
    fails(backend, text, x, np.full_like(x, -1), match="index outside the 4 x 4 output plane")
    fails(backend, text, rand(2, 3, 4), match=r"bottom\[0\] must be 4-D")


# ---------------------------------------------------------------------- ShuffleChannel

@pytest.mark.parametrize("shape,group", [((2, 6, 3, 4), 3), ((2, 6, 3, 4), 2),
                                         ((1, 12, 2, 2), 4), ((3, 4, 5), 2), ((2, 5), 1)])
def test_shuffle_channel_matches_torch(backend, shape, group):
    x, dtop = rand(*shape), rand(*shape)
    layer = make_layer('type: "ShuffleChannel" shuffle_channel_param { group: %d }' % group,
                       backend)
    (out,), (grad,), _ = forward_backward(layer, backend, [x], [dtop])
    if len(shape) > 2:
        np.testing.assert_array_equal(out, F.channel_shuffle(t(x), group).numpy())
    # Closed form: output channel j * group + i is input channel i * (C / group) + j.
    per = shape[1] // group
    for i in range(group):
        for j in range(per):
            np.testing.assert_array_equal(out[:, j * group + i], x[:, i * per + j])
            np.testing.assert_array_equal(grad[:, i * per + j], dtop[:, j * group + i])


def test_shuffle_channel_gradient(backend):
    layer = make_layer('type: "ShuffleChannel" shuffle_channel_param { group: 3 }', backend)
    check_gradient(layer, blobs(backend, rand(2, 6, 2, 3)), tops(backend, 1), max_checks=40)


def test_shuffle_channel_errors(backend):
    fails(backend, 'type: "ShuffleChannel" shuffle_channel_param { group: 0 }', rand(1, 4, 2),
          match="shuffle_channel_param.group must be > 0")
    fails(backend, 'type: "ShuffleChannel" shuffle_channel_param { group: 4 }', rand(1, 6, 2),
          match="channel axis divisible by shuffle_channel_param.group 4")


# ------------------------------------------------------------------------------- ReLU6

def relu6_reference(x, slope):
    """MobileNet-YOLO's ReLU6 and its backward's slopes, elementwise."""
    top = np.minimum(np.maximum(x, 0) + np.float32(slope) * np.minimum(x, 0), 6)
    slopes = ((x > 0) + np.float32(slope) * (x <= 0)) * (x < 6)
    return top, slopes


@pytest.mark.parametrize("params,slope", [
    ("", 0.0),
    ("relu6_param { negative_slope: 0.1 }", 0.1),
    ("relu_param { negative_slope: 0.2 }", 0.2),       # NVIDIA Caffe's field
    ("relu6_param { negative_slope: 0.1 } relu_param { negative_slope: 0.2 }", 0.1),
])
def test_relu6_matches_torch_and_closed_form(backend, params, slope):
    x = (rand(3, 4, 5) * 5).astype(np.float32)
    x.flat[:4] = [0, 6, -0.0, 6.5]  # the kinks: slope at 0, flat from 6 on
    dtop = rand(3, 4, 5)
    layer = make_layer('type: "ReLU6" %s' % params, backend)
    (out,), (grad,), _ = forward_backward(layer, backend, [x], [dtop])
    top, slopes = relu6_reference(x, slope)
    assert_close(out, top, rtol=1e-7)
    assert_close(grad, dtop * slopes, rtol=1e-7)
    assert grad.flat[0] == np.float32(dtop.flat[0] * np.float32(slope))
    assert grad.flat[1] == 0 and grad.flat[3] == 0
    if not slope:
        np.testing.assert_array_equal(out, F.relu6(t(x)).numpy())
        xt = t(x).requires_grad_()
        F.hardtanh(xt, 0, 6).backward(t(dtop))
        far = (np.abs(x) > 1e-3) & (np.abs(x - 6) > 1e-3)  # torch differs at the kinks
        np.testing.assert_array_equal(grad[far], xt.grad.numpy()[far])


def test_relu6_in_place(backend):
    x = (rand(2, 3, 4) * 5).astype(np.float32)
    dtop = rand(2, 3, 4)
    layer = make_layer('type: "ReLU6" relu6_param { negative_slope: 0.1 }', backend)
    blob = blobs(backend, x)
    run_forward(layer, blob, blob)
    blob[0].diff[...] = backend.asarray(dtop)
    layer.backward(blob, [True], blob)
    top, slopes = relu6_reference(x, 0.1)
    assert_close(backend.asnumpy(blob[0].data), top, rtol=1e-7)
    assert_close(backend.asnumpy(blob[0].diff), dtop * slopes, rtol=1e-7)


def test_relu6_gradient(backend):
    # Values kept 0.1 away from the kinks at 0 and 6, where the slope jumps.
    x = RS.uniform(0.1, 0.9, (2, 3, 4, 5)).astype(np.float32)
    x *= RS.choice([-8, 8, 4, -4], x.shape).astype(np.float32)
    x[np.abs(x - 6) < 0.1] = 5
    layer = make_layer('type: "ReLU6" relu6_param { negative_slope: 0.25 }', backend)
    check_gradient(layer, blobs(backend, x), tops(backend, 1), max_checks=60)


# -------------------------------------------------------------------------------- Axpy

@pytest.mark.parametrize("scale_shape,shape", [((2, 3, 1, 1), (2, 3, 4, 5)),
                                               ((2, 3), (2, 3, 4, 5)),
                                               ((2, 3), (2, 3)),
                                               ((1, 4, 1), (1, 4, 6))])
def test_axpy_matches_closed_form(backend, scale_shape, shape):
    a, x, y, dtop = rand(*scale_shape), rand(*shape), rand(*shape), rand(*shape)
    layer = make_layer('type: "Axpy"', backend)
    (out,), (da, dx, dy), _ = forward_backward(layer, backend, [a, x, y], [dtop])
    a_b = a.reshape(shape[:2] + (1,) * (len(shape) - 2))
    assert_close(out, a_b * x + y, rtol=1e-7)
    assert_close(da, (dtop * x).reshape(shape[0], shape[1], -1).sum(-1).reshape(scale_shape),
                 rtol=1e-6)
    assert_close(dx, a_b * dtop, rtol=1e-7)
    np.testing.assert_array_equal(dy, dtop)


def test_axpy_gradient(backend):
    layer = make_layer('type: "Axpy"', backend)
    bottom = blobs(backend, rand(2, 3, 1, 1), rand(2, 3, 2, 3), rand(2, 3, 2, 3))
    check_gradient(layer, bottom, tops(backend, 1), max_checks=40)


@pytest.mark.parametrize("shapes,match", [
    ([(2, 3, 1, 1), (2, 3, 4, 4), (2, 3, 4, 5)], r"bottom\[1\] \(x\) and bottom\[2\] \(y\)"),
    ([(2, 3, 2, 1), (2, 3, 4, 4), (2, 3, 4, 4)], r"bottom\[0\] \(the scale\) must be"),
    ([(2, 4), (2, 3, 4, 4), (2, 3, 4, 4)], r"with x's N, C \(2, 3\), got shape \(2, 4\)"),
    ([(6,), (2, 3, 4, 4), (2, 3, 4, 4)], r"bottom\[0\] \(the scale\) must be"),
])
def test_axpy_errors(backend, shapes, match):
    fails(backend, 'type: "Axpy"', *[rand(*s) for s in shapes], match=match)


# ------------------------------------------------------------------------ PSROIPooling

def fork_psroi(x, rois, spatial_scale, output_dim, group):
    """A plain-loop transcription of the R-FCN fork's kernel, forward and its mapping.

    The bin bounds are k * bin_size + roi_start rounded once to float32: the kernel's
    multiply-add is fused on the GPU, the fork's only implementation."""
    f32 = np.float32
    num, channels, height, width = x.shape
    top = np.zeros((len(rois), output_dim, group, group), np.float32)
    bins = {}
    scale = f32(spatial_scale)
    for n, roi in enumerate(np.asarray(rois, np.float32)):
        b = int(roi[0])
        x1, y1, x2, y2 = (math.copysign(math.floor(abs(float(v)) + 0.5), float(v))
                          for v in roi[1:])
        start_w, start_h = f32(x1) * scale, f32(y1) * scale
        roi_w = max(f32(x2 + 1) * scale - start_w, f32(0.1))
        roi_h = max(f32(y2 + 1) * scale - start_h, f32(0.1))
        bin_h, bin_w = roi_h / f32(group), roi_w / f32(group)
        for ctop in range(output_dim):
            for ph in range(group):
                for pw in range(group):
                    hs = math.floor(f32(ph * float(bin_h) + float(start_h)))
                    ws = math.floor(f32(pw * float(bin_w) + float(start_w)))
                    he = math.ceil(f32((ph + 1) * float(bin_h) + float(start_h)))
                    we = math.ceil(f32((pw + 1) * float(bin_w) + float(start_w)))
                    hs, he = min(max(hs, 0), height), min(max(he, 0), height)
                    ws, we = min(max(ws, 0), width), min(max(we, 0), width)
                    c = (ctop * group + ph) * group + pw
                    bins[n, ctop, ph, pw] = (b, c, hs, he, ws, we)
                    if he > hs and we > ws:
                        top[n, ctop, ph, pw] = x[b, c, hs:he, ws:we].mean(dtype=np.float64)
    return top, bins


def loop_psroi_backward(shape, bins, top_diff):
    grad = np.zeros(shape, np.float64)
    for key, (b, c, hs, he, ws, we) in bins.items():
        if he > hs and we > ws:
            grad[b, c, hs:he, ws:we] += top_diff[key] / ((he - hs) * (we - ws))
    return grad


# Feature maps of 6 x 7 cells.
PSROIS = {
    0.0625: [[0, 8, 8, 80, 60],
             [1, -20, -30, 50, 40],     # starts above and left of the image
             [1, 60, 40, 200, 150],     # ends past the image
             [0, 40, 40, 41, 41],       # under one cell: bins share cells
             [1, 100, 90, 120, 95],     # wholly outside: every bin empty
             [0, 30, 30, 10, 10],       # x2 < x1: forced 0.1 wide
             [0, -39, 0, 31, 95],       # the fused multiply-add ends the last column bin
                                        # at 1.9999999, not 2.0 (two roundings): ceil 2
             [1, -19, 2, -1, 80],       # ... and ends left of the image at 3e-8, not 0:
                                        # its last bins read column 0
             [0, 0, 0, 111, 95]],
    0.5: [[0, 1, 1, 9, 9],
          [1, -3, 5, 13, 30],
          [0, 2.5, 3.5, 3, 3],          # halves round away from zero
          [1, 13, 11, 40, 40],
          [1, 0.9, 2.2, 7.1, 10.8],
          [0, 0, 0, 13, 11]],
}


@pytest.mark.parametrize("scale", sorted(PSROIS))
@pytest.mark.parametrize("output_dim,group", [(2, 3), (1, 2), (3, 1)])
def test_psroi_pooling_matches_fork_loops(backend, scale, output_dim, group):
    x = rand(2, output_dim * group * group, 6, 7)
    rois = np.array(PSROIS[scale], np.float32)
    text = ('type: "PSROIPooling" psroi_pooling_param { spatial_scale: %r output_dim: %d '
            'group_size: %d }' % (scale, output_dim, group))
    layer = make_layer(text, backend)
    dtop = rand(len(rois), output_dim, group, group)
    (out,), (grad, rois_grad), _ = forward_backward(layer, backend, [x, rois], [dtop])
    expected, bins = fork_psroi(x, rois, scale, output_dim, group)
    assert_close(out, expected, rtol=1e-6)
    assert_close(grad, loop_psroi_backward(x.shape, bins, dtop), rtol=1e-6)
    assert not rois_grad.any()
    empty = [k for k, (_, _, hs, he, ws, we) in bins.items() if he <= hs or we <= ws]
    assert all(out[k] == 0 for k in empty)
    assert empty or scale != 0.0625  # the ROI wholly outside the image


def test_psroi_pooling_fused_rounding_reads_column_zero(backend):
    x = rand(1, 9, 6, 7)
    layer = make_layer('type: "PSROIPooling" psroi_pooling_param { spatial_scale: 0.0625 '
                       'output_dim: 1 group_size: 3 }', backend)
    out, = run_forward(layer, blobs(backend, x, [[0, -19, 0, -1, 95]]), tops(backend, 1))
    # Bins of the last column end at 3e-8 after a single rounding: ceil 1, one column.
    for ph in range(3):
        c = ph * 3 + 2
        np.testing.assert_allclose(out[0, 0, ph, 2],
                                   x[0, c, 2 * ph:2 * ph + 2, 0].mean(), rtol=1e-6)
    assert not out[0, 0, :, :2].any()


def test_psroi_pooling_gradient(backend):
    x = rand(2, 8, 6, 7)
    text = ('type: "PSROIPooling" psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 '
            'group_size: 2 }')
    check_gradient(make_layer(text, backend), blobs(backend, x, PSROIS[0.5]), tops(backend, 1),
                   check_bottom=[0], max_checks=80)


@pytest.mark.parametrize("params,shape,rois,match", [
    ("output_dim: 0 group_size: 2", (1, 4, 3, 3), [[0, 0, 0, 2, 2]],
     "psroi_pooling_param.output_dim must be > 0"),
    ("output_dim: 1 group_size: 0", (1, 4, 3, 3), [[0, 0, 0, 2, 2]],
     "psroi_pooling_param.group_size must be > 0"),
    ("output_dim: 2 group_size: 2", (1, 4, 3, 3), [[0, 0, 0, 2, 2]],
     r"bottom\[0\] must be \(N, output_dim \* group_size\^2 = 8, H, W\)"),
    ("output_dim: 1 group_size: 2", (1, 4, 3, 3), [[0, 0, 2, 2]],
     r"bottom\[1\] \(rois\) must have shape \(R, 5\)"),
    ("output_dim: 1 group_size: 2", (1, 4, 3, 3), [[0, 0, 0, 2, 2], [1, 0, 0, 2, 2]],
     "roi 1 has batch index 1, outside"),
])
def test_psroi_pooling_errors(backend, params, shape, rois, match):
    fails(backend, 'type: "PSROIPooling" psroi_pooling_param { spatial_scale: 1 %s }' % params,
          rand(*shape), np.array(rois, np.float32), match=match)


@pytest.mark.parametrize("params,missing", [("output_dim: 1 group_size: 2", "spatial_scale"),
                                            ("spatial_scale: 1 group_size: 2", "output_dim"),
                                            ("spatial_scale: 1 output_dim: 1", "group_size")])
def test_psroi_pooling_fields_are_required(backend, params, missing):
    fails(backend, 'type: "PSROIPooling" psroi_pooling_param { %s }' % params,
          rand(1, 4, 3, 3), np.array([[0, 0, 0, 2, 2]], np.float32),
          match="psroi_pooling_param.%s is required" % missing)


# ------------------------------------------------------------------------------- Reorg

def darknet_reorg(x, stride, reverse):
    """A plain-loop transcription of darknet's reorg index arithmetic over the bottom's
    (C, H, W) grid, as the YOLOv2 Caffe ports call it."""
    num, channels, height, width = x.shape
    s = stride
    flat_in = x.reshape(-1)
    out = np.zeros_like(flat_in)
    small = channels // (s * s)
    for b in range(num):
        for k in range(channels):
            for j in range(height):
                for i in range(width):
                    grid = i + width * (j + height * (k + channels * b))
                    offset = k // small
                    w2 = i * s + offset % s
                    h2 = j * s + offset // s
                    moved = w2 + width * s * (h2 + height * s * (k % small + small * b))
                    if reverse:
                        out[moved] = flat_in[grid]
                    else:
                        out[grid] = flat_in[moved]
    if reverse:
        return out.reshape(num, small, height * s, width * s)
    return out.reshape(num, channels * s * s, height // s, width // s)


@pytest.mark.parametrize("shape,stride,reverse", [((2, 8, 4, 6), 2, False),
                                                  ((1, 18, 6, 3), 3, False),
                                                  ((2, 8, 4, 6), 2, True),
                                                  ((1, 4, 2, 2), 1, False)])
def test_reorg_matches_darknet_loops(backend, shape, stride, reverse):
    x = rand(*shape)
    layer = make_layer('type: "Reorg" reorg_param { stride: %d reverse: %s }'
                       % (stride, str(reverse).lower()), backend)
    expected = darknet_reorg(x, stride, reverse)
    dtop = rand(*expected.shape)
    (out,), (grad,), _ = forward_backward(layer, backend, [x], [dtop])
    np.testing.assert_array_equal(out, expected)
    # A permutation: the gradient puts each top diff back where its value came from.
    order = darknet_reorg(np.arange(x.size, dtype=np.float64).reshape(shape), stride, reverse)
    back = np.zeros(x.size, np.float32)
    back[order.reshape(-1).astype(np.int64)] = dtop.reshape(-1)
    np.testing.assert_array_equal(grad, back.reshape(shape))


def test_reorg_is_not_plain_space_to_depth(backend):
    x = rand(1, 4, 2, 2)
    layer = make_layer('type: "Reorg" reorg_param { stride: 2 }', backend)
    out, = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert not np.array_equal(out, F.pixel_unshuffle(t(x), 2).numpy())


@pytest.mark.parametrize("reverse", [False, True])
def test_reorg_gradient(backend, reverse):
    layer = make_layer('type: "Reorg" reorg_param { stride: 2 reverse: %s }'
                       % str(reverse).lower(), backend)
    check_gradient(layer, blobs(backend, rand(1, 8, 2, 4)), tops(backend, 1), max_checks=30)


@pytest.mark.parametrize("params,shape,match", [
    ("", (1, 4, 2, 2), "Reorg needs reorg_param.stride > 0"),
    ("stride: 0", (1, 4, 2, 2), "Reorg needs reorg_param.stride > 0"),
    ("stride: 2", (1, 6, 2, 2), r"channels divisible by reorg_param.stride\^2 = 4"),
    ("stride: 2 reverse: true", (1, 6, 2, 2), r"channels divisible by reorg_param.stride\^2"),
    ("stride: 2", (1, 4, 3, 2), "height and width divisible by reorg_param.stride 2"),
    ("stride: 2", (4, 2, 2), "Reorg bottom must be 4-D"),
])
def test_reorg_errors(backend, params, shape, match):
    fails(backend, 'type: "Reorg" reorg_param { %s }' % params, rand(*shape), match=match)


def test_reorg_refuses_in_place(backend):
    layer = make_layer('type: "Reorg" reorg_param { stride: 2 }', backend)
    blob = blobs(backend, rand(1, 4, 2, 2))
    with pytest.raises(LayerSetupError, match="Reorg cannot run in place"):
        run_forward(layer, blob, blob)


# ------------------------------------------------- nets through netkit.Net and PyTorch

SEGNET_PSPNET = '''name: "segnet_pspnet"
force_backward: true
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 } } }
# SegNet: the encoder's pooling mask drives the decoder's max-unpooling.
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "up1" type: "Upsample" bottom: "conv2" bottom: "pool1_mask" top: "up1"
  upsample_param { scale: 2 } }
layer { name: "decode" type: "Convolution" bottom: "up1" top: "decode"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } } }
# PSPNet: pooled pyramid levels, resized back by Interp and concatenated.
layer { name: "pyr1" type: "Pooling" bottom: "conv1" top: "pyr1"
  pooling_param { pool: AVE kernel_h: 8 kernel_w: 10 stride_h: 8 stride_w: 10 } }
layer { name: "pyr1_conv" type: "Convolution" bottom: "pyr1" top: "pyr1_conv"
  convolution_param { num_output: 2 kernel_size: 1
    weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pyr1_interp" type: "Interp" bottom: "pyr1_conv" bottom: "conv1"
  top: "pyr1_interp" }
layer { name: "pyr2" type: "Pooling" bottom: "conv1" top: "pyr2"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "pyr2_conv" type: "Convolution" bottom: "pyr2" top: "pyr2_conv"
  convolution_param { num_output: 2 kernel_size: 1
    weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pyr2_interp" type: "Interp" bottom: "pyr2_conv" top: "pyr2_interp"
  interp_param { height: 8 width: 10 } }
layer { name: "pyr3_interp" type: "Interp" bottom: "conv2" top: "pyr3_interp"
  interp_param { zoom_factor: 3 pad_beg: -1 pad_end: 0 } }
layer { name: "concat" type: "Concat" bottom: "conv1" bottom: "pyr1_interp"
  bottom: "pyr2_interp" top: "concat" }
layer { name: "head" type: "Convolution" bottom: "concat" top: "head"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } } }
'''


def torch_segnet_pspnet(net, x):
    """The same computation in PyTorch with the net's weights: (outputs, data)."""
    def conv(name, bottom, pad):
        params = net.params[name]
        bias = t(params[1].data) if len(params) > 1 else None
        return F.conv2d(bottom, t(params[0].data), bias, padding=pad)

    data = t(x).requires_grad_()
    conv1 = conv("conv1", data, 1)
    pool1, index = F.max_pool2d(conv1, 2, 2, return_indices=True)
    conv2 = conv("conv2", pool1, 1)
    decode = conv("decode", F.max_unpool2d(conv2, index, 2, 2, output_size=(8, 10)), 1)
    pyr1 = conv("pyr1_conv", F.avg_pool2d(conv1, (8, 10)), 0)
    pyr2 = conv("pyr2_conv", F.avg_pool2d(conv1, 2), 0)
    resize = dict(size=(8, 10), mode="bilinear", align_corners=True)
    concat = torch.cat([conv1, F.interpolate(pyr1, **resize),
                        F.interpolate(pyr2, **resize)], 1)
    head = conv("head", concat, 1)
    pyr3 = F.interpolate(conv2[:, :, 1:, 1:], size=(7, 10), mode="bilinear",
                         align_corners=True)
    return {"decode": decode, "head": head, "pyr3_interp": pyr3}, data


def test_segnet_and_pspnet_style_net_matches_torch():
    net = Net(SEGNET_PSPNET, phase=TEST)
    assert sorted(net.outputs) == ["decode", "head", "pyr3_interp"]
    x = rand(2, 3, 8, 10)
    outputs = net.forward(data=x)
    ref, data = torch_segnet_pspnet(net, x)
    for name in ref:
        assert_close(outputs[name], ref[name].detach().numpy(), rtol=1e-5)
    diffs = {name: rand(*outputs[name].shape) for name in ref}
    grad = net.backward(**diffs)["data"]
    torch.autograd.backward([ref[n] for n in diffs], [t(d) for d in diffs.values()])
    assert np.abs(grad).sum() > 0
    assert_close(grad, data.grad.numpy(), rtol=1e-5)
    for name in ("conv1", "conv2", "decode", "head"):
        assert np.abs(net.params[name][0].diff).sum() > 0


# ----------------------------------------------------------------- OpenCV parity (nets)

def opencv_outputs(deploy, weights, inputs, names):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe "
                                            "importer")
    net = cv2.dnn.readNetFromCaffe(deploy, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        net.setInput(value, name)
    return dict(zip(names, net.forward(names)))


def random_weights(net, path, std=0.5, seed=0):
    rs = np.random.RandomState(seed)
    for params in net.params.values():
        for b in params:
            b.data[...] = rs.standard_normal(b.shape).astype(np.float32) * std
    net.save(str(path))
    return str(path)


MOBILE = '''name: "mobile_forks"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 4 dim: 8 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu6" type: "ReLU6" bottom: "conv1" top: "conv1" }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "conv1" top: "shuffle"
  shuffle_channel_param { group: 2 } }
layer { name: "se_pool" type: "Pooling" bottom: "shuffle" top: "se_pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "se_fc" type: "Convolution" bottom: "se_pool" top: "se_fc"
  convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "se_gate" type: "Sigmoid" bottom: "se_fc" top: "se_gate" }
layer { name: "axpy" type: "Axpy" bottom: "se_gate" bottom: %s top: "axpy" }
layer { name: "reorg" type: "Reorg" bottom: "axpy" top: "reorg" reorg_param { stride: 2 } }
layer { name: "zoom" type: "Interp" bottom: "reorg" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "resize" type: "Interp" bottom: "reorg" top: "resize"
  interp_param { height: 3 width: 10 } }
'''


def test_mobile_forks_net_matches_opencv(tmp_path):
    # SENet's Axpy is a * bottom[1] + bottom[2]; OpenCV's importer computes
    # a * bottom[2] + bottom[1], so its copy of the net names x and y the other way round.
    ours, theirs = tmp_path / "net.prototxt", tmp_path / "opencv.prototxt"
    ours.write_text(MOBILE % '"shuffle" bottom: "conv1"')
    theirs.write_text(MOBILE % '"conv1" bottom: "shuffle"')
    net = Net(str(ours), TEST)
    weights = random_weights(net, tmp_path / "net.caffemodel")
    x = (rand(1, 4, 8, 12) * 2).astype(np.float32)
    net.forward(data=x)
    assert net.blobs["conv1"].data.max() == 6 and (net.blobs["conv1"].data == 0).any()
    names = {"relu6": "conv1", "shuffle": "shuffle", "axpy": "axpy", "reorg": "reorg",
             "zoom": "zoom", "resize": "resize"}
    cv = opencv_outputs(str(theirs), weights, {"data": x}, list(names))
    assert net.blobs["zoom"].shape == (1, 32, 10, 16)
    for layer, blob in names.items():
        assert_close(net.blobs[blob].data, cv[layer], rtol=1e-5)


RFCN = '''name: "rfcn_head"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 10 dim: 12 } } }
layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 5 dim: 5 } } }
layer { name: "rfcn_cls" type: "Convolution" bottom: "data" top: "rfcn_cls"
  convolution_param { num_output: 18 kernel_size: 1 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "rfcn_cls" bottom: "rois" top: "psroi"
  psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }
layer { name: "vote" type: "Pooling" bottom: "psroi" top: "vote"
  pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
'''


def test_rfcn_head_matches_opencv(tmp_path):
    deploy = tmp_path / "rfcn.prototxt"
    deploy.write_text(RFCN)
    net = Net(str(deploy), TEST)
    weights = random_weights(net, tmp_path / "rfcn.caffemodel")
    x = rand(2, 3, 10, 12)
    rois = np.array([[0, 1, 2, 15, 13], [1, 0, 0, 23, 19], [1, 5.4, 3.5, 9.6, 30],
                     [0, 4, 3, 6, 5], [1, 22, 18, 40, 40]], np.float32)
    net.forward(data=x, rois=rois)
    cv = opencv_outputs(str(deploy), weights, {"data": x, "rois": rois}, ["psroi", "vote"])
    for name in ("psroi", "vote"):
        assert_close(net.blobs[name].data, cv[name], rtol=1e-5)
