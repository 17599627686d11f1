"""Caffe's gradient checker, for one layer or for the layers of a built Net.

The objective is sum_i <top_i, R_i> for a fixed random R (so every top element counts);
its derivative by each checked element, from the layer's backward, is compared with the
central difference (f(x + h) - f(x - h)) / 2h. An element passes when

    |analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)

and elements whose |value| lies within kink_range of kink are skipped, as Caffe's
GradientChecker does for non-differentiable points (kink 0 covers ReLU, kink 1 the hinge).
Before every forward the random streams are reseeded, as Caffe's checker does, so
stochastic layers (Dropout in TRAIN) see the same mask for every evaluation.
"""
from collections import namedtuple

import numpy as np

from .blob import Blob
from .layer import Layer
from .rng import set_random_seed

BlobCheck = namedtuple("BlobCheck",
                       "what worst checked count at_kink element analytic numeric passed")
BlobCheck.__doc__ = """The result for one bottom or parameter blob: `worst` is the largest
|analytic - numeric| / max(|analytic|, |numeric|, 1) over the `checked` elements (of
`count`; `at_kink` of them were skipped), reached at flat index `element` with those two
values."""

LayerCheck = namedtuple("LayerCheck", "index name type results skipped")
LayerCheck.__doc__ = """The results of one layer of a Net; `skipped` says why a layer had
nothing to check (and `results` is then empty)."""


def _reseed(backend, seed):
    """Caffe::set_random_seed: the host stream and the backend's device stream restart."""
    set_random_seed(seed)
    backend.reseed()


def check_layer(layer, bottom, top, check_bottom=None, stepsize=1e-2, threshold=1e-3,
                kink=0.0, kink_range=-1.0, seed=1701, max_checks=None, check_params=True,
                param_kinks=True, setup=False):
    """Check `layer`'s gradients on `bottom` -> `top`; returns a BlobCheck per checked blob.

    check_bottom: indices of the bottoms to check (default all); parameter blobs are
    checked when check_params, their elements skipped at the kink too when param_kinks
    (Caffe's rule). At most max_checks elements per blob are checked (a random sample of
    those off the kink; None checks all). setup=True calls layer.setup first (a fresh layer);
    a layer already set up (e.g. inside a Net) is only reshaped. The blobs' data is
    restored afterwards; their diffs hold the analytic gradient.
    """
    be = layer.backend
    rs = np.random.RandomState(seed)
    if setup:
        layer.setup(bottom, top)
    if check_bottom is None:
        check_bottom = list(range(len(bottom)))

    def forward():
        _reseed(be, seed)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)

    forward()
    weights = [rs.standard_normal(t.shape).astype(np.float32) for t in top]
    device_weights = [be.asarray(w) for w in weights]

    def objective():
        forward()
        return sum(float((be.asnumpy(t.data).astype(np.float64) * w).sum())
                   for t, w in zip(top, weights))

    saved_propagate = list(layer.param_propagate_down)
    try:
        for t, w in zip(top, device_weights):
            t.diff[...] = w
        for p in layer.blobs:
            p.diff[...] = 0
        layer.param_propagate_down = [True] * len(layer.blobs)
        for i in check_bottom:
            bottom[i].diff[...] = 0
        layer.backward(top, [i in check_bottom for i in range(len(bottom))], bottom)
    finally:
        layer.param_propagate_down = saved_propagate

    targets = [(bottom[i], "bottom[%d]" % i, kink_range) for i in check_bottom]
    if check_params:
        targets += [(p, "param[%d]" % k, kink_range if param_kinks else -1.0)
                    for k, p in enumerate(layer.blobs)]
    analytic = [be.asnumpy(b.diff).reshape(-1) for b, _, _ in targets]
    return [_check_blob(blob, what, grad, objective, rs, stepsize, threshold, kink, skip,
                        max_checks)
            for (blob, what, skip), grad in zip(targets, analytic)]


def _check_blob(blob, what, grad, objective, rs, stepsize, threshold, kink, kink_range,
                max_checks):
    values = blob.backend.asnumpy(blob.data).reshape(-1)
    eligible = np.arange(values.size)
    if kink_range > 0:
        eligible = eligible[np.abs(np.abs(values) - kink) >= kink_range]
    idx = eligible
    if max_checks is not None and eligible.size > max_checks:
        idx = np.sort(rs.choice(eligible, max_checks, replace=False))
    flat = blob.data.reshape(-1)
    worst, at = 0.0, (-1, 0.0, 0.0)
    for j in idx:
        x = float(values[j])
        flat[j] = np.float32(x + stepsize)
        plus = objective()
        flat[j] = np.float32(x - stepsize)
        minus = objective()
        flat[j] = np.float32(x)
        numeric = (plus - minus) / (2 * stepsize)
        a = float(grad[j])
        err = abs(a - numeric) / max(abs(a), abs(numeric), 1.0)
        if err >= worst:
            worst, at = err, (int(j), a, numeric)
    return BlobCheck(what, worst, len(idx), values.size, values.size - eligible.size,
                     at[0], at[1], at[2], worst <= threshold)


def has_backward(layer):
    """Whether the layer's class defines a backward (Accuracy, data layers do not)."""
    return type(layer).backward is not Layer.backward


def check_net(net, names=None, input_seed=1701, **options):
    """Check the layers of `net` (those named in `names`, default all, Split layers
    included) on the bottoms they see in one forward pass; returns a LayerCheck per layer,
    in net order.

    Input layers' tops are filled with standard gaussian values (seed `input_seed`);
    data layers produce their batch. Each layer runs on copies of its bottoms (so
    in-place layers are checked on their real input) and checks the bottoms that take
    a gradient (those `allow_force_backward` admits: not labels) and its parameter
    blobs. The kink rule applies to bottoms only (it is a property of the input, e.g.
    ReLU at 0, not of a bias that happens to be 0). `options` go to check_layer.
    """
    chosen = (range(len(net.layers)) if names is None
              else sorted({net.layer_index(n) for n in names}))
    inputs = _record_bottoms(net, set(chosen), input_seed)
    checks = []
    for i in chosen:
        layer = net.layers[i]
        bottoms = inputs[i]
        check_bottom = [k for k in range(len(bottoms)) if layer.allow_force_backward(k)]
        if not has_backward(layer):
            checks.append(LayerCheck(i, net.layer_names[i], layer.type, [], "no backward"))
            continue
        if not check_bottom and not layer.blobs:
            checks.append(LayerCheck(i, net.layer_names[i], layer.type, [],
                                     "no differentiable bottom and no parameters"))
            continue
        top = [Blob((), net.backend) for _ in net.top_vecs[i]]
        results = check_layer(layer, bottoms, top, check_bottom=check_bottom,
                              param_kinks=False, **options)
        checks.append(LayerCheck(i, net.layer_names[i], layer.type, results, None))
    return checks


def _record_bottoms(net, chosen, seed):
    """One forward pass, layer by layer; returns {layer index: fresh Blobs holding copies
    of that layer's bottoms as it saw them}."""
    be = net.backend
    rs = np.random.RandomState(seed)
    recorded = {}
    for i, (layer, bottom, top) in enumerate(zip(net.layers, net.bottom_vecs, net.top_vecs)):
        if i in chosen:
            copies = []
            for b in bottom:
                blob = Blob(b.shape, be)
                blob.data[...] = b.data
                copies.append(blob)
            recorded[i] = copies
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        if layer.type == "Input":
            for t in top:
                t.data[...] = be.asarray(rs.standard_normal(t.shape).astype(np.float32))
        if i >= max(chosen, default=-1):
            break
    return recorded
