"""Helpers for layer tests: build one layer from prototxt text, and Caffe's gradient checker."""
import numpy as np
import pytest
from google.protobuf import text_format

import netkit.layers  # noqa: F401  (registers every layer)
from netkit import netkit_pb2 as pb
from netkit.blob import Blob
from netkit.layer import TRAIN, LayerSetupError
from netkit.registry import layers


def make_layer(text, backend, phase=TRAIN):
    """A layer from LayerParameter prototxt text (e.g. 'type: "ReLU" relu_param {...}')."""
    param = text_format.Parse(text, pb.LayerParameter())
    if not param.name:
        param.name = param.type.lower()
    return layers.get(param.type)(param, phase, backend)


def blobs(backend, *arrays):
    """Blobs on `backend` holding copies of the given host arrays."""
    out = []
    for a in arrays:
        b = Blob(np.shape(a), backend)
        b.data[...] = backend.asarray(np.asarray(a, dtype=np.float32))
        out.append(b)
    return out


def tops(backend, n):
    return [Blob((), backend) for _ in range(n)]


def run_forward(layer, bottom, top):
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return [layer.backend.asnumpy(t.data) for t in top]


def batches(layer, top, n):
    """`n` forwards of a data layer (no bottoms); host copies of its tops after each."""
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append(tuple(layer.backend.asnumpy(t.data).copy() for t in top))
    return out


def fails(backend, text, *bottoms, match, num_tops=1, phase=TRAIN):
    """The layer `text`, set up on `bottoms` with `num_tops` tops, raises LayerSetupError
    matching `match`."""
    layer = make_layer(text, backend, phase)
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, blobs(backend, *bottoms), tops(backend, num_tops))


def forward_backward(layer, backend, bottoms, top_diffs, propagate=None):
    """Set up and run forward, then backward with the given top diffs (param diffs zeroed
    first); returns host copies: (tops' data, bottoms' diffs, params' diffs)."""
    bottom = blobs(backend, *bottoms)
    top = tops(backend, len(top_diffs))
    outputs = run_forward(layer, bottom, top)
    for blob, diff in zip(top, top_diffs):
        blob.diff[...] = backend.asarray(np.broadcast_to(diff, blob.shape).astype(np.float32))
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward(top, propagate or [True] * len(bottom), bottom)
    return (outputs, [backend.asnumpy(b.diff) for b in bottom],
            [backend.asnumpy(p.diff) for p in layer.blobs])


def assert_close(actual, expected, rtol=1e-5):
    """Relative L2 distance: robust to float32 round-off in BLAS kernels of any kind."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(np.linalg.norm(expected), 1e-12)
    assert np.linalg.norm(actual - expected) / scale <= rtol, \
        "relative error %g" % (np.linalg.norm(actual - expected) / scale)


def check_gradient(layer, bottom, top, check_bottom=None, stepsize=1e-2, threshold=1e-3,
                   kink=0.0, kink_range=-1.0, seed=1701, max_checks=200, check_params=True,
                   setup=True):
    """Caffe's GradientChecker on objective sum_i <top_i, R_i> for a random R.

    Central differences on (a sample of) every element of the checked bottoms and param
    blobs; passes when |analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1).
    Elements within kink_range of kink are skipped (non-differentiable points).
    Returns the worst scaled error seen.
    """
    be = layer.backend
    rs = np.random.RandomState(seed)
    if setup:
        layer.setup(bottom, top)
    layer.reshape(bottom, top)
    if check_bottom is None:
        check_bottom = list(range(len(bottom)))
    layer.forward(bottom, top)
    weights = [rs.standard_normal(t.shape).astype(np.float32) for t in top]

    def objective():
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return sum(float((be.asnumpy(t.data).astype(np.float64) * w).sum())
                   for t, w in zip(top, weights))

    objective()
    for t, w in zip(top, weights):
        t.diff[...] = be.asarray(w)
    for p in layer.blobs:
        p.diff[...] = 0
    layer.param_propagate_down = [True] * len(layer.blobs)
    propagate = [i in check_bottom for i in range(len(bottom))]
    for i in check_bottom:
        bottom[i].diff[...] = 0
    layer.backward(top, propagate, bottom)

    targets = [(bottom[i], "bottom[%d]" % i) for i in check_bottom]
    if check_params:
        targets += [(p, "param[%d]" % k) for k, p in enumerate(layer.blobs)]
    analytic = [be.asnumpy(b.diff).copy() for b, _ in targets]
    worst = 0.0
    for (blob, what), grad in zip(targets, analytic):
        n = blob.count
        idx = np.arange(n) if n <= max_checks else rs.choice(n, max_checks, replace=False)
        for j in idx:
            host = be.asnumpy(blob.data).reshape(-1)
            x = host[j]
            if kink_range > 0 and abs(x - kink) < kink_range:
                continue
            host[j] = x + stepsize
            blob.data[...] = be.asarray(host.reshape(blob.shape))
            plus = objective()
            host[j] = x - stepsize
            blob.data[...] = be.asarray(host.reshape(blob.shape))
            minus = objective()
            host[j] = x
            blob.data[...] = be.asarray(host.reshape(blob.shape))
            numeric = (plus - minus) / (2 * stepsize)
            a = float(grad.reshape(-1)[j])
            scale = max(abs(a), abs(numeric), 1.0)
            err = abs(a - numeric) / scale
            worst = max(worst, err)
            assert abs(a - numeric) <= threshold * scale, (
                "%s layer %s element %d: analytic %g vs numeric %g"
                % (layer.type, what, j, a, numeric))
    return worst
