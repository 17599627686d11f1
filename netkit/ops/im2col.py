"""im2col and col2im over a whole batch of 2-d images, written against any `xp`.

Convolution becomes one matrix product once every receptive field is laid out as a column
(im2col); the gradient with respect to the image sums the columns back (col2im). Here both
work on the whole batch at once and use strided views, so each costs a handful of array
calls instead of a Python loop over images or pixels.

Two column layouts, because numpy copies fast only along long contiguous runs:

- channels-first, `col[n, c, i, j, oh, ow]` (Caffe's per-image layout, batched): the run is
  an output row (OW). Best for few channels and wide outputs, e.g. LeNet's first layer.
- channels-last, `col[g, n, oh, ow, i, j, c]` per group g of channels, gathered from an NHWC
  copy of the image: the run is a kernel row times the channels (kw * C) without groups, the
  group's channels with. Best for many channels and small outputs.

`i, j` index the kernel (kh, kw) and `oh, ow` the output positions.
"""


class ConvGeometry:
    """Kernel, pad, stride and dilation of a 2-d window, each as (h, w)."""

    def __init__(self, kernel, pad=(0, 0), stride=(1, 1), dilation=(1, 1)):
        self.kernel = tuple(int(k) for k in kernel)
        self.pad = tuple(int(p) for p in pad)
        self.stride = tuple(int(s) for s in stride)
        self.dilation = tuple(int(d) for d in dilation)

    @property
    def extent(self):
        """The span of one dilated kernel: d * (k - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def output_shape(self, height, width):
        """Caffe's convolution output size, rounded down: (H + 2p - extent) // s + 1."""
        return tuple((size + 2 * p - e) // s + 1 for size, p, e, s in
                     zip((height, width), self.pad, self.extent, self.stride))

    def padded_shape(self, height, width):
        return height + 2 * self.pad[0], width + 2 * self.pad[1]

    @property
    def tiles(self):
        """True when the windows tile the image: stride == kernel and no dilation."""
        return self.stride == self.kernel and self.dilation == (1, 1)

    def offset_slices(self, out_h, out_w):
        """(i, j, rows, cols): for each kernel offset, the slices of the padded image it reads."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        for i in range(kh):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            for j in range(kw):
                yield i, j, rows, slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)


def _as_strided(xp, a, shape, strides):
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def _interior(ndim, axes, pad, size):
    """The index of the unpadded image inside a padded array; `axes` are its (row, col) axes."""
    index = [slice(None)] * ndim
    index[axes[0]] = slice(pad[0], pad[0] + size[0])
    index[axes[1]] = slice(pad[1], pad[1] + size[1])
    return tuple(index)


# -- channels-first ------------------------------------------------------------------------

def im2col_cf(xp, x, col, geom, padded=None):
    """x (n, C, H, W) -> col (n, C, kh, kw, OH, OW), a possibly strided view that is written.

    `padded` is an (n, C, H + 2ph, W + 2pw) array with a zero border, needed when pad > 0.
    """
    if geom.pad != (0, 0):
        padded[_interior(4, (2, 3), geom.pad, x.shape[2:])] = x
        x = padded
    n, c, _, _ = x.shape
    _, _, kh, kw, oh, ow = col.shape
    sn, sc, sy, sx = x.strides
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    col[...] = _as_strided(xp, x, (n, c, kh, kw, oh, ow),
                           (sn, sc, sy * dh, sx * dw, sy * sh, sx * sw))


def col2im_cf(xp, col, dx, geom, padded=None):
    """col (n, C, kh, kw, OH, OW) -> dx (n, C, H, W), assigned: the sum of every column entry
    over the pixel it came from. `padded` is an (n, C, H + 2ph, W + 2pw) scratch array,
    needed when pad > 0; its content is overwritten.
    """
    target = dx if geom.pad == (0, 0) else padded
    _scatter(col.transpose(2, 3, 0, 1, 4, 5), target, geom, (2, 3))
    if target is not dx:
        dx[...] = padded[_interior(4, (2, 3), geom.pad, dx.shape[2:])]


# -- channels-last -------------------------------------------------------------------------

def im2col_cl(xp, x, col, geom, padded):
    """x (n, C, H, W) -> col (G, n, OH, OW, kh, kw, C / G), a possibly strided view that is
    written: one column matrix per group of channels.

    `padded` is an (n, H + 2ph, W + 2pw, C) array with a zero border: the NHWC copy of x.
    """
    padded[_interior(4, (1, 2), geom.pad, x.shape[2:])] = x.transpose(0, 2, 3, 1)
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
    _scatter(col, padded.reshape((n, rows, cols) + col.shape[5:]), geom, (1, 2))
    dx[...] = padded[_interior(4, (1, 2), geom.pad, dx.shape[2:])].transpose(0, 3, 1, 2)


def _scatter(blocks, target, geom, axes):
    """target = sum over kernel offsets (i, j) of blocks[i, j] placed at the pixels that
    offset reads. `axes` are target's (row, column) axes; blocks[i, j] has target's shape
    with the output grid (OH, OW) in place of the image.
    """
    kh, kw = geom.kernel
    oh, ow = blocks.shape[2 + axes[0]], blocks.shape[2 + axes[1]]
    rows, cols = target.shape[axes[0]], target.shape[axes[1]]
    if geom.tiles:
        # Non-overlapping windows: one strided copy, (OH, kh) -> rows and (OW, kw) -> cols.
        covered = oh * kh == rows and ow * kw == cols
        if not covered:
            target.fill(0)
        index = [slice(None)] * target.ndim
        index[axes[0]] = slice(0, oh * kh)
        index[axes[1]] = slice(0, ow * kw)
        region = target[tuple(index)]
        shape = list(region.shape)
        shape[axes[1]:axes[1] + 1] = [ow, kw]
        shape[axes[0]:axes[0] + 1] = [oh, kh]
        # blocks axes: i, j, then target axes with (oh, ow); move i after oh and j after ow.
        order = list(range(2, blocks.ndim))
        order.insert(axes[1] + 1, 1)
        order.insert(axes[0] + 1, 0)
        region.reshape(shape)[...] = blocks.transpose(order)
        return
    target.fill(0)
    index = [slice(None)] * target.ndim
    for i, j, r, c in geom.offset_slices(oh, ow):
        index[axes[0]], index[axes[1]] = r, c
        target[tuple(index)] += blocks[i, j]
