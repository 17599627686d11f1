"""Element-wise activations: ReLU (leaky with negative_slope), Sigmoid and TanH.

Each may run in place (top is bottom, one Blob): forward writes over its input, so backward
reads only what survives that, as Caffe's does: ReLU the sign of the (overwritten) data,
Sigmoid and TanH their output.
"""
from ..layer import Layer
from ..registry import layers


class NeuronLayer(Layer):
    """One bottom, one top of the same shape, possibly the same Blob."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])


@layers.register("ReLU")
class ReLULayer(NeuronLayer):
    """y = max(x, 0) + negative_slope * min(x, 0)."""

    def setup(self, bottom, top):
        self.negative_slope = self.layer_param.relu_param.negative_slope

    def forward(self, bottom, top):
        xp = self.xp
        x, y = bottom[0].data, top[0].data
        if self.negative_slope == 0:
            xp.maximum(x, 0, out=y)
            return
        negative_part = xp.minimum(x, 0)
        negative_part *= self.negative_slope
        xp.maximum(x, 0, out=y)
        y += negative_part

    def backward(self, top, propagate_down, bottom):
        """dx = dy where x > 0, else negative_slope * dy.

        Caffe tests the sign of the bottom data; in place that is the top data, whose sign
        is the input's for any non-negative slope.
        """
        if not propagate_down[0]:
            return
        xp = self.xp
        positive = bottom[0].data > 0
        if self.negative_slope == 0:
            xp.multiply(top[0].diff, positive, out=bottom[0].diff)
            return
        # 1 where positive, negative_slope elsewhere, each exact.
        factor = xp.logical_not(positive) * xp.float32(self.negative_slope)
        factor += positive
        xp.multiply(top[0].diff, factor, out=bottom[0].diff)


@layers.register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x)), computed as 0.5 * tanh(0.5 * x) + 0.5 (no overflow)."""

    def forward(self, bottom, top):
        y = top[0].data
        self.xp.multiply(bottom[0].data, 0.5, out=y)
        self.xp.tanh(y, out=y)
        y *= 0.5
        y += 0.5

    def backward(self, top, propagate_down, bottom):
        """dx = dy * y * (1 - y), from the top data only."""
        if not propagate_down[0]:
            return
        y = top[0].data
        slope = 1 - y
        slope *= y
        self.xp.multiply(top[0].diff, slope, out=bottom[0].diff)


@layers.register("TanH")
class TanHLayer(NeuronLayer):
    """y = tanh(x)."""

    def forward(self, bottom, top):
        self.xp.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        """dx = dy * (1 - y^2), from the top data only."""
        if not propagate_down[0]:
            return
        y = top[0].data
        slope = y * y
        self.xp.subtract(1, slope, out=slope)
        self.xp.multiply(top[0].diff, slope, out=bottom[0].diff)
