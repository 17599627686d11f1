"""Shape, selection and pooling-pyramid layers (Slice, Reshape, Tile, Reduction, Silence,
ArgMax, Embed, Crop, Parameter, Filter, BatchReindex, Im2col, SPP): forward values against
closed-form numpy written here from Caffe's loops, or PyTorch CPU where it computes the same;
Caffe's gradient check on every backend; Caffe's own shape cases; error cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layertest import (blobs, check_gradient, fails, forward_backward, make_layer, run_forward,
                       tops)
from netkit.layer import LayerSetupError

RS = np.random.RandomState(3)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


def distinct(*shape, spacing=0.1):
    """Values with no ties and gaps wider than the gradient checker's step (MAX, ArgMax)."""
    n = int(np.prod(shape))
    return (RS.permutation(n).reshape(shape) * spacing - n * spacing / 2).astype(np.float32)




# ------------------------------------------------------------------------------- Slice

@pytest.mark.parametrize("params,num_tops,axis,points", [
    ("", 2, 1, [3]),
    ("axis: 0", 3, 0, [2, 4]),
    ("axis: -1 slice_point: 1 slice_point: 4", 3, 3, [1, 4]),
    ("slice_dim: 2 slice_point: 2", 2, 2, [2]),
    ("axis: 1 slice_point: 1 slice_point: 2 slice_point: 5", 4, 1, [1, 2, 5]),
    ("", 1, 1, []),
])
def test_slice_matches_numpy_split(backend, params, num_tops, axis, points):
    x = rand(6, 6, 3, 5)
    layer = make_layer('type: "Slice" slice_param { %s }' % params, backend)
    dys = [rand(*p.shape) for p in np.split(x, points, axis=axis)]
    outputs, (dx,), _ = forward_backward(layer, backend, [x], dys)
    for y, ref in zip(outputs, np.split(x, points, axis=axis)):
        np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(dx, np.concatenate(dys, axis=axis))


def test_slice_gradient(backend):
    layer = make_layer('type: "Slice" slice_param { axis: 2 slice_point: 1 }', backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 4, 2)), tops(backend, 2), max_checks=30)


@pytest.mark.parametrize("params,num_tops,match", [
    ("axis: 1 slice_dim: 1", 2, "either axis or slice_dim"),
    ("slice_point: 2", 3, "1 slice_point.s. for 3 tops"),
    ("slice_point: 3 slice_point: 2", 3, "must increase"),
    ("slice_point: 0", 2, "must increase"),
    ("slice_point: 7", 2, "beyond axis 1 of size 6"),
    ("", 4, "do not divide axis 1 of size 6"),
    ("slice_dim: 4", 2, "slice_dim 4 is out of range"),
    ("axis: 4", 2, "slice_param.axis 4 is out of range"),
])
def test_slice_errors(backend, params, num_tops, match):
    fails(backend, 'type: "Slice" slice_param { %s }' % params, rand(2, 6, 3, 2),
          num_tops=num_tops, match=match)


# ----------------------------------------------------------------------------- Reshape

@pytest.mark.parametrize("params,expected", [
    # Caffe's own cases on a (2, 3, 6, 5) bottom, then copies and inference combined.
    ("shape { dim: 0 dim: -1 }", (2, 90)),
    ("shape { dim: 6 dim: 2 dim: 3 dim: 5 }", (6, 2, 3, 5)),
    ("shape { dim: 1 dim: 1 dim: 1 } axis: 0 num_axes: 0", (1, 1, 1, 2, 3, 6, 5)),
    ("shape { dim: 1 dim: 1 dim: 1 } axis: 2 num_axes: 0", (2, 3, 1, 1, 1, 6, 5)),
    ("shape { dim: 1 dim: 1 dim: 1 } axis: -1 num_axes: 0", (2, 3, 6, 5, 1, 1, 1)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 18, 5)),
    ("shape { dim: 0 dim: 0 dim: -1 dim: 2 }", (2, 3, 15, 2)),
    ("shape { dim: 0 dim: 2 dim: -1 } axis: 1 num_axes: 2", (2, 3, 2, 3, 5)),
    ("shape { dim: 2 dim: -1 } axis: -3 num_axes: 1", (2, 3, 2, 3, 5)),
    ("shape { } axis: 1 num_axes: 0", (2, 3, 6, 5)),
])
def test_reshape_shapes_and_values(backend, params, expected):
    x = rand(2, 3, 6, 5)
    layer = make_layer('type: "Reshape" reshape_param { %s }' % params, backend)
    dy = rand(*expected)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    assert y.shape == expected
    np.testing.assert_array_equal(y, x.reshape(expected))
    np.testing.assert_array_equal(dx, dy.reshape(x.shape))


def test_reshape_top_shares_bottom_data(backend):
    layer = make_layer('type: "Reshape" reshape_param { shape { dim: -1 } }', backend)
    bottom, top = blobs(backend, rand(2, 3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    bottom[0].data[1, 2] = 7.0
    assert backend.asnumpy(top[0].data)[5] == 7.0


def test_reshape_gradient(backend):
    layer = make_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }',
                       backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 4)), tops(backend, 1), max_checks=30)


@pytest.mark.parametrize("params,match", [
    ("shape { dim: -1 dim: -1 }", "2 dims of -1"),
    ("shape { dim: -2 }", "must be positive, 0"),
    ("shape { dim: 7 dim: -1 }", "not divisible by the product 7"),
    ("shape { dim: 5 dim: 5 }", "top shape .5, 5. has 25 values"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 4"),
    ("shape { dim: 1 } axis: 5", "axis 5 is out of range"),
    ("shape { dim: 1 } axis: -6", "axis -6 is out of range"),
    ("shape { dim: 1 } axis: 2 num_axes: 3", "beyond the bottom's 4 axes"),
    ("shape { dim: 1 } num_axes: -2", "num_axes must be >= 0"),
])
def test_reshape_errors(backend, params, match):
    fails(backend, 'type: "Reshape" reshape_param { %s }' % params, rand(2, 3, 2, 2),
          match=match)


def test_reshape_rejects_in_place(backend):
    layer = make_layer('type: "Reshape" reshape_param { shape { dim: -1 } }', backend)
    bottom = blobs(backend, rand(2, 3))
    with pytest.raises(LayerSetupError, match="in-place"):
        run_forward(layer, bottom, bottom)


# -------------------------------------------------------------------------------- Tile

@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 4), (2, 1)])
def test_tile_matches_numpy_tile(backend, axis, tiles):
    x = rand(2, 3, 4)
    reps = [1, 1, 1]
    reps[axis] = tiles
    ref = np.tile(x, reps)
    layer = make_layer('type: "Tile" tile_param { axis: %d tiles: %d }' % (axis, tiles),
                       backend)
    dy = rand(*ref.shape)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    np.testing.assert_array_equal(y, ref)
    split = np.stack(np.split(dy, tiles, axis=axis))
    np.testing.assert_allclose(dx, split.sum(axis=0), rtol=1e-6)


def test_tile_gradient(backend):
    layer = make_layer('type: "Tile" tile_param { axis: 1 tiles: 3 }', backend)
    check_gradient(layer, blobs(backend, rand(2, 2, 3)), tops(backend, 1), max_checks=30)


@pytest.mark.parametrize("params,match", [
    ("axis: 1", "needs tiles"), ("tiles: 0", "tiles must be positive"),
    ("tiles: 2 axis: 3", "tile_param.axis 3 is out of range")])
def test_tile_errors(backend, params, match):
    fails(backend, 'type: "Tile" tile_param { %s }' % params, rand(2, 3, 4), match=match)


# --------------------------------------------------------------------------- Reduction

def reduction_ref(x, op, axis, coeff):
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1).astype(np.float64)
    value = {"SUM": rows.sum(1), "ASUM": np.abs(rows).sum(1),
             "SUMSQ": (rows ** 2).sum(1), "MEAN": rows.mean(1)}[op]
    return (coeff * value).reshape(x.shape[:axis])


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -2.5), (-1, 0.5), (2, 1.0)])
def test_reduction_matches_numpy(backend, op, axis, coeff):
    x = rand(2, 3, 4)
    layer = make_layer('type: "Reduction" reduction_param { operation: %s axis: %d coeff: %g }'
                       % (op, axis, coeff), backend)
    ref = reduction_ref(x, op, axis % 3, coeff)
    dy = rand(*ref.shape)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    rows, scale = x.reshape(dy.size, -1), coeff * dy.reshape(-1, 1)
    grad = {"SUM": np.ones_like(rows), "ASUM": np.sign(rows), "SUMSQ": 2 * rows,
            "MEAN": np.ones_like(rows) / rows.shape[1]}[op] * scale
    np.testing.assert_allclose(dx, grad.reshape(x.shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
def test_reduction_gradient(backend, op):
    layer = make_layer('type: "Reduction" reduction_param { operation: %s axis: 1 coeff: 1.5 }'
                       % op, backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 2)), tops(backend, 1), kink=0.0,
                   kink_range=0.02 if op == "ASUM" else -1.0)


def test_reduction_defaults_to_sum_of_everything(backend):
    x = rand(2, 3)
    (y,) = run_forward(make_layer('type: "Reduction"', backend), blobs(backend, x),
                       tops(backend, 1))
    assert y.shape == ()
    np.testing.assert_allclose(y, x.sum(), rtol=1e-5)


def test_reduction_axis_out_of_range(backend):
    fails(backend, 'type: "Reduction" reduction_param { axis: 3 }', rand(2, 3, 4),
          match="reduction_param.axis 3 is out of range")


# ----------------------------------------------------------------------------- Silence

def test_silence_has_no_tops_and_zeroes_bottom_diffs(backend):
    layer = make_layer('type: "Silence"', backend)
    bottom = blobs(backend, rand(2, 3), rand(4))
    assert run_forward(layer, bottom, []) == []
    for b in bottom:
        b.diff[...] = 5.0
    layer.backward([], [True, False], bottom)
    assert not backend.asnumpy(bottom[0].diff).any()
    assert (backend.asnumpy(bottom[1].diff) == 5).all()
    check_gradient(layer, bottom, [])


def test_silence_arity(backend):
    layer = make_layer('type: "Silence"', backend)
    with pytest.raises(LayerSetupError, match="exactly 0 top"):
        layer.check_arity(blobs(backend, rand(2)), tops(backend, 1))


# ------------------------------------------------------------------------------ ArgMax

def argmax_rows(rows, k):
    """Caffe's partial sort of (value, index) pairs with std::greater: descending values,
    ties to the larger index."""
    order = [sorted(((v, i) for i, v in enumerate(row)), reverse=True)[:k] for row in rows]
    return (np.array([[i for _, i in o] for o in order], np.float32),
            np.array([[v for v, _ in o] for o in order], np.float32))


def argmax_ref(x, k, out_max_val, axis=None):
    if axis is None:
        index, value = argmax_rows(x.reshape(len(x), -1), k)
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[2] = len(x), k
        if out_max_val:
            shape[1] = 2
            return np.stack([index, value], axis=1).reshape(shape)
        return index.reshape(shape)
    moved = np.moveaxis(x, axis, -1)
    index, value = argmax_rows(moved.reshape(-1, x.shape[axis]), k)
    out = (value if out_max_val else index).reshape(moved.shape[:-1] + (k,))
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("params,axis", [
    ("", None), ("top_k: 3", None), ("out_max_val: true", None),
    ("out_max_val: true top_k: 4", None), ("axis: 1", 1), ("axis: 1 top_k: 2", 1),
    ("axis: 2 top_k: 3 out_max_val: true", 2), ("axis: -1 top_k: 2", 3), ("axis: 0", 0)])
def test_argmax_matches_caffe_order_with_ties(backend, params, axis):
    # Few distinct values: many ties, which Caffe breaks toward the larger index.
    x = RS.randint(0, 4, size=(3, 4, 5, 2)).astype(np.float32)
    (y,) = run_forward(make_layer('type: "ArgMax" argmax_param { %s }' % params, backend),
                       blobs(backend, x), tops(backend, 1))
    k = int(params.split("top_k: ")[1].split()[0]) if "top_k" in params else 1
    ref = argmax_ref(x, k, "out_max_val" in params, axis)
    assert y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


def test_argmax_two_axis_bottom_and_infinities(backend):
    x = np.array([[1, -np.inf, 3, 3], [-np.inf, -np.inf, -5, -np.inf]], np.float32)
    (y,) = run_forward(make_layer('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }',
                                  backend), blobs(backend, x), tops(backend, 1))
    assert y.shape == (2, 2, 4)
    np.testing.assert_array_equal(y[:, 0], [[3, 2, 0, 1], [2, 3, 1, 0]])
    np.testing.assert_array_equal(y[:, 1], [[3, 3, 1, -np.inf], [-5] + [-np.inf] * 3])


def test_argmax_has_no_backward(backend):
    layer = make_layer('type: "ArgMax"', backend)
    bottom, top = blobs(backend, rand(2, 3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    assert not layer.allow_force_backward(0)
    with pytest.raises(LayerSetupError, match="no backward"):
        layer.backward(top, [True], bottom)


@pytest.mark.parametrize("params,match", [
    ("top_k: 0", "at least 1"), ("top_k: 7", "top_k 7 exceeds the 6"),
    ("axis: 1 top_k: 4", "top_k 4 exceeds the 3"), ("axis: 3", "argmax_param.axis 3")])
def test_argmax_errors(backend, params, match):
    fails(backend, 'type: "ArgMax" argmax_param { %s }' % params, rand(2, 3, 2), match=match)


# ------------------------------------------------------------------------------- Embed

EMBED = ('type: "Embed" embed_param { num_output: 4 input_dim: 6 %s '
         'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }')


@pytest.mark.parametrize("bias", [True, False])
def test_embed_looks_up_rows_and_accumulates_repeats(backend, bias):
    index = np.array([[0, 5, 2], [2, 2, 3.0]], np.float32)
    layer = make_layer(EMBED % ("" if bias else "bias_term: false"), backend)
    dy = rand(2, 3, 4)
    (y,), _, _ = forward_backward(layer, backend, [index], [dy], [False])
    weight = backend.asnumpy(layer.blobs[0].data)
    assert weight.shape == (6, 4) and len(layer.blobs) == 1 + bias
    ref = weight[index.astype(int)] + (backend.asnumpy(layer.blobs[1].data) if bias else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    dw = np.zeros((6, 4))
    np.add.at(dw, index.astype(int).ravel(), dy.reshape(-1, 4))
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), dw, rtol=1e-5)
    if bias:
        np.testing.assert_allclose(backend.asnumpy(layer.blobs[1].diff), dy.sum((0, 1)),
                                   rtol=1e-5)
    # Parameter diffs accumulate across backward passes (iter_size).
    top = tops(backend, 1)
    bottom = blobs(backend, index)
    layer.reshape(bottom, top)
    top[0].diff[...] = backend.asarray(dy)
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), 2 * dw, rtol=1e-5)


def test_embed_gradient(backend):
    layer = make_layer(EMBED % "", backend)
    index = blobs(backend, np.array([1, 4, 1, 0], np.float32))
    check_gradient(layer, index, tops(backend, 1), check_bottom=[])


def test_embed_refuses_gradient_to_its_indices(backend):
    layer = make_layer(EMBED % "", backend)
    bottom, top = blobs(backend, np.array([1.0])), tops(backend, 1)
    run_forward(layer, bottom, top)
    assert not layer.allow_force_backward(0)
    with pytest.raises(LayerSetupError, match="cannot backpropagate"):
        layer.backward(top, [True], bottom)


@pytest.mark.parametrize("params,match", [
    ("num_output: 0 input_dim: 3", "num_output must be positive"),
    ("num_output: 3", "input_dim must be positive")])
def test_embed_errors(backend, params, match):
    fails(backend, 'type: "Embed" embed_param { %s }' % params, np.zeros(2), match=match)


# -------------------------------------------------------------------------------- Crop

@pytest.mark.parametrize("params,window", [
    ("", (slice(None), slice(None), slice(0, 3), slice(0, 4))),
    ("offset: 2", (slice(None), slice(None), slice(2, 5), slice(2, 6))),
    ("axis: 1 offset: 1 offset: 0 offset: 3",
     (slice(None), slice(1, 3), slice(0, 3), slice(3, 7))),
    ("axis: -1 offset: 1", (slice(None), slice(None), slice(None), slice(1, 5))),
    ("axis: 0 offset: 1", (slice(1, 2), slice(1, 3), slice(1, 4), slice(1, 5))),
])
def test_crop_matches_numpy_slicing(backend, params, window):
    x, like = rand(2, 4, 6, 8), np.zeros((1, 2, 3, 4), np.float32)
    ref = x[window]
    layer = make_layer('type: "Crop" crop_param { %s }' % params, backend)
    dy = rand(*ref.shape)
    (y,), (dx, dlike), _ = forward_backward(layer, backend, [x, like], [dy])
    np.testing.assert_array_equal(y, ref)
    expected = np.zeros_like(x)
    expected[window] = dy
    np.testing.assert_array_equal(dx, expected)
    assert not dlike.any()


def test_crop_gradient(backend):
    layer = make_layer('type: "Crop" crop_param { offset: 1 }', backend)
    check_gradient(layer, blobs(backend, rand(2, 2, 4, 4), rand(2, 2, 2, 3)), tops(backend, 1),
                   check_bottom=[0], max_checks=40)


@pytest.mark.parametrize("params,like,match", [
    ("offset: 1 offset: 1 offset: 1", (1, 1, 2, 2), "gives 3 offsets"),
    ("offset: 4", (1, 1, 3, 3), "crop of axis 2 is out of bounds"),
    ("", (1, 1, 7, 3), "crop of axis 2 is out of bounds"),
    ("axis: 4", (1, 1, 2, 2), "crop_param.axis 4 is out of range"),
])
def test_crop_errors(backend, params, like, match):
    fails(backend, 'type: "Crop" crop_param { %s }' % params, rand(1, 1, 6, 6),
          np.zeros(like), match=match)


# --------------------------------------------------------------------------- Parameter

def test_parameter_exposes_its_blob_and_accumulates_diff(backend):
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', backend)
    top = tops(backend, 1)
    (y,) = run_forward(layer, [], top)
    assert y.shape == (2, 3) and not y.any()
    values = rand(2, 3)
    layer.blobs[0].data[...] = backend.asarray(values)
    layer.reshape([], top)
    layer.forward([], top)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data), values)
    dy = rand(2, 3)
    top[0].diff[...] = backend.asarray(dy)
    layer.backward(top, [], [])
    layer.backward(top, [], [])
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), 2 * dy)


def test_parameter_gradient(backend):
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 3 } }', backend)
    layer.setup([], tops(backend, 1))
    layer.blobs[0].data[...] = backend.asarray(rand(3))
    check_gradient(layer, [], tops(backend, 1), setup=False)


# ------------------------------------------------------------------------------ Filter

def test_filter_keeps_selected_items_and_routes_diffs_back(backend):
    x1, x2 = rand(5, 2, 3), rand(5, 4)
    selector = np.array([[1], [0], [2.5], [0], [-1]], np.float32)
    keep = [0, 2, 4]
    layer = make_layer('type: "Filter"', backend)
    bottom, top = blobs(backend, x1, x2, selector), tops(backend, 2)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    assert top[0].shape == (5, 2, 3), "the first reshape keeps the whole batch, as Caffe"
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data), x1[keep])
    np.testing.assert_array_equal(backend.asnumpy(top[1].data), x2[keep])
    dy1, dy2 = rand(3, 2, 3), rand(3, 4)
    top[0].diff[...] = backend.asarray(dy1)
    top[1].diff[...] = backend.asarray(dy2)
    for b in bottom:
        b.diff[...] = 9.0
    layer.backward(top, [True, True, False], bottom)
    for b, dy, x in ((bottom[0], dy1, x1), (bottom[1], dy2, x2)):
        expected = np.zeros_like(x)
        expected[keep] = dy
        np.testing.assert_array_equal(backend.asnumpy(b.diff), expected)


def test_filter_gradient(backend):
    layer = make_layer('type: "Filter"', backend)
    bottom = blobs(backend, rand(4, 3), rand(4, 2, 2), np.array([0, 1, 1, 0], np.float32))
    top = tops(backend, 2)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    check_gradient(layer, bottom, top, check_bottom=[0, 1], setup=False)
    assert top[0].shape == (2, 3)


def test_filter_selecting_nothing(backend):
    layer = make_layer('type: "Filter"', backend)
    bottom, top = blobs(backend, rand(3, 2), np.zeros((3, 1))), tops(backend, 1)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (0, 2)
    layer.backward(top, [True, False], bottom)
    assert not backend.asnumpy(bottom[0].diff).any()


def test_filter_errors(backend):
    fails(backend, 'type: "Filter"', rand(3, 2), rand(3, 2), match="selector .last bottom. "
          "must be .N, 1")
    fails(backend, 'type: "Filter"', rand(3, 2), rand(4, 1), match="bottom.0. has 3 items, "
          "the selector 4")
    fails(backend, 'type: "Filter"', rand(3, 2), rand(3, 1), num_tops=2,
          match="one top per filtered bottom")
    layer = make_layer('type: "Filter"', backend)
    bottom, top = blobs(backend, rand(2, 2), np.ones((2, 1))), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="selector"):
        layer.backward(top, [True, True], bottom)


# ------------------------------------------------------------------------ BatchReindex

def test_batch_reindex_gathers_and_scatters_with_repeats(backend):
    x, index = rand(4, 2, 3), np.array([3, 0, 3, 3, 1], np.float32)
    layer = make_layer('type: "BatchReindex"', backend)
    dy = rand(5, 2, 3)
    (y,), (dx, _), _ = forward_backward(layer, backend, [x, index], [dy], [True, False])
    np.testing.assert_array_equal(y, x[index.astype(int)])
    expected = np.zeros_like(x)
    np.add.at(expected, index.astype(int), dy)
    np.testing.assert_allclose(dx, expected, rtol=1e-6)
    assert not dx[2].any()


def test_batch_reindex_gradient(backend):
    layer = make_layer('type: "BatchReindex"', backend)
    bottom = blobs(backend, rand(3, 2, 2), np.array([2, 2, 0, 1, 2], np.float32))
    check_gradient(layer, bottom, tops(backend, 1), check_bottom=[0])


@pytest.mark.parametrize("index,match", [
    (np.array([0, 3.0]), "index 3 is outside the batch of 3"),
    (np.array([-1.0]), "index -1 is outside"),
    (np.zeros((2, 1)), "must have 1 axis"),
])
def test_batch_reindex_errors(backend, index, match):
    fails(backend, 'type: "BatchReindex"', rand(3, 2), index, match=match)


def test_batch_reindex_refuses_gradient_to_indices(backend):
    layer = make_layer('type: "BatchReindex"', backend)
    bottom, top = blobs(backend, rand(3, 2), np.array([1.0])), tops(backend, 1)
    run_forward(layer, bottom, top)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(LayerSetupError, match="indices"):
        layer.backward(top, [True, True], bottom)


# ------------------------------------------------------------------------------ Im2col

@pytest.mark.parametrize("params,kwargs", [
    ("kernel_size: 3", dict(kernel_size=3)),
    ("kernel_size: 3 pad: 1 stride: 2", dict(kernel_size=3, padding=1, stride=2)),
    ("kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 dilation: 2",
     dict(kernel_size=(2, 3), padding=(1, 0), stride=(1, 2), dilation=2)),
])
def test_im2col_matches_torch_unfold_and_fold(backend, params, kwargs):
    x = rand(2, 3, 7, 8)
    xt = torch.from_numpy(x)
    ref = F.unfold(xt, **kwargs)
    layer = make_layer('type: "Im2col" convolution_param { %s }' % params, backend)
    probe = tops(backend, 1)
    run_forward(layer, blobs(backend, x), probe)
    dy = rand(*probe[0].shape)
    (y,), (dx,), _ = forward_backward(layer, backend, [x], [dy])
    assert y.shape[:2] == ref.shape[:2]
    np.testing.assert_array_equal(y.reshape(ref.shape), ref.numpy())
    dx_ref = F.fold(torch.from_numpy(dy.reshape(ref.shape)), x.shape[2:], **kwargs)
    np.testing.assert_allclose(dx, dx_ref.numpy(), rtol=1e-5, atol=1e-6)


def test_im2col_gradient(backend):
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 2 pad: 1 stride: 1 }',
                       backend)
    check_gradient(layer, blobs(backend, rand(2, 2, 3, 3)), tops(backend, 1), max_checks=40)


def test_im2col_leading_axes(backend):
    x = rand(2, 3, 2, 4, 4)
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 2 axis: 2 }', backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    ref = F.unfold(torch.from_numpy(x.reshape(6, 2, 4, 4)), 2).numpy()
    np.testing.assert_array_equal(y.reshape(ref.shape), ref)
    assert y.shape == (2, 3, 8, 3, 3)


@pytest.mark.parametrize("params,shape,match", [
    ("kernel_size: 5", (1, 1, 3, 3), "kernel extent .5, 5. exceeds"),
    ("kernel_size: 2", (2, 3), "needs a spatial axis"),
    ("stride: 1", (1, 1, 3, 3), "needs kernel_size"),
])
def test_im2col_errors(backend, params, shape, match):
    fails(backend, 'type: "Im2col" convolution_param { %s }' % params, rand(*shape),
          match=match)


# --------------------------------------------------------------------------------- SPP

def caffe_pool(x, method, kernel, pad, stride):
    """Caffe's PoolingLayer forward, loop for loop (rounded-up size, clipped windows)."""
    n, c, height, width = x.shape
    sizes = []
    for size, k, p, s in zip((height, width), kernel, pad, stride):
        out = -(-(size + 2 * p - k) // s) + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    y = np.zeros((n, c) + tuple(sizes), np.float64)
    for ph in range(sizes[0]):
        for pw in range(sizes[1]):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], height + pad[0]), min(ws + kernel[1], width + pad[1])
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
            window = x[:, :, hs:he, ws:we].astype(np.float64)
            y[:, :, ph, pw] = window.max(axis=(2, 3)) if method == "MAX" else \
                window.sum(axis=(2, 3)) / area
    return y


def spp_ref(x, height, method):
    """Caffe's SPP: level l pools with kernel ceil(H / 2^l), stride = kernel, pad half the
    shortfall; levels flattened and joined."""
    levels = []
    for level in range(height):
        bins = 2 ** level
        kernel = [-(-size // bins) for size in x.shape[2:]]
        pad = [(k * bins - size + 1) // 2 for k, size in zip(kernel, x.shape[2:])]
        levels.append(caffe_pool(x, method, kernel, pad, kernel))
    if height == 1:
        return levels[0]
    return np.concatenate([lv.reshape(len(x), -1) for lv in levels], axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 3, 5, 4)), (2, (2, 3, 5, 4)),
                                          (3, (2, 2, 7, 9)), (3, (1, 2, 8, 8))])
def test_spp_matches_caffe_pyramid(backend, method, height, shape):
    x = distinct(*shape)
    layer = make_layer('type: "SPP" spp_param { pyramid_height: %d pool: %s }'
                       % (height, method), backend)
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    ref = spp_ref(x, height, method)
    bins = sum(4 ** level for level in range(height))
    assert y.shape == (ref.shape if height == 1 else (shape[0], shape[1] * bins))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height", [1, 3])
def test_spp_gradient(backend, method, height):
    layer = make_layer('type: "SPP" spp_param { pyramid_height: %d pool: %s }'
                       % (height, method), backend)
    check_gradient(layer, blobs(backend, distinct(2, 2, 6, 7)), tops(backend, 1),
                   max_checks=60)


def test_spp_follows_a_new_bottom_shape(backend):
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 2 pool: MAX }', backend)
    top = tops(backend, 1)
    run_forward(layer, blobs(backend, distinct(1, 2, 6, 6)), top)
    x = distinct(3, 2, 9, 5)
    bottom = blobs(backend, x)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(backend.asnumpy(top[0].data), spp_ref(x, 2, "MAX"), rtol=1e-6)


@pytest.mark.parametrize("params,shape,match", [
    ("pool: MAX", (1, 1, 4, 4), "pyramid_height must be at least 1"),
    ("pyramid_height: 3", (1, 1, 5, 5), "level 2 .4 bins per side. does not fit the 5x5"),
    ("pyramid_height: 2", (1, 4, 4), "must have 4 axes"),
])
def test_spp_errors(backend, params, shape, match):
    fails(backend, 'type: "SPP" spp_param { %s }' % params, rand(*shape), match=match)
