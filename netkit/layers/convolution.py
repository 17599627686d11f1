"""Convolution: Caffe's convolution, as im2col plus matrix products over whole batches.

Blobs: weight (num_output, channels / group, kernel_h, kernel_w) and, with bias_term, bias
(num_output,). The output size rounds down: (H + 2 pad - (dilation (kernel - 1) + 1)) //
stride + 1. Several bottoms may be given; each is convolved with the same weights into the
top of the same index.

Any number of spatial axes (at least one) may follow convolution_param.axis, as in Caffe's
im2col_nd path: the weights are then (num_output, channels / group, *kernel). The layout
choices below are made for 2 spatial axes (images); other counts (1-d signals, 3-d volumes)
take the channels-first columns, written for any count, with no CUDA kernel, channels-last
layout or depthwise path. force_nd_im2col changes nothing in 2-d: both of Caffe's paths
give the same numbers.

How it is fast on numpy: the columns of the whole batch are gathered with one strided copy
into a buffer kept across iterations, and the bias rides in the matrix product as one more
column of the weights against a row of ones that lives in the column buffer. The column
layout (ops.im2col) is picked per layer from the shapes: channels-first for few input
channels per group and wide outputs, where each image is one product against the weights
(still one array call), and channels-last, one product per group for the whole batch,
otherwise. Batches whose columns would exceed COLUMN_BUDGET elements are processed in
chunks of images.

With one input and one output channel per group (depthwise: MobileNet's dw layers, FCN's
bilinear upsampling) there are no columns: each kernel offset is one multiply-add over the
whole batch, and its weight gradient one `einsum`.

Both passes also run on plain arrays (`convolve`, `gradients`): Deconvolution keeps one of
these layers for the convolution from its top to its bottom and runs it backwards.
"""
from .. import kernels
from ..layer import Layer, LayerSetupError
from ..ops.im2col import ConvGeometry, col2im_cf, col2im_cl, im2col_cf, im2col_cl
from ..ops.workspace import Workspace
from ..registry import layers

# The most column elements gathered at once (128 MiB of float32).
COLUMN_BUDGET = 1 << 25
# Output positions per image from which a channels-last forward multiplies per image into
# the top instead of transposing one product for the batch (measured: 3025 and 12769
# positions gain, 729 and 169 lose).
DIRECT_TOP_POSITIONS = 1024
# Channels per group below which the bottom gradient is not computed channels-last: its
# products per kernel offset have that many columns, too few for an efficient GEMM.
MIN_CHANNELS_LAST_GRADIENT = 16


def spatial_values(param, name, short, default, num_axes):
    """A value per spatial axis from Caffe's repeated field `name` (given once for all
    axes or once per axis) or, with 2 spatial axes, from its `short`_h/_w forms.

    `short` is None for fields without _h/_w forms (dilation). Raises LayerSetupError naming
    the field when the value is given both ways, in _h/_w form for other than 2 spatial axes,
    or a wrong number of times.
    """
    values = list(getattr(param, name))
    if short is not None and (param.HasField(short + "_h") or param.HasField(short + "_w")):
        if values:
            raise LayerSetupError("convolution_param gives both %s and %s_h/%s_w; use one"
                                  % (name, short, short))
        if num_axes != 2:
            raise LayerSetupError("convolution_param %s_h/%s_w are for 2 spatial axes, got "
                                  "%d; use %s" % (short, short, num_axes, name))
        return getattr(param, short + "_h"), getattr(param, short + "_w")
    if not values:
        if default is None:
            raise LayerSetupError("convolution_param needs kernel_size (or kernel_h and "
                                  "kernel_w)")
        return (default,) * num_axes
    if len(values) not in (1, num_axes):
        raise LayerSetupError("convolution_param %s must be given once or once per spatial "
                              "axis (%d), got %d values" % (name, num_axes, len(values)))
    return tuple(values) * (num_axes // len(values))


def conv_geometry(param, num_axes):
    """The ConvGeometry (kernel, pad, stride, dilation) a ConvolutionParameter gives for
    `num_axes` spatial axes, checked."""
    kernel = spatial_values(param, "kernel_size", "kernel", None, num_axes)
    stride = spatial_values(param, "stride", "stride", 1, num_axes)
    pad = spatial_values(param, "pad", "pad", 0, num_axes)
    dilation = spatial_values(param, "dilation", None, 1, num_axes)
    for name, values in (("kernel_size (or kernel_h/kernel_w)", kernel),
                         ("stride (or stride_h/stride_w)", stride), ("dilation", dilation)):
        if min(values) < 1:
            raise LayerSetupError("convolution_param %s must be positive, got %s"
                                  % (name, values))
    return ConvGeometry(kernel, pad, stride, dilation)


def image_channel_axis(layer, bottom_shape):
    """(channel axis, number of spatial axes): convolution_param.axis made non-negative
    and the axes after it, of which there must be at least one."""
    axis = layer.layer_param.convolution_param.axis
    num_axes = len(bottom_shape)
    if not -num_axes <= axis < num_axes:
        raise LayerSetupError("convolution_param axis %d is out of range for a %d-axis "
                              "bottom" % (axis, num_axes))
    axis %= num_axes
    if axis == num_axes - 1:
        raise LayerSetupError("%s needs a spatial axis after convolution_param axis %d "
                              "(bottom shape %s)" % (layer.type, axis, bottom_shape))
    return axis, num_axes - axis - 1


def check_bottoms(layer, bottom):
    """The bottoms keep the number of axes and channels the layer was set up for, and share
    one shape; returns (number of images, spatial shape)."""
    shape = bottom[0].shape
    axes = layer.channel_axis + 1 + len(layer.geom.kernel)
    if len(shape) != axes:
        raise LayerSetupError("%s bottom must keep %d axes, got shape %s"
                              % (layer.type, axes, shape))
    if shape[layer.channel_axis] != layer.channels:
        raise LayerSetupError("%s bottom has %d channels, the weights expect %d"
                              % (layer.type, shape[layer.channel_axis], layer.channels))
    for b in bottom[1:]:
        if b.shape != shape:
            raise LayerSetupError("%s bottoms must share one shape, got %s and %s"
                                  % (layer.type, shape, b.shape))
    num = 1
    for d in shape[:layer.channel_axis]:
        num *= d
    return num, shape[layer.channel_axis + 1:]


def check_group(channels, num_output, group):
    if num_output < 1:
        raise LayerSetupError("convolution_param num_output must be positive")
    if group < 1 or channels % group or num_output % group:
        raise LayerSetupError("convolution_param group %d must divide both the %d input "
                              "channels and num_output %d" % (group, channels, num_output))


def setup_geometry(layer, bottom, top):
    """The setup Convolution and Deconvolution share: arity, one top per bottom, and the
    layer's channel_axis, geom (ConvGeometry) and input channels."""
    layer.check_arity(bottom, top)
    if len(bottom) != len(top):
        raise LayerSetupError("%s needs one top per bottom, got %d bottoms and %d tops"
                              % (layer.type, len(bottom), len(top)))
    layer.channel_axis, num_axes = image_channel_axis(layer, bottom[0].shape)
    layer.geom = conv_geometry(layer.layer_param.convolution_param, num_axes)
    layer.channels = bottom[0].shape[layer.channel_axis]


@layers.register("Convolution")
class ConvolutionLayer(Layer):
    min_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        setup_geometry(self, bottom, top)
        p = self.layer_param.convolution_param
        self.num_output, self.group = self.output_channels_and_group(p, self.channels)
        check_group(self.channels, self.num_output, self.group)
        self.bias_term = p.bias_term
        weight_shape = (self.num_output, self.channels // self.group) + self.geom.kernel
        self.weight_and_bias(weight_shape, (self.num_output,) if self.bias_term else None,
                             p.weight_filler, p.bias_filler)
        self.ws = Workspace(self.xp)
        # On a real GPU, 2-d im2col and col2im are CUDA kernels (netkit.kernels.im2col);
        # other numbers of spatial axes gather and scatter with xp's strided views.
        self.cuda = len(self.geom.kernel) == 2 and kernels.available(self.backend)
        self._plan = None
        # Bottoms whose column buffer holds the columns of the last forward (whole batch).
        self._fresh = set()

    def reshape(self, bottom, top):
        num, spatial = check_bottoms(self, bottom)
        out_spatial = self.geom.output_shape(*spatial)
        if min(out_spatial) < 1:
            raise LayerSetupError("Convolution kernel extent %s exceeds the padded input %s"
                                  % (self.geom.extent, self.geom.padded_shape(*spatial)))
        for t in top:
            t.reshape(bottom[0].shape[:self.channel_axis] + (self.num_output,) + out_spatial)
        plan = (num, spatial, out_spatial)
        if plan != self._plan:
            self._plan = plan
            self.ws.clear()
            self._fresh.clear()
            self.num, self.spatial, self.out_spatial = plan
            self.positions = 1
            for d in out_spatial:
                self.positions *= d
            planar = len(spatial) == 2
            # A 1x1 kernel at stride 1 without padding reads the image itself as its
            # columns: no gather, no scatter, one product per image.
            self.pointwise = self.geom.offsets == 1 and set(self.geom.stride) == {1} \
                and not any(self.geom.pad)
            # One input channel and one output channel per group (MobileNet's 3x3 dw
            # layers, FCN's bilinear upsampling): a multiply-add per kernel offset beats
            # columns whose products are one row each.
            self.depthwise = planar and not self.cuda and not self.pointwise \
                and self.channels == self.group == self.num_output
            self.channels_last = self._prefer_channels_last()
            # Channels-last products come out (positions, outputs); with many positions per
            # image the copy that turns them into the top's (outputs, positions) costs more
            # than the product (SqueezeNet's conv1: 55 ms against 4), so each image's product
            # is taken the other way round, straight into the top.
            self.direct_top = self.channels_last and self.positions >= DIRECT_TOP_POSITIONS
            self.gradient_channels_last = self.channels_last and \
                self.channels // self.group >= MIN_CHANNELS_LAST_GRADIENT
            per_image = (self.column_rows() + 1) * self.group * self.positions
            self.chunk = max(1, min(num, COLUMN_BUDGET // per_image))
            # Channels-first: the bias rides in the product as a column of the weights
            # (copied per pass) when they are smaller than the top, else it is added.
            self.fold_bias = self.column_rows() < num * self.positions and not self.pointwise

    def output_channels_and_group(self, param, channels):
        """(num_output, group) for a bottom with `channels` channels; a hook for the
        depthwise types, which take group from the bottom."""
        return param.num_output, param.group

    def _prefer_channels_last(self):
        """Pick the im2col layout whose strided copy moves the longer contiguous runs,
        unless the weights outweigh the columns: channels-last re-lays the weights out for
        every pass, which costs more than the products where there are few output
        positions per weight (deep layers, small batches)."""
        if self.cuda or self.pointwise or len(self.spatial) != 2:
            return False  # the CUDA kernels write Caffe's channels-first columns, as does N-d
        if 2 * (self.num_output // self.group) >= self.num * self.positions:
            return False
        (_, kw), (_, sw), (_, dw) = self.geom.kernel, self.geom.stride, self.geom.dilation
        run_cf = self.out_spatial[1] if sw == 1 else 1
        run_cl = self.channels // self.group * (kw if dw == 1 and self.group == 1 else 1)
        return run_cl > run_cf

    def column_rows(self):
        """Length of one column (one group's receptive field): C / group * kh * kw, or
        C / group times the kernel's offsets in N-d."""
        return self.channels // self.group * self.geom.offsets

    # -- forward ---------------------------------------------------------------------------
    def forward(self, bottom, top):
        weights = self._weights_with_bias()
        for index, (b, t) in enumerate(zip(bottom, top)):
            self.convolve(index, b.data, t.data, weights)

    def convolve(self, index, x, y, weights=None):
        """y = x convolved with the weights, plus the bias: the forward pass of bottom
        `index` on arrays of that bottom's and top's shapes (Deconvolution runs it on its top
        diff). `weights` is _weights_with_bias(), passed when several bottoms share it."""
        if self.depthwise:
            self._depthwise_convolve(x, y)
            return
        xp, g, o = self.xp, self.group, self.num_output
        if weights is None:
            weights = self._weights_with_bias()
        x = x.reshape((self.num, self.channels) + self.spatial)
        y = y.reshape(self.num, g, o // g, self.positions)
        for start in range(0, self.num, self.chunk):
            stop = min(start + self.chunk, self.num)
            col = self._gather(index, x[start:stop])
            if self.chunk >= self.num and not self.pointwise:
                self._fresh.add(index)
            if self.direct_top:
                # (G, O / G, K) . (n, G, K, OH * OW), per image, straight into the top.
                n, k = stop - start, col.shape[2]
                xp.matmul(weights.transpose(0, 2, 1),
                          col.reshape(g, n, -1, k).transpose(1, 0, 3, 2), out=y[start:stop])
            elif self.channels_last:
                # (G, n * OH * OW, K) . (G, K, O / G), then back to (n, O, OH * OW).
                out = self._scratch("out", (g, col.shape[1], o // g))
                xp.matmul(col, weights, out=out)
                y[start:stop] = out.reshape(g, stop - start, -1, o // g).transpose(1, 0, 3, 2)
            elif self.fold_bias or not self.bias_term:
                # (G, O / G, K) . (n, G, K, OH * OW), straight into the top.
                xp.matmul(weights, col, out=y[start:stop])
            else:
                xp.matmul(weights, col[:, :, :self.column_rows()], out=y[start:stop])
                y[start:stop] += self.blobs[1].data.reshape(1, g, o // g, 1)

    def _weights_with_bias(self):
        """The weights as the GEMM wants them, with the bias appended as one more column."""
        weight = self.blobs[0].data
        g, k, o = self.group, self.column_rows(), self.num_output
        if self.channels_last:
            w = self.ws.get("weights", (g, k + self.bias_term, o // g))
            kh, kw = self.geom.kernel
            w[:, :k].reshape(g, kh, kw, -1, o // g)[...] = \
                weight.reshape(g, o // g, -1, kh, kw).transpose(0, 3, 4, 2, 1)
            if self.bias_term:
                w[:, k] = self.blobs[1].data.reshape(g, -1)
            return w
        if not (self.bias_term and self.fold_bias):
            return weight.reshape(g, -1, k)
        w = self.ws.get("weights", (g, o // g, k + 1))
        w[..., :k] = weight.reshape(g, -1, k)
        w[..., k] = self.blobs[1].data.reshape(g, -1)
        return w

    def _scratch(self, name, shape):
        """A contiguous scratch array of `shape`, the prefix of one flat buffer."""
        size = 1
        for d in shape:
            size *= d
        return self.ws.get(name, (size,)).reshape(shape)

    def _in_column_buffer(self, index, shape):
        """A contiguous array of `shape` in bottom `index`'s column buffer. The buffer holds
        the columns, and in backward, once the weight gradient has used them, the column
        gradient: sharing one buffer keeps the working set (and cache misses) down."""
        full = self.chunk * self.group * (self.column_rows() + self.bias_term) * self.positions
        size = 1
        for d in shape:
            size *= d
        return self.ws.get(("col", index), (full,))[:size].reshape(shape)

    def _columns(self, index, n):
        """Bottom `index`'s columns for n images: (G, n * OH * OW, K + bias) channels-last,
        (n, G, K + bias, OH * OW) channels-first."""
        k, positions = self.column_rows() + self.bias_term, self.positions
        if self.channels_last:
            return self._in_column_buffer(index, (self.group, n * positions, k))
        return self._in_column_buffer(index, (n, self.group, k, positions))

    def _gather(self, index, x):
        """im2col of the images x into bottom `index`'s column buffer, with a row (or
        column) of ones under the bias."""
        n = x.shape[0]
        k, g, geom = self.column_rows(), self.group, self.geom
        if self.pointwise:
            return x.reshape(n, g, k, self.positions)  # no row of ones: see forward
        padded_shape = geom.padded_shape(*self.spatial)
        col = self._columns(index, n)
        self._fresh.discard(index)
        if self.channels_last:
            padded = self.ws.get("padded", (n,) + padded_shape + (self.channels,), init=0.0)
            im2col_cl(self.xp, x, col[:, :, :k].reshape((g, n) + self.out_spatial +
                                                        geom.kernel + (-1,)), geom, padded)
            if self.bias_term:
                col[:, :, k] = 1.0
        else:
            images = x.reshape((n * g, -1) + self.spatial)
            cols = col[:, :, :k].reshape((n * g, -1) + geom.kernel + self.out_spatial)
            if self.cuda:
                kernels.im2col.im2col(images, cols, geom)
            else:
                padded = None
                if any(geom.pad):
                    padded = self.ws.get("padded", (n * g, self.channels // g) + padded_shape,
                                         init=0.0)
                im2col_cf(self.xp, images, cols, geom, padded)
            if self.bias_term:
                col[:, :, k] = 1.0
        return col

    # -- backward --------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        prop = list(self.param_propagate_down) + [False] * len(self.blobs)
        for index, (b, t) in enumerate(zip(bottom, top)):
            self.gradients(index, b.data, t.diff, b.diff if propagate_down[index] else None,
                           prop)

    def gradients(self, index, x, dy, dx, prop):
        """The backward pass of bottom `index` on arrays: accumulate the weight (prop[0])
        and bias (prop[1]) gradients from x and dy, and assign dx unless it is None. x is
        read only for the parameter gradients (None will do without them); Deconvolution's
        forward is this pass with dx its top."""
        need_params = prop[0] or (self.bias_term and prop[1])
        if not (need_params or dx is not None):
            return
        if self.depthwise:
            self._depthwise_gradients(x if need_params else None, dy, dx, prop)
            return
        step = self._backward_cl if self.channels_last else self._backward_cf
        shape = (self.num, self.channels) + self.spatial
        dy = dy.reshape(self.num, self.group, -1, self.positions)
        if need_params:
            x = x.reshape(shape)
        if dx is not None:
            dx = dx.reshape(shape)
        for start in range(0, self.num, self.chunk):
            stop = min(start + self.chunk, self.num)
            col = None
            if need_params:
                # The last convolve's columns are still there when the batch was one chunk.
                col = self._columns(index, self.num) if index in self._fresh \
                    else self._gather(index, x[start:stop])
            step(index, col, dy[start:stop], None if dx is None else dx[start:stop], prop)

    def _accumulate(self, grad, prop, dy=None):
        """Add the GEMM's (G, K + bias, O / G) or (G, O / G, K + bias) weight gradient, bias
        last along K, to the diffs; pointwise columns have no bias row: the bias gradient
        is then dy (n, G, O / G, OH * OW) summed."""
        k, g = self.column_rows(), self.group
        if prop[0]:
            weight = self.blobs[0]
            if self.channels_last:
                kh, kw = self.geom.kernel
                weight.diff += grad[:, :k].reshape(g, kh, kw, -1, self.num_output // g) \
                    .transpose(0, 4, 3, 1, 2).reshape(weight.shape)
            else:
                weight.diff += grad[..., :k].reshape(weight.shape)
        if self.bias_term and prop[1]:
            if self.pointwise:
                bias = dy.sum(axis=3).sum(axis=0)
            else:
                bias = grad[:, k] if self.channels_last else grad[..., k]
            self.blobs[1].diff += bias.reshape(self.num_output)

    def _backward_cf(self, index, col, dy, dx, prop):
        """col (n, G, K, OH * OW), dy (n, G, O / G, OH * OW): the weight gradient is one
        product per group over the batch's positions, the bottom's one per image."""
        if col is not None:
            n, g, og, positions = dy.shape
            k = col.shape[2]
            if n == 1:
                self._accumulate(self.xp.matmul(dy[0], col[0].transpose(0, 2, 1)), prop, dy)
            elif og * k < (og + k) * positions:
                # Few weights per output position (LeNet's conv1): one product per image,
                # summed, reads dy and the columns where they lie; the transposing copies
                # below would move more memory than the n per-image gradients take.
                per_image = self._scratch("weight_grad_per_image", (n, g, og, k))
                self.xp.matmul(dy, col.transpose(0, 1, 3, 2), out=per_image)
                self._accumulate(per_image.sum(axis=0), prop, dy)
            else:
                rows = self._scratch("dy_by_group", (g, dy.shape[2], n, dy.shape[3]))
                rows[...] = dy.transpose(1, 2, 0, 3)
                cols = self._scratch("col_by_group", (g, col.shape[2], n, col.shape[3]))
                cols[...] = col.transpose(1, 2, 0, 3)
                self._accumulate(self.xp.matmul(rows.reshape(g, dy.shape[2], -1),
                                                cols.reshape(g, col.shape[2], -1)
                                                .transpose(0, 2, 1)), prop, dy)
        if dx is not None:
            self._bottom_gradient_cf(index, dy, dx)

    def _backward_cl(self, index, col, dy, dx, prop):
        """col (G, n * OH * OW, K), dy (n, G, O / G, OH * OW): one product per group."""
        g, n, og = self.group, dy.shape[0], self.num_output // self.group
        channels_last_dx = dx is not None and self.gradient_channels_last
        if col is not None or channels_last_dx:
            rows = self._scratch("dy_rows", (g, n * self.positions, og))
            rows.reshape(g, n, -1, og)[...] = dy.transpose(1, 0, 3, 2)
        if col is not None:
            self._accumulate(self.xp.matmul(col.transpose(0, 2, 1), rows), prop)
        if channels_last_dx:
            self._bottom_gradient_cl(index, rows, dx)
        elif dx is not None:
            self._bottom_gradient_cf(index, dy, dx)

    def _bottom_gradient_cf(self, index, dy, dx):
        """dx from channels-first column gradients: weights^T . dy per image, then col2im."""
        xp, g, k, geom = self.xp, self.group, self.column_rows(), self.geom
        n = dy.shape[0]
        weight = self.blobs[0].data.reshape(g, -1, k)
        if self.pointwise:  # the column gradient is the bottom gradient
            xp.matmul(weight.transpose(0, 2, 1), dy, out=dx.reshape(n, g, k, -1))
            return
        dcol = self._in_column_buffer(index, (n, g, k, self.positions))
        self._fresh.discard(index)
        xp.matmul(weight.transpose(0, 2, 1), dy, out=dcol)
        dcols = dcol.reshape((n * g, -1) + geom.kernel + self.out_spatial)
        images = dx.reshape((n * g, -1) + self.spatial)
        if self.cuda:
            kernels.im2col.col2im(dcols, images, geom)
            return
        padded = None
        if any(geom.pad):
            padded = self.ws.get("padded_diff", (n * g, self.channels // g) +
                                 geom.padded_shape(*self.spatial))
        col2im_cf(xp, dcols, images, geom, padded)

    def _bottom_gradient_cl(self, index, rows, dx):
        """dx from channels-last column gradients, one block per kernel offset: rows
        (G, n * OH * OW, O / G) . weights (offset, G, O / G, C / G), then col2im."""
        xp, geom, g = self.xp, self.geom, self.group
        n, og, cg = dx.shape[0], self.num_output // g, self.channels // g
        kh, kw = geom.kernel
        weight = self.ws.get("weights_by_offset", (kh * kw, g, og, cg))
        weight.reshape(kh, kw, g, og, cg)[...] = \
            self.blobs[0].data.reshape(g, og, cg, kh, kw).transpose(3, 4, 0, 1, 2)
        dcol = self._in_column_buffer(index, (kh * kw, g, rows.shape[1], cg))
        self._fresh.discard(index)
        xp.matmul(rows, weight, out=dcol)
        padded = self.ws.get("padded_diff", (n,) + geom.padded_shape(*self.spatial) +
                             (self.channels,))
        blocks = dcol.reshape((kh, kw, g, n) + self.out_spatial + (cg,)) \
            .transpose(0, 1, 3, 4, 5, 2, 6)
        col2im_cl(xp, blocks, dx, geom, padded)

    # -- depthwise (one channel per group) ---------------------------------------------------
    def _depthwise_source(self, x):
        """x (n, C, H, W) with its zero border when pad > 0 (a buffer kept across passes)."""
        if self.geom.pad == (0, 0):
            return x
        (ph, pw), (h, w) = self.geom.pad, self.spatial
        padded = self.ws.get("dw_padded", (self.num, self.channels) +
                             self.geom.padded_shape(h, w), init=0.0)
        padded[:, :, ph:ph + h, pw:pw + w] = x
        return padded

    def _depthwise_offsets(self):
        """(k, rows, cols) per kernel offset k = i * kw + j: the window of the padded image
        each offset reads for every output position."""
        for i, j, rows, cols in self.geom.offset_slices(*self.out_spatial):
            yield i * self.geom.kernel[1] + j, rows, cols

    def _depthwise_convolve(self, x, y):
        """y[n, c] = sum over offsets k of w[c, k] * (the window of x[n, c] offset k reads),
        plus the bias: one multiply and one add per offset over the whole batch."""
        xp, c = self.xp, self.channels
        src = self._depthwise_source(x.reshape((self.num, c) + self.spatial))
        y = y.reshape((self.num, c) + self.out_spatial)
        weight = self.blobs[0].data.reshape(c, -1)
        term = self._scratch("dw_term", y.shape)
        for k, rows, cols in self._depthwise_offsets():
            xp.multiply(src[:, :, rows, cols], weight[:, k].reshape(1, c, 1, 1),
                        out=y if k == 0 else term)
            if k:
                y += term
        if self.bias_term:
            y += self.blobs[1].data.reshape(1, c, 1, 1)

    def _depthwise_gradients(self, x, dy, dx, prop):
        """The weight gradient per offset is sum(dy * window) over batch and positions; the
        bottom gradient adds w[c, k] * dy back into each offset's window."""
        xp, c = self.xp, self.channels
        dy = dy.reshape((self.num, c) + self.out_spatial)
        term = self._scratch("dw_term", dy.shape)
        if x is not None and prop[0]:
            src = self._depthwise_source(x.reshape((self.num, c) + self.spatial))
            grad = self.blobs[0].diff.reshape(c, -1)
            for k, rows, cols in self._depthwise_offsets():
                grad[:, k] += xp.einsum("nchw,nchw->c", dy, src[:, :, rows, cols])
        if self.bias_term and prop[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        if dx is None:
            return
        weight = self.blobs[0].data.reshape(c, -1)
        (ph, pw), (h, w) = self.geom.pad, self.spatial
        target = self.ws.get("dw_padded_diff", (self.num, c) + self.geom.padded_shape(h, w))
        target.fill(0)
        for k, rows, cols in self._depthwise_offsets():
            xp.multiply(dy, weight[:, k].reshape(1, c, 1, 1), out=term)
            target[:, :, rows, cols] += term
        dx.reshape(self.num, c, h, w)[...] = target[:, :, ph:ph + h, pw:pw + w]
