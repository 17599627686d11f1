"""A diverging run stops with one NetkitError naming the iteration and the first bad layer,
before the update and before any snapshot of the diverged state."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.solvers import get_solver

# Overflow to inf is what these tests provoke; numpy's warnings about it are expected.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D = 8, 3
LEAST_SQUARES = """
  name: "least_squares"
  layer { name: "data" type: "DummyData" top: "data" top: "targets"
          dummy_data_param { shape { dim: %d dim: %d } shape { dim: %d dim: 1 }
                             data_filler { type: "gaussian" std: 1 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 }
                                bias_filler { type: "gaussian" std: 1 } } }
  layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
  layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }
""" % (N, D, N)


def make_solver(backend, base_lr, **fields):
    param = text_format.Parse('type: "SGD" lr_policy: "fixed" random_seed: 3 max_iter: 20',
                              pb.SolverParameter())
    param.base_lr = base_lr
    for name, value in fields.items():
        setattr(param, name, value)
    param.net_param.CopyFrom(text_format.Parse(LEAST_SQUARES, pb.NetParameter()))
    return get_solver(param, backend=backend)


def test_huge_learning_rate_stops_with_iteration_and_layer(tmp_path, backend):
    solver = make_solver(backend, 1e12, snapshot_prefix=str(tmp_path / "ls"))
    with pytest.raises(NetkitError) as info:
        solver.solve()
    message = str(info.value)
    assert "iteration %d" % solver.iter in message and solver.iter < 10
    # The loss top (inf) is the first non-finite one: ip is still finite when it overflows.
    assert "layer 'loss'" in message and "the loss is inf" in message
    for prm in solver.net.learnable_params:  # raised before the update was applied
        assert np.all(np.isfinite(backend.asnumpy(prm.blob.data)))
    assert list(tmp_path.iterdir()) == []  # snapshot_after_train wrote nothing


def test_first_non_finite_top_is_named(backend):
    """A NaN weight makes every top from ip on NaN: ip is named, not relu or loss."""
    solver = make_solver(backend, 0.01)
    solver.net.params["ip"][1].data[...] = math.nan
    with pytest.raises(NetkitError, match=r"iteration 0: the loss is nan; the first non-finite "
                                          r"top is 'ip' of layer 'ip' \(type InnerProduct\)"):
        solver.step(3)


def test_non_finite_gradient_names_the_param(backend):
    solver = make_solver(backend, 0.01)

    class Poison:
        def on_start(self):
            pass

        def on_gradients_ready(self):
            if solver.iter == 2:
                solver.net.params["ip"][1].diff[...] = math.inf

    solver.callbacks.append(Poison())
    with pytest.raises(NetkitError, match="iteration 2: the diff of param 1 of layer 'ip'"):
        solver.step(5)
    assert np.all(np.isfinite(backend.asnumpy(solver.net.params["ip"][1].data)))
    assert solver.iter == 2


def test_finite_training_is_unaffected(backend):
    solver = make_solver(backend, 0.01)
    solver.step(5)
    assert solver.iter == 5


def test_cli_exits_with_one_line_and_keeps_the_good_snapshot(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(LEAST_SQUARES)
    solver = tmp_path / "solver.prototxt"
    template = ('net: "%s"\nbase_lr: %s\nlr_policy: "fixed"\nmax_iter: 6\nsnapshot: 6\n'
                'random_seed: 3\nsnapshot_prefix: "%s"\nsolver_mode: CPU\n')
    prefix = tmp_path / "ls"

    def train(base_lr):
        solver.write_text(template % (net, base_lr, prefix))
        return subprocess.run([sys.executable, "-m", "netkit.tools.cli", "train",
                               "--solver", str(solver)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    good = train("0.01")
    assert good.returncode == 0, good.stderr
    snapshot = tmp_path / "ls_iter_6.caffemodel"
    before = snapshot.read_bytes()
    files = sorted(p.name for p in tmp_path.iterdir())
    bad = train("1e12")
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("netkit: error:")]
    assert len(errors) == 1 and "iteration" in errors[0] and "layer 'loss'" in errors[0]
    assert snapshot.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files
