"""The Fast/Faster R-CNN fork's layers (ROIPooling, SmoothL1Loss): forward and backward against
a plain-loop transcription of the fork's CPU code and closed-form numpy written here, Caffe's
gradient check on every backend, the fork's schema fields, error cases naming the field, and
a small Faster-R-CNN-style net that trains."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from layertest import (assert_close, blobs, check_gradient, fails, forward_backward,
                       make_layer, run_forward, tops)
from netkit import netkit_pb2 as pb
from netkit.solvers import SGDSolver

RS = np.random.RandomState(11)
FLT_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------- schema

def test_fork_field_numbers_and_defaults():
    fields = pb.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["roi_pooling_param"].number == 8266711
    assert fields["smooth_l1_loss_param"].number == 8266712
    roi = pb.ROIPoolingParameter()
    assert (roi.pooled_h, roi.pooled_w, roi.spatial_scale) == (0, 0, 1.0)
    assert pb.SmoothL1LossParameter().sigma == 1.0
    layer = pb.LayerParameter(name="p", type="ROIPooling")
    layer.roi_pooling_param.pooled_h = 7
    # tag of field 8266711, wire type 2, as a varint; then a 2-byte body {pooled_h: 7}
    tag, key = (8266711 << 3) | 2, b""
    while tag > 0x7F:
        key, tag = key + bytes([tag & 0x7F | 0x80]), tag >> 7
    assert key + bytes([tag, 2, 0x08, 7]) in layer.SerializeToString()


def test_parse_faster_rcnn_layers():
    net = text_format.Parse("""
        layer { name: "roi_pool5" type: "ROIPooling" bottom: "conv5_3" bottom: "rois"
                top: "pool5"
                roi_pooling_param { pooled_w: 7 pooled_h: 7 spatial_scale: 0.0625 } }
        layer { name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox_pred"
                bottom: "bbox_targets" bottom: "bbox_inside_weights"
                bottom: "bbox_outside_weights" top: "loss_bbox" loss_weight: 1
                smooth_l1_loss_param { sigma: 3.0 } }
        """, pb.NetParameter())
    rp = net.layer[0].roi_pooling_param
    assert (rp.pooled_h, rp.pooled_w, rp.spatial_scale) == (7, 7, 0.0625)
    assert net.layer[1].smooth_l1_loss_param.sigma == 3.0


# --------------------------------------------------------------------------- ROIPooling

def c_round(x):
    """C's round(): half away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def fork_roi_pool(x, rois, pooled_h, pooled_w, spatial_scale):
    """A line-by-line transcription of the fork's ROIPoolingLayer::Forward_cpu."""
    num, channels, height, width = x.shape
    scale = np.float32(spatial_scale)
    top = np.full((len(rois), channels, pooled_h, pooled_w), -FLT_MAX, np.float32)
    argmax = np.full(top.shape, -1, np.int64)
    for n, roi in enumerate(np.asarray(rois, np.float32)):
        b = int(roi[0])
        start_w = c_round(float(roi[1] * scale))
        start_h = c_round(float(roi[2] * scale))
        end_w = c_round(float(roi[3] * scale))
        end_h = c_round(float(roi[4] * scale))
        roi_h = max(end_h - start_h + 1, 1)
        roi_w = max(end_w - start_w + 1, 1)
        bin_h = np.float32(roi_h) / np.float32(pooled_h)
        bin_w = np.float32(roi_w) / np.float32(pooled_w)
        for c in range(channels):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hstart = int(math.floor(np.float32(ph) * bin_h))
                    wstart = int(math.floor(np.float32(pw) * bin_w))
                    hend = int(math.ceil(np.float32(ph + 1) * bin_h))
                    wend = int(math.ceil(np.float32(pw + 1) * bin_w))
                    hstart = min(max(hstart + start_h, 0), height)
                    hend = min(max(hend + start_h, 0), height)
                    wstart = min(max(wstart + start_w, 0), width)
                    wend = min(max(wend + start_w, 0), width)
                    if hend <= hstart or wend <= wstart:
                        top[n, c, ph, pw] = 0
                        argmax[n, c, ph, pw] = -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if x[b, c, h, w] > top[n, c, ph, pw]:
                                top[n, c, ph, pw] = x[b, c, h, w]
                                argmax[n, c, ph, pw] = h * width + w
    return top, argmax


def loop_roi_pool_backward(shape, rois, argmax, top_diff):
    """Each top diff goes to the bottom cell its bin pooled."""
    grad = np.zeros(shape, np.float64)
    width = shape[3]
    for n, roi in enumerate(rois):
        b = int(roi[0])
        for c in range(shape[1]):
            for ph in range(argmax.shape[2]):
                for pw in range(argmax.shape[3]):
                    k = argmax[n, c, ph, pw]
                    if k >= 0:
                        grad[b, c, k // width, k % width] += top_diff[n, c, ph, pw]
    return grad


# Feature maps of 6 x 7 cells: images of 96 x 112 pixels at 1/16, 12 x 14 at 0.5.
ROIS = {
    0.0625: [[0, 8, 8, 80, 60],        # 8/16 = 0.5 rounds up (numpy's round would give 0)
             [1, -20, -30, 50, 40],    # starts above and left of the image
             [1, 60, 40, 200, 150],    # ends past the image
             [0, 40, 40, 41, 41],      # 2.5 -> 3: a one-cell ROI, bins repeat that cell
             [1, 100, 90, 120, 95],    # wholly outside: every bin empty
             [0, 30, 30, 10, 10],      # x2 < x1: forced to one cell
             [0, 0, 0, 111, 95]],      # the whole image
    0.5: [[0, 1, 1, 9, 9],             # 4.5 -> 5
          [1, -3, 5, 13, 30],
          [0, 3, 3, 3, 3],
          [1, 13, 11, 40, 40],         # starts in the last column, empty bins past it
          [1, 0.9, 2.2, 7.1, 10.8],    # fractional corners
          [0, 0, 0, 13, 11]],
}


@pytest.mark.parametrize("scale", sorted(ROIS))
@pytest.mark.parametrize("pooled", [(2, 3), (3, 3), (7, 7)])
def test_roi_pooling_matches_fork_loops(backend, scale, pooled):
    x = RS.standard_normal((2, 3, 6, 7)).astype(np.float32)
    rois = np.array(ROIS[scale], np.float32)
    text = ('type: "ROIPooling" roi_pooling_param { pooled_h: %d pooled_w: %d '
            'spatial_scale: %r }' % (pooled + (scale,)))
    layer = make_layer(text, backend)
    top_diff = RS.standard_normal((len(rois), 3) + pooled).astype(np.float32)
    (out,), (grad, rois_grad), _ = forward_backward(layer, backend, [x, rois], [top_diff],
                                                    propagate=[True, False])
    expected, argmax = fork_roi_pool(x, rois, pooled[0], pooled[1], scale)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(backend.asnumpy(layer.argmax), argmax)
    assert (argmax == -1).any() and (argmax >= 0).any()
    assert_close(grad, loop_roi_pool_backward(x.shape, rois, argmax, top_diff), rtol=1e-6)


def test_roi_pooling_ties_keep_the_first_cell(backend):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 5
    layer = make_layer('type: "ROIPooling" roi_pooling_param { pooled_h: 1 pooled_w: 1 }',
                       backend)
    out, = run_forward(layer, blobs(backend, x, [[0, 0, 0, 3, 3]]), tops(backend, 1))
    assert out.ravel()[0] == 5
    assert backend.asnumpy(layer.argmax).ravel()[0] == 1 * 4 + 2


def test_roi_pooling_reshapes_with_the_number_of_rois(backend):
    layer = make_layer('type: "ROIPooling" roi_pooling_param { pooled_h: 2 pooled_w: 2 }',
                       backend)
    x = RS.standard_normal((1, 2, 5, 5)).astype(np.float32)
    bottom, top = blobs(backend, x, [[0, 0, 0, 4, 4]]), tops(backend, 1)
    run_forward(layer, bottom, top)
    assert top[0].shape == (1, 2, 2, 2)
    rois = np.array([[0, 0, 0, 4, 4], [0, 1, 1, 3, 3], [0, 2, 0, 4, 2]], np.float32)
    bottom[1].reshape(rois.shape)
    bottom[1].data[...] = backend.asarray(rois)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data),
                                  fork_roi_pool(x, rois, 2, 2, 1.0)[0])


@pytest.mark.parametrize("scale", sorted(ROIS))
def test_roi_pooling_gradient(backend, scale):
    # Distinct values 0.1 apart: the +-0.01 steps never move an argmax.
    x = (RS.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.1).astype(np.float32)
    text = ('type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 2 '
            'spatial_scale: %r }' % scale)
    layer = make_layer(text, backend)
    check_gradient(layer, blobs(backend, x, ROIS[scale]), tops(backend, 1), check_bottom=[0])


@pytest.mark.parametrize("params,rois,match", [
    ("pooled_w: 2", [[0, 0, 0, 3, 3]], "roi_pooling_param.pooled_h must be > 0"),
    ("pooled_h: 2 pooled_w: 0", [[0, 0, 0, 3, 3]], "roi_pooling_param.pooled_w must be > 0"),
    ("pooled_h: 2 pooled_w: 2", [[0, 0, 3, 3]], r"bottom\[1\] \(rois\) must have shape"),
    ("pooled_h: 2 pooled_w: 2", [[2, 0, 0, 3, 3]], "roi 0 has batch index 2"),
    ("pooled_h: 2 pooled_w: 2", [[0, 0, 0, 3, 3], [-1, 0, 0, 3, 3]],
     "roi 1 has batch index -1"),
])
def test_roi_pooling_errors(backend, params, rois, match):
    fails(backend, 'type: "ROIPooling" roi_pooling_param { %s }' % params,
          np.zeros((2, 1, 4, 4), np.float32), rois, match=match)


# ------------------------------------------------------------------------- SmoothL1Loss

def smooth_l1(pred, target, sigma, w_in=None, w_out=None):
    """Loss and d loss / d pred of the fork's SmoothL1Loss, in float64."""
    s2 = float(sigma) ** 2
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    scale_in = 1.0 if w_in is None else np.asarray(w_in, np.float64).reshape(pred.shape)
    scale_out = 1.0 if w_out is None else np.asarray(w_out, np.float64).reshape(pred.shape)
    d = scale_in * (pred - target.reshape(pred.shape))
    small = np.abs(d) < 1 / s2
    f = np.where(small, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2) * scale_out
    g = np.where(small, s2 * d, np.sign(d)) * scale_in * scale_out
    return f.sum() / pred.shape[0], g / pred.shape[0]


def away_from_kink(shape, sigma, w_in=None):
    """Predictions and targets whose weighted difference stays 0.1 away from +-1/sigma^2."""
    kink = 1 / sigma ** 2
    d = RS.uniform(-3 * kink, 3 * kink, shape)
    d = np.where(np.abs(np.abs(d) - kink) < 0.1, np.sign(d) * (kink + 0.2), d)
    pred = RS.standard_normal(shape)
    scale = 1.0 if w_in is None else w_in
    return pred.astype(np.float32), (pred - d / scale).astype(np.float32)


@pytest.mark.parametrize("sigma", [1.0, 3.0, 0.5])
@pytest.mark.parametrize("weights", [False, True])
def test_smooth_l1_matches_closed_form(backend, sigma, weights):
    shape = (4, 8, 2, 3)
    w_in = RS.choice([0.0, 0.5, 1.0, 2.0], shape).astype(np.float32) if weights else None
    w_out = RS.uniform(0.1, 2.0, shape).astype(np.float32) if weights else None
    pred, target = away_from_kink(shape, sigma, None if w_in is None else np.maximum(w_in, 1))
    bottoms = [pred, target] + ([w_in, w_out] if weights else [])
    layer = make_layer('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: %r }' % sigma,
                       backend)
    (loss,), grads, _ = forward_backward(layer, backend, bottoms, [np.float32(2.0)],
                                         propagate=[True, True] + [False] * (len(bottoms) - 2))
    expected, g = smooth_l1(pred, target, sigma, w_in, w_out)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert_close(grads[0], 2 * g)
    assert_close(grads[1], -2 * g)


def test_smooth_l1_both_branches_and_default_sigma(backend):
    # |d| = 0.5 < 1: 0.5 * 0.25; |d| = 3 >= 1: 3 - 0.5; summed and divided by num = 2.
    layer = make_layer('type: "SmoothL1Loss"', backend)
    out, = run_forward(layer, blobs(backend, [[0.5], [0.0]], [[0.0], [3.0]]), tops(backend, 1))
    assert float(out) == pytest.approx((0.125 + 2.5) / 2)


def test_smooth_l1_legacy_shapes_meet(backend):
    # R-FCN: bbox_pred from pooling is (R, 8, 1, 1), bbox_targets is (R, 8).
    pred, target = away_from_kink((3, 8), 1.0)
    layer = make_layer('type: "SmoothL1Loss"', backend)
    out, = run_forward(layer, blobs(backend, pred.reshape(3, 8, 1, 1), target, target * 0 + 1,
                                    target * 0 + 1), tops(backend, 1))
    assert float(out) == pytest.approx(smooth_l1(pred, target, 1.0)[0], rel=1e-5)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
@pytest.mark.parametrize("weights", [False, True])
def test_smooth_l1_gradient(backend, sigma, weights):
    shape = (3, 4, 2, 1)
    w_in = RS.uniform(0.5, 1.5, shape).astype(np.float32) if weights else None
    pred, target = away_from_kink(shape, sigma, w_in)
    bottoms = [pred, target] + ([w_in, RS.uniform(0.5, 1.5, shape)] if weights else [])
    layer = make_layer('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: %r }' % sigma,
                       backend)
    check_gradient(layer, blobs(backend, *bottoms), tops(backend, 1), check_bottom=[0, 1])


def test_smooth_l1_weights_get_zero_diff(backend):
    shape = (2, 4)
    pred, target = away_from_kink(shape, 1.0)
    layer = make_layer('type: "SmoothL1Loss"', backend)
    _, grads, _ = forward_backward(layer, backend, [pred, target, np.ones(shape),
                                                    np.ones(shape)], [np.float32(1)])
    assert not grads[2].any() and not grads[3].any()


@pytest.mark.parametrize("bottoms,match", [
    ([(2, 4), (2, 4), (2, 4)], "both inside_weights and outside_weights"),
    ([(2, 4), (3, 4)], r"bottom\[1\] has shape \(3, 4\)"),
    ([(2, 4), (2, 4), (2, 4), (2, 2, 2)], r"bottom\[3\] has shape \(2, 2, 2\)"),
])
def test_smooth_l1_errors(backend, bottoms, match):
    fails(backend, 'type: "SmoothL1Loss"', *[np.zeros(s, np.float32) for s in bottoms],
          match=match)


# -------------------------------------------------------------------------------- a net

FAST_RCNN_NET = """
name: "tiny_fast_rcnn"
layer { name: "input" type: "Input" top: "data" top: "rois"
        input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } shape { dim: 4 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "pool" top: "bbox_pred"
        inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "targets" type: "DummyData" top: "bbox_targets"
        dummy_data_param { shape { dim: 4 dim: 8 }
                           data_filler { type: "constant" value: 0.5 } } }
layer { name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox_pred" bottom: "bbox_targets"
        top: "loss_bbox" smooth_l1_loss_param { sigma: 3.0 } }
"""


def test_fast_rcnn_net_trains(backend):
    param = text_format.Parse('base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 '
                              'random_seed: 3 snapshot_prefix: "unused"', pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(FAST_RCNN_NET, pb.NetParameter()))
    solver = SGDSolver(param, backend=backend)
    net = solver.net
    net.blobs["data"].data[...] = backend.asarray(
        np.random.RandomState(0).uniform(0, 1, (2, 3, 12, 12)).astype(np.float32))
    net.blobs["rois"].data[...] = backend.asarray(np.array(
        [[0, 0, 0, 23, 23], [0, 4, 6, 15, 20], [1, 2, 2, 9, 30], [1, 10, 0, 23, 12]],
        np.float32))
    assert net.blobs["pool"].shape == (4, 4, 2, 2)
    losses = []
    for _ in range(8):
        solver.step(1)
        losses.append(solver.smoothed_loss)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    # the conv weights learned through ROIPooling's backward
    assert np.abs(backend.asnumpy(net.params["conv"][0].diff)).sum() > 0
