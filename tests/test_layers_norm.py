"""BatchNorm, Scale, Bias and MVN: forward against PyTorch or closed-form numpy, Caffe's
gradient check on every backend, Caffe's statistics bookkeeping, model-file blobs, and the
numbers of OpenCV's Caffe importer on a deploy net that netkit saved."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import blobs, check_gradient, make_layer, run_forward, tops
from netkit import TEST, TRAIN, Net
from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.layer import LayerSetupError
from netkit.weights import array_to_blob_proto

RS = np.random.RandomState(5)


def rand(*shape, low=-1.0, high=1.0):
    return RS.uniform(low, high, size=shape).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def host(backend, array):
    return backend.asnumpy(array)


def set_data(backend, blob, values):
    blob.data[...] = backend.asarray(np.asarray(values, dtype=np.float32).reshape(blob.shape))


def set_diff(backend, blob, values):
    blob.diff[...] = backend.asarray(np.asarray(values, dtype=np.float32).reshape(blob.shape))


def forward_backward(backend, layer, bottom, top, dy):
    (y,) = run_forward(layer, bottom, top)
    set_diff(backend, top[0], dy)
    layer.backward(top, [True] * len(bottom), bottom)
    return y, host(backend, bottom[0].diff)


# ---------------------------------------------------------------- BatchNorm

def batch_norm(backend, phase=TRAIN, param=""):
    return make_layer('type: "BatchNorm" batch_norm_param { %s }' % param, backend, phase)


@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3), (5,)])
def test_batch_norm_train_normalizes_with_batch_statistics(backend, shape):
    x = rand(*shape, low=-3, high=5)
    layer = batch_norm(backend, TRAIN, "eps: 0.001")
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    tx = t(x) if len(shape) > 1 else t(x).reshape(-1, 1)
    reference = F.batch_norm(tx, None, None, training=True, eps=1e-3).reshape(shape)
    np.testing.assert_allclose(y, reference.numpy(), rtol=1e-4, atol=1e-5)


def test_batch_norm_blobs_are_statistics_with_caffe_shapes(backend):
    layer = batch_norm(backend)
    run_forward(layer, blobs(backend, rand(2, 7, 3)), tops(backend, 1))
    assert [b.shape for b in layer.blobs] == [(7,), (7,), (1,)]
    # Caffe masks them from the solver with one lr_mult 0 ParamSpec each.
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    assert layer.param_propagate_down == [False, False, False]


def test_batch_norm_running_sums_follow_caffe(backend):
    """factor = factor * f + 1; mean_sum = mean_sum * f + mean;
    var_sum = var_sum * f + m / (m - 1) * biased variance."""
    f = 0.9
    layer = batch_norm(backend, TRAIN, "moving_average_fraction: %g" % f)
    x1, x2 = rand(3, 2, 4, low=0, high=2), rand(3, 2, 4, low=-3, high=1)
    bottom, top = blobs(backend, x1), tops(backend, 1)
    run_forward(layer, bottom, top)
    set_data(backend, bottom[0], x2)
    layer.forward(bottom, top)
    m = 3 * 4
    mean = [x.mean(axis=(0, 2), dtype=np.float64) for x in (x1, x2)]
    var = [x.var(axis=(0, 2), dtype=np.float64) * m / (m - 1) for x in (x1, x2)]
    sums = [host(backend, b.data) for b in layer.blobs]
    np.testing.assert_allclose(sums[0], mean[0] * f + mean[1], rtol=1e-5)
    np.testing.assert_allclose(sums[1], var[0] * f + var[1], rtol=1e-5)
    np.testing.assert_allclose(sums[2], [1 * f + 1], rtol=1e-7)


def test_batch_norm_single_value_per_channel_has_no_bias_correction(backend):
    layer = batch_norm(backend)
    x = rand(1, 3, low=-2, high=2)
    run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_array_equal(host(backend, layer.blobs[1].data), 0)
    np.testing.assert_allclose(host(backend, layer.blobs[0].data), x[0])


def test_batch_norm_test_phase_uses_stored_sums_divided_by_the_factor(backend):
    x = rand(2, 3, 4, 4, low=-2, high=3)
    mean_sum, var_sum, factor = rand(3, low=-1, high=1), rand(3, low=0.5, high=2), 2.5
    layer = batch_norm(backend, TEST, "eps: 0.0001")
    bottom, top = blobs(backend, x), tops(backend, 1)
    layer.setup(bottom, top)
    for blob, value in zip(layer.blobs, (mean_sum, var_sum, [factor])):
        set_data(backend, blob, value)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    y = host(backend, top[0].data)
    reference = F.batch_norm(t(x), t(mean_sum / factor), t(var_sum / factor), training=False,
                             eps=1e-4)
    np.testing.assert_allclose(y, reference.numpy(), rtol=1e-5, atol=1e-5)
    # The stored statistics are left alone.
    np.testing.assert_allclose(host(backend, layer.blobs[2].data), [factor])


def test_batch_norm_zero_factor_means_zero_statistics(backend):
    layer = batch_norm(backend, TEST)
    x = rand(2, 3, 2)
    bottom, top = blobs(backend, x), tops(backend, 1)
    layer.setup(bottom, top)
    set_data(backend, layer.blobs[0], [5, 5, 5])
    set_data(backend, layer.blobs[1], [7, 7, 7])
    layer.reshape(bottom, top)
    with np.errstate(divide="raise", invalid="raise"):
        layer.forward(bottom, top)
    np.testing.assert_allclose(host(backend, top[0].data), x / np.sqrt(np.float32(1e-5)),
                               rtol=1e-5)


@pytest.mark.parametrize("phase, param, global_stats", [
    (TRAIN, "", False), (TEST, "", True),
    (TRAIN, "use_global_stats: true", True), (TEST, "use_global_stats: false", False)])
def test_batch_norm_use_global_stats_defaults_to_the_phase(backend, phase, param, global_stats):
    layer = batch_norm(backend, phase, param)
    x = rand(4, 2, 3, low=2, high=4)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert layer.use_global_stats is global_stats
    # Batch statistics centre the output; the zero stored statistics only divide it.
    if global_stats:
        np.testing.assert_allclose(y, x / np.sqrt(np.float32(1e-5)), rtol=1e-5)
        np.testing.assert_array_equal(host(backend, layer.blobs[2].data), 0)
    else:
        np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-5)
        np.testing.assert_array_equal(host(backend, layer.blobs[2].data), 1)


@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (5, 3)])
def test_batch_norm_gradient_with_batch_statistics(backend, shape):
    layer = batch_norm(backend, TRAIN)
    check_gradient(layer, blobs(backend, rand(*shape, low=-2, high=2)), tops(backend, 1),
                   max_checks=60, check_params=False)


def test_batch_norm_gradient_with_global_statistics(backend):
    layer = batch_norm(backend, TEST)
    bottom, top = blobs(backend, rand(2, 3, 2, 2)), tops(backend, 1)
    layer.setup(bottom, top)
    for blob, value in zip(layer.blobs, ([0.3, -0.2, 0.1], [0.5, 2.0, 1.0], [2.0])):
        set_data(backend, blob, value)
    check_gradient(layer, bottom, top, max_checks=60, check_params=False, setup=False)


def test_batch_norm_gradient_matches_torch(backend):
    x, dy = rand(4, 3, 5, low=-2, high=2), rand(4, 3, 5)
    _, dx = forward_backward(backend, batch_norm(backend), blobs(backend, x), tops(backend, 1),
                             dy)
    tx = t(x).requires_grad_()
    F.batch_norm(tx, None, None, training=True, eps=1e-5).backward(t(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_batch_norm_in_place_matches_out_of_place(backend, phase):
    x, dy = rand(3, 2, 4, low=-2, high=2), rand(3, 2, 4)
    out = forward_backward(backend, batch_norm(backend, phase), blobs(backend, x),
                           tops(backend, 1), dy)
    (blob,) = blobs(backend, x)
    inside = forward_backward(backend, batch_norm(backend, phase), [blob], [blob], dy)
    np.testing.assert_allclose(inside[0], out[0], rtol=1e-6)
    np.testing.assert_allclose(inside[1], out[1], rtol=1e-6)


def test_batch_norm_backward_survives_a_later_in_place_layer(backend):
    """The top may be overwritten after forward (an in-place ReLU); backward uses its copy."""
    x, dy = rand(3, 2, 4, low=-2, high=2), rand(3, 2, 4)
    expected = forward_backward(backend, batch_norm(backend), blobs(backend, x),
                                tops(backend, 1), dy)[1]
    layer = batch_norm(backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    run_forward(layer, bottom, top)
    top[0].data[...] = 0
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(host(backend, bottom[0].diff), expected, rtol=1e-6)


def test_batch_norm_refuses_learned_statistics(backend):
    layer = make_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }', backend)
    with pytest.raises(LayerSetupError, match="lr_mult"):
        run_forward(layer, blobs(backend, rand(2, 3)), tops(backend, 1))


def test_batch_norm_keeps_given_zero_lr_specs(backend):
    layer = make_layer('type: "BatchNorm" param { lr_mult: 0 decay_mult: 0 }', backend)
    run_forward(layer, blobs(backend, rand(2, 3)), tops(backend, 1))
    assert [(p.lr_mult, p.decay_mult) for p in layer.layer_param.param] == [
        (0, 0), (0, 1), (0, 1)]


def test_batch_norm_channel_count_is_fixed_at_setup(backend):
    layer = batch_norm(backend)
    run_forward(layer, blobs(backend, rand(2, 3)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="3 channels"):
        layer.reshape(blobs(backend, rand(2, 4)), tops(backend, 1))


# ---------------------------------------------------------------- BatchNorm + Scale files

RESNET_STYLE = """
name: "bn_scale"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
"""


def resnet_style_weights(mean_sum, var_sum, factor, gamma, beta, legacy=False):
    """A .caffemodel as Caffe writes it (or, with legacy, with 4-D num/channels/... shapes)."""
    net = pb.NetParameter(name="bn_scale")
    for name, kind, arrays in (("bn", "BatchNorm", (mean_sum, var_sum, factor)),
                               ("scale", "Scale", (gamma, beta))):
        layer = net.layer.add(name=name, type=kind)
        for a in arrays:
            a = np.asarray(a, np.float32)
            if legacy:
                proto = layer.blobs.add(num=1, channels=1, height=1, width=a.size)
                proto.data.extend(a.tolist())
            else:
                array_to_blob_proto(a, proto=layer.blobs.add())
    return net


@pytest.mark.parametrize("legacy", [False, True])
def test_resnet_style_batch_norm_and_scale_load_from_a_caffemodel(tmp_path, legacy):
    mean_sum, var_sum, factor = [0.5, -1.0, 2.0], [1.0, 4.0, 0.25], [0.5]
    gamma, beta = [1.5, -0.5, 2.0], [0.1, 0.2, -0.3]
    path = tmp_path / "bn_scale.caffemodel"
    path.write_bytes(resnet_style_weights(mean_sum, var_sum, factor, gamma, beta, legacy)
                     .SerializeToString())
    net = Net(RESNET_STYLE, TEST, weights=str(path))
    assert [b.shape for b in net.params["bn"]] == [(3,), (3,), (1,)]
    assert [b.shape for b in net.params["scale"]] == [(3,), (3,)]
    x = rand(2, 3, 4, 4, low=-2, high=2)
    y = net.forward(data=x)["bn"]
    mean, var = np.array(mean_sum) / 0.5, np.array(var_sum) / 0.5
    c = (1, 3, 1, 1)
    expected = ((x - mean.reshape(c)) / np.sqrt(var.reshape(c) + 1e-5)
                * np.reshape(gamma, c) + np.reshape(beta, c))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # BatchNorm's statistics are not learnable parameters of the net.
    lr = {p.name: p.lr_mult for p in net.learnable_params}
    assert [lr["bn[%d]" % i] for i in range(3)] == [0, 0, 0]
    assert lr["scale[0]"] == lr["scale[1]"] == 1


def test_batch_norm_blob_count_mismatch_is_refused(tmp_path):
    weights = resnet_style_weights([0, 0, 0], [1, 1, 1], [1], [1, 1, 1], [0, 0, 0])
    del weights.layer[0].blobs[2]
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(weights.SerializeToString())
    with pytest.raises(NetkitError, match="'bn'"):
        Net(RESNET_STYLE, TEST, weights=str(path))


# ---------------------------------------------------------------- Scale and Bias

SCALE_GEOMETRY = [
    # (scale_param / bias_param text, bottom shape, operand shape, numpy broadcast shape)
    ("", (2, 3, 4, 5), (3,), (1, 3, 1, 1)),
    ("axis: 1 num_axes: 2", (2, 3, 4, 5), (3, 4), (1, 3, 4, 1)),
    ("axis: 0 num_axes: -1", (2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ("axis: -1", (2, 3, 4), (4,), (1, 1, 4)),
    ("axis: 2 num_axes: 0", (2, 3, 4), (), ()),
    ("axis: 0", (4, 6), (4,), (4, 1)),
]


@pytest.mark.parametrize("param, shape, operand, bshape", SCALE_GEOMETRY)
def test_scale_learned_operand_broadcasts_like_caffe(backend, param, shape, operand, bshape):
    layer = make_layer('type: "Scale" scale_param { %s filler { type: "gaussian" } '
                       'bias_term: true bias_filler { type: "uniform" } }' % param, backend)
    x = rand(*shape)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert [b.shape for b in layer.blobs] == [operand, operand]
    scale, bias = (host(backend, b.data).reshape(bshape) for b in layer.blobs)
    np.testing.assert_allclose(y, x * scale + bias, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("param, shape, operand, bshape", SCALE_GEOMETRY)
def test_scale_gradient_learned(backend, param, shape, operand, bshape):
    layer = make_layer('type: "Scale" scale_param { %s filler { type: "gaussian" } '
                       'bias_term: true bias_filler { type: "gaussian" } }' % param, backend)
    check_gradient(layer, blobs(backend, rand(*shape)), tops(backend, 1), max_checks=40)


@pytest.mark.parametrize("param, shape, operand, bshape", SCALE_GEOMETRY)
def test_scale_by_second_bottom(backend, param, shape, operand, bshape):
    layer = make_layer('type: "Scale" scale_param { %s }' % param, backend)
    x, s = rand(*shape), rand(*operand, low=0.5, high=2)
    (y,) = run_forward(layer, blobs(backend, x, s), tops(backend, 1))
    assert layer.blobs == []
    np.testing.assert_allclose(y, x * s.reshape(bshape), rtol=1e-6)
    layer = make_layer('type: "Scale" scale_param { %s }' % param, backend)
    check_gradient(layer, blobs(backend, x, s), tops(backend, 1), max_checks=40)


def test_scale_defaults_identity_and_zero_bias(backend):
    layer = make_layer('type: "Scale" scale_param { bias_term: true }', backend)
    x = rand(2, 3, 2)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_array_equal(host(backend, layer.blobs[0].data), 1)
    np.testing.assert_array_equal(host(backend, layer.blobs[1].data), 0)
    np.testing.assert_array_equal(y, x)


def test_scale_two_bottoms_with_bias_term_learns_only_the_bias(backend):
    layer = make_layer('type: "Scale" scale_param { bias_term: true '
                       'bias_filler { type: "gaussian" } }', backend)
    x, s = rand(2, 3, 4), rand(3, 4)
    bottom = blobs(backend, x, s)
    (y,) = run_forward(layer, bottom, tops(backend, 1))
    assert [b.shape for b in layer.blobs] == [(3, 4)]
    bias = host(backend, layer.blobs[0].data)
    np.testing.assert_allclose(y, x * s + bias, rtol=1e-6, atol=1e-7)
    layer = make_layer('type: "Scale" scale_param { bias_term: true '
                       'bias_filler { type: "gaussian" } }', backend)
    check_gradient(layer, blobs(backend, x, s), tops(backend, 1), max_checks=40)


def test_scale_gradients_match_torch_accumulate_params_and_assign_bottoms(backend):
    x, dy = rand(2, 3, 4), rand(2, 3, 4)
    layer = make_layer('type: "Scale" scale_param { bias_term: true '
                       'filler { type: "gaussian" } }', backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    _, dx = forward_backward(backend, layer, bottom, top, dy)
    gamma = host(backend, layer.blobs[0].data)
    tx, tg, tb = t(x).requires_grad_(), t(gamma).requires_grad_(), torch.zeros(3).requires_grad_()
    (tx * tg.reshape(1, 3, 1) + tb.reshape(1, 3, 1)).backward(t(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(host(backend, layer.blobs[0].diff), tg.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(host(backend, layer.blobs[1].diff), tb.grad.numpy(), rtol=1e-5)
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(host(backend, layer.blobs[0].diff), 2 * tg.grad.numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(host(backend, layer.blobs[1].diff), 2 * tb.grad.numpy(),
                               rtol=1e-5)
    # A scale from bottom[1] gets its gradient assigned, not accumulated.
    layer = make_layer('type: "Scale"', backend)
    bottom = blobs(backend, x, gamma)
    run_forward(layer, bottom, top)
    bottom[1].diff[...] = 100
    set_diff(backend, top[0], dy)
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(host(backend, bottom[1].diff), tg.grad.numpy(), rtol=1e-5)


@pytest.mark.parametrize("eltwise", [False, True])
def test_scale_in_place_matches_out_of_place(backend, eltwise):
    text = ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } '
            'bias_filler { type: "gaussian" } %s }' % ("axis: 0 num_axes: -1" if eltwise else ""))
    x, dy = rand(2, 3, 4), rand(2, 3, 4)
    results = []
    for in_place in (False, True):
        from netkit.rng import set_random_seed
        set_random_seed(9)
        layer = make_layer(text, backend)
        bottom = blobs(backend, x)
        top = bottom if in_place else tops(backend, 1)
        y, dx = forward_backward(backend, layer, bottom, top, dy)
        results.append([y, dx] + [host(backend, b.diff) for b in layer.blobs])
    for inside, out in zip(results[1], results[0]):
        np.testing.assert_allclose(inside, out, rtol=1e-6)


@pytest.mark.parametrize("param, shape, operand, bshape", SCALE_GEOMETRY)
def test_bias_learned_and_second_bottom(backend, param, shape, operand, bshape):
    layer = make_layer('type: "Bias" bias_param { %s filler { type: "gaussian" } }' % param,
                       backend)
    x = rand(*shape)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert [b.shape for b in layer.blobs] == [operand]
    np.testing.assert_allclose(y, x + host(backend, layer.blobs[0].data).reshape(bshape),
                               rtol=1e-6, atol=1e-7)
    check_gradient(layer, blobs(backend, x), tops(backend, 1), max_checks=40)
    b = rand(*operand)
    layer = make_layer('type: "Bias" bias_param { %s }' % param, backend)
    (y,) = run_forward(layer, blobs(backend, x, b), tops(backend, 1))
    np.testing.assert_allclose(y, x + b.reshape(bshape), rtol=1e-6, atol=1e-7)
    check_gradient(layer, blobs(backend, x, b), tops(backend, 1), max_checks=40)


def test_bias_default_filler_is_zero_and_in_place_works(backend):
    layer = make_layer('type: "Bias"', backend)
    (blob,) = blobs(backend, rand(2, 3))
    dy = rand(2, 3)
    x = host(backend, blob.data)
    y, dx = forward_backward(backend, layer, [blob], [blob], dy)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, dy)
    np.testing.assert_allclose(host(backend, layer.blobs[0].diff), dy.sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("kind", ["Scale", "Bias"])
@pytest.mark.parametrize("param, bottoms, message", [
    ("num_axes: -2", [(2, 3)], "num_axes"),
    ("axis: 1 num_axes: 3", [(2, 3, 4)], "extends past"),
    ("axis: 3", [(2, 3, 4)], "axis"),
    ("", [(2, 3, 4), (4,)], "does not match"),
    ("axis: 1", [(2, 3, 4), (3, 5)], "does not match"),
])
def test_scale_and_bias_bad_geometry(backend, kind, param, bottoms, message):
    field = "scale_param" if kind == "Scale" else "bias_param"
    layer = make_layer('type: "%s" %s { %s }' % (kind, field, param), backend)
    with pytest.raises(LayerSetupError, match=message):
        run_forward(layer, blobs(backend, *[rand(*s) for s in bottoms]), tops(backend, 1))


# ---------------------------------------------------------------- MVN

def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x = x.astype(np.float64)
    axes = (1, 2, 3) if across_channels else (2, 3)
    centred = x - x.mean(axis=axes, keepdims=True)
    if not normalize_variance:
        return centred
    return centred / (np.sqrt((centred ** 2).mean(axis=axes, keepdims=True)) + eps)


MVN_PARAMS = [(True, False), (True, True), (False, False), (False, True)]


@pytest.mark.parametrize("normalize_variance, across_channels", MVN_PARAMS)
def test_mvn_forward(backend, normalize_variance, across_channels):
    x = rand(2, 3, 4, 5, low=-2, high=3)
    layer = make_layer('type: "MVN" mvn_param { normalize_variance: %s across_channels: %s }'
                       % (str(normalize_variance).lower(), str(across_channels).lower()),
                       backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, mvn_reference(x, normalize_variance, across_channels),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize_variance, across_channels", MVN_PARAMS)
def test_mvn_gradient(backend, normalize_variance, across_channels):
    layer = make_layer('type: "MVN" mvn_param { normalize_variance: %s across_channels: %s }'
                       % (str(normalize_variance).lower(), str(across_channels).lower()),
                       backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 3, 4, low=-2, high=2)), tops(backend, 1),
                   max_checks=60)


def test_mvn_adds_eps_to_the_standard_deviation(backend):
    x = rand(2, 2, 3, 3, low=-1, high=1)
    layer = make_layer('type: "MVN" mvn_param { eps: 0.5 }', backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, mvn_reference(x, eps=0.5), rtol=1e-5, atol=1e-6)


def test_mvn_top_is_four_dimensional_like_caffe(backend):
    x = rand(3, 6, low=-1, high=1)
    layer = make_layer('type: "MVN" mvn_param { across_channels: true }', backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert y.shape == (3, 6, 1, 1)
    np.testing.assert_allclose(y, mvn_reference(x.reshape(3, 6, 1, 1), across_channels=True),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(LayerSetupError, match="at most 4 axes"):
        run_forward(make_layer('type: "MVN"', backend), blobs(backend, rand(1, 2, 2, 2, 2)),
                    tops(backend, 1))


def test_mvn_in_place_matches_out_of_place(backend):
    x, dy = rand(2, 3, 4, 4, low=-2, high=2), rand(2, 3, 4, 4)
    out = forward_backward(backend, make_layer('type: "MVN"', backend), blobs(backend, x),
                           tops(backend, 1), dy)
    (blob,) = blobs(backend, x)
    inside = forward_backward(backend, make_layer('type: "MVN"', backend), [blob], [blob], dy)
    np.testing.assert_allclose(inside[0], out[0], rtol=1e-6)
    np.testing.assert_allclose(inside[1], out[1], rtol=1e-6)


# ---------------------------------------------------------------- OpenCV's Caffe importer

OPENCV_DEPLOY = """
name: "norm_parity"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "scale" scale_param { bias_term: true } }
layer { name: "prelu" type: "PReLU" bottom: "scale" top: "prelu" }
layer { name: "elu" type: "ELU" bottom: "prelu" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "power" type: "Power" bottom: "elu" top: "power"
        power_param { power: 2 scale: 0.5 shift: 1.5 } }
layer { name: "mvn" type: "MVN" bottom: "power" top: "mvn" }
layer { name: "mvn_mean" type: "MVN" bottom: "power" top: "mvn_mean"
        mvn_param { normalize_variance: false across_channels: true } }
"""

# ResNet's pattern: BatchNorm, Scale and the activation all in place on one blob.
OPENCV_IN_PLACE = """
name: "in_place_parity"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "data"
        prelu_param { channel_shared: true } }
"""


def opencv_parity(tmp_path, text, names):
    """(netkit blobs, OpenCV outputs) for `names` of a deploy net with set parameters."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 has the Caffe importer")
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(text)
    net = Net(str(deploy), TEST)
    values = {
        "bn": ([0.4, -1.2, 0.9], [2.0, 0.6, 1.4], [2.0]),
        "scale": ([1.5, -0.7, 0.9], [0.2, -0.3, 0.5]),
        "prelu": ([0.1, -0.3, 0.6],),
    }
    for name, arrays in values.items():
        for blob, a in zip(net.params[name], arrays):
            blob.data[...] = np.asarray(a, np.float32)[:blob.count].reshape(blob.shape)
    weights = str(tmp_path / "norm.caffemodel")
    net.save(weights)

    x = rand(2, 3, 5, 6, low=-3, high=3)
    ours = Net(str(deploy), TEST, weights=weights)
    ours.forward(data=x)
    theirs = cv2.dnn.readNetFromCaffe(str(deploy), weights)
    theirs.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    theirs.setInput(x)
    return ours, theirs.forward(names)


def test_opencv_caffe_importer_gives_netkit_numbers(tmp_path):
    names = ["bn", "scale", "prelu", "elu", "power", "mvn", "mvn_mean"]
    ours, theirs = opencv_parity(tmp_path, OPENCV_DEPLOY, names)
    for name, output in zip(names, theirs):
        np.testing.assert_allclose(ours.blobs[name].data, output, rtol=1e-5, atol=1e-5,
                                   err_msg="blob %s" % name)


def test_opencv_in_place_resnet_pattern(tmp_path):
    ours, (theirs,) = opencv_parity(tmp_path, OPENCV_IN_PLACE, ["prelu"])
    assert ours.params["prelu"][0].shape == ()
    np.testing.assert_allclose(ours.blobs["data"].data, theirs, rtol=1e-5, atol=1e-5)
