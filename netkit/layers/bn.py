"""BN: the batch normalization layer of two forks, hszhao/PSPNet and caffe-segnet, which share
the type string and bn_param but not its fields, blobs or rules. A layer follows the fork
whose fields its bn_param sets: bn_mode, scale_filler or shift_filler mean caffe-segnet;
anything else (slope_filler, bias_filler, momentum, eps, frozen, or nothing) means PSPNet,
whose nets are the common ones. Every blob is (1, C, 1, 1), as in the forks' model files.

PSPNet: blobs slope, bias, moving mean, moving variance; y = slope * (x - mean) /
sqrt(var + eps) + bias. TRAIN normalizes with the batch's mean and biased variance and moves
the averages: avg = (1 - momentum) * batch + momentum * avg. TEST, or `frozen` in any phase,
uses the moving averages. As the fork, setup sets lr_mult and decay_mult 0 on the averages
(and on slope and bias when frozen), and a frozen layer starts its variance at 1.

caffe-segnet: blobs scale, shift. bn_mode LEARN normalizes with the batch's statistics in
every phase (variance eps 1e-9) and may give the batch mean and variance as tops 1 and 2
(forward only: as in the fork, their diffs are not propagated); INFERENCE is y = scale * x + shift, SegNet's script having folded the statistics in.

Backward gives the true gradient of the forward that ran, the forks' formulas in batch modes;
with stored statistics dx = dy * slope / std (the PSPNet fork, unfrozen in TEST, would apply
its batch formula there).
"""
import numpy as np

from .. import netkit_pb2 as pb
from ..fillers import fill
from ..layer import TEST, Layer, LayerSetupError
from ..registry import layers

SEGNET_FIELDS = ("bn_mode", "scale_filler", "shift_filler")
PSPNET_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")
SEGNET_EPS = 1e-9


@layers.register("BN")
class BNLayer(Layer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 3

    def setup(self, bottom, top):
        self.check_arity(bottom, top)
        p = self.layer_param.bn_param
        segnet = [f for f in SEGNET_FIELDS if p.HasField(f)]
        pspnet = [f for f in PSPNET_FIELDS if p.HasField(f)]
        if segnet and pspnet:
            raise LayerSetupError("bn_param mixes caffe-segnet's %s with hszhao/PSPNet's %s; "
                                  "a BN layer follows one fork" % (segnet, pspnet))
        self.segnet = bool(segnet)
        self.learn = p.bn_mode == pb.BNParameter.LEARN
        if len(top) > (3 if self.segnet and self.learn else 1):
            raise LayerSetupError("BN takes 1 top%s, got %d" % (
                " (caffe-segnet's LEARN mode up to 3)" if self.segnet else "", len(top)))
        if bottom[0].num_axes < 2:
            raise LayerSetupError("BN needs a bottom with at least 2 axes (num, channels), "
                                  "got shape %s" % (bottom[0].shape,))
        self.channels = bottom[0].shape[1]
        self.frozen = p.frozen and not self.segnet
        self.momentum, self.eps = p.momentum, p.eps
        shape = (1, self.channels, 1, 1)
        if self.segnet:
            fillers = [p.scale_filler, p.shift_filler]
        else:
            fillers = [p.slope_filler, p.bias_filler]
        if not self.blobs:
            for filler in fillers:
                self.add_param_blob(shape, fill(filler, shape))
            if not self.segnet:
                self.add_param_blob(shape, np.zeros(shape, np.float32))
                self.add_param_blob(shape, np.full(shape, float(self.frozen), np.float32))
        expected = [shape] * (2 if self.segnet else 4)
        if [b.shape for b in self.blobs] != expected:
            raise LayerSetupError("BN expects parameter shapes %s, has %s"
                                  % (expected, [b.shape for b in self.blobs]))
        if not self.segnet:
            self.freeze_statistics()
        if not self.param_propagate_down:
            learned = not self.frozen
            self.param_propagate_down = [learned, learned] + [False] * (len(self.blobs) - 2)

    def freeze_statistics(self):
        """PSPNet's rule: the moving averages (and slope and bias when frozen) are never
        learned, whatever the prototxt's param entries say."""
        specs = self.layer_param.param
        while len(specs) < 4:
            specs.add()
        for i in (0, 1, 2, 3) if self.frozen else (2, 3):
            specs[i].lr_mult = 0
            specs[i].decay_mult = 0

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] != self.channels:
            raise LayerSetupError("BN was set up for %d channels, the bottom has shape %s"
                                  % (self.channels, shape))
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])
        for t in top[1:]:
            t.reshape((1, self.channels, 1, 1))

    # -- helpers ---------------------------------------------------------------------------
    def view(self, array):
        """(num, channels, spatial) view; statistics reduce over axes 0 and 2."""
        num = array.shape[0]
        return array.reshape(num, self.channels, array.size // max(num * self.channels, 1))

    def channel_mean(self, array):
        """Mean over axes 0 and 2 of a (num, channels, spatial) array, kept as (1, C, 1)."""
        total = array.sum(axis=2, keepdims=True).sum(axis=0, keepdims=True)
        total /= array.size // self.channels
        return total

    def channel_sum(self, array):
        return array.sum(axis=2).sum(axis=0).reshape(self.blobs[0].shape)

    def column(self, blob):
        return blob.data.reshape(1, self.channels, 1)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp
        x = self.view(bottom[0].data)
        self.x_norm = self.saved_input = None
        if self.segnet and not self.learn:
            if top[0] is bottom[0]:
                self.saved_input = xp.copy(x)
            y = self.view(top[0].data)
            xp.multiply(x, self.column(self.blobs[0]), out=y)
            y += self.column(self.blobs[1])
            return
        if self.segnet or not (self.frozen or self.phase == TEST):
            mean = self.channel_mean(x)
            centered = x - mean
            variance = self.channel_mean(centered * centered)
            if self.segnet:
                self.batch_statistics(top, mean, variance)
            else:
                self.move_average(self.blobs[2], mean)
                self.move_average(self.blobs[3], variance)
            eps = SEGNET_EPS if self.segnet else self.eps
        else:
            centered = x - self.column(self.blobs[2])
            variance, eps = self.column(self.blobs[3]), self.eps
        self.inv_std = (variance + eps) ** -0.5
        centered *= self.inv_std
        if not self.frozen:
            self.x_norm = centered  # kept for backward: top may be the bottom
        y = self.view(top[0].data)
        xp.multiply(centered, self.column(self.blobs[0]), out=y)
        y += self.column(self.blobs[1])

    def batch_statistics(self, top, mean, variance):
        """caffe-segnet's optional tops: the batch mean and (biased) variance."""
        for t, value in zip(top[1:], (mean, variance)):
            t.data[...] = value.reshape(t.shape)

    def move_average(self, blob, batch):
        blob.data *= self.momentum
        blob.data += (1 - self.momentum) * batch.reshape(blob.shape)

    # -- backward --------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        dy = self.view(top[0].diff)
        scale = self.column(self.blobs[0])
        if self.segnet and not self.learn:
            x = self.view(bottom[0].data) if self.saved_input is None else self.saved_input
            self.param_diffs(dy, x)
            if propagate_down[0]:
                xp.multiply(dy, scale, out=self.view(bottom[0].diff))
            return
        if not self.frozen:
            self.param_diffs(dy, self.x_norm)
        if not propagate_down[0]:
            return
        dx = self.view(bottom[0].diff)
        if not self.segnet and (self.frozen or self.phase == TEST):
            xp.multiply(dy, scale * self.inv_std, out=dx)
            return
        g = dy * scale
        correction = self.x_norm * self.channel_mean(g * self.x_norm)
        correction += self.channel_mean(g)
        xp.subtract(g, correction, out=dx)
        dx *= self.inv_std

    def param_diffs(self, dy, normalized):
        """Accumulate d scale = sum(dy * normalized input) and d shift = sum(dy)."""
        if self.param_propagate_down[0]:
            self.blobs[0].diff += self.channel_sum(dy * normalized)
        if self.param_propagate_down[1]:
            self.blobs[1].diff += self.channel_sum(dy)
