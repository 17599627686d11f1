"""Loss layers with Caffe's semantics: MultinomialLogisticLoss, InfogainLoss, HingeLoss,
SigmoidCrossEntropyLoss, ContrastiveLoss. Forward against closed forms (numpy or PyTorch),
exact backward values, Caffe's gradient check on every backend, normalization, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import blobs, check_gradient, make_layer, run_forward, tops
from netkit.errors import NetkitError
from netkit.layer import LayerSetupError
from netkit.net import Net
from netkit.protoio import write_binary
from netkit.registry import layers
from netkit.weights import array_to_blob_proto

RS = np.random.RandomState(11)


def rand(*shape, low=-1.0, high=1.0):
    return RS.uniform(low, high, size=shape).astype(np.float32)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def backward(layer, bottom, top, weight, propagate):
    """Run backward with loss weight `weight` in the top's diff; host bottom diffs."""
    top[0].diff[...] = weight
    layer.backward(top, propagate, bottom)
    return [layer.backend.asnumpy(b.diff) for b in bottom]


def test_types_are_registered():
    for name in ("MultinomialLogisticLoss", "InfogainLoss", "HingeLoss",
                 "SigmoidCrossEntropyLoss", "ContrastiveLoss"):
        assert name in layers and layers.get(name).is_loss


# ---------------------------------------------------------------- MultinomialLogisticLoss

MLL = 'type: "MultinomialLogisticLoss"'


def probabilities(n, c):
    p = rand(n, c, low=0.05, high=1.0)
    return p / p.sum(axis=1, keepdims=True)


def test_multinomial_logistic_loss_matches_torch_nll(backend):
    p, labels = probabilities(6, 5), RS.randint(0, 5, size=6)
    (loss,) = run_forward(make_layer(MLL, backend), blobs(backend, p, labels),
                          tops(backend, 1))
    expected = F.nll_loss(torch.log(t(p)), torch.from_numpy(labels.astype(np.int64)))
    assert loss.shape == ()
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


def test_multinomial_logistic_loss_clamps_at_log_threshold(backend):
    """A zero probability for the label costs -log(1e-20) = 46.0517 (Caffe's
    kLOG_THRESHOLD) and its gradient is -loss_weight / (N 1e-20), not infinity."""
    p = np.array([[0.0, 1.0], [0.5, 0.5]], np.float32)
    layer = make_layer(MLL, backend)
    bottom, top = blobs(backend, p, [0, 1]), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    np.testing.assert_allclose(loss, (46.0517 - np.log(0.5)) / 2, rtol=1e-5)
    diff, _ = backward(layer, bottom, top, 3.0, [True, False])
    expected = np.array([[-3.0 / 2 / np.float32(1e-20), 0.0], [0.0, -3.0 / 2 / 0.5]])
    np.testing.assert_allclose(diff, expected, rtol=1e-5)


def test_multinomial_logistic_loss_backward_values(backend):
    p, labels = probabilities(4, 3), np.array([2, 0, 1, 1])
    layer = make_layer(MLL, backend)
    bottom, top = blobs(backend, p, labels.astype(np.float32) + 0.7), tops(backend, 1)
    run_forward(layer, bottom, top)  # labels truncate: 2.7 -> 2 etc.
    diff, _ = backward(layer, bottom, top, 0.5, [True, False])
    expected = np.zeros_like(p)
    expected[np.arange(4), labels] = -0.5 / 4 / p[np.arange(4), labels]
    np.testing.assert_allclose(diff, expected, rtol=1e-5)


def test_multinomial_logistic_loss_gradient(backend):
    p, labels = probabilities(5, 4).reshape(5, 2, 2, 1), RS.randint(0, 4, size=5)
    check_gradient(make_layer(MLL, backend), blobs(backend, p, labels), tops(backend, 1),
                   check_bottom=[0], threshold=2e-2, kink=0.0, kink_range=0.05)


def test_multinomial_logistic_loss_errors(backend):
    with pytest.raises(LayerSetupError, match="one label per item"):
        run_forward(make_layer(MLL, backend), blobs(backend, probabilities(2, 3),
                                                    np.zeros((2, 2))), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="first dimension"):
        run_forward(make_layer(MLL, backend), blobs(backend, probabilities(2, 3), [0, 1, 2]),
                    tops(backend, 1))
    layer = make_layer(MLL, backend)
    bottom, top = blobs(backend, probabilities(2, 3), [0, 1]), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="label input"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------- InfogainLoss

def infogain_reference(x, labels, H, axis=1, valid=None):
    """Per position -sum_l H[label, l] log softmax(x)_l, in float64 (torch)."""
    logp = torch.log_softmax(t(x).double(), dim=axis)
    moved = torch.movedim(logp, axis, -1).reshape(-1, x.shape[axis]).numpy()
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    safe = np.where(valid, lab, 0) if valid is not None else lab
    return -(H.astype(np.float64)[safe] * moved).sum(axis=1)


def infogain_gradient(x, labels, H, axis, scale, valid=None):
    """(p * rowsum(H)[label] - H[label]) * scale at every position, laid out like x."""
    p = torch.softmax(t(x).double(), dim=axis).numpy()
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    lab = np.where(valid, lab, 0) if valid is not None else lab
    moved = np.moveaxis(p, axis, -1).reshape(-1, x.shape[axis])
    g = moved * H.sum(axis=1)[lab][:, None] - H[lab]
    if valid is not None:
        g *= valid[:, None]
    shape = np.moveaxis(p, axis, -1).shape
    return np.moveaxis(g.reshape(shape), -1, axis) * scale


def test_infogain_loss_third_bottom_matches_closed_form(backend):
    """Caffe's test setup: axis 2, (4, 2, 5, 2) scores, labels (4, 2, 1, 2), H > 0."""
    x = rand(4, 2, 5, 2, low=-0.5, high=2.0)
    labels = RS.randint(0, 5, size=(4, 2, 1, 2))
    H = rand(5, 5, low=0.1, high=2.0)
    layer = make_layer('type: "InfogainLoss" infogain_loss_param { axis: 2 }', backend)
    loss, prob = run_forward(layer, blobs(backend, x, labels, H), tops(backend, 2))
    np.testing.assert_allclose(loss, infogain_reference(x, labels, H, axis=2).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(prob, torch.softmax(t(x), dim=2).numpy(), rtol=1e-5)


@pytest.mark.parametrize("legacy_shape", [False, True])
def test_infogain_loss_reads_source(backend, tmp_path, legacy_shape):
    """H from a .binaryproto, with a shape or the legacy (1, 1, L, L) pycaffe writes."""
    x, labels, H = rand(6, 4, low=-2, high=2), RS.randint(0, 4, size=6), rand(4, 4, low=0, high=1)
    proto = array_to_blob_proto(H)
    if legacy_shape:
        proto.ClearField("shape")
        proto.num, proto.channels, proto.height, proto.width = 1, 1, 4, 4
    path = tmp_path / "H.binaryproto"
    write_binary(str(path), proto)
    layer = make_layer('type: "InfogainLoss" infogain_loss_param { source: "%s" }' % path,
                       backend)
    (loss,) = run_forward(layer, blobs(backend, x, labels), tops(backend, 1))
    np.testing.assert_allclose(loss, infogain_reference(x, labels, H).mean(), rtol=1e-5)


def test_infogain_loss_with_identity_is_softmax_loss(backend):
    x, labels = rand(5, 3, low=-3, high=3), RS.randint(0, 3, size=5)
    layer = make_layer('type: "InfogainLoss"', backend)
    (loss,) = run_forward(layer, blobs(backend, x, labels, np.eye(3)), tops(backend, 1))
    expected = F.cross_entropy(t(x), torch.from_numpy(labels.astype(np.int64)))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


def test_infogain_loss_clamps_at_log_threshold(backend):
    x = np.array([[0.0, 200.0]], np.float32)  # p[0] underflows to 0
    layer = make_layer('type: "InfogainLoss"', backend)
    (loss,) = run_forward(layer, blobs(backend, x, [0], np.eye(2)), tops(backend, 1))
    np.testing.assert_allclose(loss, 46.0517, rtol=1e-5)


@pytest.mark.parametrize("normalization,divisor", [
    ("", "valid"), ("normalization: VALID", "valid"), ("normalization: FULL", "full"),
    ("normalization: BATCH_SIZE", "batch"), ("normalization: NONE", "none")])
def test_infogain_loss_normalization_and_ignore_label(backend, normalization, divisor):
    x = rand(3, 4, 5, low=-2, high=2)
    labels = RS.randint(0, 4, size=(3, 5)).astype(np.float32)
    labels.reshape(-1)[[1, 6, 7]] = 255
    valid = labels.reshape(-1) != 255
    H = rand(4, 4, low=0.0, high=1.5)
    n = {"valid": valid.sum(), "full": 15, "batch": 3, "none": 1}[divisor]
    layer = make_layer('type: "InfogainLoss" loss_param { ignore_label: 255 %s }'
                       % normalization, backend)
    bottom, top = blobs(backend, x, labels, H), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    per_position = infogain_reference(x, labels, H, valid=valid)
    np.testing.assert_allclose(loss, per_position[valid].sum() / n, rtol=1e-5)
    diff = backward(layer, bottom, top, 2.0, [True, False, False])[0]
    expected = infogain_gradient(x, labels, H, 1, 2.0 / n, valid)
    np.testing.assert_allclose(diff, expected, rtol=1e-4, atol=1e-6)


def test_infogain_loss_all_ignored_is_zero(backend):
    layer = make_layer('type: "InfogainLoss" loss_param { ignore_label: -1 }', backend)
    (loss,) = run_forward(layer, blobs(backend, rand(2, 3), [-1, -1], np.eye(3)),
                          tops(backend, 1))
    assert loss == 0


@pytest.mark.parametrize("extra,shape,axis", [
    ("infogain_loss_param { axis: 2 }", (3, 2, 4, 2), 2),
    ("loss_param { ignore_label: 1 normalization: FULL }", (3, 3, 2, 2), 1)])
def test_infogain_loss_gradient(backend, extra, shape, axis):
    x = rand(*shape, low=-0.5, high=2.0)
    label_shape = shape[:axis] + (1,) + shape[axis + 1:]
    labels = RS.randint(0, shape[axis], size=label_shape)
    H = rand(shape[axis], shape[axis], low=0.1, high=2.0)
    layer = make_layer('type: "InfogainLoss" %s' % extra, backend)
    check_gradient(layer, blobs(backend, x, labels, H), tops(backend, 1), check_bottom=[0])


def test_infogain_loss_errors(backend, tmp_path):
    with pytest.raises(LayerSetupError, match="infogain_loss_param.source"):
        run_forward(make_layer('type: "InfogainLoss"', backend),
                    blobs(backend, rand(2, 3), [0, 1]), tops(backend, 1))
    missing = tmp_path / "nope.binaryproto"
    with pytest.raises(LayerSetupError, match="nope.binaryproto"):
        run_forward(make_layer('type: "InfogainLoss" infogain_loss_param { source: "%s" }'
                               % missing, backend), blobs(backend, rand(2, 3), [0, 1]),
                    tops(backend, 1))
    with pytest.raises(LayerSetupError, match="H must be 3 x 3"):
        run_forward(make_layer('type: "InfogainLoss"', backend),
                    blobs(backend, rand(2, 3), [0, 1], np.eye(2)), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="normalize is deprecated"):
        run_forward(make_layer('type: "InfogainLoss" loss_param { normalize: true }',
                               backend), blobs(backend, rand(2, 3), [0, 1], np.eye(3)),
                    tops(backend, 1))
    with pytest.raises(LayerSetupError, match="number of labels"):
        run_forward(make_layer('type: "InfogainLoss"', backend),
                    blobs(backend, rand(2, 3, 2), [0, 1], np.eye(3)), tops(backend, 1))
    layer = make_layer('type: "InfogainLoss"', backend)
    bottom, top = blobs(backend, rand(2, 3), [0, 1], np.eye(3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="infogain input"):
        layer.backward(top, [True, False, True], bottom)
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, False, False]


def test_infogain_loss_source_in_a_net(tmp_path):
    """The H file is read at setup inside a Net; the loss is a loss by default."""
    H = np.diag([1.0, 2.0, 3.0]).astype(np.float32)
    write_binary(str(tmp_path / "H.binaryproto"), array_to_blob_proto(H))
    net = Net("""
      layer { name: "in" type: "Input" top: "x" top: "y"
              input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
      layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "y" top: "loss"
              infogain_loss_param { source: "%s" } }""" % (tmp_path / "H.binaryproto"))
    x, y = rand(4, 3), np.array([0, 1, 2, 2], np.float32)
    out = net.forward(x=x, y=y)
    np.testing.assert_allclose(out["loss"], infogain_reference(x, y, H).mean(), rtol=1e-5)
    assert net.output_loss_weight("loss") == 1
    with pytest.raises(NetkitError, match="layer 'loss'.*infogain_loss_param.source"):
        Net("""layer { name: "in" type: "Input" top: "x" top: "y"
                       input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
               layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "y"
                       top: "loss" }""")


# ---------------------------------------------------------------- HingeLoss

def hinge_reference(x, labels, power):
    sign = np.ones_like(x)
    sign[np.arange(len(x)), labels] = -1
    margin = np.maximum(0, 1 + sign * x.astype(np.float64))
    return (margin ** power).sum() / len(x), margin, sign


def off_kinks(*shape):
    """Scores at least 0.05 away from +-1, the hinge's kinks."""
    x = rand(*shape, low=-3, high=3)
    near = np.abs(np.abs(x) - 1) < 0.05
    x[near] += 0.2
    return x


@pytest.mark.parametrize("norm,power", [("L1", 1), ("L2", 2)])
def test_hinge_loss_forward_and_backward(backend, norm, power):
    x, labels = off_kinks(6, 5), RS.randint(0, 5, size=6)
    layer = make_layer('type: "HingeLoss" hinge_loss_param { norm: %s }' % norm, backend)
    bottom, top = blobs(backend, x, labels), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    expected, margin, sign = hinge_reference(x, labels, power)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    diff, _ = backward(layer, bottom, top, 1.5, [True, False])
    grad = np.sign(margin) if power == 1 else 2 * margin
    np.testing.assert_allclose(diff, sign * grad * 1.5 / 6, rtol=1e-5, atol=1e-7)


def test_hinge_loss_default_is_l1_and_kink_gradient_is_zero(backend):
    """Caffe's sign(0) = 0: a score exactly on the margin gets no L1 gradient."""
    x = np.array([[-1.0, 0.5, 1.0]], np.float32)  # label 2: margin 0; class 0: margin 0
    layer = make_layer('type: "HingeLoss"', backend)
    bottom, top = blobs(backend, x, [2]), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    np.testing.assert_allclose(loss, 1.5)
    diff, _ = backward(layer, bottom, top, 1.0, [True, False])
    np.testing.assert_array_equal(diff, [[0.0, 1.0, 0.0]])


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss_gradient(backend, norm):
    x, labels = off_kinks(4, 5), RS.randint(0, 5, size=4)
    layer = make_layer('type: "HingeLoss" hinge_loss_param { norm: %s }' % norm, backend)
    check_gradient(layer, blobs(backend, x, labels), tops(backend, 1), check_bottom=[0],
                   threshold=2e-3 if norm == "L1" else 1e-2)


def test_hinge_loss_errors(backend):
    with pytest.raises(LayerSetupError, match="one label per item"):
        run_forward(make_layer('type: "HingeLoss"', backend),
                    blobs(backend, rand(2, 3), np.zeros((2, 3))), tops(backend, 1))
    layer = make_layer('type: "HingeLoss"', backend)
    bottom, top = blobs(backend, rand(2, 3), [0, 1]), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="label input"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss

def bce(x, target):
    """Per element binary cross-entropy with logits (PyTorch), float64."""
    return F.binary_cross_entropy_with_logits(t(x).double(), t(target).double(),
                                              reduction="none").numpy()


def test_sigmoid_cross_entropy_matches_torch_with_batch_normalization(backend):
    """The default normalizer is the batch size, not the element count."""
    x, target = rand(4, 3, 2, low=-5, high=5), rand(4, 3, 2, low=0, high=1)
    x[0, 0, :] = [-100.0, 100.0]  # stable form: finite for saturated scores
    (loss,) = run_forward(make_layer('type: "SigmoidCrossEntropyLoss"', backend),
                          blobs(backend, x, target), tops(backend, 1))
    np.testing.assert_allclose(loss, bce(x, target).sum() / 4, rtol=1e-5)


@pytest.mark.parametrize("loss_param,divisor", [
    ("", "batch"), ("normalization: VALID", "valid"), ("normalization: FULL", "full"),
    ("normalization: NONE", "none"), ("normalize: true", "valid"),
    ("normalize: false", "batch")])
def test_sigmoid_cross_entropy_normalization_and_ignore_label(backend, loss_param, divisor):
    x = rand(3, 8, low=-3, high=3)
    target = (RS.uniform(size=(3, 8)) > 0.5).astype(np.float32)
    target.reshape(-1)[[0, 5, 9, 23]] = -1
    valid = target != -1
    n = {"valid": valid.sum(), "full": 24, "batch": 3, "none": 1}[divisor]
    layer = make_layer('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 %s }'
                       % loss_param, backend)
    bottom, top = blobs(backend, x, target), tops(backend, 1)
    (loss,) = run_forward(layer, bottom, top)
    np.testing.assert_allclose(loss, bce(x, np.where(valid, target, 0))[valid].sum() / n,
                               rtol=1e-5)
    diff, _ = backward(layer, bottom, top, 0.5, [True, False])
    sigmoid = torch.sigmoid(t(x).double()).numpy()
    np.testing.assert_allclose(diff, (sigmoid - target) * valid * 0.5 / n, rtol=1e-5,
                               atol=1e-7)


def test_sigmoid_cross_entropy_gradient(backend):
    x, target = rand(2, 3, 2, 2, low=-3, high=3), rand(2, 3, 2, 2, low=0, high=1)
    layer = make_layer('type: "SigmoidCrossEntropyLoss"', backend)
    check_gradient(layer, blobs(backend, x, target), tops(backend, 1), check_bottom=[0])


def test_sigmoid_cross_entropy_errors(backend):
    with pytest.raises(LayerSetupError, match="same count"):
        run_forward(make_layer('type: "SigmoidCrossEntropyLoss"', backend),
                    blobs(backend, rand(2, 3), rand(2, 4)), tops(backend, 1))
    layer = make_layer('type: "SigmoidCrossEntropyLoss"', backend)
    bottom, top = blobs(backend, rand(2, 3), rand(2, 3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="target input"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------- ContrastiveLoss

def contrastive_pairs(n=8, c=3):
    """Pairs on both sides of margin 1: distances between 0.3 and 1.6, away from 1."""
    a = rand(n, c)
    direction = rand(n, c)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    dist = np.where(np.arange(n) % 2, RS.uniform(0.3, 0.8, n), RS.uniform(1.2, 1.6, n))
    b = (a + direction * dist[:, None]).astype(np.float32)
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0], np.float32)[:n]
    return a, b, y


def contrastive_reference(a, b, y, margin, legacy):
    d2 = ((a.astype(np.float64) - b) ** 2).sum(axis=1)
    if legacy:
        apart = np.maximum(margin - d2, 0)
    else:
        apart = np.maximum(margin - np.sqrt(d2), 0) ** 2
    return np.where(y.astype(int) != 0, d2, apart).sum() / len(a) / 2


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_forward(backend, legacy):
    a, b, y = contrastive_pairs()
    y[3] = 0.7  # truncates to 0: dissimilar, as Caffe's static_cast<int>
    text = ('type: "ContrastiveLoss" contrastive_loss_param { margin: 1.2 legacy_version: %s }'
            % str(legacy).lower())
    (loss,) = run_forward(make_layer(text, backend), blobs(backend, a, b.reshape(8, 3, 1, 1), y),
                          tops(backend, 1))
    np.testing.assert_allclose(loss, contrastive_reference(a, b, y, 1.2, legacy), rtol=1e-5)


def test_contrastive_loss_backward_values(backend):
    """Similar: (a - b) w / N; dissimilar inside the margin: -(m - d)/(d + 1e-4) (a - b)
    w / N; beyond it: 0. bottom[1] gets the negation."""
    a, b, y = contrastive_pairs()
    layer = make_layer('type: "ContrastiveLoss"', backend)
    bottom, top = blobs(backend, a, b, y), tops(backend, 1)
    run_forward(layer, bottom, top)
    da, db, _ = backward(layer, bottom, top, 2.0, [True, True, False])
    diff = a.astype(np.float64) - b
    d = np.sqrt((diff ** 2).sum(axis=1))
    coeff = np.where(y != 0, 1.0, np.where(d < 1, -(1 - d) / (d + 1e-4), 0.0))
    expected = diff * coeff[:, None] * 2.0 / 8
    np.testing.assert_allclose(da, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(db, -expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_loss_gradient(backend, legacy):
    a, b, y = contrastive_pairs()
    text = 'type: "ContrastiveLoss" contrastive_loss_param { legacy_version: %s }' % legacy
    check_gradient(make_layer(text, backend), blobs(backend, a, b, y), tops(backend, 1),
                   check_bottom=[0, 1], threshold=1e-2)


def test_contrastive_loss_errors(backend):
    layer = make_layer('type: "ContrastiveLoss"', backend)
    with pytest.raises(LayerSetupError, match="N x C"):
        run_forward(layer, blobs(backend, rand(2, 3), rand(2, 4), [0, 1]), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="height and width 1"):
        run_forward(make_layer('type: "ContrastiveLoss"', backend),
                    blobs(backend, rand(2, 3, 2), rand(2, 3, 2), [0, 1]), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="one similarity label per pair"):
        run_forward(make_layer('type: "ContrastiveLoss"', backend),
                    blobs(backend, rand(2, 3), rand(2, 3), [0, 1, 1]), tops(backend, 1))
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, True, False]


@pytest.mark.parametrize("layer_text", [
    'type: "SoftmaxWithLoss"', 'type: "SoftmaxWithLoss" loss_param { ignore_label: 5 }',
    'type: "Accuracy"', MLL, 'type: "HingeLoss"',
    'type: "InfogainLoss" infogain_loss_param { source: "%(h)s" }'])
@pytest.mark.parametrize("label", [-1, 3, 7])
def test_labels_outside_the_classes_are_refused(backend, tmp_path, layer_text, label):
    """A label that is no class index is an error naming the label, not a wrapped-around
    negative index (numpy's) or an IndexError; ignore_label is still skipped."""
    h = str(tmp_path / "h.binaryproto")
    write_binary(h, array_to_blob_proto(np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)))
    layer = make_layer(layer_text % {"h": h}, backend)
    bottom, top = blobs(backend, probabilities(2, 3), [0, label]), tops(backend, 1)
    with pytest.raises(NetkitError, match=r"label %d \(at position 1 .*\[0, 3\)" % label):
        run_forward(layer, bottom, top)
    ignoring = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: %d }' % label,
                          backend)
    run_forward(ignoring, blobs(backend, probabilities(2, 3), [0, label]), tops(backend, 1))
