"""RNN and LSTM: Caffe's recurrent layers, computed step by step over time.

Caffe builds an unrolled internal net (InnerProduct, Scale, Eltwise, LSTMUnit ... per
timestep); netkit computes the same function directly, with the input transform of all
timesteps in one GEMM and one small GEMM per step for the recurrence. The parameter blobs
are the unrolled net's learnable blobs in Caffe's order and shapes, so a .caffemodel loads
as it is (H = recurrent_param.num_output, I = input features per step, I_s = static
features per stream):

    LSTM: W_xc (4H x I), b_c (4H), [W_xc_static (4H x I_s)], W_hc (4H x H)
    RNN:  W_xh (H x I),  b_h (H),  [W_xh_static (H x I_s)],  W_hh (H x H), W_ho (H x H), b_o (H)

Bottoms: x (T x N x ...), cont (T x N), optionally x_static (N x ...) and, with
recurrent_param.expose_hidden, the initial states (h_0, and c_0 for LSTM; 1 x N x H each).
Tops: the outputs of all timesteps (T x N x H) and, with expose_hidden, the final states
(h_T, and c_T for LSTM).

cont[t, n] = 0 marks the first step of a sequence in stream n: the previous hidden state
(and the LSTM cell, through LSTMUnit's forget gate) is multiplied by cont before use.
Without expose_hidden the final states of one forward are the initial states of the next,
as in Caffe, so a long sequence can be fed in chunks whose first step has cont = 1; they
restart from zero when the number of streams changes, and `reset()` zeroes them (Caffe's
Reset). Gradients never cross forward calls (truncated backpropagation through time).

Deliberate differences: Caffe drops the diffs of the exposed final states and gives no
diff to the exposed initial states; netkit backpropagates through both, so an encoder's
final state fed to a decoder trains the encoder too. Caffe fixes T at setup; here T may
change between forward calls. recurrent_param.debug_info (logging inside Caffe's unrolled
net) has nothing to act on here.
"""
from ..fillers import fill
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .lstm_unit import unit_backward, unit_forward


def _count(dims):
    n = 1
    for d in dims:
        n *= d
    return n


class RecurrentLayer(Layer):
    """What RNN and LSTM share: bottoms and their checks, the parameter blobs, the input
    transform of all timesteps, and the initial and final recurrent states."""
    # The recurrent states in Caffe's order of the exposed bottoms and tops.
    state_names = ()
    # Rows of the input and recurrent weights per hidden unit (LSTM: the four gates).
    gates = 1

    def __init__(self, layer_param, *args, **kwargs):
        super().__init__(layer_param, *args, **kwargs)
        self.expose_hidden = layer_param.recurrent_param.expose_hidden
        self.num_exposed = len(self.state_names) if self.expose_hidden else 0
        self.min_bottom = 2 + self.num_exposed
        self.max_bottom = 3 + self.num_exposed
        self.exact_num_top = 1 + self.num_exposed

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # -- setup ---------------------------------------------------------------------------
    def setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        if p.num_output < 1:
            raise LayerSetupError("recurrent_param num_output must be positive")
        self.hidden = p.num_output
        self.static_input = len(bottom) > 2 + self.num_exposed
        self._check_bottoms(bottom)
        self.input_dim = _count(bottom[0].shape[2:])
        self.static_dim = _count(bottom[2].shape[1:]) if self.static_input else 0
        specs = self.param_specs()
        self.w_h = specs.index("W_h")
        shapes = [self._param_shape(name) for name in specs]
        if self.blobs:
            if [b.shape for b in self.blobs] != shapes:
                raise LayerSetupError("%s expects parameter shapes %s, has %s"
                                      % (self.type, shapes, [b.shape for b in self.blobs]))
        else:
            for name, shape in zip(specs, shapes):
                filler = p.bias_filler if name.startswith("b") else p.weight_filler
                self.add_param_blob(shape, fill(filler, shape))
        if not self.param_propagate_down:
            self.param_propagate_down = [True] * len(self.blobs)
        self.state = None

    def param_specs(self):
        """Names of the parameter blobs in Caffe's order (the unrolled net's param order)."""
        return ["W_x", "b"] + (["W_x_static"] if self.static_input else []) + ["W_h"]

    def _param_shape(self, name):
        rows = self.gates * self.hidden
        return {"W_x": (rows, self.input_dim), "b": (rows,),
                "W_x_static": (rows, self.static_dim), "W_h": (rows, self.hidden),
                "W_o": (self.hidden, self.hidden), "b_o": (self.hidden,)}[name]

    def _check_bottoms(self, bottom):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise LayerSetupError("%s bottom[0] (x) must have at least 2 axes (timesteps, "
                                  "streams, ...), got shape %s" % (self.type, x.shape))
        steps, num = x.shape[:2]
        if cont.shape != (steps, num):
            raise LayerSetupError("%s bottom[1] (cont) must have shape (T, N) = %s like x's "
                                  "first two axes, got %s" % (self.type, (steps, num), cont.shape))
        if self.static_input:
            if bottom[2].num_axes < 1 or bottom[2].shape[0] != num:
                raise LayerSetupError("%s bottom[2] (x_static) must have N = %d streams on "
                                      "axis 0, got shape %s" % (self.type, num, bottom[2].shape))
        if self.expose_hidden:
            want, first_state = (1, num, self.hidden), self._first_state_bottom()
            for k, name in enumerate(self.state_names):
                blob = bottom[first_state + k]
                if blob.shape != want:
                    raise LayerSetupError("%s bottom[%d] (%s_0) must have shape (1, N, "
                                          "num_output) = %s, got %s"
                                          % (self.type, first_state + k, name, want, blob.shape))

    def reshape(self, bottom, top):
        self._check_bottoms(bottom)
        if _count(bottom[0].shape[2:]) != self.input_dim:
            raise LayerSetupError("%s bottom[0] (x) shape %s gives %d inputs per step; the "
                                  "weights expect %d" % (self.type, bottom[0].shape,
                                                         _count(bottom[0].shape[2:]),
                                                         self.input_dim))
        if self.static_input and _count(bottom[2].shape[1:]) != self.static_dim:
            raise LayerSetupError("%s bottom[2] (x_static) shape %s gives %d inputs per "
                                  "stream; the weights expect %d"
                                  % (self.type, bottom[2].shape, _count(bottom[2].shape[1:]),
                                     self.static_dim))
        steps, num = bottom[0].shape[:2]
        top[0].reshape(steps, num, self.hidden)
        for t in top[1:]:
            t.reshape(1, num, self.hidden)

    def reset(self):
        """Zero the states carried from one forward to the next (Caffe's Reset)."""
        self.state = None

    # -- pieces of forward and backward --------------------------------------------------
    def _input_transform(self, bottom):
        """W_x x_t + b (+ W_x_static x_static) for all timesteps at once: (T, N, rows)."""
        xp = self.xp
        steps, num = bottom[0].shape[:2]
        x = bottom[0].data.reshape(steps * num, self.input_dim)
        pre = xp.matmul(x, self.blobs[0].data.T).reshape(steps, num, -1)
        pre += self.blobs[1].data
        if self.static_input:
            pre += xp.matmul(bottom[2].data.reshape(num, self.static_dim), self.blobs[2].data.T)
        return pre

    def _input_backward(self, dpre, propagate_down, bottom):
        """Diffs of W_x, b, W_x_static, x and x_static from the diff of `_input_transform`."""
        xp = self.xp
        steps, num, rows = dpre.shape
        flat = dpre.reshape(steps * num, rows)
        prop = self.param_propagate_down
        if prop[0]:
            self.blobs[0].diff += xp.matmul(flat.T, bottom[0].data.reshape(steps * num, -1))
        if prop[1]:
            self.blobs[1].diff += flat.sum(axis=0)
        if propagate_down[0]:
            xp.matmul(flat, self.blobs[0].data,
                      out=bottom[0].diff.reshape(steps * num, self.input_dim))
        if self.static_input and (prop[2] or propagate_down[2]):
            per_stream = dpre.sum(axis=0)
            if prop[2]:
                self.blobs[2].diff += xp.matmul(per_stream.T,
                                                bottom[2].data.reshape(num, self.static_dim))
            if propagate_down[2]:
                xp.matmul(per_stream, self.blobs[2].data,
                          out=bottom[2].diff.reshape(num, self.static_dim))

    def _first_state_bottom(self):
        return 3 if self.static_input else 2

    def _initial_states(self, bottom, num):
        """The states before the first step, (N, H) each: the exposed bottoms, or those
        carried from the previous forward (zero at first and when N changes)."""
        if self.expose_hidden:
            first = self._first_state_bottom()
            return [bottom[first + k].data[0] for k in range(len(self.state_names))]
        if self.state is None or self.state[0].shape[0] != num:
            self.state = [self.xp.zeros((num, self.hidden), dtype=self.xp.float32)
                          for _ in self.state_names]
        return self.state

    def _final_states(self, top, states):
        """Expose the states after the last step as tops, or keep them for the next forward."""
        if self.expose_hidden:
            for k, state in enumerate(states):
                top[1 + k].data[0] = state
        else:
            self.state = [state.copy() for state in states]

    def _final_state_diffs(self, top, num):
        """Diffs arriving at the final states: the exposed tops' diffs, else zero."""
        if self.expose_hidden:
            return [top[1 + k].diff[0].copy() for k in range(len(self.state_names))]
        return [self.xp.zeros((num, self.hidden), dtype=self.xp.float32)
                for _ in self.state_names]

    def _initial_state_backward(self, propagate_down, bottom, diffs):
        if self.expose_hidden:
            first = self._first_state_bottom()
            for k, diff in enumerate(diffs):
                if propagate_down[first + k]:
                    bottom[first + k].diff[0] = diff

    def _check_propagate(self, propagate_down):
        if propagate_down[1]:
            raise LayerSetupError("%s cannot backpropagate to bottom[1] (cont)" % self.type)


@layers.register("LSTM")
class LSTMLayer(RecurrentLayer):
    """Long short-term memory, Caffe's unrolled LSTMUnit per timestep: gate inputs
    W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c (+ W_xc_static x_static), gates (i, f, o, g),
    c_t = cont_t * f_t * c_{t-1} + i_t * g_t, top h_t = o_t * tanh(c_t)."""
    state_names = ("h", "c")
    gates = 4

    def forward(self, bottom, top):
        xp = self.xp
        steps, num = bottom[0].shape[:2]
        cont = bottom[1].data
        h, c = self._initial_states(bottom, num)
        w_h = self.blobs[self.w_h].data
        acts = self._input_transform(bottom)
        conted = xp.empty((steps, num, self.hidden), dtype=xp.float32)
        cells = xp.empty_like(conted)
        tanh_c = xp.empty_like(conted)
        out = top[0].data
        self.c0 = c.copy()
        for t in range(steps):
            xp.multiply(h, cont[t][:, None], out=conted[t])
            acts[t] += xp.matmul(conted[t], w_h.T)
            unit_forward(xp, c, acts[t], cont[t], cells[t], tanh_c[t], out[t])
            h, c = out[t], cells[t]
        self.acts, self.conted, self.cells, self.tanh_c = acts, conted, cells, tanh_c
        self._final_states(top, [h, c])

    def backward(self, top, propagate_down, bottom):
        self._check_propagate(propagate_down)
        xp = self.xp
        steps, num = bottom[0].shape[:2]
        cont = bottom[1].data
        w_h = self.blobs[self.w_h].data
        dh_next, dc = self._final_state_diffs(top, num)
        dgates = xp.empty_like(self.acts)
        for t in reversed(range(steps)):
            c_prev = self.cells[t - 1] if t else self.c0
            dc = unit_backward(xp, c_prev, self.acts[t], self.tanh_c[t], dc,
                               top[0].diff[t] + dh_next, dgates[t])
            dh_next = xp.matmul(dgates[t], w_h)
            dh_next *= cont[t][:, None]
        if self.param_propagate_down[self.w_h]:
            rows = self.gates * self.hidden
            self.blobs[self.w_h].diff += xp.matmul(
                dgates.reshape(steps * num, rows).T,
                self.conted.reshape(steps * num, self.hidden))
        self._input_backward(dgates, propagate_down, bottom)
        self._initial_state_backward(propagate_down, bottom, [dh_next, dc])


@layers.register("RNN")
class RNNLayer(RecurrentLayer):
    """Vanilla recurrent net: h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h
    (+ W_xh_static x_static)), top o_t = tanh(W_ho h_t + b_o)."""
    state_names = ("h",)

    def param_specs(self):
        return super().param_specs() + ["W_o", "b_o"]

    def forward(self, bottom, top):
        xp = self.xp
        steps, num = bottom[0].shape[:2]
        cont = bottom[1].data
        (h,) = self._initial_states(bottom, num)
        w_h = self.blobs[self.w_h].data
        w_o, b_o = self.blobs[self.w_h + 1].data, self.blobs[self.w_h + 2].data
        hidden = self._input_transform(bottom)  # becomes h_1 .. h_T in place
        conted = xp.empty_like(hidden)
        for t in range(steps):
            xp.multiply(h, cont[t][:, None], out=conted[t])
            hidden[t] += xp.matmul(conted[t], w_h.T)
            xp.tanh(hidden[t], out=hidden[t])
            h = hidden[t]
        # Kept apart from the top so in-place layers above cannot change what backward uses.
        outputs = xp.matmul(hidden.reshape(steps * num, self.hidden), w_o.T)
        outputs += b_o
        xp.tanh(outputs, out=outputs)
        top[0].data[...] = outputs.reshape(steps, num, self.hidden)
        self.hidden_states, self.conted, self.outputs = hidden, conted, outputs
        self._final_states(top, [h])

    def backward(self, top, propagate_down, bottom):
        self._check_propagate(propagate_down)
        xp = self.xp
        steps, num = bottom[0].shape[:2]
        flat = steps * num
        cont = bottom[1].data
        w_h, w_o = self.blobs[self.w_h].data, self.blobs[self.w_h + 1].data
        prop = self.param_propagate_down
        hidden = self.hidden_states
        d_out = 1 - self.outputs * self.outputs
        d_out *= top[0].diff.reshape(flat, self.hidden)
        if prop[self.w_h + 1]:
            self.blobs[self.w_h + 1].diff += xp.matmul(d_out.T,
                                                       hidden.reshape(flat, self.hidden))
        if prop[self.w_h + 2]:
            self.blobs[self.w_h + 2].diff += d_out.sum(axis=0)
        # Diffs of h_t from the outputs, turned in place into diffs of the pre-activations.
        d_pre = xp.matmul(d_out, w_o).reshape(steps, num, self.hidden)
        (dh_next,) = self._final_state_diffs(top, num)
        for t in reversed(range(steps)):
            d_pre[t] += dh_next
            d_pre[t] *= 1 - hidden[t] * hidden[t]
            dh_next = xp.matmul(d_pre[t], w_h)
            dh_next *= cont[t][:, None]
        if prop[self.w_h]:
            self.blobs[self.w_h].diff += xp.matmul(d_pre.reshape(flat, self.hidden).T,
                                                   self.conted.reshape(flat, self.hidden))
        self._input_backward(d_pre, propagate_down, bottom)
        self._initial_state_backward(propagate_down, bottom, [dh_next])
