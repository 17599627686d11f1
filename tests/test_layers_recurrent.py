"""RNN, LSTM and LSTMUnit: forward and backward against PyTorch's nn.LSTM / nn.RNN with the
weights mapped from Caffe's blob layout, sequence resets through cont, the hidden state
carried across forward calls, Caffe's gradient check on every backend, error cases, and a
small net that learns through the Solver."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from layertest import assert_close, blobs, check_gradient, forward_backward, make_layer, \
    run_forward, tops
from netkit import netkit_pb2 as pb
from netkit.backend import get_backend
from netkit.layer import LayerSetupError
from netkit.solvers import SGDSolver

RS = np.random.RandomState(11)
H = 4


def rand(*shape, scale=1.0):
    return (RS.uniform(-1, 1, size=shape) * scale).astype(np.float32)


def recurrent_text(kind, hidden=H, expose=False):
    return ('type: "%s" recurrent_param { num_output: %d expose_hidden: %s '
            'weight_filler { type: "gaussian" std: 0.5 } '
            'bias_filler { type: "gaussian" std: 0.5 } }'
            % (kind, hidden, "true" if expose else "false"))


def first_step_starts(steps, num):
    """cont for sequences that start at t = 0 and continue to the end."""
    cont = np.ones((steps, num), np.float32)
    cont[0] = 0
    return cont


def params_of(layer):
    return [layer.backend.asnumpy(p.data) for p in layer.blobs]


# Caffe's gate blocks are (i, f, o, g); PyTorch's are (i, f, g, o). Swapping the last two
# blocks maps either order to the other.
def gate_rows(hidden):
    return np.r_[0:2 * hidden, 3 * hidden:4 * hidden, 2 * hidden:3 * hidden]


def torch_reference(kind, params, x, x_static=None, states=None, diffs=None):
    """PyTorch (float64) forward and, with `diffs` (one per top), backward of Caffe's
    layer. A static input becomes extra input features repeated at every step.
    Returns (tops, {bottom name: diff}, param diffs in Caffe's blob order)."""
    steps, num = x.shape[:2]
    hidden = params[1].shape[0] // (4 if kind == "LSTM" else 1)
    rows = gate_rows(hidden) if kind == "LSTM" else np.arange(hidden)
    tx = torch.tensor(x.reshape(steps, num, -1), dtype=torch.float64, requires_grad=True)
    inputs, w_x = tx, params[0]
    if x_static is not None:
        ts = torch.tensor(x_static.reshape(num, -1), dtype=torch.float64, requires_grad=True)
        inputs = torch.cat([tx, ts.expand(steps, num, ts.shape[1])], dim=2)
        w_x = np.concatenate([params[0], params[2]], axis=1)
    w_h = params[3 if x_static is not None else 2]
    module = (torch.nn.LSTM if kind == "LSTM" else torch.nn.RNN)(inputs.shape[2], hidden)
    module = module.double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(w_x[rows]))
        module.weight_hh_l0.copy_(torch.tensor(w_h[rows]))
        module.bias_ih_l0.copy_(torch.tensor(params[1][rows]))
        module.bias_hh_l0.zero_()
    initial = None
    if states is not None:
        initial = [torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in states]
    if kind == "LSTM":
        h, (h_n, c_n) = module(inputs, tuple(initial) if initial else None)
        outputs = [h, h_n, c_n]
    else:
        h, h_n = module(inputs, initial[0] if initial else None)
        w_o, b_o = (torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params[-2:])
        outputs = [torch.tanh(torch.nn.functional.linear(h, w_o, b_o)), h_n]
    outputs = outputs[:1 + (len(states) if states is not None else 0)]
    host = [o.detach().numpy() for o in outputs]
    if diffs is None:
        return host, {}, []
    sum(((o * torch.tensor(np.asarray(d, np.float64))).sum() for o, d in zip(outputs, diffs)),
        torch.zeros((), dtype=torch.float64)).backward()
    bottom = {"x": tx.grad.numpy().reshape(x.shape)}
    if x_static is not None:
        bottom["x_static"] = ts.grad.numpy().reshape(x_static.shape)
    for k, s in enumerate(initial or []):
        bottom["state%d" % k] = s.grad.numpy()
    w_ih = module.weight_ih_l0.grad.numpy()[rows]
    grads = [w_ih[:, :x[0, 0].size], module.bias_ih_l0.grad.numpy()[rows]]
    if x_static is not None:
        grads.append(w_ih[:, x[0, 0].size:])
    grads.append(module.weight_hh_l0.grad.numpy()[rows])
    if kind == "RNN":
        grads += [w_o.grad.numpy(), b_o.grad.numpy()]
    return host, bottom, grads


# ------------------------------------------------------------------ parity with PyTorch

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_forward_backward_match_torch(backend, kind, static):
    steps, num = 5, 3
    x, cont = rand(steps, num, 2, 3), first_step_starts(steps, num)
    bottoms = [x, cont] + ([rand(num, 2, 2)] if static else [])
    layer = make_layer(recurrent_text(kind), backend)
    dtop = rand(steps, num, H)
    (out,), bottom_diffs, param_diffs = forward_backward(
        layer, backend, bottoms, [dtop], propagate=[True, False] + [True] * static)
    params = params_of(layer)
    (ref,), ref_bottom, ref_params = torch_reference(
        kind, params, x, bottoms[2] if static else None, diffs=[dtop])
    assert_close(out, ref)
    assert_close(bottom_diffs[0], ref_bottom["x"])
    if static:
        assert_close(bottom_diffs[2], ref_bottom["x_static"])
    assert len(param_diffs) == len(ref_params)
    for ours, theirs in zip(param_diffs, ref_params):
        assert_close(ours, theirs)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_exposed_hidden_states_match_torch(backend, kind):
    """With expose_hidden the initial states are bottoms (multiplied by cont at t = 0) and
    the final states are tops; gradients flow through both."""
    steps, num, states = 4, 2, 2 if kind == "LSTM" else 1
    x, cont = rand(steps, num, 3), np.ones((steps, num), np.float32)
    initial = [rand(1, num, H) for _ in range(states)]
    layer = make_layer(recurrent_text(kind, expose=True), backend)
    diffs = [rand(steps, num, H)] + [rand(1, num, H) for _ in range(states)]
    outs, bottom_diffs, param_diffs = forward_backward(
        layer, backend, [x, cont] + initial, diffs, propagate=[True, False] + [True] * states)
    refs, ref_bottom, ref_params = torch_reference(kind, params_of(layer), x, states=initial,
                                                   diffs=diffs)
    for ours, theirs in zip(outs, refs):
        assert_close(ours, theirs)
    assert_close(bottom_diffs[0], ref_bottom["x"])
    for k in range(states):
        assert_close(bottom_diffs[2 + k], ref_bottom["state%d" % k])
    for ours, theirs in zip(param_diffs, ref_params):
        assert_close(ours, theirs)
    # The exposed states are not carried over: a second forward gives the same tops.
    again = run_forward(layer, blobs(backend, x, cont, *initial), tops(backend, 1 + states))
    for ours, first in zip(again, outs):
        np.testing.assert_array_equal(ours, first)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_cont_zero_restarts_each_stream(backend, kind):
    """cont = 0 in the middle of a stream gives what separate runs of its pieces give."""
    steps, num = 6, 3
    x = rand(steps, num, 3)
    cont = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]],
                    np.float32)
    layer = make_layer(recurrent_text(kind), backend)
    (out,) = run_forward(layer, blobs(backend, x, cont), tops(backend, 1))
    params = params_of(layer)
    for n in range(num):
        starts = list(np.flatnonzero(cont[:, n] == 0)) + [steps]
        pieces = [torch_reference(kind, params, x[a:b, n:n + 1])[0][0]
                  for a, b in zip(starts[:-1], starts[1:])]
        assert_close(out[:, n:n + 1], np.concatenate(pieces, axis=0))
    # Without the resets the outputs after the first one differ.
    (joined,) = run_forward(make_layer(recurrent_text(kind), backend),
                            blobs(backend, x, first_step_starts(steps, num)), tops(backend, 1))
    assert np.abs(joined[3:, 0] - out[3:, 0]).max() > 1e-3


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_across_forward_calls(backend, kind):
    """Caffe's TestForward: a sequence fed one step per forward (cont = 1 after the first)
    gives the outputs of one forward over the whole sequence; cont = 0 restarts."""
    steps, num = 4, 3
    x = rand(steps, num, 3)
    layer = make_layer(recurrent_text(kind), backend)
    (whole,) = run_forward(layer, blobs(backend, x, first_step_starts(steps, num)),
                           tops(backend, 1))
    layer.reset()
    top = tops(backend, 1)
    for t in range(steps):
        bottom = blobs(backend, x[t:t + 1], np.full((1, num), float(t > 0), np.float32))
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        assert_close(backend.asnumpy(top[0].data)[0], whole[t], rtol=1e-6)
    for t in range(steps):
        bottom = blobs(backend, x[t:t + 1], np.zeros((1, num), np.float32))
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        step = backend.asnumpy(top[0].data)[0]
        if t == 0:
            assert_close(step, whole[0], rtol=1e-6)
        else:
            assert np.abs(step - whole[t]).min() > 0
    # A different number of streams starts from zero states, as reset() does.
    bottom = blobs(backend, x[:1, :2], np.ones((1, 2), np.float32))
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert_close(backend.asnumpy(top[0].data)[0], whole[0, :2], rtol=1e-6)


def test_parameter_blobs_have_caffes_order_shapes_and_fillers(backend):
    text = ('type: "%s" recurrent_param { num_output: 3 weight_filler { type: "constant" '
            'value: 1 } bias_filler { type: "constant" value: 2 } }')
    bottom = blobs(backend, rand(2, 5, 4, 2), first_step_starts(2, 5), rand(5, 6))
    lstm = make_layer(text % "LSTM", backend)
    run_forward(lstm, bottom, tops(backend, 1))
    assert [p.shape for p in lstm.blobs] == [(12, 8), (12,), (12, 6), (12, 3)]
    rnn = make_layer(text % "RNN", backend)
    run_forward(rnn, bottom, tops(backend, 1))
    assert [p.shape for p in rnn.blobs] == [(3, 8), (3,), (3, 6), (3, 3), (3, 3), (3,)]
    values = [float(v.reshape(-1)[0]) for v in params_of(rnn)]
    assert values == [1, 2, 1, 1, 1, 2]


# ------------------------------------------------------------------ gradient checks

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, False), (True, True)])
def test_gradient(backend, kind, static, expose):
    steps, num = 3, 2
    states = (2 if kind == "LSTM" else 1) if expose else 0
    # Carried states change between calls unless every stream starts at t = 0.
    cont = np.array([[1, 1] if expose else [0, 0], [1, 0], [1, 1]], np.float32)
    arrays = [rand(steps, num, 2, 2), cont] + ([rand(num, 3)] if static else [])
    arrays += [rand(1, num, H) for _ in range(states)]
    layer = make_layer(recurrent_text(kind, expose=expose), backend)
    check = [0] + [2] * static + list(range(2 + static, 2 + static + states))
    check_gradient(layer, blobs(backend, *arrays), tops(backend, 1 + states),
                   check_bottom=check)


def test_lstm_unit_forward_matches_closed_form(backend):
    num, hidden = 3, 4
    c_prev, gates = rand(1, num, hidden), rand(1, num, 4 * hidden, scale=3)
    cont = np.array([[1, 0, 1]], np.float32)
    layer = make_layer('type: "LSTMUnit"', backend)
    c, h = run_forward(layer, blobs(backend, c_prev, gates, cont), tops(backend, 2))
    a = gates[0].astype(np.float64)
    sig = 1 / (1 + np.exp(-a))
    i, f, o = sig[:, :hidden], sig[:, hidden:2 * hidden], sig[:, 2 * hidden:3 * hidden]
    g = np.tanh(a[:, 3 * hidden:])
    c_ref = cont[0][:, None] * f * c_prev[0] + i * g
    assert_close(c[0], c_ref)
    assert_close(h[0], o * np.tanh(c_ref))


@pytest.mark.parametrize("cont", [[1, 0, 1], [0, 0, 0]])
def test_lstm_unit_gradient(backend, cont):
    layer = make_layer('type: "LSTMUnit"', backend)
    bottom = blobs(backend, rand(1, 3, 4), rand(1, 3, 16), np.array([cont], np.float32))
    check_gradient(layer, bottom, tops(backend, 2), check_bottom=[0, 1])


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("text,arrays,num_tops,match", [
    ('type: "LSTM" recurrent_param { num_output: 0 }',
     [(2, 3, 4), (2, 3)], 1, "num_output"),
    (recurrent_text("LSTM"), [(6,), (6, 1)], 1, r"bottom\[0\] \(x\)"),
    (recurrent_text("LSTM"), [(2, 3, 4), (2, 2)], 1, r"bottom\[1\] \(cont\)"),
    (recurrent_text("RNN"), [(2, 3, 4), (3, 2)], 1, r"bottom\[1\] \(cont\)"),
    (recurrent_text("RNN"), [(2, 3, 4), (2, 3), (2, 5)], 1, r"bottom\[2\] \(x_static\)"),
    (recurrent_text("LSTM", expose=True), [(2, 3, 4), (2, 3), (1, 3, H), (1, 3, H + 1)], 3,
     r"bottom\[3\] \(c_0\)"),
    (recurrent_text("RNN", expose=True), [(2, 3, 4), (2, 3), (1, 2, H)], 2,
     r"bottom\[2\] \(h_0\)"),
    ('type: "LSTMUnit"', [(1, 3, 4), (1, 3, 12), (1, 3)], 2, r"4 \* H = 16"),
    ('type: "LSTMUnit"', [(1, 3, 4), (1, 3, 16), (1, 2)], 2, r"bottom\[2\] \(cont\)"),
    ('type: "LSTMUnit"', [(2, 3, 4), (2, 3, 16), (2, 3)], 2, r"bottom\[0\] \(c_prev\)"),
])
def test_bad_bottoms_are_refused(text, arrays, num_tops, match):
    backend = get_backend("cpu")
    layer = make_layer(text, backend)
    bottom = blobs(backend, *[np.zeros(shape, np.float32) for shape in arrays])
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, bottom, tops(backend, num_tops))


def test_arity_input_size_and_cont_backward_errors():
    backend = get_backend("cpu")
    layer = make_layer(recurrent_text("LSTM", expose=True), backend)
    with pytest.raises(LayerSetupError, match="at least 4 bottom"):
        layer.check_arity(blobs(backend, rand(2, 3, 4), rand(2, 3)), tops(backend, 3))
    layer = make_layer(recurrent_text("LSTM"), backend)
    bottom, top = blobs(backend, rand(2, 3, 4), first_step_starts(2, 3)), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="cont"):
        layer.backward(top, [True, True], bottom)
    with pytest.raises(LayerSetupError, match="5 inputs per step; the weights expect 4"):
        layer.reshape(blobs(backend, rand(2, 3, 5), first_step_starts(2, 3)), top)
    unit = make_layer('type: "LSTMUnit"', backend)
    bottom, top = blobs(backend, rand(1, 2, 3), rand(1, 2, 12), np.ones((1, 2))), tops(backend, 2)
    run_forward(unit, bottom, top)
    with pytest.raises(LayerSetupError, match="cont"):
        unit.backward(top, [True, True, True], bottom)


# ------------------------------------------------------------------ in a net, trained

ECHO_NET = """
  name: "echo"
  layer { name: "input" type: "Input" top: "seq" top: "cont"
          input_param { shape { dim: %(T)d dim: %(N)d dim: 2 } shape { dim: %(T)d dim: %(N)d } } }
  layer { name: "slice" type: "Slice" bottom: "seq" top: "x" top: "target"
          slice_param { axis: 2 } }
  layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
          recurrent_param { num_output: 8 weight_filler { type: "uniform" min: -0.4 max: 0.4 }
                            bias_filler { type: "constant" value: 0 } } }
  layer { name: "h_flat" type: "Reshape" bottom: "h" top: "h_flat"
          reshape_param { shape { dim: -1 dim: 8 } } }
  layer { name: "pred" type: "InnerProduct" bottom: "h_flat" top: "pred"
          inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.3 } } }
  layer { name: "target_flat" type: "Reshape" bottom: "target" top: "target_flat"
          reshape_param { shape { dim: -1 dim: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "target_flat" top: "loss" }
"""


def test_lstm_net_learns_to_echo_the_previous_input(backend):
    """A sanity check through Net and Solver: predict x_{t-1} from x_1 .. x_t."""
    steps, num = 6, 16
    solver_param = text_format.Parse('base_lr: 0.5 lr_policy: "fixed" momentum: 0.9',
                                     pb.SolverParameter())
    solver_param.net_param.CopyFrom(text_format.Parse(ECHO_NET % {"T": steps, "N": num},
                                                      pb.NetParameter()))
    solver_param.snapshot_prefix = "unused"
    solver = SGDSolver(solver_param, backend=backend)
    seq = np.zeros((steps, num, 2), np.float32)
    seq[:, :, 0] = np.random.RandomState(3).choice([-1.0, 1.0], size=(steps, num))
    seq[1:, :, 1] = seq[:-1, :, 0]
    solver.net.blobs["seq"].data[...] = backend.asarray(seq)
    solver.net.blobs["cont"].data[...] = backend.asarray(first_step_starts(steps, num))
    assert [p.shape for p in solver.net.params["lstm"]] == [(32, 1), (32,), (32, 8)]
    first = float(backend.asnumpy(solver.net.forward()["loss"]))
    solver.step(150)
    last = float(backend.asnumpy(solver.net.forward()["loss"]))
    assert last < 0.2 * first
