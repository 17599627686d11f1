"""Activation, loss and structural layers: forward against numpy/PyTorch, Caffe's gradient
check on every backend, in-place use, Caffe's parity details and error cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import blobs, check_gradient, make_layer, run_forward, tops
from netkit import netkit_pb2 as pb
from netkit.backend import get_backend
from netkit.blob import Blob
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.rng import set_random_seed

RS = np.random.RandomState(7)


def rand(*shape, low=-1.0, high=1.0):
    return RS.uniform(low, high, size=shape).astype(np.float32)


def host(backend, array):
    return backend.asnumpy(array)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def set_diff(backend, blob, values):
    blob.diff[...] = backend.asarray(np.asarray(values, dtype=np.float32))


# ---------------------------------------------------------------- ReLU, Sigmoid, TanH

NEURONS = {
    "relu": ('type: "ReLU"', lambda x: F.relu(t(x))),
    "leaky": ('type: "ReLU" relu_param { negative_slope: 0.1 }',
              lambda x: F.leaky_relu(t(x), 0.1)),
    "sigmoid": ('type: "Sigmoid"', lambda x: torch.sigmoid(t(x))),
    "tanh": ('type: "TanH"', lambda x: torch.tanh(t(x))),
}


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_forward_matches_torch(backend, name):
    text, reference = NEURONS[name]
    x = rand(2, 3, 4, 5, low=-4, high=4)
    x[0, 0, 0, :2] = [-60.0, 60.0]  # saturating inputs must not overflow
    (y,) = run_forward(make_layer(text, backend), blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, reference(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_gradient(backend, name):
    text, _ = NEURONS[name]
    layer = make_layer(text, backend)
    x = rand(2, 3, 4, 5, low=-3, high=3)
    check_gradient(layer, blobs(backend, x), tops(backend, 1), kink=0.0, kink_range=0.02)


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_in_place_matches_out_of_place(backend, name):
    text, _ = NEURONS[name]
    x = rand(3, 7, low=-2, high=2)
    dy = rand(3, 7)
    # Out of place.
    layer = make_layer(text, backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    y = run_forward(layer, bottom, top)[0]
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    dx = host(backend, bottom[0].diff)
    # In place: one Blob is both bottom and top.
    layer = make_layer(text, backend)
    (blob,) = blobs(backend, x)
    y_in = run_forward(layer, [blob], [blob])[0]
    set_diff(backend, blob, dy)
    layer.backward([blob], [True], [blob])
    np.testing.assert_allclose(y_in, y, rtol=1e-6)
    np.testing.assert_allclose(host(backend, blob.diff), dx, rtol=1e-6)


def test_relu_backward_uses_caffe_rule_at_zero(backend):
    """Caffe's ReLU passes no gradient at exactly 0 (x > 0), leaky passes slope * dy."""
    for text, expected in (('type: "ReLU"', [0.0, 0.0, 1.0]),
                           ('type: "ReLU" relu_param { negative_slope: 0.25 }',
                            [0.25, 0.25, 1.0])):
        layer = make_layer(text, backend)
        bottom, top = blobs(backend, [-1.0, 0.0, 2.0]), tops(backend, 1)
        run_forward(layer, bottom, top)
        set_diff(backend, top[0], [1.0, 1.0, 1.0])
        layer.backward(top, [True], bottom)
        np.testing.assert_allclose(host(backend, bottom[0].diff), expected)


def test_neuron_backward_respects_propagate_down(backend):
    layer = make_layer('type: "TanH"', backend)
    bottom, top = blobs(backend, rand(4)), tops(backend, 1)
    run_forward(layer, bottom, top)
    set_diff(backend, top[0], np.ones(4))
    bottom[0].diff[...] = 5
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(host(backend, bottom[0].diff), 5)


# ---------------------------------------------------------------- Dropout

def dropout(backend, ratio=None, phase=TRAIN, extra=""):
    param = "dropout_param { dropout_ratio: %g %s }" % (ratio, extra) if ratio is not None else ""
    return make_layer('type: "Dropout" ' + param, backend, phase)


def test_dropout_train_statistics(backend):
    layer = dropout(backend, 0.3)
    x = np.ones((200, 500), np.float32)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)


def test_dropout_default_ratio_is_half(backend):
    (y,) = run_forward(dropout(backend), blobs(backend, np.ones((100, 100))), tops(backend, 1))
    assert abs((y == 0).mean() - 0.5) < 0.02
    np.testing.assert_allclose(y[y != 0], 2.0)


def test_dropout_draws_a_fresh_mask_each_pass(backend):
    layer = dropout(backend, 0.5)
    bottom, top = blobs(backend, np.ones((50, 50))), tops(backend, 1)
    first = run_forward(layer, bottom, top)[0].copy()
    layer.forward(bottom, top)
    assert (first != host(backend, top[0].data)).any()


def test_dropout_test_phase_is_identity(backend):
    x = rand(4, 6)
    layer = dropout(backend, 0.5, TEST)
    bottom, top = blobs(backend, x), tops(backend, 1)
    (y,) = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(y, x)
    dy = rand(4, 6)
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(host(backend, bottom[0].diff), dy)


def test_dropout_same_seed_same_mask_on_every_backend():
    masks = []
    for name in ("cpu", "fakegpu"):
        be = get_backend(name)
        set_random_seed(123)
        layer = dropout(be, 0.5)
        masks.append(run_forward(layer, blobs(be, np.ones((8, 9))), tops(be, 1))[0])
    np.testing.assert_array_equal(masks[0], masks[1])


def test_dropout_backward_applies_the_forward_mask(backend):
    layer = dropout(backend, 0.4)
    x = rand(10, 20, low=0.5, high=2.0)
    bottom, top = blobs(backend, x), tops(backend, 1)
    (y,) = run_forward(layer, bottom, top)
    dy = rand(10, 20)
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(host(backend, bottom[0].diff), dy * (y / x), rtol=1e-5)


def test_dropout_gradient_with_a_fixed_mask(backend):
    layer = dropout(backend, 0.5)
    forward = layer.forward

    def forward_with_fixed_mask(bottom, top):
        backend.random.seed(42)
        forward(bottom, top)

    layer.forward = forward_with_fixed_mask
    check_gradient(layer, blobs(backend, rand(3, 4, 5)), tops(backend, 1))


def test_dropout_in_place(backend):
    x = rand(6, 8, low=0.5, high=2.0)
    dy = rand(6, 8)
    results = []
    for in_place in (False, True):
        set_random_seed(9)
        be = get_backend(backend.name)
        layer = dropout(be, 0.5)
        bottom = blobs(be, x)
        top = bottom if in_place else tops(be, 1)
        y = run_forward(layer, bottom, top)[0]
        set_diff(be, top[0], dy)
        layer.backward(top, [True], bottom)
        results.append((y, host(be, bottom[0].diff)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert (results[1][0] == 0).any() and (results[1][0] != 0).any()


def test_dropout_without_scale_train(backend):
    x = np.ones((100, 100), np.float32)
    (y,) = run_forward(dropout(backend, 0.25, TRAIN, "scale_train: false"),
                       blobs(backend, x), tops(backend, 1))
    assert set(np.unique(y)) == {0.0, 1.0}
    (y,) = run_forward(dropout(backend, 0.25, TEST, "scale_train: false"),
                       blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, 0.75)


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_dropout_rejects_bad_ratio(backend, ratio):
    with pytest.raises(LayerSetupError, match="dropout_ratio"):
        run_forward(dropout(backend, ratio), blobs(backend, rand(2, 2)), tops(backend, 1))


# ---------------------------------------------------------------- Softmax

@pytest.mark.parametrize("axis,shape", [(1, (2, 5, 3, 4)), (-1, (3, 4, 6)), (0, (4, 3))])
def test_softmax_forward_matches_torch(backend, axis, shape):
    x = rand(*shape, low=-5, high=5) + 1000.0  # large logits: must subtract the max
    layer = make_layer('type: "Softmax" softmax_param { axis: %d }' % axis, backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, torch.softmax(t(x).double(), dim=axis).numpy(),
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("axis", [1, 2])
def test_softmax_gradient(backend, axis):
    layer = make_layer('type: "Softmax" softmax_param { axis: %d }' % axis, backend)
    check_gradient(layer, blobs(backend, rand(2, 4, 3)), tops(backend, 1))


def test_softmax_in_place(backend):
    x, dy = rand(3, 5), rand(3, 5)
    layer = make_layer('type: "Softmax"', backend)
    bottom, top = blobs(backend, x), tops(backend, 1)
    y = run_forward(layer, bottom, top)[0]
    set_diff(backend, top[0], dy)
    layer.backward(top, [True], bottom)
    (blob,) = blobs(backend, x)
    y_in = run_forward(make_layer('type: "Softmax"', backend), [blob], [blob])[0]
    set_diff(backend, blob, dy)
    layer.backward([blob], [True], [blob])
    np.testing.assert_allclose(y_in, y, rtol=1e-6)
    np.testing.assert_allclose(host(backend, blob.diff), host(backend, bottom[0].diff),
                               rtol=1e-5, atol=1e-7)


def test_softmax_bad_axis(backend):
    layer = make_layer('type: "Softmax" softmax_param { axis: 3 }', backend)
    with pytest.raises(LayerSetupError, match="softmax_param.axis"):
        run_forward(layer, blobs(backend, rand(2, 3)), tops(backend, 1))


# ---------------------------------------------------------------- SoftmaxWithLoss

def loss_layer(backend, loss_param="", extra=""):
    text = 'type: "SoftmaxWithLoss" %s' % extra
    if loss_param:
        text += " loss_param { %s }" % loss_param
    return make_layer(text, backend)


def per_position_nll(x, labels, axis=1):
    """-log softmax(x)[label] at every (outer, inner) position, in float64."""
    logp = torch.log_softmax(t(x).double(), dim=axis)
    moved = torch.movedim(logp, axis, -1).reshape(-1, x.shape[axis])
    lab = torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))
    safe = lab.clamp(0, x.shape[axis] - 1)
    return -moved.gather(1, safe[:, None])[:, 0].numpy()


def test_softmax_loss_matches_torch_cross_entropy(backend):
    x = rand(6, 5, low=-3, high=3)
    labels = RS.randint(0, 5, size=6)
    (loss,) = run_forward(loss_layer(backend), blobs(backend, x, labels), tops(backend, 1))
    expected = F.cross_entropy(t(x), torch.from_numpy(labels.astype(np.int64)))
    assert loss.shape == ()
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


def test_softmax_loss_spatial_labels(backend):
    x = rand(2, 4, 3, 5, low=-3, high=3)
    labels = RS.randint(0, 4, size=(2, 1, 3, 5))
    (loss,) = run_forward(loss_layer(backend), blobs(backend, x, labels), tops(backend, 1))
    expected = F.cross_entropy(t(x), torch.from_numpy(labels[:, 0].astype(np.int64)))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


def test_softmax_loss_other_axis(backend):
    x = rand(3, 4, 6, low=-3, high=3)
    labels = RS.randint(0, 6, size=(3, 4))
    layer = loss_layer(backend, extra="softmax_param { axis: -1 }")
    (loss,) = run_forward(layer, blobs(backend, x, labels), tops(backend, 1))
    np.testing.assert_allclose(loss, per_position_nll(x, labels, axis=2).mean(), rtol=1e-5)


def test_softmax_loss_clamps_at_flt_min(backend):
    """A confidently wrong prediction gives -log(FLT_MIN) = 87.3365, Caffe's diverged loss."""
    x = np.array([[0.0, 200.0], [0.0, 300.0]], np.float32)
    (loss,) = run_forward(loss_layer(backend), blobs(backend, x, [0, 0]), tops(backend, 1))
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, -np.log(np.finfo(np.float32).tiny), rtol=1e-6)
    np.testing.assert_allclose(loss, 87.3365, rtol=1e-6)


@pytest.mark.parametrize("loss_param,normalizer", [
    ("", "valid"),
    ("normalization: VALID", "valid"),
    ("normalization: FULL", "full"),
    ("normalization: BATCH_SIZE", "batch"),
    ("normalization: NONE", "none"),
    ("normalize: false", "batch"),
    ("normalize: true", "valid"),
    ("normalization: FULL normalize: false", "full"),
])
def test_softmax_loss_normalization_and_ignore_label(backend, loss_param, normalizer):
    x = rand(3, 4, 2, 5, low=-3, high=3)
    labels = RS.randint(0, 4, size=(3, 1, 2, 5)).astype(np.float32)
    labels.reshape(-1)[[0, 3, 4, 11, 29]] = 255
    valid = labels.reshape(-1) != 255
    nll = per_position_nll(x, labels)
    n = {"valid": valid.sum(), "full": labels.size, "batch": 3, "none": 1}[normalizer]
    layer = loss_layer(backend, "ignore_label: 255 " + loss_param)
    bottom, top = blobs(backend, x, labels), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    np.testing.assert_allclose(loss, nll[valid].sum() / n, rtol=1e-5)

    # Backward: (p - onehot) * loss_weight / n, zero at ignored positions.
    top[0].diff[...] = 2.0
    layer.backward(top, [True, False], bottom)
    p = torch.softmax(t(x).double(), dim=1).numpy()
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, np.where(labels == 255, 0, labels).astype(int), 1.0, axis=1)
    expected = (p - onehot) * 2.0 / n * (labels != 255)
    np.testing.assert_allclose(host(backend, bottom[0].diff), expected, rtol=1e-4, atol=1e-6)


def test_softmax_loss_all_ignored_is_zero_not_nan(backend):
    x = rand(2, 3)
    layer = loss_layer(backend, "ignore_label: -1")
    bottom, top = blobs(backend, x, [-1, -1]), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    assert loss == 0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(host(backend, bottom[0].diff), 0)


@pytest.mark.parametrize("loss_param", ["", "ignore_label: 2 normalization: VALID",
                                        "normalization: BATCH_SIZE"])
def test_softmax_loss_gradient(backend, loss_param):
    x = rand(3, 4, 2, 2, low=-2, high=2)
    labels = RS.randint(0, 4, size=(3, 2, 2))
    layer = loss_layer(backend, loss_param)
    check_gradient(layer, blobs(backend, x, labels), tops(backend, 1), check_bottom=[0])


def test_softmax_loss_second_top_holds_probabilities(backend):
    x = rand(4, 3, low=-3, high=3)
    layer = loss_layer(backend)
    _, prob = run_forward(layer, blobs(backend, x, [0, 1, 2, 0]), tops(backend, 2))
    np.testing.assert_allclose(prob, torch.softmax(t(x), dim=1).numpy(), rtol=1e-5)


def test_softmax_loss_label_count_mismatch(backend):
    layer = loss_layer(backend)
    with pytest.raises(LayerSetupError, match="number of labels"):
        run_forward(layer, blobs(backend, rand(2, 3, 2, 2), [0, 1]), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="first dimension"):
        run_forward(loss_layer(backend), blobs(backend, rand(2, 3), [0, 1, 2]),
                    tops(backend, 1))


def test_softmax_loss_refuses_label_gradient(backend):
    layer = loss_layer(backend)
    bottom, top = blobs(backend, rand(2, 3), [0, 1]), tops(backend, 1)
    run_forward(layer, bottom, top)
    assert layer.is_loss
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(LayerSetupError, match="label"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------- Accuracy

def accuracy(backend, param=""):
    return make_layer('type: "Accuracy" accuracy_param { %s }' % param, backend)


@pytest.mark.parametrize("top_k", [1, 3])
def test_accuracy_top_k(backend, top_k):
    x = rand(50, 6)
    labels = RS.randint(0, 6, size=50)
    (acc,) = run_forward(accuracy(backend, "top_k: %d" % top_k), blobs(backend, x, labels),
                         tops(backend, 1))
    best = np.argsort(-x, axis=1)[:, :top_k]
    expected = np.mean([labels[i] in best[i] for i in range(50)])
    assert acc.shape == ()
    np.testing.assert_allclose(acc, expected, rtol=1e-6)


def test_accuracy_ties_count_against_the_label(backend):
    """Caffe counts every class scoring >= the label's score, so a tie is a miss at top_k=1."""
    x = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]], np.float32)
    labels = [0, 1, 2]
    (top1,) = run_forward(accuracy(backend), blobs(backend, x, labels), tops(backend, 1))
    np.testing.assert_allclose(top1, 1 / 3)
    (top2,) = run_forward(accuracy(backend, "top_k: 2"), blobs(backend, x, labels),
                          tops(backend, 1))
    np.testing.assert_allclose(top2, 2 / 3)


def test_accuracy_ignore_label_and_per_class(backend):
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]  # predicts 0 1 2 3 0 1
    labels = [0, 1, 3, 3, 1, 7]
    acc, per_class = run_forward(accuracy(backend, "ignore_label: 7"),
                                 blobs(backend, x, labels), tops(backend, 2))
    np.testing.assert_allclose(acc, 3 / 5)
    np.testing.assert_allclose(per_class, [1.0, 0.5, 0.0, 0.5])


def test_accuracy_spatial_axis(backend):
    x = rand(2, 5, 3, 4)
    labels = RS.randint(0, 5, size=(2, 1, 3, 4))
    (acc,) = run_forward(accuracy(backend), blobs(backend, x, labels), tops(backend, 1))
    np.testing.assert_allclose(acc, (x.argmax(axis=1) == labels[:, 0]).mean(), rtol=1e-6)


def test_accuracy_all_ignored_is_zero(backend):
    (acc,) = run_forward(accuracy(backend, "ignore_label: 0"),
                         blobs(backend, rand(3, 4), [0, 0, 0]), tops(backend, 1))
    assert acc == 0


def test_accuracy_errors(backend):
    with pytest.raises(LayerSetupError, match="top_k"):
        run_forward(accuracy(backend, "top_k: 5"), blobs(backend, rand(3, 4), [0, 1, 2]),
                    tops(backend, 1))
    with pytest.raises(LayerSetupError, match="number of labels"):
        run_forward(accuracy(backend), blobs(backend, rand(2, 3, 2), [0, 1]),
                    tops(backend, 1))
    layer = accuracy(backend)
    bottom, top = blobs(backend, rand(2, 3), [0, 1]), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="no backward"):
        layer.backward(top, [True, False], bottom)


# ---------------------------------------------------------------- EuclideanLoss

def test_euclidean_loss_forward(backend):
    a, b = rand(4, 3, 2), rand(4, 6)
    layer = make_layer('type: "EuclideanLoss"', backend)
    (loss,) = run_forward(layer, blobs(backend, a, b), tops(backend, 1))
    assert layer.is_loss and loss.shape == ()
    expected = F.mse_loss(t(a).reshape(4, 6), t(b), reduction="sum").item() / 4 / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_euclidean_loss_gradient_both_bottoms(backend):
    layer = make_layer('type: "EuclideanLoss"', backend)
    check_gradient(layer, blobs(backend, rand(3, 4), rand(3, 4)), tops(backend, 1))
    assert layer.allow_force_backward(1)


def test_euclidean_loss_dimension_mismatch(backend):
    with pytest.raises(LayerSetupError, match="same dimension"):
        run_forward(make_layer('type: "EuclideanLoss"', backend),
                    blobs(backend, rand(3, 4), rand(3, 5)), tops(backend, 1))


# ---------------------------------------------------------------- Concat

@pytest.mark.parametrize("param,axis", [("", 1), ("axis: 0", 0), ("axis: -1", 3),
                                        ("concat_dim: 2", 2)])
def test_concat_forward_and_gradient(backend, param, axis):
    shapes = [[2, 3, 4, 2], [2, 3, 4, 2], [2, 3, 4, 2]]
    for k, s in enumerate(shapes):
        s[axis] += k
    arrays = [rand(*s) for s in shapes]
    text = 'type: "Concat" concat_param { %s }' % param
    (y,) = run_forward(make_layer(text, backend), blobs(backend, *arrays), tops(backend, 1))
    np.testing.assert_array_equal(y, np.concatenate(arrays, axis=axis))
    check_gradient(make_layer(text, backend), blobs(backend, *arrays), tops(backend, 1),
                   max_checks=40)


def test_concat_single_bottom_passes_through(backend):
    x = rand(2, 3)
    bottom, top = blobs(backend, x), tops(backend, 1)
    layer = make_layer('type: "Concat"', backend)
    (y,) = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(y, x)
    set_diff(backend, top[0], np.full((2, 3), 4.0))
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(host(backend, bottom[0].diff), 4.0)


def test_concat_errors(backend):
    with pytest.raises(LayerSetupError, match="same shape"):
        run_forward(make_layer('type: "Concat"', backend),
                    blobs(backend, rand(2, 3, 4), rand(2, 3, 5)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="axis or concat_dim"):
        run_forward(make_layer('type: "Concat" concat_param { axis: 1 concat_dim: 1 }',
                               backend), blobs(backend, rand(2, 3), rand(2, 3)),
                    tops(backend, 1))
    with pytest.raises(LayerSetupError, match="concat_dim"):
        run_forward(make_layer('type: "Concat" concat_param { concat_dim: 2 }', backend),
                    blobs(backend, rand(2, 3), rand(2, 3)), tops(backend, 1))


# ---------------------------------------------------------------- Split

def test_split_shares_data_and_sums_diffs(backend):
    x = rand(3, 4)
    layer = make_layer('type: "Split"', backend)
    bottom, top = blobs(backend, x), tops(backend, 3)
    outputs = run_forward(layer, bottom, top)
    for y, blob in zip(outputs, top):
        np.testing.assert_array_equal(y, x)
        assert blob.data is bottom[0].data and blob.shape == (3, 4)
    diffs = [rand(3, 4) for _ in range(3)]
    for blob, d in zip(top, diffs):
        set_diff(backend, blob, d)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(host(backend, bottom[0].diff), sum(diffs), rtol=1e-6)


@pytest.mark.parametrize("n_tops", [1, 2, 3])
def test_split_gradient(backend, n_tops):
    layer = make_layer('type: "Split"', backend)
    check_gradient(layer, blobs(backend, rand(2, 3)), tops(backend, n_tops))


def test_split_refuses_in_place(backend):
    (blob,) = blobs(backend, rand(2))
    with pytest.raises(LayerSetupError, match="in-place"):
        run_forward(make_layer('type: "Split"', backend), [blob], [blob, Blob((), backend)])


# ---------------------------------------------------------------- Flatten

@pytest.mark.parametrize("param,shape", [("", (2, 60)), ("axis: 2", (2, 3, 20)),
                                         ("axis: 1 end_axis: 2", (2, 12, 5)),
                                         ("axis: 0 end_axis: -2", (24, 5))])
def test_flatten_forward_and_gradient(backend, param, shape):
    x = rand(2, 3, 4, 5)
    text = 'type: "Flatten" flatten_param { %s }' % param
    (y,) = run_forward(make_layer(text, backend), blobs(backend, x), tops(backend, 1))
    np.testing.assert_array_equal(y, x.reshape(shape))
    check_gradient(make_layer(text, backend), blobs(backend, x), tops(backend, 1),
                   max_checks=30)


def test_flatten_backward_keeps_bottom_diff_array(backend):
    layer = make_layer('type: "Flatten"', backend)
    bottom, top = blobs(backend, rand(2, 3, 2)), tops(backend, 1)
    run_forward(layer, bottom, top)
    own_diff = bottom[0].diff
    set_diff(backend, top[0], np.arange(12).reshape(2, 6))
    layer.backward(top, [True], bottom)
    assert bottom[0].diff is own_diff
    np.testing.assert_array_equal(host(backend, own_diff), np.arange(12).reshape(2, 3, 2))


def test_flatten_errors(backend):
    (blob,) = blobs(backend, rand(2, 3))
    with pytest.raises(LayerSetupError, match="in-place"):
        run_forward(make_layer('type: "Flatten"', backend), [blob], [blob])
    with pytest.raises(LayerSetupError, match="end_axis"):
        run_forward(make_layer('type: "Flatten" flatten_param { axis: 2 end_axis: 1 }',
                               backend), blobs(backend, rand(2, 3, 4)), tops(backend, 1))


# ---------------------------------------------------------------- Eltwise

def distinct(n, shape):
    """n arrays whose elements all differ by at least 0.1 (MAX stays away from its kinks)."""
    count = int(np.prod(shape))
    values = RS.permutation(n * count).astype(np.float32) * 0.1 - n * count * 0.05
    return [v.reshape(shape) for v in values.reshape(n, count)]


@pytest.mark.parametrize("param,reference", [
    ("operation: PROD", lambda a, b, c: a * b * c),
    ("operation: SUM", lambda a, b, c: a + b + c),
    ("operation: SUM coeff: 1 coeff: -0.5 coeff: 2", lambda a, b, c: a - 0.5 * b + 2 * c),
    ("operation: MAX", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
])
def test_eltwise_forward(backend, param, reference):
    arrays = distinct(3, (2, 3, 4))
    text = 'type: "Eltwise" eltwise_param { %s }' % param
    (y,) = run_forward(make_layer(text, backend), blobs(backend, *arrays), tops(backend, 1))
    np.testing.assert_allclose(y, reference(*arrays), rtol=1e-6)


def test_eltwise_default_is_sum(backend):
    a, b = rand(2, 3), rand(2, 3)
    (y,) = run_forward(make_layer('type: "Eltwise"', backend), blobs(backend, a, b),
                       tops(backend, 1))
    np.testing.assert_allclose(y, a + b, rtol=1e-6)


@pytest.mark.parametrize("param", ["operation: PROD", "operation: PROD stable_prod_grad: false",
                                   "operation: SUM coeff: 1 coeff: -0.5 coeff: 2",
                                   "operation: MAX"])
def test_eltwise_gradient(backend, param):
    if "PROD" in param:
        arrays = [rand(2, 3, 2, low=0.5, high=1.5) * s for s in (1, -1, 1)]
    else:
        arrays = [a * 0.2 for a in distinct(3, (2, 3, 2))]
    layer = make_layer('type: "Eltwise" eltwise_param { %s }' % param, backend)
    check_gradient(layer, blobs(backend, *arrays), tops(backend, 1))


def test_eltwise_max_tie_rule(backend):
    """Caffe: bottom[1] wins a tie with bottom[0]; later bottoms win only when greater."""
    a = np.array([1.0, 2.0, 5.0, 0.0], np.float32)
    b = np.array([1.0, 1.0, 5.0, 3.0], np.float32)
    c = np.array([0.0, 2.0, 5.0, 3.0], np.float32)
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }', backend)
    bottom, top = blobs(backend, a, b, c), tops(backend, 1)
    (y,) = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(y, [1, 2, 5, 3])
    set_diff(backend, top[0], np.ones(4))
    layer.backward(top, [True, True, True], bottom)
    grads = np.stack([host(backend, blob.diff) for blob in bottom])
    np.testing.assert_array_equal(grads, [[0, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]])


def test_eltwise_errors(backend):
    with pytest.raises(LayerSetupError, match="one coefficient per bottom"):
        run_forward(make_layer('type: "Eltwise" eltwise_param { coeff: 1 }', backend),
                    blobs(backend, rand(2), rand(2)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="only allowed with operation SUM"):
        run_forward(make_layer('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 '
                               'coeff: 2 }', backend),
                    blobs(backend, rand(2), rand(2)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="same shape"):
        run_forward(make_layer('type: "Eltwise"', backend),
                    blobs(backend, rand(2, 3), rand(3, 2)), tops(backend, 1))


# ---------------------------------------------------------------- arity

@pytest.mark.parametrize("text,n_bottom,n_top", [
    ('type: "ReLU"', 2, 1), ('type: "SoftmaxWithLoss"', 1, 1),
    ('type: "SoftmaxWithLoss"', 2, 3), ('type: "Eltwise"', 1, 1),
    ('type: "Accuracy"', 2, 3), ('type: "Split"', 2, 1),
])
def test_arity_is_declared(backend, text, n_bottom, n_top):
    layer = make_layer(text, backend)
    with pytest.raises(LayerSetupError, match="blob"):
        layer.check_arity([Blob((), backend)] * n_bottom, [Blob((), backend)] * n_top)
