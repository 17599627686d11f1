"""LSTMUnit: one timestep of Caffe's LSTM non-linearity, and the step math LSTM reuses.

Gate inputs come in Caffe's order (i, f, o, g) along the last axis, each H wide:

    i = sigmoid(i'), f = cont * sigmoid(f'), o = sigmoid(o'), g = tanh(g')
    c = f * c_prev + i * g
    h = o * tanh(c)

so cont = 0 (the first step of a sequence) drops the previous cell. The gradient follows
Caffe's formulas literally (the forget-gate derivative is taken as f * (1 - f) with f
already scaled by cont, exact for the binary cont Caffe expects).
"""
from ..layer import Layer, LayerSetupError
from ..registry import layers


def unit_forward(xp, c_prev, gates, cont, c, tanh_c, h):
    """One LSTM step for N streams: activate `gates` (N, 4H) in place to (i, f, o, g), with f
    scaled by `cont` (N,), and write the cell `c`, `tanh_c` and the hidden state `h` (N, H)."""
    hidden = c.shape[-1]
    sig = gates[:, :3 * hidden]
    # sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5: no overflow for large |x|.
    sig *= 0.5
    xp.tanh(sig, out=sig)
    sig *= 0.5
    sig += 0.5
    g = gates[:, 3 * hidden:]
    xp.tanh(g, out=g)
    i, f, o = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:3 * hidden]
    f *= cont[:, None]
    xp.multiply(f, c_prev, out=c)
    c += i * g
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)


def unit_backward(xp, c_prev, acts, tanh_c, dc, dh, dgates):
    """Gradient of one step: given the activated gates `acts` (N, 4H) from `unit_forward`
    and the diffs `dc`, `dh` of c and h, write the gate-input diffs into `dgates` (N, 4H)
    and return the diff of c_prev."""
    hidden = tanh_c.shape[-1]
    i, f = acts[:, :hidden], acts[:, hidden:2 * hidden]
    o, g = acts[:, 2 * hidden:3 * hidden], acts[:, 3 * hidden:]
    dc_total = 1 - tanh_c * tanh_c
    dc_total *= o
    dc_total *= dh
    dc_total += dc
    xp.multiply(dc_total * g, i * (1 - i), out=dgates[:, :hidden])
    xp.multiply(dc_total * c_prev, f * (1 - f), out=dgates[:, hidden:2 * hidden])
    xp.multiply(dh * tanh_c, o * (1 - o), out=dgates[:, 2 * hidden:3 * hidden])
    xp.multiply(dc_total * i, 1 - g * g, out=dgates[:, 3 * hidden:])
    return dc_total * f


@layers.register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """Bottoms: c_prev (1 x N x H), gate inputs (1 x N x 4H), cont (1 x N).
    Tops: c (1 x N x H), h (1 x N x H). No parameters; no gradient to cont."""
    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        if c_prev.num_axes != 3 or c_prev.shape[0] != 1:
            raise LayerSetupError("LSTMUnit bottom[0] (c_prev) must have shape (1, N, H), "
                                  "got %s" % (c_prev.shape,))
        num = c_prev.shape[1]
        for index, blob, what, axes, want in [(1, gates, "gate inputs", 3, "(1, %d, 4H)" % num),
                                              (2, cont, "cont", 2, "(1, %d)" % num)]:
            if blob.num_axes != axes or blob.shape[:2] != (1, num):
                raise LayerSetupError("LSTMUnit bottom[%d] (%s) must have shape %s like "
                                      "c_prev, got %s" % (index, what, want, blob.shape))
        self.hidden = c_prev.shape[2]
        if gates.shape[2] != 4 * self.hidden:
            raise LayerSetupError("LSTMUnit bottom[1] (gate inputs) must have 4 * H = %d "
                                  "channels for c_prev's H = %d, got %d"
                                  % (4 * self.hidden, self.hidden, gates.shape[2]))
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)

    def forward(self, bottom, top):
        self.acts = bottom[1].data[0].copy()
        self.tanh_c = self.xp.empty_like(top[0].data[0])
        unit_forward(self.xp, bottom[0].data[0], self.acts, bottom[2].data[0],
                     top[0].data[0], self.tanh_c, top[1].data[0])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise LayerSetupError("LSTMUnit cannot backpropagate to bottom[2] (cont)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        dgates = bottom[1].diff[0] if propagate_down[1] else self.xp.empty_like(self.acts)
        dc_prev = unit_backward(self.xp, bottom[0].data[0], self.acts, self.tanh_c,
                                top[0].diff[0], top[1].diff[0], dgates)
        if propagate_down[0]:
            bottom[0].diff[0] = dc_prev
