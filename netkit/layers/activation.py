"""Element-wise activations beyond ReLU/Sigmoid/TanH: PReLU, ELU, AbsVal, Power, Exp, Log,
BNLL, Threshold, Clip and Swish, with Caffe's formulas, defaults and special cases.

In-place use (top is bottom, one Blob) follows one rule: a layer whose backward needs its
input keeps a copy of it when forward is about to overwrite it, as Caffe's PReLU does.
Caffe's Power, Log, BNLL and Clip skip that copy and so differentiate the wrong values in
place; netkit's give the true gradient. ELU, Exp and Swish need only their output.
"""
import numpy as np

from ..fillers import fill
from ..layer import LayerSetupError
from .. import netkit_pb2 as pb
from ..registry import layers
from .neuron import NeuronLayer


def _channel_view(array, shape):
    """`array` seen as (num, channels, spatial): Caffe's count(2) flattening."""
    return array.reshape(shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64)))


def _channel_sum(array):
    """Sum of a (num, channels, spatial) array per channel; the contiguous axis first,
    which numpy reduces several times faster than both axes at once."""
    return array.sum(axis=2).sum(axis=0)


class InputKeepingNeuron(NeuronLayer):
    """A neuron whose backward reads its input; `input_of` returns it, in place or not."""

    saved_input = None

    def keep_input(self, bottom, top):
        """Before forward overwrites an in-place bottom, keep a copy for backward."""
        self.saved_input = self.xp.copy(bottom[0].data) if top[0] is bottom[0] else None
        return bottom[0].data

    def input_of(self, bottom):
        return bottom[0].data if self.saved_input is None else self.saved_input


@layers.register("PReLU")
class PReLULayer(InputKeepingNeuron):
    """y = max(x, 0) + a_c * min(x, 0) with a learned slope a per channel (axis 1), or one
    slope for all channels when channel_shared. The slopes start at 0.25 unless a filler
    says otherwise; the blob has shape (C,), or () when shared."""

    def setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise LayerSetupError("PReLU needs a bottom with at least 2 axes, got shape %s"
                                  % (bottom[0].shape,))
        param = self.layer_param.prelu_param
        self.channel_shared = param.channel_shared
        shape = () if self.channel_shared else (bottom[0].shape[1],)
        filler = param.filler
        if not param.HasField("filler"):
            filler = pb.FillerParameter(type="constant", value=0.25)
        self.add_param_blob(shape, fill(filler, shape))
        self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise LayerSetupError("PReLU needs a bottom with at least 2 axes, got shape %s"
                                  % (bottom[0].shape,))
        if not self.channel_shared and bottom[0].shape[1] != self.blobs[0].count:
            raise LayerSetupError("PReLU has %d slopes but the bottom has %d channels"
                                  % (self.blobs[0].count, bottom[0].shape[1]))
        super().reshape(bottom, top)

    def slope(self):
        """The slopes shaped to broadcast against a (num, channels, spatial) view."""
        a = self.blobs[0].data
        return a if self.channel_shared else a.reshape(1, -1, 1)

    def forward(self, bottom, top):
        xp = self.xp
        shape = bottom[0].shape
        x = _channel_view(self.keep_input(bottom, top), shape)
        y = _channel_view(top[0].data, shape)
        negative_part = xp.minimum(x, 0)
        negative_part *= self.slope()
        xp.maximum(x, 0, out=y)
        y += negative_part

    def backward(self, top, propagate_down, bottom):
        """da_c += sum(dy * min(x, 0)); dx = dy where x > 0, else a_c * dy.

        The slope gradient comes first: in place, writing dx overwrites dy.
        """
        xp = self.xp
        shape = bottom[0].shape
        x = _channel_view(self.input_of(bottom), shape)
        dy = _channel_view(top[0].diff, shape)
        if self.param_propagate_down[0]:
            contribution = xp.minimum(x, 0)
            contribution *= dy
            if self.channel_shared:
                self.blobs[0].diff += contribution.sum()
            else:
                self.blobs[0].diff += _channel_sum(contribution)
        if propagate_down[0]:
            # Exactly 1 where x > 0, else the slope; mask arithmetic beats xp.where here.
            factor = (x <= 0) * self.slope()
            factor += x > 0
            xp.multiply(dy, factor, out=_channel_view(bottom[0].diff, shape))


@layers.register("ELU")
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (elu_param.alpha, default 1)."""

    def setup(self, bottom, top):
        self.alpha = self.layer_param.elu_param.alpha

    def forward(self, bottom, top):
        xp = self.xp
        x, y = bottom[0].data, top[0].data
        negative_part = xp.expm1(xp.minimum(x, 0))
        negative_part *= self.alpha
        xp.maximum(x, 0, out=y)
        y += negative_part

    def backward(self, top, propagate_down, bottom):
        """dx = dy where x > 0, else dy * (y + alpha). In place the sign test reads y,
        whose sign is x's, as in Caffe."""
        if not propagate_down[0]:
            return
        x, y = bottom[0].data, top[0].data
        factor = y + self.alpha
        factor *= x <= 0
        factor += x > 0
        self.xp.multiply(top[0].diff, factor, out=bottom[0].diff)


@layers.register("AbsVal")
class AbsValLayer(NeuronLayer):
    """y = |x|. Not in place (Caffe refuses it too: backward needs the sign of x)."""

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise LayerSetupError("AbsVal does not allow in-place computation (top and "
                                  "bottom are the same blob)")

    def forward(self, bottom, top):
        self.xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        """dx = sign(x) * dy (0 at x == 0)."""
        if propagate_down[0]:
            self.xp.multiply(self.xp.sign(bottom[0].data), top[0].diff, out=bottom[0].diff)


@layers.register("Power")
class PowerLayer(InputKeepingNeuron):
    """y = (shift + scale * x) ^ power. When power * scale == 0 the input is ignored:
    y = 1 if power == 0, else shift ^ power, and the gradient is 0."""

    def setup(self, bottom, top):
        param = self.layer_param.power_param
        self.power = np.float32(param.power)
        self.scale = np.float32(param.scale)
        self.shift = np.float32(param.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottom, top):
        xp = self.xp
        y = top[0].data
        if self.diff_scale == 0:
            y.fill(1 if self.power == 0 else np.power(self.shift, self.power))
            return
        x = self.keep_input(bottom, top)
        if self.scale != 1:
            xp.multiply(x, self.scale, out=y)
            x = y
        if self.shift != 0:
            xp.add(x, self.shift, out=y)
            x = y
        if self.power != 1:
            xp.power(x, self.power, out=y)
        elif x is not y:
            y[...] = x

    def backward(self, top, propagate_down, bottom):
        """Caffe's forms of dy/dx = power * scale * (shift + scale * x)^(power - 1):
        diff_scale * (scale * x + shift) for power 2, power * y / x without shift,
        diff_scale * y / (shift + scale * x) otherwise."""
        if not propagate_down[0]:
            return
        xp = self.xp
        dx, dy = bottom[0].diff, top[0].diff
        if self.diff_scale == 0:
            dx.fill(0)
            return
        if self.power == 1:
            xp.multiply(dy, self.diff_scale, out=dx)
            return
        x, y = self.input_of(bottom), top[0].data
        if self.power == 2:
            slope = x * (self.diff_scale * self.scale)
            if self.shift != 0:
                slope += self.diff_scale * self.shift
        elif self.shift == 0:
            slope = y / x
            slope *= self.power
        else:
            base = x * self.scale
            base += self.shift
            slope = xp.divide(y, base, out=base)
            if self.diff_scale != 1:
                slope *= self.diff_scale
        xp.multiply(dy, slope, out=dx)


def _log_base(param, field):
    """log(base) in float32; Caffe's base -1 means e, whose log is taken as exactly 1."""
    base = np.float32(param.base)
    if base == -1:
        return np.float32(1)
    if not base > 0 or not np.isfinite(base):
        raise LayerSetupError("%s.base must be strictly positive and finite (or -1 for e), "
                              "got %g" % (field, base))
    return np.log(base)


@layers.register("Exp")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x), base e by default (base -1), computed as
    base^shift * exp(log(base) * scale * x)."""

    def setup(self, bottom, top):
        param = self.layer_param.exp_param
        base = np.float32(param.base)
        shift = np.float32(param.shift)
        self.inner_scale = _log_base(param, "exp_param") * np.float32(param.scale)
        if shift == 0:
            self.outer_scale = np.float32(1)
        else:
            self.outer_scale = np.exp(shift) if base == -1 else np.power(base, shift)

    def forward(self, bottom, top):
        xp = self.xp
        y = top[0].data
        if self.inner_scale == 1:
            xp.exp(bottom[0].data, out=y)
        else:
            xp.multiply(bottom[0].data, self.inner_scale, out=y)
            xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        """dx = dy * y * log(base) * scale, from the top data only."""
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        self.xp.multiply(top[0].data, top[0].diff, out=dx)
        if self.inner_scale != 1:
            dx *= self.inner_scale


@layers.register("Log")
class LogLayer(InputKeepingNeuron):
    """y = log_base(shift + scale * x), base e by default (base -1)."""

    def setup(self, bottom, top):
        param = self.layer_param.log_param
        log_base = _log_base(param, "log_param")
        if log_base == 0:
            raise LayerSetupError("log_param.base must not be 1 (1 / log(base) is infinite)")
        self.base_scale = np.float32(1) / log_base
        self.scale = np.float32(param.scale)
        self.shift = np.float32(param.shift)
        self.backward_scale = self.scale / log_base

    def shifted(self, x, out=None):
        """shift + scale * x, or x itself when that is the identity."""
        if self.scale == 1 and self.shift == 0:
            return x
        out = self.xp.multiply(x, self.scale, out=out)
        out += self.shift
        return out

    def forward(self, bottom, top):
        xp = self.xp
        y = top[0].data
        xp.log(self.shifted(self.keep_input(bottom, top), out=y), out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        """dx = dy * scale / (log(base) * (shift + scale * x))."""
        if not propagate_down[0]:
            return
        xp = self.xp
        slope = xp.divide(self.backward_scale, self.shifted(self.input_of(bottom)))
        xp.multiply(top[0].diff, slope, out=bottom[0].diff)


@layers.register("BNLL")
class BNLLLayer(InputKeepingNeuron):
    """y = log(1 + exp(x)) (binomial normal log likelihood), computed without overflow as
    max(x, 0) + log(1 + exp(-|x|))."""

    # Caffe caps the input of exp in backward so that exp(x) stays finite.
    threshold = 50.0

    def forward(self, bottom, top):
        xp = self.xp
        x, y = self.keep_input(bottom, top), top[0].data
        tail = xp.log1p(xp.exp(-xp.abs(x)))
        xp.maximum(x, 0, out=y)
        y += tail

    def backward(self, top, propagate_down, bottom):
        """dx = dy * e / (e + 1) with e = exp(min(x, 50))."""
        if not propagate_down[0]:
            return
        xp = self.xp
        e = xp.exp(xp.minimum(self.input_of(bottom), self.threshold))
        slope = e / (e + 1)
        xp.multiply(top[0].diff, slope, out=bottom[0].diff)


@layers.register("Threshold")
class ThresholdLayer(NeuronLayer):
    """y = 1 where x > threshold, else 0. No gradient (Caffe has no backward)."""

    def setup(self, bottom, top):
        self.threshold = self.layer_param.threshold_param.threshold

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.threshold


@layers.register("Clip")
class ClipLayer(InputKeepingNeuron):
    """y = max(min, min(x, max)); both bounds are required (min wins if min > max)."""

    def setup(self, bottom, top):
        param = self.layer_param.clip_param
        if not (param.HasField("min") and param.HasField("max")):
            raise LayerSetupError("Clip needs both clip_param.min and clip_param.max")
        self.low, self.high = param.min, param.max

    def forward(self, bottom, top):
        y = top[0].data
        self.xp.minimum(self.keep_input(bottom, top), self.high, out=y)
        self.xp.maximum(y, self.low, out=y)

    def backward(self, top, propagate_down, bottom):
        """dx = dy where min <= x <= max (bounds included), else 0."""
        if not propagate_down[0]:
            return
        xp = self.xp
        x = self.input_of(bottom)
        inside = xp.logical_and(x >= self.low, x <= self.high)
        xp.multiply(top[0].diff, inside, out=bottom[0].diff)


@layers.register("Swish")
class SwishLayer(NeuronLayer):
    """y = x * sigmoid(beta * x), the sigmoid as Caffe's 0.5 * tanh(0.5 * t) + 0.5."""

    def setup(self, bottom, top):
        self.beta = self.layer_param.swish_param.beta

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        sig = xp.multiply(x, 0.5 * self.beta)
        xp.tanh(sig, out=sig)
        sig *= 0.5
        sig += 0.5
        self.sigmoid = sig
        xp.multiply(x, sig, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        """dx = dy * (beta * y + s * (1 - beta * y)) with s the forward's sigmoid."""
        if not propagate_down[0]:
            return
        xp = self.xp
        beta_y = top[0].data * self.beta
        slope = xp.subtract(1, beta_y)
        slope *= self.sigmoid
        slope += beta_y
        xp.multiply(top[0].diff, slope, out=bottom[0].diff)
