"""im2col and col2im over a whole batch of images, written against any `xp`.

Convolution becomes one matrix product once every receptive field is laid out as a column
(im2col); the gradient with respect to the image sums the columns back (col2im). Here both
work on the whole batch at once and use strided views, so each costs a handful of array
calls instead of a Python loop over images or pixels.

Two column layouts, because numpy copies fast only along long contiguous runs:

- channels-first, `col[n, c, i, j, oh, ow]` (Caffe's per-image layout, batched): the run is
  an output row (OW). Best for few channels and wide outputs, e.g. LeNet's first layer.
  It is also the N-d layout (Caffe's im2col_nd): any number of spatial axes, the kernel
  offsets of every axis, then the output positions of every axis.
- channels-last, `col[g, n, oh, ow, i, j, c]` per group g of channels, gathered from an NHWC
  copy of the image: the run is a kernel row times the channels (kw * C) without groups, the
  group's channels with. Best for many channels and small outputs. 2-d only.

`i, j` index the kernel (kh, kw) and `oh, ow` the output positions.
"""
import itertools
from operator import add, mul


class ConvGeometry:
    """Kernel, pad, stride and dilation of a window over any number of spatial axes, each a
    tuple with one value per axis ((h, w) in 2-d). pad, stride and dilation default to 0, 1
    and 1 on every axis."""

    def __init__(self, kernel, pad=None, stride=None, dilation=None):
        self.kernel = tuple(int(k) for k in kernel)
        axes = len(self.kernel)
        self.pad = tuple(int(p) for p in pad) if pad is not None else (0,) * axes
        self.stride = tuple(int(s) for s in stride) if stride is not None else (1,) * axes
        self.dilation = tuple(int(d) for d in dilation) if dilation is not None else (1,) * axes
        # The number of kernel offsets: the product of the kernel's sizes.
        self.offsets = 1
        for k in self.kernel:
            self.offsets *= k

    @property
    def extent(self):
        """The span of one dilated kernel: d * (k - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def output_shape(self, *size):
        """Caffe's convolution output size, rounded down: (H + 2p - extent) // s + 1."""
        return tuple((n + 2 * p - e) // s + 1 for n, p, e, s in
                     zip(size, self.pad, self.extent, self.stride))

    def padded_shape(self, *size):
        return tuple([n + 2 * p for n, p in zip(size, self.pad)])

    @property
    def tiles(self):
        """True when the windows tile the image: stride == kernel and no dilation."""
        return self.stride == self.kernel and all(d == 1 for d in self.dilation)

    def axis_slices(self, axis, out):
        """Per kernel offset along spatial `axis`, the slice of the padded image it reads
        for `out` output positions."""
        k, s, d = self.kernel[axis], self.stride[axis], self.dilation[axis]
        return [slice(i * d, i * d + s * (out - 1) + 1, s) for i in range(k)]

    def windows(self, out_shape):
        """(offset, slices) for each kernel offset in row-major order: its index and its
        slice along every spatial axis, for the output grid `out_shape`."""
        return zip(itertools.product(*map(range, self.kernel)), itertools.product(
            *[self.axis_slices(axis, out) for axis, out in enumerate(out_shape)]))

    def offset_slices(self, out_h, out_w):
        """(i, j, rows, cols): windows() of a 2-d window, unpacked."""
        cols = self.axis_slices(1, out_w)
        for i, rows in enumerate(self.axis_slices(0, out_h)):
            for j, window in enumerate(cols):
                yield i, j, rows, window


def _as_strided(xp, a, shape, strides):
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def _interior(first, pad, size):
    """The index of the unpadded image inside a padded array whose spatial axes follow one
    another from axis `first`."""
    return (slice(None),) * first + tuple(map(slice, pad, map(add, pad, size)))


# -- channels-first ------------------------------------------------------------------------

def im2col_cf(xp, x, col, geom, padded=None):
    """x (n, C, H, W) -> col (n, C, kh, kw, OH, OW), a possibly strided view that is written;
    in N-d, x (n, C, *spatial) -> col (n, C, *kernel, *output).

    `padded` is x's shape with the pads added to the spatial axes, a zero border around the
    image, needed when pad > 0.
    """
    if any(geom.pad):
        padded[_interior(2, geom.pad, x.shape[2:])] = x
        x = padded
    steps = x.strides[2:]  # per kernel offset: a dilation's step; per output: a stride's
    strides = x.strides[:2] + tuple(map(mul, steps, geom.dilation)) + \
        tuple(map(mul, steps, geom.stride))
    col[...] = _as_strided(xp, x, col.shape, strides)


def col2im_cf(xp, col, dx, geom, padded=None):
    """col (n, C, kh, kw, OH, OW) -> dx (n, C, H, W), assigned (or the N-d shapes of
    im2col_cf): the sum of every column entry over the pixel it came from. `padded` is a
    scratch array of the padded image's shape, needed when pad > 0; its content is
    overwritten.
    """
    axes = dx.ndim - 2
    target = padded if any(geom.pad) else dx
    _scatter(col.transpose(tuple(range(2, 2 + axes)) + (0, 1) +
                           tuple(range(2 + axes, col.ndim))), target, geom, 2)
    if target is not dx:
        dx[...] = padded[_interior(2, geom.pad, dx.shape[2:])]


# -- channels-last -------------------------------------------------------------------------

def im2col_cl(xp, x, col, geom, padded):
    """x (n, C, H, W) -> col (G, n, OH, OW, kh, kw, C / G), a possibly strided view that is
    written: one column matrix per group of channels.

    `padded` is an (n, H + 2ph, W + 2pw, C) array with a zero border: the NHWC copy of x.
    """
    padded[_interior(1, geom.pad, x.shape[2:])] = x.transpose(0, 2, 3, 1)
    cg = col.shape[-1]
    sn, sy, sx, sc = padded.strides
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    col[...] = _as_strided(xp, padded, col.shape,
                           (sc * cg, sn, sy * sh, sx * sw, sy * dh, sx * dw, sc))


def col2im_cl(xp, col, dx, geom, padded):
    """col (kh, kw, n, OH, OW, G, C / G) -> dx (n, C, H, W), assigned. The kernel offsets
    lead so that each offset's block can be contiguous. `padded` is an
    (n, H + 2ph, W + 2pw, C) scratch array whose content is overwritten.
    """
    n, rows, cols, _ = padded.shape
    _scatter(col, padded.reshape((n, rows, cols) + col.shape[5:]), geom, 1)
    dx[...] = padded[_interior(1, geom.pad, dx.shape[2:])].transpose(0, 3, 1, 2)


def _scatter(blocks, target, geom, first):
    """target = sum over kernel offsets of blocks[offset] placed at the pixels that offset
    reads. target's spatial axes follow one another from axis `first`; blocks has one leading
    axis per kernel axis, then target's shape with the output grid in place of the image.
    """
    axes, lead = len(geom.kernel), (slice(None),) * first
    out = blocks.shape[axes + first:2 * axes + first]
    if geom.tiles:
        # Non-overlapping windows: one strided copy, (O, k) -> the image along each axis.
        size = tuple(map(mul, out, geom.kernel))
        if size != target.shape[first:first + axes]:
            target.fill(0)
        region = target[lead + tuple(map(slice, size))]
        # Split each spatial axis of the region into (output, kernel offset) and move each
        # of blocks' leading kernel axes after its output axis.
        shape, order = list(region.shape[:first]), list(range(axes, axes + first))
        for axis in range(axes):
            shape += [out[axis], geom.kernel[axis]]
            order += [axes + first + axis, axis]
        shape += region.shape[first + axes:]
        order += range(2 * axes + first, blocks.ndim)
        region.reshape(shape)[...] = blocks.transpose(order)
        return
    target.fill(0)
    for offset, slices in geom.windows(out):
        target[lead + slices] += blocks[offset]
