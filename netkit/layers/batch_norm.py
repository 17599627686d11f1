"""BatchNorm: Caffe's batch normalization, which only normalizes (no gamma/beta: a Scale
layer with bias_term follows it in Caffe nets such as ResNet).

Three blobs, as in every Caffe model file: the running mean *sum* (C,), the running
variance *sum* (C,) and the scale factor (1,) that both sums are divided by (a factor of 0
means the statistics are 0). They are statistics, not parameters: setup appends a ParamSpec
with lr_mult 0 for each one the prototxt leaves out, and refuses a nonzero lr_mult, so the
solver never touches them.
"""
import numpy as np

from ..layer import TEST, Layer, LayerSetupError
from ..registry import layers


@layers.register("BatchNorm")
class BatchNormLayer(Layer):
    """y = (x - mean) / sqrt(var + eps) per channel (axis 1), over batch and space.

    use_global_stats (default: true in TEST, false in TRAIN) picks the stored statistics;
    otherwise the batch's mean and biased variance normalize, and the running sums are
    updated: s = s * f + 1, mean_sum = mean_sum * f + mean,
    var_sum = var_sum * f + m / (m - 1) * var (m values per channel, f =
    moving_average_fraction).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.batch_norm_param
        self.moving_average_fraction = param.moving_average_fraction
        self.use_global_stats = (param.use_global_stats if param.HasField("use_global_stats")
                                 else self.phase == TEST)
        self.eps = param.eps
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        for _ in range(3):
            shape = (1,) if len(self.blobs) == 2 else (self.channels,)
            self.add_param_blob(shape, np.zeros(shape, np.float32))
        specs = self.layer_param.param
        for i in range(len(self.blobs)):
            if i == len(specs):
                specs.add(lr_mult=0.0)
            elif specs[i].lr_mult != 0:
                raise LayerSetupError("BatchNorm statistics cannot be learned: param %d has "
                                      "lr_mult %g, must be 0" % (i, specs[i].lr_mult))
        self.param_propagate_down = [False] * 3

    def reshape(self, bottom, top):
        if bottom[0].num_axes == 0:
            raise LayerSetupError("BatchNorm needs a bottom with at least one axis")
        channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if channels != self.channels:
            raise LayerSetupError("BatchNorm was set up for %d channels, the bottom has %d"
                                  % (self.channels, channels))
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def view(self, array):
        """(num, channels, spatial) view; statistics reduce over axes 0 and 2."""
        num = array.shape[0]
        return array.reshape(num, self.channels, array.size // max(num * self.channels, 1))

    def channel_mean(self, array):
        """Mean over axes 0 and 2 of a (num, channels, spatial) view, kept as (1, C, 1); the
        contiguous axis is reduced first, several times faster in numpy than both at once."""
        total = array.sum(axis=2, keepdims=True).sum(axis=0, keepdims=True)
        total /= array.size // self.channels
        return total

    def stored_statistics(self):
        """mean and variance from the sums, each multiplied by 1 / factor (0 if factor is 0)."""
        factor = self.blobs[2].data
        nonzero = factor != 0
        inverse = nonzero / (factor + self.xp.logical_not(nonzero))
        return self.blobs[0].data * inverse, self.blobs[1].data * inverse

    def forward(self, bottom, top):
        xp = self.xp
        x = self.view(bottom[0].data)
        y = self.view(top[0].data)
        if self.use_global_stats:
            mean, variance = self.stored_statistics()
            xp.subtract(x, mean.reshape(1, -1, 1), out=y)
        else:
            mean = self.channel_mean(x)
            xp.subtract(x, mean, out=y)
            variance = self.channel_mean(xp.square(y)).reshape(-1)
            self.update_running_sums(mean.reshape(-1), variance, x.size // self.channels)
        std = xp.sqrt(variance + self.eps).reshape(1, -1, 1)
        y /= std
        self.std = std
        # Kept for backward: a later in-place layer may overwrite the top.
        self.x_norm = None if self.use_global_stats else xp.copy(y)

    def update_running_sums(self, mean, variance, m):
        f = self.moving_average_fraction
        correction = m / (m - 1.0) if m > 1 else 1.0
        mean_sum, variance_sum, factor = (b.data for b in self.blobs)
        factor *= f
        factor += 1
        mean_sum *= f
        mean_sum += mean
        variance_sum *= f
        variance_sum += variance * correction

    def backward(self, top, propagate_down, bottom):
        """With global statistics dx = dy / std; with batch statistics
        dx = (dy - mean(dy) - mean(dy * y) * y) / std, the means over batch and space."""
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = self.view(top[0].diff)
        dx = self.view(bottom[0].diff)
        if self.use_global_stats:
            xp.divide(dy, self.std, out=dx)
            return
        y = self.x_norm
        correction = y * self.channel_mean(dy * y)
        correction += self.channel_mean(dy)
        xp.subtract(dy, correction, out=dx)
        dx /= self.std
