"""Max and average pooling over 2-d windows for a whole batch, written against any `xp`.

The functions here see an image whose windows all lie inside it: the caller pads (with
-FLT_MAX for MAX, zeros for AVE) wherever Caffe's windows hang over the border. Each kernel
offset (i, j) is one strided slice of the image covering every window at once, so a k x k
pool costs about k * k array calls whatever the batch size. Reductions over small trailing
window axes are avoided on purpose: numpy is an order of magnitude slower on those.
"""
import numpy as np


def pooled_size(size, kernel, pad, stride, ceil_mode=True):
    """Caffe's pooled output size before the padding correction: rounded up by default."""
    span = size + 2 * pad - kernel
    steps = -(-span // stride) if ceil_mode else span // stride
    return steps + 1


def index_dtype(window_size):
    """The smallest integer type that holds a kernel offset in [0, window_size)."""
    for dtype in (np.int8, np.int16, np.int32):
        if window_size <= np.iinfo(dtype).max + 1:
            return dtype
    return np.int64


def max_pool(xp, src, top, argmax, geom, ws):
    """top = the maximum of each window of `src`; argmax = its kernel offset i * kw + j.

    Offsets are visited in row-major order and a value must be strictly greater to win, so
    ties go to the first maximum, as in Caffe. `ws` (a Workspace) provides scratch arrays.
    """
    offsets = geom.offset_slices(*top.shape[2:])
    _, _, rows, cols = next(offsets)
    best, other = top, ws.get("max_pool.other", top.shape, top.dtype)
    best[...] = src[:, :, rows, cols]
    argmax.fill(0)
    won = ws.get("max_pool.won", top.shape, "bool")
    step = ws.get("max_pool.step", top.shape, argmax.dtype)
    for offset, (_, _, rows, cols) in enumerate(offsets, 1):
        # max(best, v) differs from best exactly where v > best; offsets only grow, so the
        # winning offset is max(argmax, won * offset).
        xp.maximum(best, src[:, :, rows, cols], out=other)
        xp.not_equal(other, best, out=won)
        xp.multiply(won, argmax.dtype.type(offset), out=step)
        xp.maximum(argmax, step, out=argmax)
        best, other = other, best
    if best is not top:
        top[...] = best


def max_pool_backward(xp, top_diff, argmax, dsrc, geom, ws, routes):
    """dsrc (assigned, contiguous) = top_diff routed to each window's argmax. Where windows
    overlap, the diffs meeting in one cell are added in top order, as Caffe's CPU
    MaxPoolBackward adds them; `routes` is max_pool_routes(...) for these shapes."""
    overlap = _prepare(dsrc, top_diff.shape, geom)
    if overlap:
        window_start, offset_cell = routes
        cell = ws.get("max_pool.cell", argmax.shape, window_start.dtype)
        xp.take(offset_cell, argmax, out=cell)
        cell += window_start
        xp.add.at(dsrc.reshape(-1), cell.reshape(-1), top_diff.reshape(-1))
        return
    hit = ws.get("max_pool.hit", argmax.shape, "bool")
    for offset, (_, _, rows, cols) in enumerate(geom.offset_slices(*top_diff.shape[2:])):
        xp.equal(argmax, argmax.dtype.type(offset), out=hit)
        xp.multiply(hit, top_diff, out=dsrc[:, :, rows, cols])


def max_pool_routes(xp, top_shape, src_shape, geom):
    """(flat index into src of each window's first cell, shaped like the top; flat offset
    of each kernel offset i * kw + j within a window): where max_pool_backward sends a
    window's diff. Indices are int32 when src is small enough."""
    num, channels, height, width = src_shape
    (kh, kw), (sh, sw) = geom.kernel, geom.stride
    dtype = "int32" if num * channels * height * width < 2 ** 31 else "int64"
    plane = xp.arange(num * channels, dtype=dtype).reshape(num, channels, 1, 1)
    rows = xp.arange(top_shape[2], dtype=dtype).reshape(1, 1, -1, 1)
    cols = xp.arange(top_shape[3], dtype=dtype).reshape(1, 1, 1, -1)
    window_start = plane * (height * width) + rows * (sh * width) + cols * sw
    i, j = xp.arange(kh, dtype=dtype), xp.arange(kw, dtype=dtype)
    offset_cell = (i.reshape(-1, 1) * width + j.reshape(1, -1)).reshape(-1)
    return window_start, offset_cell


def ave_pool(xp, src, top, geom, pool_size):
    """top = the sum of each window of `src` divided by `pool_size` (scalar or (PH, PW))."""
    offsets = geom.offset_slices(*top.shape[2:])
    _, _, rows, cols = next(offsets)
    top[...] = src[:, :, rows, cols]
    for _, _, rows, cols in offsets:
        top += src[:, :, rows, cols]
    xp.divide(top, pool_size, out=top)


def ave_pool_backward(xp, top_diff, dsrc, geom, pool_size, ws):
    """dsrc (assigned) = top_diff / pool_size spread over every pixel of each window."""
    share = ws.get("ave_pool.share", top_diff.shape, top_diff.dtype)
    xp.divide(top_diff, pool_size, out=share)
    overlap = _prepare(dsrc, top_diff.shape, geom)
    for _, _, rows, cols in geom.offset_slices(*top_diff.shape[2:]):
        if overlap:
            dsrc[:, :, rows, cols] += share
        else:
            dsrc[:, :, rows, cols] = share


def _prepare(dsrc, top_shape, geom):
    """Zero dsrc unless disjoint windows cover all of it; True when windows overlap."""
    (kh, kw), (sh, sw) = geom.kernel, geom.stride
    overlap = sh < kh or sw < kw
    covered = geom.tiles and top_shape[2] * kh == dsrc.shape[2] and top_shape[3] * kw == dsrc.shape[3]
    if not covered:
        dsrc.fill(0)
    return overlap


def window_pool_size(out_size, kernel, pad, stride, size):
    """Caffe's AVE divisor along one axis: each window clipped to the padded end H + pad."""
    starts = np.arange(out_size) * stride - pad
    return np.minimum(starts + kernel, size + pad) - starts
