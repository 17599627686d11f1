"""Mish: the activation of YOLOv4 and its Caffe ports (darknet2caffe, caffe-yolov3), which
carry no parameter message: `layer { type: "Mish" bottom: "x" top: "x" }`, usually in place.
"""
from ..registry import layers
from .activation import InputKeepingNeuron


@layers.register("Mish")
class MishLayer(InputKeepingNeuron):
    """y = x * tanh(softplus(x)), softplus(x) = log(1 + exp(x)) computed without overflow as
    max(x, 0) + log(1 + exp(-|x|))."""

    def tanh_softplus(self, x):
        xp = self.xp
        t = xp.log1p(xp.exp(-xp.abs(x)))
        t += xp.maximum(x, 0)
        xp.tanh(t, out=t)
        return t

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        self.xp.multiply(x, self.tanh_softplus(x), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        """dx = dy * (t + x * (1 - t^2) * sigmoid(x)) with t = tanh(softplus(x)), since
        softplus' = sigmoid; the sigmoid as 0.5 * tanh(0.5 * x) + 0.5."""
        if not propagate_down[0]:
            return
        xp = self.xp
        x = self.input_of(bottom)
        t = self.tanh_softplus(x)
        slope = xp.tanh(x * 0.5)
        slope *= 0.5
        slope += 0.5
        slope *= x
        slope *= 1 - t * t
        slope += t
        xp.multiply(top[0].diff, slope, out=bottom[0].diff)
