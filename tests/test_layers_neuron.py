"""PReLU, ELU, AbsVal, Power, Exp, Log, BNLL, Threshold, Clip and Swish: forward against
PyTorch or closed-form numpy, Caffe's gradient check on every backend, in-place use,
Caffe's special cases and error cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import blobs, check_gradient, make_layer, run_forward, tops
from netkit.layer import LayerSetupError

RS = np.random.RandomState(11)


def rand(*shape, low=-1.0, high=1.0):
    return RS.uniform(low, high, size=shape).astype(np.float32)


def away_from(x, points, gap):
    """x with every element within `gap` of a kink moved 2 * gap away from it."""
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + np.where(x[near] >= p, 2 * gap, -2 * gap)
    return x


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def set_diff(backend, blob, values):
    blob.diff[...] = backend.asarray(np.asarray(values, dtype=np.float32))


def backward(backend, layer, bottom, top, dy):
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    return backend.asnumpy(bottom[0].diff)


# Name -> (prototxt, input range, closed-form reference of x, kinks to keep away from).
CASES = {
    "elu": ('type: "ELU"', (-3, 3), lambda x: F.elu(t(x)).numpy(), [0.0]),
    "elu_alpha": ('type: "ELU" elu_param { alpha: 0.4 }', (-3, 3),
                  lambda x: F.elu(t(x), alpha=0.4).numpy(), [0.0]),
    "absval": ('type: "AbsVal"', (-2, 2), np.abs, [0.0]),
    "power_square": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', (-2, 2),
                     lambda x: (1 + 0.5 * x.astype(np.float64)) ** 2, []),
    "power_cube_no_shift": ('type: "Power" power_param { power: 3 scale: -1.5 }', (0.2, 2),
                            lambda x: (-1.5 * x.astype(np.float64)) ** 3, []),
    "power_sqrt": ('type: "Power" power_param { power: 0.5 scale: 2 shift: 0.5 }', (0.1, 3),
                   lambda x: np.sqrt(0.5 + 2 * x.astype(np.float64)), []),
    "power_linear": ('type: "Power" power_param { scale: -3 shift: 2 }', (-2, 2),
                     lambda x: 2 - 3 * x.astype(np.float64), []),
    "power_general": ('type: "Power" power_param { power: -1.5 scale: 0.8 shift: 2.5 }',
                      (-1, 2), lambda x: (2.5 + 0.8 * x.astype(np.float64)) ** -1.5, []),
    "exp": ('type: "Exp"', (-3, 3), lambda x: np.exp(x.astype(np.float64)), []),
    "exp_base": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', (-3, 3),
                 lambda x: 2.0 ** (1 + 0.5 * x.astype(np.float64)), []),
    "exp_e_shift": ('type: "Exp" exp_param { scale: -2 shift: 0.5 }', (-1, 1),
                    lambda x: np.exp(0.5 - 2 * x.astype(np.float64)), []),
    "log": ('type: "Log"', (0.5, 4), lambda x: np.log(x.astype(np.float64)), []),
    "log_base": ('type: "Log" log_param { base: 10 scale: 2 shift: 3 }', (-1, 3),
                 lambda x: np.log10(3 + 2 * x.astype(np.float64)), []),
    "bnll": ('type: "BNLL"', (-6, 6), lambda x: np.logaddexp(0, x.astype(np.float64)), []),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.75 }', (-2, 2),
             lambda x: np.clip(x, -0.5, 0.75), [-0.5, 0.75]),
    "swish": ('type: "Swish"', (-5, 5), lambda x: F.silu(t(x)).numpy(), []),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.7 }', (-5, 5),
                   lambda x: (t(x) * torch.sigmoid(1.7 * t(x))).numpy(), []),
}


def case_input(name, shape=(2, 3, 4, 5)):
    _, (low, high), _, kinks = CASES[name]
    return away_from(rand(*shape, low=low, high=high), kinks, 0.02)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_reference(backend, name):
    text, _, reference, _ = CASES[name]
    x = case_input(name)
    (y,) = run_forward(make_layer(text, backend), blobs(backend, x), tops(backend, 1))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, reference(x), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient(backend, name):
    text = CASES[name][0]
    layer = make_layer(text, backend)
    check_gradient(layer, blobs(backend, case_input(name)), tops(backend, 1), max_checks=60)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"absval"}))
def test_in_place_matches_out_of_place(backend, name):
    text = CASES[name][0]
    x = case_input(name, (3, 4, 5))
    dy = rand(3, 4, 5)
    layer = make_layer(text, backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    y = run_forward(layer, bottom, top)[0]
    dx = backward(backend, layer, bottom, top, dy)

    layer = make_layer(text, backend)
    (blob,) = blobs(backend, x)
    y_in = run_forward(layer, [blob], [blob])[0]
    dx_in = backward(backend, layer, [blob], [blob], dy)
    np.testing.assert_array_equal(y_in, y)
    np.testing.assert_allclose(dx_in, dx, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["elu", "power_square", "log", "bnll", "clip", "swish"])
def test_backward_respects_propagate_down(backend, name):
    layer = make_layer(CASES[name][0], backend)
    bottom, top = blobs(backend, case_input(name, (4, 3))), tops(backend, 1)
    run_forward(layer, bottom, top)
    set_diff(backend, top[0], np.ones((4, 3)))
    bottom[0].diff[...] = 5
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(backend.asnumpy(bottom[0].diff), 5)


# ---------------------------------------------------------------- PReLU

def test_prelu_default_slopes_are_a_quarter_per_channel(backend):
    layer = make_layer('type: "PReLU"', backend)
    x = rand(2, 3, 4, 4, low=-2, high=2)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(backend.asnumpy(layer.blobs[0].data), [0.25] * 3)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.25 * x), rtol=1e-6)


def test_prelu_channel_shared_has_one_scalar_slope(backend):
    layer = make_layer('type: "PReLU" prelu_param { channel_shared: true '
                       'filler { type: "constant" value: -0.3 } }', backend)
    x = rand(2, 5, 3, low=-2, high=2)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert layer.blobs[0].shape == () and layer.blobs[0].count == 1
    np.testing.assert_allclose(y, F.prelu(t(x), t([-0.3])).numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 3), (2, 3, 2, 2, 2)])
def test_prelu_matches_torch_with_learned_slopes(backend, shape):
    layer = make_layer('type: "PReLU" prelu_param { filler { type: "gaussian" } }', backend)
    x = rand(*shape, low=-2, high=2)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    slopes = backend.asnumpy(layer.blobs[0].data)
    assert len(set(slopes.tolist())) == 3
    np.testing.assert_allclose(y, F.prelu(t(x), t(slopes)).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shared", ["false", "true"])
def test_prelu_gradient_including_slopes(backend, shared):
    layer = make_layer('type: "PReLU" prelu_param { channel_shared: %s '
                       'filler { type: "uniform" min: -0.5 max: 0.5 } }' % shared, backend)
    x = away_from(rand(2, 3, 3, 4, low=-2, high=2), [0.0], 0.02)
    check_gradient(layer, blobs(backend, x), tops(backend, 1), max_checks=80)


def test_prelu_slope_gradient_matches_torch_and_accumulates(backend):
    layer = make_layer('type: "PReLU" prelu_param { filler { type: "gaussian" } }', backend)
    x, dy = rand(2, 3, 4, low=-2, high=2), rand(2, 3, 4)
    bottom, top = blobs(backend, x), tops(backend, 1)
    run_forward(layer, bottom, top)
    slopes = backend.asnumpy(layer.blobs[0].data)
    tx, tw = t(x).requires_grad_(), t(slopes).requires_grad_()
    F.prelu(tx, tw).backward(t(dy))
    layer.blobs[0].diff[...] = 0
    dx = backward(backend, layer, bottom, top, dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), tw.grad.numpy(), rtol=1e-5)
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), 2 * tw.grad.numpy(),
                               rtol=1e-5)


def test_prelu_in_place_keeps_input_for_slope_gradient(backend):
    text = 'type: "PReLU" prelu_param { filler { type: "gaussian" } }'
    x, dy = rand(2, 3, 5, low=-2, high=2), rand(2, 3, 5)
    grads = []
    for in_place in (False, True):
        from netkit.rng import set_random_seed
        set_random_seed(3)
        layer = make_layer(text, backend)
        bottom = blobs(backend, x)
        top = bottom if in_place else tops(backend, 1)
        run_forward(layer, bottom, top)
        dx = backward(backend, layer, bottom, top, dy)
        grads.append((dx, backend.asnumpy(layer.blobs[0].diff)))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-6)
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-6)


def test_prelu_shared_slope_file_round_trip_as_caffe_writes_it(tmp_path):
    """Caffe writes a 0-axis blob with no shape field; netkit reads and writes that form."""
    from netkit import TEST, Net
    from netkit import netkit_pb2 as pb
    deploy = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "prelu" type: "PReLU" bottom: "data" top: "data"
            prelu_param { channel_shared: true } }
    """
    weights = pb.NetParameter()
    blob = weights.layer.add(name="prelu", type="PReLU").blobs.add()
    blob.data.append(-0.5)
    path = tmp_path / "prelu.caffemodel"
    path.write_bytes(weights.SerializeToString())
    net = Net(deploy, TEST, weights=str(path))
    x = rand(2, 3, low=-2, high=2)
    np.testing.assert_allclose(net.forward(data=x)["data"], np.where(x > 0, x, -0.5 * x))
    written = [l for l in net.to_proto().layer if l.name == "prelu"][0].blobs[0]
    assert not written.HasField("shape") and list(written.data) == [-0.5]


def test_prelu_needs_two_axes(backend):
    with pytest.raises(LayerSetupError, match="2 axes"):
        run_forward(make_layer('type: "PReLU"', backend), blobs(backend, rand(5)),
                    tops(backend, 1))


# ---------------------------------------------------------------- Caffe's special cases

def test_absval_refuses_in_place(backend):
    (blob,) = blobs(backend, rand(3))
    with pytest.raises(LayerSetupError, match="in-place"):
        make_layer('type: "AbsVal"', backend).setup([blob], [blob])


def test_absval_gradient_is_zero_at_zero(backend):
    layer = make_layer('type: "AbsVal"', backend)
    bottom, top = blobs(backend, [-2.0, 0.0, 3.0]), tops(backend, 1)
    run_forward(layer, bottom, top)
    np.testing.assert_array_equal(backward(backend, layer, bottom, top, [1, 1, 1]), [-1, 0, 1])


@pytest.mark.parametrize("param, value", [("power: 0 scale: 3 shift: 2", 1.0),
                                          ("power: 3 scale: 0 shift: 2", 8.0),
                                          ("power: 0 scale: 0 shift: 0", 1.0)])
def test_power_ignores_input_when_power_times_scale_is_zero(backend, param, value):
    layer = make_layer('type: "Power" power_param { %s }' % param, backend)
    bottom, top = blobs(backend, rand(3, 4)), tops(backend, 1)
    (y,) = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(y, np.full((3, 4), value, np.float32))
    np.testing.assert_array_equal(backward(backend, layer, bottom, top, rand(3, 4)), 0)


def test_bnll_saturates_without_overflow(backend):
    layer = make_layer('type: "BNLL"', backend)
    x = np.array([-100.0, -60.0, 0.0, 60.0, 100.0], np.float32)
    bottom, top = blobs(backend, x), tops(backend, 1)
    with np.errstate(over="raise"):
        (y,) = run_forward(layer, bottom, top)
        dx = backward(backend, layer, bottom, top, np.ones(5))
    np.testing.assert_allclose(y, np.logaddexp(0, x.astype(np.float64)), rtol=1e-6, atol=1e-40)
    sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(dx, sigmoid, rtol=1e-5, atol=1e-40)


def test_threshold_is_strictly_greater_and_has_no_backward(backend):
    layer = make_layer('type: "Threshold" threshold_param { threshold: 0.5 }', backend)
    x = np.array([[-1.0, 0.5, 0.50001, 2.0]], np.float32)
    bottom, top = blobs(backend, x), tops(backend, 1)
    (y,) = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(y, [[0, 0, 1, 1]])
    with pytest.raises(LayerSetupError, match="no backward"):
        layer.backward(top, [True], bottom)


def test_threshold_default_is_zero_in_place(backend):
    (blob,) = blobs(backend, [-0.1, 0.0, 0.1])
    run_forward(make_layer('type: "Threshold"', backend), [blob], [blob])
    np.testing.assert_array_equal(backend.asnumpy(blob.data), [0, 0, 1])


def test_clip_passes_gradient_on_the_bounds_and_min_wins(backend):
    layer = make_layer('type: "Clip" clip_param { min: -1 max: 1 }', backend)
    bottom, top = blobs(backend, [-2.0, -1.0, 0.0, 1.0, 2.0]), tops(backend, 1)
    run_forward(layer, bottom, top)
    np.testing.assert_array_equal(backward(backend, layer, bottom, top, np.ones(5)),
                                  [0, 1, 1, 1, 0])
    inverted = make_layer('type: "Clip" clip_param { min: 2 max: 1 }', backend)
    (y,) = run_forward(inverted, blobs(backend, [0.0, 1.5, 3.0]), tops(backend, 1))
    np.testing.assert_array_equal(y, [2, 2, 2])


def test_elu_gradient_at_zero_uses_the_negative_branch(backend):
    layer = make_layer('type: "ELU" elu_param { alpha: 0.5 }', backend)
    bottom, top = blobs(backend, [-1.0, 0.0, 1.0]), tops(backend, 1)
    run_forward(layer, bottom, top)
    np.testing.assert_allclose(backward(backend, layer, bottom, top, np.ones(3)),
                               [0.5 * np.exp(-1), 0.5, 1], rtol=1e-6)


@pytest.mark.parametrize("text, field", [
    ('type: "Exp" exp_param { base: 0 }', "exp_param.base"),
    ('type: "Exp" exp_param { base: -2 }', "exp_param.base"),
    ('type: "Log" log_param { base: -3 }', "log_param.base"),
    ('type: "Log" log_param { base: 1 }', "log_param.base"),
    ('type: "Clip" clip_param { min: 1 }', "clip_param"),
])
def test_bad_parameters_are_refused(backend, text, field):
    with pytest.raises(LayerSetupError, match=field.replace(".", r"\.")):
        run_forward(make_layer(text, backend), blobs(backend, rand(2, 3)), tops(backend, 1))
