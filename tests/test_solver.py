"""SGD against closed-form updates (Caffe's solver-test style), lr policies, the loop."""
import logging
import math

import numpy as np
import pytest
from google.protobuf import text_format

from leastsquares import (DEFAULT_MULTS, N, feed_once, least_squares_data,
                          least_squares_param)
from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.solvers import SGDSolver, get_solver
from netkit.solvers.lr_policy import learning_rate


def make_solver(backend, solver_text, mults=DEFAULT_MULTS):
    param = text_format.Parse(solver_text, pb.SolverParameter())
    param.net_param.CopyFrom(least_squares_param(mults))
    param.snapshot_prefix = "unused"
    solver = SGDSolver(param, backend=backend)
    X, y = least_squares_data()
    feed_once(solver, X, y)
    return solver, X.astype(np.float64), y.astype(np.float64)


def reference_sgd(X, y, W, b, iters, lr_at, momentum=0.0, weight_decay=0.0, reg="L2",
                  mults=(1, 1, 2, 0), clip=-1):
    """The closed-form SGD trajectory of sum((XW^T + b - y)^2) / (2N) in float64."""
    W, b = W.copy(), b.copy()
    hW, hb = np.zeros_like(W), np.zeros_like(b)
    for it in range(iters):
        r = X @ W.T + b - y
        gW, gb = r.T @ X / N, r.sum(axis=0) / N
        if clip > 0:
            norm = math.sqrt((gW ** 2).sum() + (gb ** 2).sum())
            if norm > clip:
                gW, gb = gW * clip / norm, gb * clip / norm
        reg_of = (lambda v: v) if reg == "L2" else np.sign
        gW = gW + weight_decay * mults[1] * reg_of(W)
        gb = gb + weight_decay * mults[3] * reg_of(b)
        rate = lr_at(it)
        hW = rate * mults[0] * gW + momentum * hW
        hb = rate * mults[2] * gb + momentum * hb
        W, b = W - hW, b - hb
    return W, b


@pytest.mark.parametrize("extra,kwargs", [
    ("", {}),
    ("momentum: 0.9", {"momentum": 0.9}),
    ("momentum: 0.5 weight_decay: 0.1", {"momentum": 0.5, "weight_decay": 0.1}),
    ("weight_decay: 0.1 regularization_type: 'L1'", {"weight_decay": 0.1, "reg": "L1"}),
    ("clip_gradients: 0.1 momentum: 0.9", {"clip": 0.1, "momentum": 0.9}),
    ("iter_size: 3 momentum: 0.9", {"momentum": 0.9}),
])
def test_sgd_matches_closed_form(backend, extra, kwargs):
    solver, X, y = make_solver(backend, 'base_lr: 0.1 lr_policy: "fixed" ' + extra)
    W0 = backend.asnumpy(solver.net.params["ip"][0].data).astype(np.float64)
    b0 = backend.asnumpy(solver.net.params["ip"][1].data).astype(np.float64)
    solver.step(5)
    W, b = reference_sgd(X, y, W0, b0, 5, lambda it: 0.1, **kwargs)
    np.testing.assert_allclose(backend.asnumpy(solver.net.params["ip"][0].data), W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(backend.asnumpy(solver.net.params["ip"][1].data), b, rtol=1e-4, atol=1e-5)
    assert solver.iter == 5


def test_lr_and_decay_mults(backend):
    mults = (0.5, 2, 3, 1)
    solver, X, y = make_solver(backend, 'base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 '
                               'weight_decay: 0.01', mults)
    W0 = backend.asnumpy(solver.net.params["ip"][0].data).astype(np.float64)
    b0 = backend.asnumpy(solver.net.params["ip"][1].data).astype(np.float64)
    solver.step(4)
    W, b = reference_sgd(X, y, W0, b0, 4, lambda it: 0.05, momentum=0.9, weight_decay=0.01,
                         mults=mults)
    np.testing.assert_allclose(backend.asnumpy(solver.net.params["ip"][0].data), W, rtol=1e-4)
    np.testing.assert_allclose(backend.asnumpy(solver.net.params["ip"][1].data), b, rtol=1e-4)


def solver_param(text):
    return text_format.Parse(text, pb.SolverParameter())


@pytest.mark.parametrize("text,formula", [
    ('lr_policy: "fixed" base_lr: 0.1', lambda it: 0.1),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 3', lambda it: 0.1 * 0.5 ** (it // 3)),
    ('lr_policy: "exp" base_lr: 0.1 gamma: 0.9', lambda it: 0.1 * 0.9 ** it),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75',
     lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    ('lr_policy: "poly" base_lr: 0.1 power: 2 max_iter: 20', lambda it: 0.1 * (1 - it / 20) ** 2),
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.5 stepsize: 5',
     lambda it: 0.1 / (1 + math.exp(-0.5 * (it - 5)))),
])
def test_lr_policies(text, formula):
    p = solver_param(text)
    for it in range(0, 20, 3):
        assert learning_rate(p, it, 0) == pytest.approx(formula(it), rel=1e-6)


@pytest.mark.parametrize("text,match", [
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: -0.5 stepsize: 5', "'sigmoid' needs gamma >= 0"),
    ('lr_policy: "exp" base_lr: 0.1 gamma: -0.9', "'exp' needs gamma >= 0"),
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.5', "'sigmoid' needs a positive stepsize"),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5', "'step' needs a positive stepsize"),
])
def test_lr_policies_refuse_what_caffe_refuses(text, match):
    with pytest.raises(NetkitError, match=match):
        learning_rate(solver_param(text), 0, 0)


def test_multistep_advances_current_step(backend):
    solver, _, _ = make_solver(backend, 'base_lr: 1 lr_policy: "multistep" gamma: 0.1 '
                               'stepvalue: 2 stepvalue: 4')
    rates = []
    for _ in range(6):
        rates.append(solver.get_learning_rate())
        solver.iter += 1
    assert rates == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-6)


def test_smoothed_loss_averages_the_last_losses(backend):
    solver, _, _ = make_solver(backend, 'base_lr: 0.0 lr_policy: "fixed" average_loss: 3')
    solver.step(1)
    for loss in (1.0, 2.0, 3.0, 4.0):
        solver._update_smoothed_loss(loss, 0)
        solver.iter += 1
    # losses seen: [L0, 1, 2] then 3 replaces index (iter - start) % 3
    assert solver.smoothed_loss == pytest.approx(np.mean(solver.losses))


def test_log_lines_have_caffe_format(backend, caplog):
    solver, _, _ = make_solver(backend, 'base_lr: 0.1 lr_policy: "fixed" display: 2')
    with caplog.at_level(logging.INFO, logger="netkit"):
        solver.step(3)
    text = caplog.text
    assert "Iteration 0 (" in text and "iter/s, " in text and "s/2 iters), loss = " in text
    assert "    Train net output #0: loss = " in text and "(* 1 = " in text
    assert "Iteration 2, lr = 0.1" in text


def test_snapshot_and_restore_continue_exactly(tmp_path, backend):
    text = 'base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9 random_seed: 5'
    straight, _, _ = make_solver(backend, text)
    straight.step(6)
    half, _, _ = make_solver(backend, text)
    half.param.snapshot_prefix = str(tmp_path / "ls")
    half.step(3)
    model, state = half.snapshot()
    assert model.endswith("ls_iter_3.caffemodel") and state.endswith("ls_iter_3.solverstate")
    resumed, _, _ = make_solver(backend, text)
    resumed.restore(state)
    assert resumed.iter == 3
    resumed.step(3)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(backend.asnumpy(a.blob.data), backend.asnumpy(b.blob.data))


def test_solver_without_net_is_an_error(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('base_lr: 0.1\nlr_policy: "fixed"\n')
    with pytest.raises(NetkitError, match="names no net"):
        get_solver(str(path))


def test_snapshot_prefix_defaults(tmp_path):
    from netkit.solvers import read_solver_param
    path = tmp_path / "my_solver.prototxt"
    path.write_text('net: "x.prototxt"\n')
    assert read_solver_param(str(path)).snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    path.write_text('net: "x.prototxt"\nsnapshot_prefix: "%s"\n' % (tmp_path / "snaps"))
    assert read_solver_param(str(path)).snapshot_prefix == str(tmp_path / "snaps" / "my_solver")


def test_legacy_solver_type_picks_the_class(tmp_path):
    from netkit.solvers import solver_type
    assert solver_type(solver_param("solver_type: SGD")) == "SGD"
    assert solver_type(solver_param('type: "SGD"')) == "SGD"


def test_resume_with_dropout_is_exact(tmp_path, backend):
    """Dropout masks depend only on random_seed and the iteration, so a resumed run draws
    the same masks as a straight one."""
    def solver():
        s, _, _ = make_solver(backend, 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 '
                              'random_seed: 9')
        net = s.param.net_param
        drop = net.layer.add()
        drop.CopyFrom(text_format.Parse('name: "drop" type: "Dropout" bottom: "ip" top: "ip" '
                                        'dropout_param { dropout_ratio: 0.5 }',
                                        pb.LayerParameter()))
        # Move the Dropout between the InnerProduct and the loss.
        layers = list(net.layer)
        del net.layer[:]
        net.layer.extend([layers[0], layers[1], layers[3], layers[2]])
        s2 = SGDSolver(s.param, backend=backend)
        s2.net.blobs["data"].data[...] = s.net.blobs["data"].data
        s2.net.blobs["targets"].data[...] = s.net.blobs["targets"].data
        return s2

    straight = solver()
    straight.step(6)
    half = solver()
    half.param.snapshot_prefix = str(tmp_path / "d")
    half.step(3)
    _, state = half.snapshot()
    resumed = solver()
    resumed.restore(state)
    resumed.step(3)
    other = solver()
    other.param.random_seed = 10
    other.step(6)
    for a, b, c in zip(straight.net.learnable_params, resumed.net.learnable_params,
                       other.net.learnable_params):
        np.testing.assert_array_equal(backend.asnumpy(a.blob.data), backend.asnumpy(b.blob.data))
    assert not all(np.array_equal(backend.asnumpy(a.blob.data), backend.asnumpy(c.blob.data))
                   for a, c in zip(straight.net.learnable_params, other.net.learnable_params))
