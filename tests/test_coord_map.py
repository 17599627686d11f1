"""netkit.coord_map (pycaffe's coord_map): maps between NetSpec tops derived by hand,
pycaffe's test scenarios, crops that align real pixels in a Net, and the FCN-32s/16s/8s
crop offsets of the published fcn.berkeleyvision.org prototxts."""
import numpy as np
import pytest

import netkit.coord_map
from netkit import NetSpec
from netkit import layers as L
from netkit import params as P
from netkit.coord_map import (AxisMismatchException, UndefinedMapException, compose,
                              conv_params, coord_map, coord_map_from_to, crop, crop_params,
                              inverse)
from netkit.layer import TEST
from netkit.net import Net


def chain(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """data -> conv(ks, stride, pad) -> max pool(pool, stride pool) -> deconv(kernel
    2 * dstride, stride dstride, pad dpad), with a second input `aux`."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    # Deconvolution has no parameter message of its own: its fields go in
    # convolution_param (as FCN's net.py writes them) for the net to serialize.
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(
        num_output=10, kernel_size=deconv_ks, stride=dstride, pad=dpad))
    return n


def chain_shift(pad=0, pool=2, dpad=0):
    """b of coord_map_from_to(deconv, data) for `chain` with a 3x3 stride-1 conv and
    dstride == pool, by hand. Input position x is the centre of conv output x + pad - 1;
    pool output y covers conv outputs P*y .. P*y + P - 1, centre P*y + (P - 1)/2; deconv
    output z of pool input y centres at P*y + (2P - 1)/2 - dpad. So data position x maps
    to deconv position x + pad - 1 - (P - 1)/2 + (2P - 1)/2 - dpad = x + pad + P/2 - 1 -
    dpad, and deconv position z maps back to data position z - (pad + P/2 - 1 - dpad)."""
    return -(pad + pool / 2 - 1 - dpad)


def assert_map(actual, axis, a, b):
    ax_, a_, b_ = actual
    assert ax_ == axis
    np.testing.assert_array_equal(np.broadcast_to(a_, np.shape(a)), a)
    np.testing.assert_array_equal(np.broadcast_to(b_, np.shape(b)), b)


# -- pycaffe's scenarios ------------------------------------------------------------------
@pytest.mark.parametrize("pool,b", [(2, 0), (4, -1)])
def test_conv_pool_deconv(pool, b):
    # 2x pool then 2x deconv is the identity; 4x and 4x shifts by one pixel.
    assert chain_shift(pool=pool) == b
    n = chain(pool=pool, dstride=pool)
    assert_map(coord_map_from_to(n.deconv, n.data), 1, [1], [b])
    # ... and the map the other way is its inverse.
    assert_map(coord_map_from_to(n.data, n.deconv), 1, [1], [-b])


def test_pass_through_layers_are_the_identity():
    assert netkit.coord_map.PASS_THROUGH_LAYERS == [
        "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
        "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
        "Threshold"]
    n = chain(pool=4, dstride=4)
    for type_name in netkit.coord_map.PASS_THROUGH_LAYERS:
        top = getattr(L, type_name)(n.deconv)
        assert_map(coord_map_from_to(top, n.data), 1, [1], [-1])
    n.relu = L.ReLU(n.deconv, in_place=True)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1, pad=0)
    n.sum = L.Eltwise(n.conv1x1, n.deconv, operation=P.Eltwise.SUM)
    for top in (n.relu, n.conv1x1, n.sum):
        assert_map(coord_map_from_to(top, n.data), 1, [1], [-1])
    assert coord_map(n.relu.fn) == (None, 1, 0)


@pytest.mark.parametrize("pad", [1, 3, 7])
def test_padding(pad):
    # Conv padding moves the output right (b falls by pad), deconv padding moves it
    # left, and the two cancel.
    for conv_pad, dpad in [(pad, 0), (0, pad), (pad, pad)]:
        n = chain(pad=conv_pad, dpad=dpad)
        b = chain_shift(pad=conv_pad, dpad=dpad)
        assert b == -conv_pad + dpad
        assert_map(coord_map_from_to(n.deconv, n.data), 1, [1], [b])


def test_layer_with_two_bottoms_maps_each_alike():
    n = chain()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10,
                                            kernel_size=5, stride=2, pad=0)
    # A 5x5 stride-2 conv centres output y on input 2y + 2, so input x is output
    # x/2 - 1.
    assert_map(coord_map_from_to(n.conv_data, n.data), 1, [2], [2])
    assert_map(coord_map_from_to(n.conv_aux, n.aux), 1, [2], [2])
    assert_map(coord_map_from_to(n.data, n.conv_data), 1, [1 / 2], [-1])


def test_rectangular_kernels_map_each_axis_alone():
    n3 = chain(ks=3, stride=1, pad=0)
    n5 = chain(ks=5, stride=2, pad=10)
    n35 = chain(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax3, a3, b3 = coord_map_from_to(n3.deconv, n3.data)
    ax5, a5, b5 = coord_map_from_to(n5.deconv, n5.data)
    ax35, a35, b35 = coord_map_from_to(n35.deconv, n35.data)
    assert ax3 == ax5 == ax35 == 1
    assert (a35[0], b35[0]) == (a3[0], b3[0]) == (1, 0)
    # 5x5 stride 2 pad 10: x -> (x + 8)/2, pool 2 -> ((x + 8)/2 - 1/2)/2, deconv 4x4
    # stride 2 -> (x + 8)/2 - 1/2 + 3/2 = x/2 + 5; so deconv z is data 2z - 10.
    assert (a35[1], b35[1]) == (a5[0], b5[0]) == (2, -10)


def test_nd_convolution_maps_every_spatial_axis():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1],
                           pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2, pad=0)
    # chain_shift per axis with pad 0, 1, 2.
    assert_map(coord_map_from_to(n.deconv, n.data), 1, [1, 1, 1], [0, -1, -2])


def test_dilation_widens_the_kernel():
    # A 3x3 kernel with dilation 2 spans 5 pixels: the map of a 5x5 kernel.
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.dilated = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2)
    n.wide = L.Convolution(n.data, num_output=1, kernel_size=5)
    assert_map(coord_map_from_to(n.data, n.dilated), 1, [1], [-2])
    assert_map(coord_map_from_to(n.data, n.wide), 1, [1], [-2])
    np.testing.assert_array_equal(conv_params(n.dilated.fn)[2], [5])


def test_crop_of_crop_adds_its_offset():
    for offset in (0, 3, 10):
        n = chain()
        n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
        n.crop_nested = L.Crop(n.deconv, n.data, crop_param=dict(axis=2, offset=[offset]))
        for top in (n.crop, n.crop_nested):
            assert_map(coord_map_from_to(top, n.data), 1, [1], [offset])


def test_crop_helper_writes_the_aligning_crop_layer():
    n = chain(pool=4, dstride=4)  # deconv position z is data position z - 1
    n.cropped = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert (layer.type, list(layer.bottom)) == ("Crop", ["deconv", "data"])
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [1]
    # The crop is aligned with data, and cropping it again changes nothing.
    assert_map(coord_map_from_to(n.cropped, n.data), 1, [1], [0])
    n.again = crop(n.cropped, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [0]


def test_crop_helper_per_axis_offsets():
    n = chain(ks=[3, 5], stride=[1, 1], pad=[0, 4], pool=4, dstride=4)
    # Axis 2: chain_shift(pool=4) = -1. Axis 3: the 5x5 conv with pad 4 moves x to x + 2,
    # as a 3x3 conv with pad 3 does: chain_shift(pad=3, pool=4) = -4.
    n.cropped = crop(n.deconv, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [1, 4]


def test_nested_crops_compose():
    # The 8x chain moves data x to deconv x + 3 (chain_shift(pool=8) = -3); a 1x1 conv
    # with pad 2 moves it to x + 2.
    n = chain(pool=8, dstride=8)
    n.padded = L.Convolution(n.data, num_output=1, kernel_size=1, pad=2)
    n.to_padded = crop(n.deconv, n.padded)
    assert list(n.to_padded.fn.params["crop_param"]["offset"]) == [1]
    n.to_data = crop(n.padded, n.data)
    assert list(n.to_data.fn.params["crop_param"]["offset"]) == [2]
    # The deconv cropped to `padded` is aligned with it: cropping it to data takes the
    # same offset, found through the first crop's first bottom.
    n.final = crop(n.to_padded, n.data)
    assert list(n.final.fn.params["crop_param"]["offset"]) == [2]


# -- errors -------------------------------------------------------------------------------
def test_unconnected_tops():
    n = chain()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="Could not compute map between tops"):
        coord_map_from_to(n.ip, n.data)
    n2 = chain()
    with pytest.raises(RuntimeError):
        coord_map_from_to(n.deconv, n2.data)


def test_scale_mismatch():
    n = chain(pool=3, dstride=2)  # 3x down, 2x up
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.deconv, n.data)


def test_negative_crop():
    n = chain(dpad=10)  # the deconv is smaller than the data
    with pytest.raises(AssertionError, match="cannot crop negative offset"):
        crop(n.deconv, n.data)


def test_fractional_offset():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=2, pad=1)  # x -> x + 1/2
    with pytest.raises(AssertionError, match="noninteger"):
        crop(n.conv, n.data)


def test_axis_mismatch():
    n = chain()
    n.crop3 = L.Crop(n.deconv, n.data, axis=3, offset=1)  # maps along axis 2
    with pytest.raises(AxisMismatchException):
        coord_map_from_to(n.crop3, n.data)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


def test_undefined_maps():
    n = chain()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    n.gpool = L.Pooling(n.deconv, pool=P.Pooling.AVE, global_pooling=True)
    n.softmax = L.Softmax(n.deconv)
    for top in (n.ip, n.gpool, n.softmax, n.data):
        with pytest.raises(UndefinedMapException):
            coord_map(top.fn)


def test_legacy_h_w_fields_are_refused():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.flat = L.Convolution(n.data, num_output=1, kernel_h=3, kernel_w=3)
    n.nested = L.Convolution(n.data, convolution_param=dict(num_output=1, kernel_size=3,
                                                            pad_h=1, pad_w=1))
    for top in (n.flat, n.nested):
        with pytest.raises(AssertionError, match="legacy _h/_w"):
            coord_map_from_to(top, n.data)


# -- parameter reading and the algebra ----------------------------------------------------
def test_conv_and_crop_params():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.plain = L.Convolution(n.data, num_output=1, kernel_size=3)
    n.nested = L.Deconvolution(n.data, convolution_param=dict(
        num_output=1, kernel_size=[3, 4], stride=2, pad=[1, 0], dilation=3, axis=1))
    n.pool = L.Pooling(n.data, pooling_param=dict(pool=P.Pooling.MAX, kernel_size=2, stride=2))
    n.crop = L.Crop(n.plain, n.data)
    params = [conv_params(t.fn) for t in (n.plain, n.nested, n.pool)]
    expected = [(1, [1], [3], [0]), (1, [2], [7, 10], [1, 0]), (1, [2], [2], [0])]
    for got, want in zip(params, expected):
        assert got[0] == want[0]
        for g, w in zip(got[1:], want[1:]):
            np.testing.assert_array_equal(g, w)
    axis, offset = crop_params(n.crop.fn)
    assert axis == 2 and list(offset) == [0]


def test_compose_and_inverse():
    m1 = (1, np.array([0.5, 2.0]), np.array([1.0, -3.0]))
    m2 = (None, np.array([4.0, 0.25]), np.array([-2.0, 0.5]))
    x = np.array([7.0, -1.5])
    axis, a, b = compose(m1, m2)
    assert axis == 1
    # compose(m1, m2) applies m2 first.
    np.testing.assert_allclose(a * x + b, m1[1] * (m2[1] * x + m2[2]) + m1[2])
    axis, a, b = compose(m1, inverse(m1))
    np.testing.assert_allclose(a, 1)
    np.testing.assert_allclose(b, 0)
    assert_map(compose((None, 1, 0), m1), *m1)


# -- crops in a real net ------------------------------------------------------------------
def centre_tap(net, name):
    """Set the layer's single kernel to a 1 at its centre and its bias to 0."""
    weights = net.params[name][0].data
    weights[...] = 0
    weights[..., weights.shape[-2] // 2, weights.shape[-1] // 2] = 1
    net.params[name][1].data[...] = 0


def test_crop_aligns_the_pixels_it_maps():
    # Centre-tap convolutions only move pixels (by their pad minus half the kernel), so the
    # crop that coord_map computes must give back the input exactly.
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 9, 11]))
    n.conv1 = L.Convolution(n.data, num_output=1, kernel_size=5, pad=4)      # x -> x + 2
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.conv2 = L.Convolution(n.relu1, num_output=1, kernel_size=[3, 1], pad=[3, 1])
    n.score = crop(n.conv2, n.data)                 # x -> x + (2, 1) more
    layer = n.to_proto().layer[-1]
    assert list(layer.crop_param.offset) == [4, 3]
    net = Net(n.to_proto(), TEST)
    centre_tap(net, "conv1")
    centre_tap(net, "conv2")
    data = np.random.rand(1, 1, 9, 11).astype(np.float32) + 0.1
    np.testing.assert_array_equal(net.forward(data=data)["score"], data)


# -- FCN ----------------------------------------------------------------------------------
def fcn(stride, width=1, classes=21):
    """VGG-16 FCN-32s, -16s or -8s as fcn.berkeleyvision.org's voc-fcn*/net.py lay them
    out (an Input instead of the Python data layer, no loss), every channel count
    divided by `width`."""
    def conv_relu(bottom, nout, ks=3, pad=1):
        conv = L.Convolution(bottom, kernel_size=ks, num_output=max(nout // width, 1),
                             pad=pad, weight_filler=dict(type="gaussian", std=0.1))
        return conv, L.ReLU(conv, in_place=True)

    def upscore(bottom, factor):
        return L.Deconvolution(bottom, convolution_param=dict(
            num_output=classes, kernel_size=2 * factor, stride=factor, bias_term=False,
            weight_filler=dict(type="gaussian", std=0.1)))

    def score(bottom):
        return L.Convolution(bottom, num_output=classes, kernel_size=1, pad=0,
                             weight_filler=dict(type="gaussian", std=0.1))

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    top = n.data
    blocks = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    for block, (nout, repeats) in enumerate(blocks, start=1):
        for k in range(1, repeats + 1):
            conv, top = conv_relu(top, nout, pad=100 if (block, k) == (1, 1) else 1)
            n["conv%d_%d" % (block, k)], n["relu%d_%d" % (block, k)] = conv, top
        top = n["pool%d" % block] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2,
                                              stride=2)
    n.fc6, n.relu6 = conv_relu(n.pool5, 4096, ks=7, pad=0)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7, n.relu7 = conv_relu(n.drop6, 4096, ks=1, pad=0)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = score(n.drop7)
    if stride == 32:
        n.upscore = upscore(n.score_fr, 32)
        n.score = crop(n.upscore, n.data)
        return n
    n.upscore2 = upscore(n.score_fr, 2)
    n.score_pool4 = score(n.pool4)
    n.score_pool4c = crop(n.score_pool4, n.upscore2)
    n.fuse_pool4 = L.Eltwise(n.upscore2, n.score_pool4c, operation=P.Eltwise.SUM)
    if stride == 16:
        n.upscore16 = upscore(n.fuse_pool4, 16)
        n.score = crop(n.upscore16, n.data)
        return n
    n.upscore_pool4 = upscore(n.fuse_pool4, 2)
    n.score_pool3 = score(n.pool3)
    n.score_pool3c = crop(n.score_pool3, n.upscore_pool4)
    n.fuse_pool3 = L.Eltwise(n.upscore_pool4, n.score_pool3c, operation=P.Eltwise.SUM)
    n.upscore8 = upscore(n.fuse_pool3, 8)
    n.score = crop(n.upscore8, n.data)
    return n


# The Crop layers of voc-fcn32s, voc-fcn16s and voc-fcn8s/val.prototxt:
# {name: (bottoms, offset)}, all with axis 2.
PUBLISHED_CROPS = {
    32: {"score": (["upscore", "data"], 19)},
    16: {"score_pool4c": (["score_pool4", "upscore2"], 5),
         "score": (["upscore16", "data"], 27)},
    8: {"score_pool4c": (["score_pool4", "upscore2"], 5),
        "score_pool3c": (["score_pool3", "upscore_pool4"], 9),
        "score": (["upscore8", "data"], 31)},
}


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_fcn_crops_match_the_published_prototxts(stride):
    layers = {layer.name: layer for layer in fcn(stride).to_proto().layer if layer.type == "Crop"}
    assert {name: (list(layer.bottom), list(layer.crop_param.offset))
            for name, layer in layers.items()} == {
        name: (bottoms, [offset]) for name, (bottoms, offset) in PUBLISHED_CROPS[stride].items()}
    assert all(layer.crop_param.axis == 2 for layer in layers.values())
    assert ('crop_param {\n    axis: 2\n    offset: %d\n  }' % PUBLISHED_CROPS[stride]["score"][1]
            in str(fcn(stride).to_proto()))


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_fcn_nets_give_scores_of_the_input_size(stride):
    net = Net(fcn(stride, width=32, classes=3).to_proto(), TEST)
    for height, width in [(64, 64), (37, 50), (101, 29)]:
        data = np.random.rand(1, 3, height, width).astype(np.float32)
        score = net.forward(data=data)["score"]
        assert score.shape == (1, 3, height, width)
        assert np.isfinite(score).all() and score.std() > 0
