"""Fork features that real prototxt files carry: PoolingParameter.ceil_mode (DenseNet
ports), the two depthwise convolution types' rules (farmingyard's ConvolutionDepthwise,
yonghenglh6's DepthwiseConvolution), Mish (YOLOv4 ports) and the BN layer of hszhao/PSPNet
and caffe-segnet.

Forward values against PyTorch CPU, closed-form numpy written here and OpenCV's Caffe
importer (which reads ceil_mode, ConvolutionDepthwise and Mish; it has no BN, so a PSPNet
net is compared with its BatchNorm + Scale twin); Caffe's gradient check on every backend;
the schema's field numbers and defaults; error cases naming the field."""

import numpy as np
import pytest
from google.protobuf import text_format

from layertest import (assert_close, blobs, check_gradient, fails, forward_backward,
                       make_layer, run_forward, tops)
from netkit import TEST, TRAIN, Net
from netkit import netkit_pb2 as pb

torch = pytest.importorskip("torch")
F = torch.nn.functional

RS = np.random.RandomState(31)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def t(array):
    return torch.from_numpy(np.array(array, dtype=np.float32))


def opencv_net(prototxt, weights=None):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe "
                                            "importer")
    net = cv2.dnn.readNetFromCaffe(prototxt, weights) if weights else \
        cv2.dnn.readNetFromCaffe(prototxt)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    return net


def random_weights(net, path, std=0.5, seed=0):
    rs = np.random.RandomState(seed)
    for params in net.params.values():
        for b in params:
            b.data[...] = rs.standard_normal(b.shape).astype(np.float32) * std
    net.save(str(path))
    return str(path)


# ------------------------------------------------------------------------------- schema

def test_schema_numbers_and_defaults():
    pool = pb.PoolingParameter.DESCRIPTOR.fields_by_name
    assert pool["ceil_mode"].number == 1013 and pool["round_mode"].number == 13
    assert pb.PoolingParameter().ceil_mode is True
    assert pb.LayerParameter.DESCRIPTOR.fields_by_name["bn_param"].number == 152
    bn = pb.BNParameter.DESCRIPTOR.fields_by_name
    assert {name: bn[name].number for name in bn} == {
        "slope_filler": 1, "bias_filler": 2, "momentum": 3, "eps": 4, "frozen": 5,
        "engine": 6, "scale_filler": 1001, "shift_filler": 1002, "bn_mode": 1003}
    p = pb.BNParameter()
    assert (p.momentum, p.frozen, p.bn_mode) == (pytest.approx(0.9), False, p.LEARN)
    assert p.eps == pytest.approx(1e-5) and p.INFERENCE == 1
    # Mish ports carry no parameter message.
    assert "mish_param" not in pb.LayerParameter.DESCRIPTOR.fields_by_name


def test_fork_texts_parse():
    text = '''
layer { name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 3 ceil_mode: false } }
layer { name: "psp" type: "BN" bn_param { slope_filler { type: "constant" value: 1 }
  bias_filler { type: "constant" value: 0 } frozen: true momentum: 0.95 } }
layer { name: "seg" type: "BN" bn_param { bn_mode: INFERENCE
  scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }
'''
    net = text_format.Parse(text, pb.NetParameter())
    assert net.layer[0].pooling_param.ceil_mode is False
    assert net.layer[1].bn_param.frozen and net.layer[1].bn_param.momentum == pytest.approx(0.95)
    assert net.layer[2].bn_param.bn_mode == pb.BNParameter.INFERENCE
    assert net.layer[2].bn_param.shift_filler.value == pytest.approx(0.001)


# ---------------------------------------------------------------------------- ceil_mode

def pool_text(ceil, pad, extra=""):
    return ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: %d '
            'ceil_mode: %s %s }' % (pad, "true" if ceil else "false", extra))


@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("pad,size,expected", [(0, 8, (3, 4)), (1, 8, (4, 5)), (1, 9, (5, 5))])
def test_ceil_mode_matches_torch(backend, ceil, pad, size, expected):
    x = rand(2, 3, size, size + 1)
    (y,) = run_forward(make_layer(pool_text(ceil, pad), backend), blobs(backend, x),
                       tops(backend, 1))
    ref = F.max_pool2d(t(x), 3, 2, pad, ceil_mode=ceil).numpy()
    assert y.shape[2] == expected[ceil] and y.shape == ref.shape
    assert_close(y, ref, rtol=0)


def test_ceil_mode_false_is_round_mode_floor(backend):
    x = rand(1, 2, 8, 8)
    floor = run_forward(make_layer(pool_text(True, 0, "round_mode: FLOOR").replace(
        "ceil_mode: true", ""), backend), blobs(backend, x), tops(backend, 1))[0]
    no_ceil = run_forward(make_layer(pool_text(False, 0), backend), blobs(backend, x),
                          tops(backend, 1))[0]
    np.testing.assert_array_equal(floor, no_ceil)
    assert floor.shape == (1, 2, 3, 3)


def test_ceil_mode_contradicting_round_mode(backend):
    fails(backend, pool_text(True, 0, "round_mode: FLOOR"), rand(1, 1, 8, 8),
          match="ceil_mode true contradicts round_mode FLOOR")


CEIL_NET = '''name: "ceil"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 14 dim: 14 } } }
layer { name: "floor" type: "Pooling" bottom: "data" top: "floor"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false } }
layer { name: "ceil" type: "Pooling" bottom: "data" top: "ceil"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: true } }
layer { name: "ave" type: "Pooling" bottom: "data" top: "ave"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 ceil_mode: false } }
'''


def test_ceil_mode_net_matches_opencv(tmp_path):
    path = tmp_path / "ceil.prototxt"
    path.write_text(CEIL_NET)
    net = Net(str(path), TEST)
    x = rand(1, 3, 14, 14)
    net.forward(data=x)
    cv = opencv_net(str(path))
    cv.setInput(x, "data")
    theirs = dict(zip(["floor", "ceil", "ave"], cv.forward(["floor", "ceil", "ave"])))
    assert net.blobs["floor"].shape == (1, 3, 7, 7) and net.blobs["ceil"].shape == (1, 3, 7, 7)
    assert net.blobs["ave"].shape == (1, 3, 6, 6)
    for name, value in theirs.items():
        assert_close(net.blobs[name].data, value, rtol=1e-6)


# ---------------------------------------------------------------------- depthwise types

def conv_text(type_name, fields):
    return ('type: "%s" convolution_param { %s weight_filler { type: "gaussian" std: 0.3 }'
            ' bias_filler { type: "gaussian" std: 1 } }' % (type_name, fields))


@pytest.mark.parametrize("fields,kwargs", [
    ("num_output: 16 group: 16 kernel_size: 3 pad: 1", dict(padding=1)),  # MnasNet's values
    ("kernel_size: 3 stride: 2", dict(stride=2)),
    ("num_output: 99 kernel_size: 3 dilation: 2 pad: 2", dict(padding=2, dilation=2)),
])
def test_convolution_depthwise_ignores_num_output_and_group(backend, fields, kwargs):
    x = rand(2, 6, 7, 6)
    layer = make_layer(conv_text("ConvolutionDepthwise", fields), backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(b.data) for b in layer.blobs)
    assert weight.shape == (6, 1, 3, 3) and bias.shape == (6,) and y.shape[1] == 6
    xt, wt, bt = (t(a).requires_grad_() for a in (x, weight, bias))
    ref = F.conv2d(xt, wt, bt, groups=6, **kwargs)
    ref.backward(t(dy))
    assert_close(y, ref.detach().numpy())
    for ours, theirs in zip([dx] + grads, [xt.grad, wt.grad, bt.grad]):
        assert_close(ours, theirs.numpy())


@pytest.mark.parametrize("fields,groups,weight_shape", [
    ("num_output: 4 group: 4", 4, (4, 1, 3, 3)),
    ("num_output: 8 group: 4", 4, (8, 1, 3, 3)),   # channel multiplier 2
    ("num_output: 6 group: 2", 2, (6, 2, 3, 3)),
    ("num_output: 5", 1, (5, 4, 3, 3)),            # group defaults to 1, as Convolution
])
def test_depthwise_convolution_is_convolution(backend, fields, groups, weight_shape):
    x = rand(2, 4, 6, 5)
    layer = make_layer(conv_text("DepthwiseConvolution", fields + " kernel_size: 3 pad: 1"),
                       backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    dy = rand(*probe[0].shape)
    (y,), (dx,), grads = forward_backward(layer, backend, [x], [dy])
    weight, bias = (backend.asnumpy(b.data) for b in layer.blobs)
    assert weight.shape == weight_shape
    xt, wt, bt = (t(a).requires_grad_() for a in (x, weight, bias))
    ref = F.conv2d(xt, wt, bt, groups=groups, padding=1)
    ref.backward(t(dy))
    assert_close(y, ref.detach().numpy())
    for ours, theirs in zip([dx] + grads, [xt.grad, wt.grad, bt.grad]):
        assert_close(ours, theirs.numpy())


@pytest.mark.parametrize("type_name", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_depthwise_gradient(backend, type_name):
    layer = make_layer(conv_text(type_name, "num_output: 3 group: 3 kernel_size: 3 pad: 1"),
                       backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 5, 5)), tops(backend, 1), max_checks=40)


def test_depthwise_errors(backend):
    fails(backend, conv_text("DepthwiseConvolution", "kernel_size: 3"), rand(1, 4, 5, 5),
          match="num_output must be positive")
    fails(backend, conv_text("DepthwiseConvolution", "num_output: 4 group: 3 kernel_size: 3"),
          rand(1, 4, 5, 5), match="group 3 must divide")
    fails(backend, conv_text("ConvolutionDepthwise", "kernel_size: 3"), rand(1, 4, 5, 5),
          rand(1, 4, 5, 5), match="exactly 1 bottom")


DW_NET = '''name: "dw"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 32 dim: 8 dim: 8 } } }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw"
  convolution_param { %s kernel_size: 3 pad: 1 } }
layer { name: "act" type: "Mish" bottom: "dw" top: "dw" }
'''


def test_convolution_depthwise_and_mish_net_match_opencv(tmp_path):
    """netkit runs MnasNet's num_output: 16 group: 16 on 32 channels as the fork does; OpenCV's
    importer, which also makes one filter per channel but reads garbage past num_output,
    runs the same weights under the consistent num_output: 32."""
    path, consistent = tmp_path / "dw.prototxt", tmp_path / "dw32.prototxt"
    path.write_text(DW_NET % "num_output: 16 group: 16")
    consistent.write_text(DW_NET % "num_output: 32")
    net = Net(str(path), TEST)
    assert net.params["dw"][0].shape == (32, 1, 3, 3)
    weights = random_weights(net, tmp_path / "dw.caffemodel")
    x = rand(1, 32, 8, 8)
    net.forward(data=x)
    cv = opencv_net(str(consistent), weights)
    cv.setInput(x, "data")
    theirs = cv.forward("act")
    assert net.blobs["dw"].shape == theirs.shape == (1, 32, 8, 8)
    assert_close(net.blobs["dw"].data, theirs, rtol=1e-5)


# --------------------------------------------------------------------------------- Mish

def test_mish_matches_torch(backend):
    x = np.concatenate([rand(3, 4, 5).ravel() * 4, [-100, -30, -20, 0, 20, 30, 100]])
    x = x.astype(np.float32)
    dy = rand(*x.shape)
    (y,), (dx,), _, = forward_backward(make_layer('type: "Mish"', backend), backend, [x], [dy])
    xt = t(x).double().requires_grad_()
    ref = F.mish(xt)
    ref.backward(t(dy).double())
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert_close(y, ref.detach().numpy(), rtol=1e-6)
    assert_close(dx, xt.grad.numpy(), rtol=1e-6)


def test_mish_in_place(backend):
    x, dy = rand(2, 3, 4), rand(2, 3, 4)
    layer = make_layer('type: "Mish"', backend)
    (blob,) = blobs(backend, x)
    layer.setup([blob], [blob])
    layer.reshape([blob], [blob])
    layer.forward([blob], [blob])
    blob.diff[...] = backend.asarray(dy)
    layer.backward([blob], [True], [blob])
    xt = t(x).requires_grad_()
    ref = F.mish(xt)
    ref.backward(t(dy))
    assert_close(backend.asnumpy(blob.data), ref.detach().numpy(), rtol=1e-6)
    assert_close(backend.asnumpy(blob.diff), xt.grad.numpy(), rtol=1e-6)


def test_mish_gradient(backend):
    layer = make_layer('type: "Mish"', backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 4, 5) * 2), tops(backend, 1))


# ----------------------------------------------------------------------------------- BN

PSP = ('type: "BN" bn_param { slope_filler { type: "gaussian" std: 1 } '
       'bias_filler { type: "gaussian" std: 1 } %s }')
SEG = ('type: "BN" bn_param { scale_filler { type: "gaussian" std: 1 } '
       'shift_filler { type: "gaussian" std: 1 } %s }')


def column(array):
    return np.asarray(array).reshape(1, -1, 1, 1)


def set_blobs(layer, backend, *arrays):
    for blob, value in zip(layer.blobs, arrays):
        blob.data[...] = backend.asarray(column(value).astype(np.float32))


def host_blobs(layer):
    return [layer.backend.asnumpy(b.data).reshape(-1) for b in layer.blobs]


def batch_moments(x):
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    var = ((x - column(mean)) ** 2).mean(axis=(0, 2, 3))
    return mean, var


def test_pspnet_bn_train_uses_batch_statistics_and_moves_averages(backend):
    x = rand(3, 4, 5, 6) * 2 + 1
    layer = make_layer(PSP % "momentum: 0.8 eps: 0.01", backend, TRAIN)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert [b.shape for b in layer.blobs] == [(1, 4, 1, 1)] * 4
    slope, bias, run_mean, run_var = host_blobs(layer)
    mean, var = batch_moments(x)
    expected = column(slope) * (x - column(mean)) / np.sqrt(column(var) + 0.01) + column(bias)
    assert_close(y, expected)
    # The averages started at 0: avg = 0.8 * 0 + 0.2 * batch.
    assert_close(run_mean, 0.2 * mean)
    assert_close(run_var, 0.2 * var)
    # Statistics are never learned, slope and bias are; the prototxt's lr_mult is overridden.
    specs = layer.layer_param.param
    assert [(s.lr_mult, s.decay_mult) for s in specs[2:]] == [(0, 0), (0, 0)]
    assert specs[0].lr_mult == 1 and layer.param_propagate_down == [True, True, False, False]


@pytest.mark.parametrize("phase,extra", [(TEST, ""), (TRAIN, "frozen: true")])
def test_pspnet_bn_stored_statistics(backend, phase, extra):
    x, dy = rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    layer = make_layer(PSP % ("eps: 0.001 " + extra), backend, phase)
    run_forward(layer, blobs(backend, x), tops(backend, 1))
    if extra:
        assert host_blobs(layer)[3].tolist() == [1, 1, 1]  # a frozen variance starts at 1
    slope, bias, mean, var = rand(3), rand(3), rand(3), rand(3) ** 2
    set_blobs(layer, backend, slope, bias, mean, var)
    (y,), (dx,), (dslope, dbias, dmean, dvar) = forward_backward(layer, backend, [x], [dy])
    inv_std = 1 / np.sqrt(column(var) + 0.001)
    x_norm = (x - column(mean)) * inv_std
    assert_close(y, column(slope) * x_norm + column(bias))
    assert_close(dx, dy * column(slope) * inv_std)
    assert_close(host_blobs(layer)[2], mean) and assert_close(host_blobs(layer)[3], var)
    if extra:  # frozen: nothing learns
        assert not dslope.any() and not dbias.any()
        assert all(s.lr_mult == 0 for s in layer.layer_param.param)
    else:
        assert_close(dslope.ravel(), (dy * x_norm).sum(axis=(0, 2, 3)))
        assert_close(dbias.ravel(), dy.sum(axis=(0, 2, 3)))
    assert not dmean.any() and not dvar.any()


def test_pspnet_bn_backward_matches_torch(backend):
    x, dy = rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    layer = make_layer(PSP % "", backend, TRAIN)
    (y,), (dx,), (dslope, dbias, _, _) = forward_backward(layer, backend, [x], [dy])
    slope, bias = host_blobs(layer)[:2]
    xt, st, bt = (t(a).double().requires_grad_() for a in (x, slope, bias))
    ref = F.batch_norm(xt, None, None, st, bt, training=True, eps=1e-5)
    ref.backward(t(dy).double())
    assert_close(y, ref.detach().numpy())
    for ours, theirs in [(dx, xt.grad), (dslope, st.grad), (dbias, bt.grad)]:
        assert_close(ours.ravel(), theirs.numpy().ravel())


@pytest.mark.parametrize("phase,extra,check_params", [
    (TRAIN, "", True), (TEST, "", False), (TRAIN, "frozen: true", False)])
def test_pspnet_bn_gradient(backend, phase, extra, check_params):
    layer = make_layer(PSP % extra, backend, phase)
    bottom = blobs(backend, rand(2, 3, 3, 4))
    if phase == TEST or extra:
        run_forward(layer, bottom, tops(backend, 1))
        set_blobs(layer, backend, rand(3), rand(3), rand(3), rand(3) ** 2 + 0.5)
    check_gradient(layer, bottom, tops(backend, 1), max_checks=60, check_params=check_params,
                   setup=not (phase == TEST or extra))


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_segnet_bn_learn_normalizes_with_the_batch_in_every_phase(backend, phase):
    x = rand(2, 3, 4, 5) * 3 - 1
    layer = make_layer(SEG % "", backend, phase)
    y, mean_top, var_top = run_forward(layer, blobs(backend, x), tops(backend, 3))
    assert [b.shape for b in layer.blobs] == [(1, 3, 1, 1)] * 2
    scale, shift = host_blobs(layer)
    mean, var = batch_moments(x)
    assert_close(y, column(scale) * (x - column(mean)) / np.sqrt(column(var) + 1e-9)
                 + column(shift))
    assert mean_top.shape == var_top.shape == (1, 3, 1, 1)
    assert_close(mean_top.ravel(), mean)
    assert_close(var_top.ravel(), var)


def test_segnet_bn_inference_is_scale_and_shift(backend):
    x, dy = rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    layer = make_layer(SEG % "bn_mode: INFERENCE", backend, TEST)
    (y,), (dx,), (dscale, dshift) = forward_backward(layer, backend, [x], [dy])
    scale, shift = host_blobs(layer)
    assert_close(y, column(scale) * x + column(shift))
    assert_close(dx, dy * column(scale))
    assert_close(dscale.ravel(), (dy * x).sum(axis=(0, 2, 3)))
    assert_close(dshift.ravel(), dy.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("mode", ["", "bn_mode: INFERENCE"])
def test_segnet_bn_gradient(backend, mode):
    layer = make_layer(SEG % mode, backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 3, 4)), tops(backend, 1), max_checks=60)


def test_bn_in_place(backend):
    x, dy = rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    for text, phase in [(PSP % "", TRAIN), (SEG % "bn_mode: INFERENCE", TEST)]:
        ref_layer = make_layer(text, backend, phase)
        (y,), (dx,), grads = forward_backward(ref_layer, backend, [x], [dy])
        layer = make_layer(text, backend, phase)
        (blob,) = blobs(backend, x)
        layer.setup([blob], [blob])
        for ours, theirs in zip(layer.blobs, ref_layer.blobs):
            ours.data[...] = theirs.data
        layer.reshape([blob], [blob])
        layer.forward([blob], [blob])
        assert_close(backend.asnumpy(blob.data), y)
        blob.diff[...] = backend.asarray(dy)
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward([blob], [True], [blob])
        assert_close(backend.asnumpy(blob.diff), dx)
        assert_close(backend.asnumpy(layer.blobs[0].diff), grads[0])


def test_bn_errors(backend):
    x = rand(1, 3, 4, 4)
    fails(backend, 'type: "BN" bn_param { frozen: true bn_mode: INFERENCE }', x,
          match="mixes caffe-segnet's \\['bn_mode'\\] with hszhao/PSPNet's \\['frozen'\\]")
    fails(backend, PSP % "", x, num_tops=2, match="BN takes 1 top, got 2")
    fails(backend, SEG % "bn_mode: INFERENCE", x, num_tops=3,
          match="LEARN mode up to 3\\), got 3")
    fails(backend, PSP % "", rand(4), match="at least 2 axes")


SEGNET_NET = '''name: "segnet_bn"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "conv_bn" type: "BN" bottom: "conv" top: "conv"
  bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 1 }
             shift_filler { type: "constant" value: 0.001 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up"
  upsample_param { scale: 2 } }
'''


def test_segnet_style_net_runs(tmp_path):
    path = tmp_path / "segnet.prototxt"
    path.write_text(SEGNET_NET)
    net = Net(str(path), TEST)
    assert [b.shape for b in net.params["conv_bn"]] == [(1, 4, 1, 1)] * 2
    net.forward(data=rand(2, 3, 6, 8))
    assert net.blobs["up"].shape == (2, 4, 6, 8) and np.isfinite(net.blobs["up"].data).all()


def conv_bn_relu(name, bottom, outputs, kernel, stride=1, pad=0):
    """PSPNet's block: convolution without bias, frozen-style BN, ReLU in place."""
    return ('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s" convolution_param '
            '{ num_output: %d kernel_size: %d stride: %d pad: %d bias_term: false } }\n'
            'layer { name: "%s/bn" type: "BN" bottom: "%s" top: "%s" bn_param { eps: 1e-5 } }\n'
            'layer { name: "%s/relu" type: "ReLU" bottom: "%s" top: "%s" }\n'
            % (name, bottom, name, outputs, kernel, stride, pad, name, name, name,
               name, name, name))


def pspnet_small():
    """A PSPNet in miniature: a 12 x 12 feature map, the pyramid pooling module (bins 1, 2,
    3, 6: AVE pooling, 1x1 conv + BN, Interp back to 12 x 12, Concat), a head, zoom x 2."""
    text = ('name: "psp_small" input: "data" input_dim: 1 input_dim: 3 input_dim: 24 '
            'input_dim: 24\n' + conv_bn_relu("conv1", "data", 8, 3, 2, 1))
    branches = ["conv1"]
    for bins in (1, 2, 3, 6):
        pool = "pool%d" % bins
        text += ('layer { name: "%s" type: "Pooling" bottom: "conv1" top: "%s" pooling_param '
                 '{ pool: AVE kernel_size: %d stride: %d } }\n' % (pool, pool, 12 // bins,
                                                                      12 // bins))
        text += conv_bn_relu(pool + "/conv", pool, 4, 1)
        text += ('layer { name: "%s/interp" type: "Interp" bottom: "%s/conv" top: "%s/interp" '
                 'interp_param { height: 12 width: 12 } }\n' % (pool, pool, pool))
        branches.append(pool + "/interp")
    text += ('layer { name: "concat" type: "Concat" %s top: "concat" }\n'
             % " ".join('bottom: "%s"' % b for b in branches))
    text += conv_bn_relu("head", "concat", 6, 3, 1, 1)
    text += ('layer { name: "zoom" type: "Interp" bottom: "head" top: "zoom" '
             'interp_param { zoom_factor: 2 } }\n')
    return text_format.Parse(text, pb.NetParameter())


def batchnorm_twin(param):
    """The same net with every (frozen) BN as BatchNorm + Scale, which OpenCV runs."""
    twin = pb.NetParameter()
    twin.CopyFrom(param)
    del twin.layer[:]
    for lp in param.layer:
        if lp.type != "BN":
            twin.layer.add().CopyFrom(lp)
            continue
        norm = twin.layer.add(name=lp.name, type="BatchNorm", bottom=lp.bottom, top=lp.top)
        norm.batch_norm_param.use_global_stats = True
        norm.batch_norm_param.eps = lp.bn_param.eps
        twin.layer.add(name=lp.name + "/scale", type="Scale", bottom=lp.top, top=lp.top,
                       scale_param=pb.ScaleParameter(bias_term=True))
    return twin


def test_pspnet_style_net_matches_its_batchnorm_twin_in_opencv(tmp_path):
    param = pspnet_small()
    net = Net(param, TEST)
    rs = np.random.RandomState(5)
    for name, params in net.params.items():
        if len(params) == 4:  # BN: slope, bias, mean, variance
            for b, value in zip(params, (rs.uniform(0.5, 1.5, b.shape) for b in params)):
                b.data[...] = value.astype(np.float32)
            params[1].data[...] -= 1
            params[2].data[...] -= 1
        else:
            fan_in = np.prod(params[0].shape[1:])
            params[0].data[...] = (rs.standard_normal(params[0].shape)
                                   * np.sqrt(2.0 / fan_in)).astype(np.float32)
            for b in params[1:]:
                b.data[...] = 0
    x = rand(1, 3, 24, 24)
    out = net.forward(data=x)
    (name, ours), = out.items()
    assert ours.shape == (1, 6, 23, 23) and np.isfinite(ours).all()

    twin = Net(batchnorm_twin(param), TEST)
    for name, params in net.params.items():
        if len(params) == 4:
            slope, bias, mean, var = (p.data for p in params)
            norm, scale = twin.params[name], twin.params[name + "/scale"]
            norm[0].data[...] = mean.reshape(-1)
            norm[1].data[...] = var.reshape(-1)
            norm[2].data[...] = 1
            scale[0].data[...] = slope.reshape(-1)
            scale[1].data[...] = bias.reshape(-1)
        else:
            for ours_blob, twin_blob in zip(params, twin.params[name]):
                twin_blob.data[...] = ours_blob.data
    twin.save(str(tmp_path / "twin.caffemodel"))
    (tmp_path / "twin.prototxt").write_text(text_format.MessageToString(batchnorm_twin(param)))
    cv = opencv_net(str(tmp_path / "twin.prototxt"), str(tmp_path / "twin.caffemodel"))
    cv.setInput(x, "data")
    assert_close(ours, cv.forward(), rtol=1e-4)
