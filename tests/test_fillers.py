"""Weight fillers against the closed forms of Caffe's filler semantics (include/caffe/filler.hpp).

Caffe's test_filler.cpp checks value ranges and loose moments on small blobs; here the blobs
are large (100,000 values), so means and variances are held to a few standard errors of
their sampling distributions, and the deterministic fillers to exact values.
"""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from netkit import netkit_pb2 as pb
from netkit.fillers import fill
from netkit.registry import UnknownTypeError
from netkit.rng import set_random_seed

BIG = (2000, 50)
SHAPES = [(15,), (8, 3), (2, 3, 4, 5), (2, 3, 4, 5, 2)]


def filler(text):
    return text_format.Parse(text, pb.FillerParameter())


def assert_moments(data, mean, var, sigmas=5.0, kurtosis=3.0):
    """Sample mean and variance within `sigmas` standard errors of the expected ones.

    The variance's standard error is var * sqrt((kurtosis - 1) / n): kurtosis 3 for a
    Gaussian, 1.8 for a uniform distribution.
    """
    x = data.astype(np.float64).ravel()
    n = x.size
    assert abs(x.mean() - mean) <= sigmas * math.sqrt(var / n)
    assert abs(x.var() - var) <= sigmas * var * math.sqrt((kurtosis - 1) / n)


@pytest.mark.parametrize("shape", SHAPES)
def test_constant_fills_the_value(shape):
    data = fill(filler('type: "constant" value: 10'), shape)
    assert data.shape == shape and data.dtype == np.float32
    assert (data == np.float32(10)).all()


def test_default_filler_is_constant_zero():
    data = fill(pb.FillerParameter(), (4, 3))
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_stays_in_range(shape):
    data = fill(filler('type: "uniform" min: 1 max: 2'), shape)
    assert data.shape == shape and data.dtype == np.float32
    assert (data >= 1).all() and (data <= 2).all()


def test_uniform_moments():
    data = fill(filler('type: "uniform" min: -3 max: 5'), BIG)
    assert (data >= -3).all() and (data <= 5).all()
    assert data.min() < -2.99 and data.max() > 4.99
    assert_moments(data, mean=1.0, var=8.0 ** 2 / 12, kurtosis=1.8)


def test_uniform_default_range_is_zero_to_one():
    data = fill(filler('type: "uniform"'), BIG)
    assert (data >= 0).all() and (data <= 1).all()
    assert_moments(data, mean=0.5, var=1.0 / 12, kurtosis=1.8)


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_shapes_and_dtype(shape):
    data = fill(filler('type: "gaussian" mean: 10 std: 0.1'), shape)
    assert data.shape == shape and data.dtype == np.float32
    # Caffe's own (very loose) check: the mean within 3 std of the target.
    assert abs(data.mean() - 10) <= 0.3


def test_gaussian_moments():
    data = fill(filler('type: "gaussian" mean: 10 std: 0.1'), BIG)
    assert_moments(data, mean=10.0, var=0.01)
    # A Gaussian, not a bounded distribution: about 0.27% of values lie beyond 3 std.
    beyond = np.mean(np.abs(data - 10) > 0.3)
    assert 0.0015 < beyond < 0.004


def test_gaussian_defaults_are_standard_normal():
    assert_moments(fill(filler('type: "gaussian"'), BIG), mean=0.0, var=1.0)


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    """Caffe keeps each weight with probability sparse / shape[0] (the number of outputs)."""
    data = fill(filler('type: "gaussian" std: 1 sparse: 200'), BIG)
    p = 200 / BIG[0]
    kept = data != 0
    n = data.size
    assert abs(kept.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)
    # The weights kept are untouched Gaussian draws.
    assert_moments(data[kept], mean=0.0, var=1.0)


def test_sparse_zero_keeps_nothing_and_minus_one_is_dense():
    assert not fill(filler('type: "gaussian" sparse: 0'), BIG).any()
    assert fill(filler('type: "gaussian" sparse: -1'), BIG).all()


@pytest.mark.parametrize("shape", SHAPES + [BIG])
def test_positive_unitball_rows_sum_to_one(shape):
    data = fill(filler('type: "positive_unitball"'), shape)
    assert data.shape == shape and data.dtype == np.float32
    assert (data >= 0).all() and (data <= 1).all()
    rows = data.reshape(shape[0], -1).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(rows, 1.0, rtol=0, atol=1e-5)


def test_positive_unitball_is_normalized_uniform():
    """Each row is uniform draws over their sum: every entry averages 1 / dim."""
    data = fill(filler('type: "positive_unitball"'), BIG)
    dim = BIG[1]
    assert abs(data.mean() - 1.0 / dim) <= 1e-6
    # Before normalization the entries were uniform on [0, 1): their ratios are preserved,
    # so max / min within a row exceeds what a constant fill would give.
    assert (data.max(axis=1) / data.min(axis=1) > 2).all()


# Caffe's fans: fan_in = count / shape[0], fan_out = count / shape[1] (count for 1-D blobs).
XAVIER_N = [("FAN_IN", 2 * 4 * 5), ("FAN_OUT", 1000 * 4 * 5),
            ("AVERAGE", (2 * 4 * 5 + 1000 * 4 * 5) / 2.0)]


@pytest.mark.parametrize("norm, n", XAVIER_N)
def test_xavier_is_uniform_with_variance_one_over_n(norm, n):
    shape = (1000, 2, 4, 5)
    data = fill(filler('type: "xavier" variance_norm: %s' % norm), shape)
    assert data.shape == shape and data.dtype == np.float32
    scale = math.sqrt(3.0 / n)
    assert np.abs(data).max() <= np.float32(scale)
    assert np.abs(data).max() > 0.99 * scale
    # U(-scale, scale) has variance scale^2 / 3 = 1 / n.
    assert_moments(data, mean=0.0, var=1.0 / n, kurtosis=1.8)


def test_xavier_default_norm_is_fan_in():
    shape = (1000, 2, 4, 5)
    set_random_seed(3)
    default = fill(filler('type: "xavier"'), shape)
    set_random_seed(3)
    fan_in = fill(filler('type: "xavier" variance_norm: FAN_IN'), shape)
    np.testing.assert_array_equal(default, fan_in)


@pytest.mark.parametrize("shape, fan_in, fan_out", [
    ((25,), 1, 25),                # 1-D: fan_out is the count
    ((8, 3), 3, 8),
    ((2, 3, 4, 5, 2), 120, 80),
    ((7, 5, 3, 3), 45, 63),
])
def test_xavier_fans_of_other_shapes(shape, fan_in, fan_out):
    for norm, n in (("FAN_IN", fan_in), ("FAN_OUT", fan_out),
                    ("AVERAGE", (fan_in + fan_out) / 2.0)):
        data = fill(filler('type: "xavier" variance_norm: %s' % norm), shape)
        scale = math.sqrt(3.0 / n)
        assert np.abs(data).max() <= np.float32(scale)
        # With a few dozen draws at least one lands in the outer half of the range.
        assert np.abs(data).max() > 0.5 * scale


@pytest.mark.parametrize("norm, n", XAVIER_N)
def test_msra_is_gaussian_with_variance_two_over_n(norm, n):
    shape = (1000, 2, 4, 5)
    data = fill(filler('type: "msra" variance_norm: %s' % norm), shape)
    assert data.shape == shape and data.dtype == np.float32
    assert_moments(data, mean=0.0, var=2.0 / n)


def test_msra_fans_of_a_1d_blob():
    """1-D: fan_in = 1 and fan_out = count, so AVERAGE uses (1 + count) / 2."""
    data = fill(filler('type: "msra" variance_norm: AVERAGE'), (100001,))
    assert_moments(data, mean=0.0, var=2.0 / 50001)


def test_bilinear_4x4_kernel_by_hand():
    # k = 4: f = ceil(4 / 2) = 2, centre c = (4 - 1) / (2 f) = 0.75, and each axis weighs
    # 1 - |x / f - c| for x = 0..3: 1 - 0.75, 1 - 0.25, 1 - 0.25, 1 - 0.75.
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    expected = np.array([[0.0625, 0.1875, 0.1875, 0.0625],
                         [0.1875, 0.5625, 0.5625, 0.1875],
                         [0.1875, 0.5625, 0.5625, 0.1875],
                         [0.0625, 0.1875, 0.1875, 0.0625]], dtype=np.float32)
    np.testing.assert_array_equal(np.outer(ramp, ramp), expected)
    data = fill(filler('type: "bilinear"'), (3, 2, 4, 4))
    assert data.shape == (3, 2, 4, 4) and data.dtype == np.float32
    for kernel in data.reshape(-1, 4, 4):
        np.testing.assert_array_equal(kernel, expected)


def caffe_bilinear(k):
    """Caffe's BilinearFiller for a k x k kernel, element by element, in float64."""
    f = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * f)
    return np.array([[(1 - abs(x / f - c)) * (1 - abs(y / f - c)) for x in range(k)]
                     for y in range(k)])


@pytest.mark.parametrize("k", [4, 5, 8, 9])
def test_bilinear_matches_caffe_formula_for_upsampling_kernels(k):
    """The kernel sizes 2 factor - factor % 2 that Caffe's upsampling recipe uses."""
    data = fill(filler('type: "bilinear"'), (4, 1, k, k))
    for kernel in data.reshape(-1, k, k):
        np.testing.assert_allclose(kernel, caffe_bilinear(k), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 6, 7])
def test_bilinear_other_kernels_are_centred_as_in_caffe(k):
    data = fill(filler('type: "bilinear"'), (2, 1, k, k))
    kernel = data[0, 0]
    np.testing.assert_allclose(kernel, caffe_bilinear(k), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])


@pytest.mark.parametrize("shape", [(2, 1, 4), (2, 1, 4, 3)])
def test_bilinear_needs_a_square_4d_blob(shape):
    with pytest.raises(ValueError, match="bilinear"):
        fill(filler('type: "bilinear"'), shape)


def test_unknown_filler_names_the_known_ones():
    with pytest.raises(UnknownTypeError, match="xavier"):
        fill(filler('type: "xavir"'), (2, 2))


@pytest.mark.parametrize("text", ['type: "gaussian" sparse: 3', 'type: "uniform"',
                                  'type: "xavier"', 'type: "msra"',
                                  'type: "positive_unitball"'])
def test_same_seed_same_values(text):
    set_random_seed(42)
    a = fill(filler(text), (20, 6))
    set_random_seed(42)
    b = fill(filler(text), (20, 6))
    set_random_seed(43)
    c = fill(filler(text), (20, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
