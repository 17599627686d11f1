"""Nesterov, AdaGrad, RMSProp, AdaDelta and Adam: Caffe's algebra, checked three ways.

1. Closed form (Caffe's test_gradient_based_solver.cpp style): a least-squares net
   (Input + InnerProduct + EuclideanLoss) whose gradient is known, and each rule's update
   written out here in float64 numpy, with L2/L1 weight decay, lr_mult/decay_mult,
   iter_size accumulation, momentum where the rule has one, and every lr_policy.
2. torch.optim, where Caffe's algebra and PyTorch's coincide, and assertions that pin
   down where they do not:
   - SGD momentum and Nesterov: Caffe folds the learning rate into the history
     (h = momentum * h + lr * g), torch keeps raw gradients in its buffer and multiplies by
     the current lr. Equal under a fixed lr; once the lr changes, Caffe's history still
     carries steps taken at the old rate, torch's does not.
   - Adam: Caffe folds the bias correction into the rate and adds delta to the
     uncorrected sqrt(v): step = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta).
     torch adds eps to the corrected sqrt(v / (1 - b2^t)); Caffe's delta equals torch's
     eps = delta / sqrt(1 - b2^t), which changes with t.
   - AdaGrad and RMSProp: delta is added after the square root, as torch adds eps.
     AdaDelta: delta inside both square roots and the lr applied last, as torch does.
     These agree even with a large delta.
   - Defaults differ: Caffe's delta is 1e-8 for every rule (torch: Adagrad 1e-10,
     Adadelta 1e-6), and AdaDelta's decay is `momentum`, default 0 (torch's rho 0.9).
3. Snapshots: 2N history blobs for AdaDelta and Adam in Caffe's order, bit-exact resume.
"""
import itertools
import math
import os

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from leastsquares import D, DEFAULT_MULTS, N, least_squares_param
from netkit import get_backend, get_solver
from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.protoio import read_binary
from netkit.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                            RMSPropSolver, SGDSolver, read_solver_param)
from netkit.weights import blob_proto_to_array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feed(solver, batches):
    """Give the net batch k % len(batches) at its k-th forward/backward, so iter_size
    accumulates over different data as a data layer would provide it."""
    net, backend, count = solver.net, solver.backend, itertools.count()
    forward_backward = net.forward_backward

    def next_batch_forward_backward():
        X, y = batches[next(count) % len(batches)]
        net.blobs["data"].data[...] = backend.asarray(X)
        net.blobs["targets"].data[...] = backend.asarray(y)
        return forward_backward()
    net.forward_backward = next_batch_forward_backward


def make_solver(backend, solver_text, mults=DEFAULT_MULTS, batches=1):
    """The solver the text asks for on the least-squares net; returns it, the float64
    batches and the initial (W, b) in float64."""
    param = text_format.Parse(solver_text, pb.SolverParameter())
    if not param.HasField("lr_policy"):
        param.lr_policy = "fixed"
    param.net_param.CopyFrom(least_squares_param(mults))
    param.snapshot_prefix = "unused"
    solver = get_solver(param, backend=backend)
    rs = np.random.RandomState(7)
    data = [(rs.standard_normal((N, D)).astype(np.float32),
             rs.standard_normal((N, 1)).astype(np.float32)) for _ in range(batches)]
    feed(solver, data)
    W, b = (backend.asnumpy(blob.data).astype(np.float64) for blob in solver.net.params["ip"])
    return solver, [(X.astype(np.float64), y.astype(np.float64)) for X, y in data], (W, b)


def params_of(solver):
    return [solver.backend.asnumpy(blob.data) for blob in solver.net.params["ip"]]


def history_of(solver):
    return [solver.backend.asnumpy(h) for h in solver.history]


def closed_form(kind, batches, W, b, iters, lr_at, momentum=0.0, momentum2=0.999,
                delta=1e-8, rms_decay=0.99, weight_decay=0.0, reg="L2", mults=DEFAULT_MULTS):
    """float64 trajectory of sum((X W^T + b - y)^2) / (2N) under Caffe's update rule
    `kind`; returns the params and the history in Caffe's order (first set, second set)."""
    params = [W.copy(), b.copy()]
    lr_mults, decay_mults = mults[0::2], mults[1::2]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for it in range(iters):
        grads = [np.zeros_like(p) for p in params]
        for X, y in batches:
            r = X @ params[0].T + params[1] - y
            grads[0] += r.T @ X / N / len(batches)
            grads[1] += r.sum(axis=0) / N / len(batches)
        for k, g in enumerate(grads):
            p = params[k]
            g = g + weight_decay * decay_mults[k] * (p if reg == "L2" else np.sign(p))
            lr = lr_at(it) * lr_mults[k]
            if kind == "SGD":
                first[k] = momentum * first[k] + lr * g
                step = first[k]
            elif kind == "Nesterov":
                new = momentum * first[k] + lr * g
                step = (1 + momentum) * new - momentum * first[k]
                first[k] = new
            elif kind == "AdaGrad":
                first[k] = first[k] + g * g
                step = lr * g / (np.sqrt(first[k]) + delta)
            elif kind == "RMSProp":
                first[k] = rms_decay * first[k] + (1 - rms_decay) * g * g
                step = lr * g / (np.sqrt(first[k]) + delta)
            elif kind == "AdaDelta":
                first[k] = momentum * first[k] + (1 - momentum) * g * g
                unscaled = g * np.sqrt((second[k] + delta) / (first[k] + delta))
                second[k] = momentum * second[k] + (1 - momentum) * unscaled * unscaled
                step = lr * unscaled
            elif kind == "Adam":
                first[k] = momentum * first[k] + (1 - momentum) * g
                second[k] = momentum2 * second[k] + (1 - momentum2) * g * g
                t = it + 1
                correction = math.sqrt(1 - momentum2 ** t) / (1 - momentum ** t)
                step = lr * correction * first[k] / (np.sqrt(second[k]) + delta)
            else:
                raise ValueError(kind)
            params[k] = p - step
    history = first + (second if kind in ("AdaDelta", "Adam") else [])
    return params, history


# Each rule's own settings: solver text, closed-form keywords, and the lr_policy it tests
# (every Caffe policy appears once; `fixed` is the default of the other variants).
RULES = {
    "Nesterov": ('type: "Nesterov" base_lr: 0.05 momentum: 0.9', {"momentum": 0.9},
                 ('lr_policy: "step" gamma: 0.5 stepsize: 2',
                  lambda it: 0.05 * 0.5 ** (it // 2))),
    "AdaGrad": ('type: "AdaGrad" base_lr: 0.1 delta: 0.01', {"delta": 0.01},
                ('lr_policy: "inv" gamma: 0.1 power: 0.75',
                 lambda it: 0.1 * (1 + 0.1 * it) ** -0.75)),
    "RMSProp": ('type: "RMSProp" base_lr: 0.01 rms_decay: 0.95', {"rms_decay": 0.95},
                ('lr_policy: "exp" gamma: 0.8', lambda it: 0.01 * 0.8 ** it)),
    "AdaDelta": ('type: "AdaDelta" base_lr: 1 momentum: 0.95 delta: 1e-6',
                 {"momentum": 0.95, "delta": 1e-6},
                 ('lr_policy: "poly" power: 2 max_iter: 10', lambda it: (1 - it / 10) ** 2)),
    "Adam": ('type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.99',
             {"momentum": 0.9, "momentum2": 0.99},
             ('lr_policy: "multistep" gamma: 0.5 stepvalue: 1 stepvalue: 3',
              lambda it: 0.01 * 0.5 ** ((it >= 1) + (it >= 3)))),
}
BASE_LR = {"Nesterov": 0.05, "AdaGrad": 0.1, "RMSProp": 0.01, "AdaDelta": 1.0, "Adam": 0.01}
CLASSES = {"Nesterov": NesterovSolver, "AdaGrad": AdaGradSolver, "RMSProp": RMSPropSolver,
           "AdaDelta": AdaDeltaSolver, "Adam": AdamSolver}

# Variants run for every rule: (solver text, closed-form keywords, mults, batches).
VARIANTS = {
    "plain": ("", {}, DEFAULT_MULTS, 1),
    "L2": ("weight_decay: 0.1", {"weight_decay": 0.1}, DEFAULT_MULTS, 1),
    "L1": ("weight_decay: 0.1 regularization_type: 'L1'", {"weight_decay": 0.1, "reg": "L1"},
           DEFAULT_MULTS, 1),
    "mults": ("weight_decay: 0.05", {"weight_decay": 0.05}, (0.5, 2, 3, 1), 1),
    "iter_size": ("iter_size: 3 weight_decay: 0.01", {"weight_decay": 0.01}, DEFAULT_MULTS, 3),
    "policy": None,
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", list(RULES))
def test_matches_closed_form(backend, kind, variant):
    rule_text, rule_kwargs, (policy_text, policy_lr) = RULES[kind]
    base = BASE_LR[kind]
    if variant == "policy":
        text, kwargs, mults, nbatch, lr_at = policy_text, {}, DEFAULT_MULTS, 1, policy_lr
    else:
        text, kwargs, mults, nbatch = VARIANTS[variant]
        lr_at = lambda it: base  # noqa: E731
    solver, batches, (W0, b0) = make_solver(backend, rule_text + " " + text, mults, nbatch)
    assert type(solver) is CLASSES[kind]
    solver.step(5)
    (W, b), history = closed_form(kind, batches, W0, b0, 5, lr_at, mults=mults,
                                  **rule_kwargs, **kwargs)
    got_W, got_b = params_of(solver)
    np.testing.assert_allclose(got_W, W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(W, W0, rtol=1e-3)  # the step is large enough to be checked
    got_history = history_of(solver)
    assert len(got_history) == len(history)
    for got, want in zip(got_history, history):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)


def test_adam_sigmoid_policy(backend):
    """The one policy not in RULES: base_lr / (1 + exp(-gamma (iter - stepsize)))."""
    solver, batches, (W0, b0) = make_solver(
        backend, 'type: "Adam" base_lr: 0.02 momentum: 0.8 lr_policy: "sigmoid" '
                 'gamma: 0.5 stepsize: 3')
    solver.step(6)
    (W, b), _ = closed_form("Adam", batches, W0, b0, 6,
                            lambda it: 0.02 / (1 + math.exp(-0.5 * (it - 3))), momentum=0.8)
    np.testing.assert_allclose(params_of(solver)[0], W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(params_of(solver)[1], b, rtol=1e-4, atol=1e-6)


def test_adam_bias_correction_uses_iter_plus_one(backend):
    """One Adam step from zero history: m = (1-b1) g, v = (1-b2) g^2, and the corrected
    rate makes the step lr * g / (|g| + delta / sqrt(1 - b2)) elementwise."""
    solver, batches, (W0, b0) = make_solver(
        backend, 'type: "Adam" base_lr: 0.1 momentum: 0.9 momentum2: 0.999 delta: 0.01')
    solver.step(1)
    X, y = batches[0]
    g = ((X @ W0.T + b0 - y).T @ X / N).ravel()
    step = 0.1 * g / (np.abs(g) + 0.01 / math.sqrt(1 - 0.999))
    np.testing.assert_allclose(params_of(solver)[0].ravel(), W0.ravel() - step, rtol=1e-5)
    # Caffe: float betas promoted to double in pow(beta, t), the quotient rounded to float.
    beta1, beta2 = float(np.float32(0.9)), float(np.float32(0.999))
    assert solver.correction() == np.float32(math.sqrt(1 - beta2 ** 2) / (1 - beta1 ** 2))


# -- torch.optim ----------------------------------------------------------------------------

def torch_run(make_optimizer, batches, W0, b0, iters, mults=DEFAULT_MULTS, lr_at=None,
              before_step=None):
    """float64 torch.optim trajectory on the same loss; one param group per blob, with
    the blob's lr_mult and decay_mult applied to lr and weight_decay."""
    W = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([W, b])
    for it in range(iters):
        opt.zero_grad()
        loss = 0
        for X, y in batches:
            r = torch.from_numpy(X) @ W.T + b - torch.from_numpy(y)
            loss = loss + (r * r).sum() / (2 * N) / len(batches)
        loss.backward()
        if lr_at is not None:
            for group, mult in zip(opt.param_groups, mults[0::2]):
                group["lr"] = lr_at(it) * mult
        if before_step is not None:
            before_step(opt, it)
        opt.step()
    return W.detach().numpy(), b.detach().numpy()


def groups(params, lr, weight_decay, mults=DEFAULT_MULTS):
    return [{"params": [p], "lr": lr * lm, "weight_decay": weight_decay * dm}
            for p, lm, dm in zip(params, mults[0::2], mults[1::2])]


TORCH_CASES = {
    # Fixed lr: Caffe's lr-folded history equals torch's lr * buffer.
    "SGD": ('type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.1',
            lambda ps: torch.optim.SGD(groups(ps, 0.05, 0.1), momentum=0.9)),
    "Nesterov": ('type: "Nesterov" base_lr: 0.05 momentum: 0.9 weight_decay: 0.1',
                 lambda ps: torch.optim.SGD(groups(ps, 0.05, 0.1), momentum=0.9,
                                            nesterov=True)),
    # delta outside the square root in both, so even a large delta agrees.
    "AdaGrad": ('type: "AdaGrad" base_lr: 0.1 delta: 0.5 weight_decay: 0.1',
                lambda ps: torch.optim.Adagrad(groups(ps, 0.1, 0.1), eps=0.5)),
    "RMSProp": ('type: "RMSProp" base_lr: 0.01 rms_decay: 0.9 delta: 0.5 weight_decay: 0.1',
                lambda ps: torch.optim.RMSprop(groups(ps, 0.01, 0.1), alpha=0.9, eps=0.5)),
    # delta inside both square roots, lr applied after the update history, in both.
    "AdaDelta": ('type: "AdaDelta" base_lr: 0.5 momentum: 0.9 delta: 0.1 weight_decay: 0.1',
                 lambda ps: torch.optim.Adadelta(groups(ps, 0.5, 0.1), rho=0.9, eps=0.1)),
    # Tiny delta: the eps placement difference is below float32 resolution.
    "Adam": ('type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 weight_decay: 0.1',
             lambda ps: torch.optim.Adam(groups(ps, 0.01, 0.1), betas=(0.9, 0.999), eps=1e-8)),
}


@pytest.mark.parametrize("kind", list(TORCH_CASES))
def test_matches_torch_optim(backend, kind):
    text, make_optimizer = TORCH_CASES[kind]
    solver, batches, (W0, b0) = make_solver(backend, text)
    solver.step(6)
    W, b = torch_run(make_optimizer, batches, W0, b0, 6)
    np.testing.assert_allclose(params_of(solver)[0], W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(params_of(solver)[1], b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_adaptive_rules_match_torch_under_a_changing_lr(backend, kind):
    """The adaptive rules apply the lr last, outside any history, so a Caffe lr_policy
    equals setting torch's group lr every step."""
    text, make_optimizer = TORCH_CASES[kind]
    policy = 'lr_policy: "step" gamma: 0.3 stepsize: 2'
    solver, batches, (W0, b0) = make_solver(backend, text + " " + policy)
    base = solver.param.base_lr
    solver.step(6)
    W, b = torch_run(make_optimizer, batches, W0, b0, 6,
                     lr_at=lambda it: base * 0.3 ** (it // 2))
    np.testing.assert_allclose(params_of(solver)[0], W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(params_of(solver)[1], b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,nesterov", [("SGD", False), ("Nesterov", True)])
def test_momentum_history_carries_the_old_lr_unlike_torch(backend, kind, nesterov):
    """Caffe's history is lr * gradient: after the lr drops, the momentum still moves at the
    old rate. torch's buffer holds raw gradients, so its whole step shrinks at once."""
    text = 'type: "%s" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.1 stepsize: 2' % kind
    solver, batches, (W0, b0) = make_solver(backend, text)
    solver.step(5)
    lr_at = lambda it: 0.1 * 0.1 ** (it // 2)  # noqa: E731
    (W, _), _ = closed_form(kind, batches, W0, b0, 5, lr_at, momentum=0.9)
    got_W = params_of(solver)[0]
    np.testing.assert_allclose(got_W, W, rtol=1e-4, atol=1e-6)
    torch_W, _ = torch_run(lambda ps: torch.optim.SGD(groups(ps, 0.1, 0), momentum=0.9,
                                                      nesterov=nesterov),
                           batches, W0, b0, 5, lr_at=lr_at)
    assert np.abs(got_W - torch_W).max() > 1e-2


def test_adam_delta_is_torch_eps_scaled_by_the_bias_correction(backend):
    """Caffe adds delta to sqrt(v) before the correction, torch adds eps after it: Caffe's
    delta is torch's eps = delta / sqrt(1 - b2^t), a different eps each step."""
    text = 'type: "Adam" base_lr: 0.05 momentum: 0.9 momentum2: 0.999 delta: 0.1'
    solver, batches, (W0, b0) = make_solver(backend, text)
    solver.step(4)
    make = lambda ps: torch.optim.Adam(groups(ps, 0.05, 0), betas=(0.9, 0.999), eps=0.1)  # noqa

    def caffe_eps(opt, it):
        for group in opt.param_groups:
            group["eps"] = 0.1 / math.sqrt(1 - 0.999 ** (it + 1))
    W, b = torch_run(make, batches, W0, b0, 4, before_step=caffe_eps)
    got_W, got_b = params_of(solver)
    np.testing.assert_allclose(got_W, W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-4, atol=1e-6)
    plain_W, _ = torch_run(make, batches, W0, b0, 4)
    assert np.abs(got_W - plain_W).max() > 1e-2


def test_caffe_defaults():
    """Caffe's schema defaults, which differ from torch's (see the module docstring)."""
    p = pb.SolverParameter()
    assert p.delta == np.float32(1e-8)
    assert p.momentum == 0 and p.momentum2 == np.float32(0.999)
    assert p.rms_decay == np.float32(0.99)


# -- parameter checks -----------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('type: "AdaGrad" momentum: 0.9', "momentum cannot be used with AdaGrad"),
    ('type: "RMSProp" momentum: 0.5', "momentum cannot be used with RMSProp"),
    ('type: "RMSProp" rms_decay: 1.0', "rms_decay should lie in"),
    ('type: "RMSProp" rms_decay: -0.1', "rms_decay should lie in"),
])
def test_refused_settings(text, match):
    with pytest.raises(NetkitError, match=match):
        make_solver(get_backend("cpu"), 'base_lr: 0.1 ' + text)


@pytest.mark.parametrize("legacy,cls", [("NESTEROV", NesterovSolver), ("ADAGRAD", AdaGradSolver),
                                        ("RMSPROP", RMSPropSolver), ("ADADELTA", AdaDeltaSolver),
                                        ("ADAM", AdamSolver), ("SGD", SGDSolver)])
def test_legacy_solver_type_picks_the_class(tmp_path, legacy, cls):
    net = tmp_path / "net.prototxt"
    net.write_text(text_format.MessageToString(least_squares_param()))
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "%s"\nbase_lr: 0.1\nsolver_type: %s\n' % (net, legacy))
    assert type(get_solver(str(path), backend="cpu")) is cls


# -- snapshots ------------------------------------------------------------------------------

RESUME_TEXT = {
    "Nesterov": 'type: "Nesterov" momentum: 0.9 base_lr: 0.05',
    "AdaGrad": 'type: "AdaGrad" base_lr: 0.1',
    "RMSProp": 'type: "RMSProp" base_lr: 0.01 rms_decay: 0.9',
    "AdaDelta": 'type: "AdaDelta" base_lr: 1 momentum: 0.9 delta: 1e-6',
    "Adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999',
}


@pytest.mark.parametrize("kind", list(RESUME_TEXT))
def test_snapshot_layout_and_bit_exact_resume(tmp_path, backend, kind):
    text = RESUME_TEXT[kind] + (' lr_policy: "step" gamma: 0.5 stepsize: 2 weight_decay: 0.01'
                                ' random_seed: 5')
    straight, batches, (W0, b0) = make_solver(backend, text)
    straight.step(6)
    half, _, _ = make_solver(backend, text)
    half.param.snapshot_prefix = str(tmp_path / "ls")
    half.step(3)
    _, state_path = half.snapshot()

    # The state holds Caffe's history_: both param's first blobs, then their second blobs.
    state = read_binary(state_path, pb.SolverState())
    saved = [blob_proto_to_array(h) for h in state.history]
    kwargs = {"momentum": half.param.momentum, "momentum2": half.param.momentum2,
              "delta": half.param.delta, "rms_decay": half.param.rms_decay}
    _, history = closed_form(kind, batches, W0, b0, 3,
                             lambda it: half.param.base_lr * 0.5 ** (it // 2),
                             weight_decay=0.01, **kwargs)
    assert len(saved) == (4 if kind in ("AdaDelta", "Adam") else 2) == len(history)
    for got, want in zip(saved, history):
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-9)

    resumed, _, _ = make_solver(backend, text)
    resumed.restore(state_path)
    assert resumed.iter == 3
    resumed.step(3)
    for a, b in zip(params_of(straight) + history_of(straight),
                    params_of(resumed) + history_of(resumed)):
        np.testing.assert_array_equal(a, b)


def test_restore_refuses_a_state_of_another_layout(tmp_path):
    adam, _, _ = make_solver(get_backend("cpu"), 'type: "Adam" base_lr: 0.01')
    adam.param.snapshot_prefix = str(tmp_path / "adam")
    adam.step(1)
    _, state_path = adam.snapshot()
    nesterov, _, _ = make_solver(get_backend("cpu"), 'type: "Nesterov" base_lr: 0.01 momentum: 0.9')
    with pytest.raises(NetkitError, match="4 history blobs, a Nesterov solver on this net keeps 2"):
        nesterov.restore(state_path)


# -- the MNIST example solver files ----------------------------------------------------------

EXAMPLES = {
    # file: (class, settings it must carry; Caffe's values for the files Caffe ships)
    "lenet_solver_adam.prototxt": (AdamSolver, {"base_lr": 0.001, "momentum": 0.9,
                                                "momentum2": 0.999, "lr_policy": "fixed"}),
    "lenet_solver_rmsprop.prototxt": (RMSPropSolver, {"base_lr": 0.01, "rms_decay": 0.98,
                                                      "lr_policy": "inv", "momentum": 0.0}),
    "lenet_adadelta_solver.prototxt": (AdaDeltaSolver, {"base_lr": 1.0, "momentum": 0.95,
                                                        "delta": 1e-6, "lr_policy": "fixed"}),
    "lenet_solver_adagrad.prototxt": (AdaGradSolver, {"momentum": 0.0}),
    "lenet_solver_nesterov.prototxt": (NesterovSolver, {"momentum": 0.9}),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_solver_files(tmp_path, name):
    cls, settings = EXAMPLES[name]
    source = os.path.join(ROOT, "examples", "mnist", name)
    param = read_solver_param(source)
    assert param.net == "examples/mnist/lenet_train_test.prototxt"
    assert param.solver_mode == pb.SolverParameter.CPU
    assert param.max_iter == 10000 and param.test_iter == [100] and param.test_interval == 500
    for field, value in settings.items():
        want = value if isinstance(value, str) else pytest.approx(value, rel=1e-6)
        assert getattr(param, field) == want, field
    # The same file with the LeNet net swapped for the inline least-squares net.
    text = open(source).read()
    inline = "net_param { %s }" % text_format.MessageToString(least_squares_param(), as_one_line=True)
    text = text.replace('net: "examples/mnist/lenet_train_test.prototxt"', inline)
    text = text.replace("test_interval: 500", "test_interval: 0")
    path = tmp_path / name
    path.write_text(text)
    solver = get_solver(str(path), backend="cpu")
    assert type(solver) is cls
    before = params_of(solver)
    rs = np.random.RandomState(3)
    feed(solver, [(rs.standard_normal((N, D)).astype(np.float32),
                   rs.standard_normal((N, 1)).astype(np.float32))])
    solver.step(3)
    after = params_of(solver)
    assert all(np.isfinite(a).all() and not np.array_equal(a, b) for a, b in zip(after, before))
