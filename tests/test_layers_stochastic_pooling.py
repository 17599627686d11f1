"""Pooling STOCHASTIC against a transcription of Caffe's GPU kernels as plain loops."""
import numpy as np
import pytest

from layertest import blobs, make_layer, run_forward, tops
from netkit.layer import TEST, TRAIN, LayerSetupError

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
RS = np.random.RandomState(3)

# (bottom shape, kernel, stride): overlapping windows, clipped last windows, global.
CASES = [((2, 3, 6, 6), 3, 2), ((1, 2, 7, 5), 2, 2), ((2, 2, 5, 5), 3, 1), ((1, 3, 4, 4), 4, 1)]


def pooled(size, kernel, stride):
    return int(np.ceil((size - kernel) / stride)) + 1


def caffe_loops(x, kernel, stride, uniform=None):
    """Caffe's StoPoolForwardTest, or StoPoolForwardTrain with these uniform draws.
    Returns (top, picked flat indices h * W + w or None)."""
    num, channels, height, width = x.shape
    ph, pw = pooled(height, kernel, stride), pooled(width, kernel, stride)
    top = np.zeros((num, channels, ph, pw), np.float32)
    picked = np.zeros(top.shape, np.int64)
    for n, c, i, j in np.ndindex(top.shape):
        cells = [(h, w) for h in range(i * stride, min(i * stride + kernel, height))
                 for w in range(j * stride, min(j * stride + kernel, width))]
        if uniform is None:
            total, squares = FLT_MIN, np.float32(0)
            for h, w in cells:
                total += x[n, c, h, w]
                squares += x[n, c, h, w] * x[n, c, h, w]
            top[n, c, i, j] = squares / total
            continue
        total = np.float32(sum(np.float32(x[n, c, h, w]) for h, w in cells))
        threshold, running = uniform[n, c, i, j] * total, np.float32(0)
        for h, w in cells:
            running += x[n, c, h, w]
            if running >= threshold:
                top[n, c, i, j], picked[n, c, i, j] = x[n, c, h, w], h * width + w
                break
    return top, (None if uniform is None else picked)


def stochastic(backend, kernel, stride, phase):
    return make_layer('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: %d '
                      'stride: %d }' % (kernel, stride), backend, phase)


@pytest.mark.parametrize("shape,kernel,stride", CASES)
def test_test_phase_is_the_probability_weighted_average(backend, shape, kernel, stride):
    x = RS.uniform(0, 2, shape).astype(np.float32)
    x[0, 0, :2, :2] = 0  # an all-zero window gives 0, not 0/0
    out = run_forward(stochastic(backend, kernel, stride, TEST), blobs(backend, x),
                      tops(backend, 1))[0]
    np.testing.assert_allclose(out, caffe_loops(x, kernel, stride)[0], rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape,kernel,stride", CASES)
def test_train_phase_samples_as_caffe_and_routes_the_diff(backend, shape, kernel, stride):
    x = RS.uniform(0, 2, shape).astype(np.float32)
    x[..., 1::3] = 0  # zero cells are never picked unless they come first
    layer = stochastic(backend, kernel, stride, TRAIN)
    bottom, top = blobs(backend, x), tops(backend, 1)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    backend.reseed(11)
    uniform = backend.asnumpy(backend.random.random_sample(top[0].shape)).astype(np.float32)
    backend.reseed(11)
    layer.forward(bottom, top)
    expected, picked = caffe_loops(x, kernel, stride, uniform)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data), expected)
    dy = RS.standard_normal(top[0].shape).astype(np.float32)
    top[0].diff[...] = backend.asarray(dy)
    layer.backward(top, [True], bottom)
    dx = np.zeros(x.shape, np.float32).reshape(shape[0], shape[1], -1)
    for n, c, i, j in np.ndindex(dy.shape):
        dx[n, c, picked[n, c, i, j]] += dy[n, c, i, j]
    np.testing.assert_allclose(backend.asnumpy(bottom[0].diff), dx.reshape(shape), rtol=1e-6)


def test_train_phase_picks_cells_in_proportion_to_their_values(backend):
    """One 2x2 window repeated over 20000 channels: pick frequencies are x / sum(x)."""
    values = np.array([1, 2, 3, 4], np.float32)
    x = np.tile(values.reshape(1, 1, 2, 2), (1, 20000, 1, 1))
    layer = stochastic(backend, 2, 2, TRAIN)
    out = run_forward(layer, blobs(backend, x), tops(backend, 1))[0].ravel()
    frequency = np.array([(out == v).mean() for v in values])
    np.testing.assert_allclose(frequency, values / values.sum(), atol=0.015)


def test_backward_outside_train_is_refused(backend):
    layer = stochastic(backend, 2, 2, TEST)
    bottom, top = blobs(backend, RS.uniform(0, 1, (1, 1, 4, 4))), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="only in the TRAIN phase"):
        layer.backward(top, [True], bottom)


def test_spp_pools_stochastically_too(backend):
    x = RS.uniform(0, 2, (2, 3, 8, 8)).astype(np.float32)
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 2 pool: STOCHASTIC }',
                       backend, TEST)
    out = run_forward(layer, blobs(backend, x), tops(backend, 1))[0]
    whole = caffe_loops(x, 8, 8)[0].reshape(2, 3)
    halves = caffe_loops(x, 4, 4)[0].reshape(2, 12)
    np.testing.assert_allclose(out, np.concatenate([whole, halves], axis=1), rtol=2e-6)
