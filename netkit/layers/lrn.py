"""LRN: Caffe's local response normalization, top = bottom * scale ** -beta.

ACROSS_CHANNELS: scale = k + alpha / n * (sum of squares over the n channels centred on each
channel, zero beyond the first and last channel).

WITHIN_CHANNEL: Caffe composes it from Power, AVE Pooling (kernel n, pad (n - 1) / 2,
stride 1) and Power layers, so scale = 1 + alpha * (sum of squares over the n x n window,
zero outside the image) / n ** 2. Every such window lies within H + pad, so AVE pooling
divides by the full n * n at the borders too; Caffe uses shift 1 there and ignores k.

Window sums are taken as n shifted slices of a zero-padded copy kept across iterations (two
passes of n for the square window).
"""
from .. import kernels
from .. import netkit_pb2 as pb
from ..layer import Layer, LayerSetupError
from ..ops.workspace import Workspace
from ..registry import layers

ACROSS_CHANNELS = pb.LRNParameter.ACROSS_CHANNELS


@layers.register("LRN")
class LRNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.check_arity(bottom, top)
        p = self.layer_param.lrn_param
        if p.local_size % 2 != 1:
            raise LayerSetupError("lrn_param local_size must be odd, got %d" % p.local_size)
        self.size = p.local_size
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.across = p.norm_region == ACROSS_CHANNELS
        self.ws = Workspace(self.xp)
        # On a real GPU, ACROSS_CHANNELS is two CUDA kernels (netkit.kernels.lrn).
        self.cuda = kernels.available(self.backend) and self.across

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError("LRN bottom must have 4 axes (num, channels, height, width), "
                                  "got shape %s" % (shape,))
        top[0].reshape(shape)
        self.shape = shape

    def _padded(self, name):
        """A zero-bordered copy target for squares or ratios, and the view of its interior."""
        num, channels, height, width = self.shape
        n, half = self.size, (self.size - 1) // 2
        if self.across:
            padded = self.ws.get(name, (num, channels + n - 1, height, width), init=0.0)
            return padded, padded[:, half:half + channels]
        padded = self.ws.get(name, (num, channels, height + n - 1, width + n - 1), init=0.0)
        return padded, padded[:, :, half:half + height, half:half + width]

    def _window_sum(self, padded, out):
        """out = the sum over each position's window of `padded` (see _padded)."""
        num, channels, height, width = self.shape
        n = self.size
        if self.across:
            out[...] = padded[:, :channels]
            for t in range(1, n):
                out += padded[:, t:t + channels]
            return
        rows = self.ws.get("rows", (num, channels, height + n - 1, width))
        rows[...] = padded[..., :width]
        for t in range(1, n):
            rows += padded[..., t:t + width]
        out[...] = rows[:, :, :height]
        for t in range(1, n):
            out += rows[:, :, t:t + height]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        if self.cuda:
            self.scale = self.ws.get("scale", self.shape)
            kernels.lrn.lrn_forward(x, self.scale, top[0].data, self.size, self.alpha,
                                    self.beta, self.k)
            return
        padded, interior = self._padded("squares")
        xp.multiply(x, x, out=interior)
        self.scale = self.ws.get("scale", self.shape)
        self._window_sum(padded, self.scale)
        if self.across:
            self.scale *= self.alpha / self.size
            self.scale += self.k
        else:
            self.scale /= self.size * self.size
            self.scale *= self.alpha
            self.scale += 1.0
        self.factor = self.ws.get("factor", self.shape)
        xp.power(self.scale, -self.beta, out=self.factor)
        xp.multiply(x, self.factor, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        x, y, dy, dx = bottom[0].data, top[0].data, top[0].diff, bottom[0].diff
        if self.cuda:
            kernels.lrn.lrn_backward(x, y, self.scale, dy, dx, self.size, self.alpha,
                                     self.beta)
            return
        # d top_i / d x_j sums dy_i * top_i / scale_i over the windows i that contain j.
        padded, ratio = self._padded("ratios")
        xp.multiply(dy, y, out=ratio)
        ratio /= self.scale
        accum = self.ws.get("accum", self.shape)
        self._window_sum(padded, accum)
        window = self.size if self.across else self.size * self.size
        accum *= x
        accum *= 2.0 * self.alpha * self.beta / window
        xp.multiply(dy, self.factor, out=dx)
        dx -= accum
