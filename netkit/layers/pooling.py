"""Pooling: Caffe's MAX, AVE and STOCHASTIC pooling over 2-d windows.

Caffe's sizes: pooled = ceil((H + 2 pad - kernel) / stride) + 1 (floor with round_mode:
FLOOR), and with padding a last window that would start inside the padding is dropped. MAX
ignores the padding; AVE divides each window's sum by its size clipped to H + pad (not H), so
border windows count part of the padding. A second top (MAX only) receives Caffe's argmax
mask: the flat index h * W + w of each maximum, as a float.

Windows that hang over the image are read from a copy padded with -FLT_MAX (MAX) or zeros
(AVE), kept across iterations; a window covering the whole image (global pooling) is one
reduction over the flattened image. STOCHASTIC follows Caffe's GPU kernels (see
netkit.ops.stochastic_pooling): sampling in TRAIN, probability-weighted average in TEST.
"""
import numpy as np

from .. import kernels
from .. import netkit_pb2 as pb
from ..layer import TRAIN, Layer, LayerSetupError
from ..ops import stochastic_pooling
from ..ops.im2col import ConvGeometry
from ..ops.pooling import (ave_pool, ave_pool_backward, index_dtype, max_pool,
                           max_pool_backward, max_pool_routes, pooled_size, window_pool_size)
from ..ops.workspace import Workspace
from ..registry import layers

MAX = pb.PoolingParameter.MAX
AVE = pb.PoolingParameter.AVE
STOCHASTIC = pb.PoolingParameter.STOCHASTIC
FLT_MAX = float(np.finfo(np.float32).max)


def _pair(p, name):
    """Caffe's `name` or `name`_h/`name`_w pooling field as (h, w); both forms is an error."""
    has_h, has_w = p.HasField(name + "_h"), p.HasField(name + "_w")
    if has_h or has_w:
        if p.HasField(name):
            raise LayerSetupError("pooling_param gives both %s and %s_h/%s_w; use one"
                                  % (name, name, name))
        if not (has_h and has_w):
            raise LayerSetupError("pooling_param needs both %s_h and %s_w" % (name, name))
        return getattr(p, name + "_h"), getattr(p, name + "_w")
    return getattr(p, name), getattr(p, name)


@layers.register("Pooling")
class PoolingLayer(Layer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        self.check_arity(bottom, top)
        p = self.layer_param.pooling_param
        if len(top) == 2 and p.pool != MAX:
            raise LayerSetupError("Pooling takes a second top (the argmax mask) only with "
                                  "pool: MAX")
        self.method = p.pool
        self.global_pooling = p.global_pooling
        has_size, has_h, has_w = (p.HasField(f) for f in ("kernel_size", "kernel_h", "kernel_w"))
        if self.global_pooling:
            if has_size or has_h or has_w:
                raise LayerSetupError("pooling_param global_pooling takes its kernel from the "
                                      "bottom; remove kernel_size/kernel_h/kernel_w")
            self.kernel = None
        else:
            if has_size and (has_h or has_w):
                raise LayerSetupError("pooling_param gives both kernel_size and "
                                      "kernel_h/kernel_w; use one")
            if has_size:
                self.kernel = (p.kernel_size, p.kernel_size)
            elif has_h and has_w:
                self.kernel = (p.kernel_h, p.kernel_w)
            else:
                raise LayerSetupError("pooling_param needs kernel_size (or both kernel_h and "
                                      "kernel_w)")
            if min(self.kernel) < 1:
                raise LayerSetupError("pooling_param kernel size must be positive, got %s"
                                      % (self.kernel,))
        self.pad = _pair(p, "pad")
        self.stride = _pair(p, "stride")
        if min(self.stride) < 1:
            raise LayerSetupError("pooling_param stride must be positive, got %s"
                                  % (self.stride,))
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise LayerSetupError("pooling_param global_pooling allows only pad 0 and stride 1")
        if self.kernel and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise LayerSetupError("pooling_param pad %s must be smaller than the kernel %s"
                                  % (self.pad, self.kernel))
        # ceil_mode is round_mode's older spelling (OpenCV's, DenseNet ports'); false = FLOOR.
        ceil = p.round_mode == pb.PoolingParameter.CEIL
        if p.HasField("ceil_mode") and p.HasField("round_mode") and p.ceil_mode != ceil:
            raise LayerSetupError("pooling_param ceil_mode %s contradicts round_mode %s"
                                  % (str(p.ceil_mode).lower(),
                                     pb.PoolingParameter.RoundMode.Name(p.round_mode)))
        self.ceil_mode = ceil and p.ceil_mode
        self.ws = Workspace(self.xp)
        # On a real GPU, windowed MAX pooling is a CUDA kernel (netkit.kernels.pooling).
        self.cuda = kernels.available(self.backend) and self.method == MAX
        self._plan = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError("Pooling bottom must have 4 axes (num, channels, height, "
                                  "width), got shape %s" % (shape,))
        num, channels, height, width = shape
        kernel = (height, width) if self.global_pooling else self.kernel
        pooled = [pooled_size(size, k, p, s, self.ceil_mode) for size, k, p, s in
                  zip((height, width), kernel, self.pad, self.stride)]
        if self.pad != (0, 0):
            # The last window must start inside the image or its top/left padding.
            for axis, size in enumerate((height, width)):
                if (pooled[axis] - 1) * self.stride[axis] >= size + self.pad[axis]:
                    pooled[axis] -= 1
        if min(pooled) < 1:
            raise LayerSetupError("Pooling kernel %s does not fit the padded %dx%d bottom"
                                  % (kernel, height, width))
        for t in top:
            t.reshape(num, channels, pooled[0], pooled[1])
        plan = (shape, kernel)
        if plan != self._plan:
            self._plan = plan
            self.ws.clear()
            self._make_plan(shape, kernel, pooled, len(top) == 2)

    def _make_plan(self, shape, kernel, pooled, want_mask):
        num, channels, height, width = shape
        xp, be = self.xp, self.backend
        self.shape = shape
        self._routes = None  # max_pool_routes for these shapes, made by the first backward
        if self.method == STOCHASTIC:
            self.whole = False
            self.cells = be.asarray(stochastic_pooling.window_cells(
                height, width, pooled, kernel, self.stride))
            return
        self.geom = ConvGeometry(kernel, (0, 0), self.stride)
        self.whole = tuple(pooled) == (1, 1) and tuple(kernel) == (height, width) \
            and self.pad == (0, 0)
        # Rows/cols of the padded image the windows span, and of the bottom they read.
        span = [(n - 1) * s + k for n, s, k in zip(pooled, self.stride, kernel)]
        self.used = [min(size, sp - p) for size, sp, p in zip((height, width), span, self.pad)]
        self.buffered = self.pad != (0, 0) or span[0] > height or span[1] > width
        self.span = span
        if self.method == AVE:
            if self.whole:
                self.pool_size = float(height * width)
            else:
                sizes = np.outer(*[window_pool_size(n, k, p, s, size) for n, k, p, s, size in
                                   zip(pooled, kernel, self.pad, self.stride, (height, width))])
                self.pool_size = float(sizes[0, 0]) if (sizes == sizes[0, 0]).all() \
                    else be.asarray(sizes, dtype=np.float32)
        else:
            window = 1 if self.whole else kernel[0] * kernel[1]
            dtype = np.int64 if self.whole else np.int32 if self.cuda else index_dtype(window)
            self.argmax = xp.zeros((num, channels) + tuple(pooled), dtype=dtype)
            if self.whole:
                self.positions = xp.arange(height * width)
            elif want_mask:
                # Caffe's mask: flat bottom index of the window start plus the offset's.
                starts = [np.arange(n) * s - p for n, s, p in zip(pooled, self.stride, self.pad)]
                self.mask_base = be.asarray(starts[0][:, None] * width + starts[1][None, :],
                                            dtype=np.float32)
                i, j = np.divmod(np.arange(kernel[0] * kernel[1]), kernel[1])
                self.mask_offset = be.asarray(i * width + j, dtype=np.float32)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp
        x, y = bottom[0].data, top[0].data
        num, channels, height, width = self.shape
        if self.method == STOCHASTIC:
            if self.phase == TRAIN:
                uniform = self.backend.random.random_sample(y.shape).astype(np.float32)
                self.picked = stochastic_pooling.forward_train(xp, x, y, self.cells, uniform)
            else:
                stochastic_pooling.forward_test(xp, x, y, self.cells)
            return
        if self.whole:
            flat = x.reshape(num, channels, height * width)
            if self.method == MAX:
                self.argmax[...] = xp.argmax(flat, axis=2).reshape(self.argmax.shape)
                y[...] = flat.max(axis=2).reshape(y.shape)
                if len(top) == 2:
                    top[1].data[...] = self.argmax
            else:
                xp.divide(flat.sum(axis=2).reshape(y.shape), self.pool_size, out=y)
            return
        if self.cuda:
            kernels.pooling.max_pool_forward(x, y, self.argmax, self.geom.kernel, self.stride,
                                             self.pad)
        elif self.method == MAX:
            src = self._padded_source(x)
            max_pool(xp, src, y, self.argmax, self.geom, self.ws)
        else:
            ave_pool(xp, self._padded_source(x), y, self.geom, self.pool_size)
        if len(top) == 2:
            xp.add(self.mask_base, xp.take(self.mask_offset, self.argmax), out=top[1].data)

    def _padded_source(self, x):
        if not self.buffered:
            return x
        num, channels = self.shape[:2]
        fill = -FLT_MAX if self.method == MAX else 0.0
        padded = self.ws.get("padded", (num, channels) + tuple(self.span), init=fill)
        padded[self._interior()] = x[:, :, :self.used[0], :self.used[1]]
        return padded

    def _interior(self):
        (ph, pw), (rows, cols) = self.pad, self.used
        return slice(None), slice(None), slice(ph, ph + rows), slice(pw, pw + cols)

    # -- backward --------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy, dx = top[0].diff, bottom[0].diff
        num, channels, height, width = self.shape
        if self.method == STOCHASTIC:
            if self.phase != TRAIN:
                raise LayerSetupError("STOCHASTIC pooling has a gradient only in the TRAIN "
                                      "phase (it routes each diff to the sampled cell)")
            stochastic_pooling.backward(xp, dy, self.picked, dx)
            return
        if self.whole:
            flat = dx.reshape(num, channels, height * width)
            column = dy.reshape(num, channels, 1)
            if self.method == MAX:
                hit = xp.equal(self.positions, self.argmax.reshape(num, channels, 1))
                xp.multiply(hit, column, out=flat)
            else:
                flat[...] = column / self.pool_size
            return
        if self.cuda:
            kernels.pooling.max_pool_backward(dy, self.argmax, dx, self.geom.kernel,
                                              self.stride, self.pad)
            return
        target = dx
        if self.buffered:
            target = self.ws.get("padded_diff", (num, channels) + tuple(self.span))
        if self.method == MAX:
            if self._routes is None:
                self._routes = max_pool_routes(xp, dy.shape, target.shape, self.geom)
            max_pool_backward(xp, dy, self.argmax, target, self.geom, self.ws, self._routes)
        else:
            ave_pool_backward(xp, dy, target, self.geom, self.pool_size, self.ws)
        if self.buffered:
            if tuple(self.used) != (height, width):
                dx.fill(0)
            dx[:, :, :self.used[0], :self.used[1]] = target[self._interior()]
