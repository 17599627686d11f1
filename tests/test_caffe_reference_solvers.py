"""netkit's solvers against BVLC Caffe's own runs (tests/caffe_reference/make_solvers.py wrote
them with Caffe's `caffe train`): from the same initial weights and data, 10 iterations of
every solver type, lr policy and update option must give Caffe's weights and history, resuming
from Caffe's iteration-5 solver state must give the same, and the losses and test outputs
netkit logs must be the ones in Caffe's log."""
import logging
import os
import re
import shutil

import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit.log import GlogFormatter, logger
from netkit.protoio import read_binary
from netkit.solvers import get_solver, read_solver_param
from netkit.tools.parse_log import parse_log
from netkit.weights import blob_proto_to_array, load_weights

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe_reference",
                         "solvers")
CASES = sorted(f[len("solver_"):-len(".prototxt")] for f in os.listdir(REFERENCE)
               if f.startswith("solver_"))
LOGGED = sorted(f[:-len(".log")] for f in os.listdir(REFERENCE) if f.endswith(".log"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A copy of Caffe's files to run in (the solvers' paths are relative, as Caffe's)."""
    work = tmp_path / "work"
    shutil.copytree(REFERENCE, work)
    monkeypatch.chdir(work)
    return work


def solver_for(case, backend, weights=None):
    """Caffe's solver file for `case`, snapshotting under netkit_ so Caffe's files stay."""
    param = read_solver_param("solver_%s.prototxt" % case)
    param.snapshot_prefix = "netkit_" + param.snapshot_prefix
    return get_solver(param, backend=backend, weights=weights,
                      source="solver_%s.prototxt" % case)


def caffe_snapshot(case, it):
    """Caffe's (weights by layer, history arrays) at iteration `it`, from either format."""
    if case == "hdf5":
        import h5py
        with h5py.File("%s_iter_%d.caffemodel.h5" % (case, it), "r") as f:
            # Caffe writes only the blobs a layer owns (not those it shares)
            weights = {name: {int(i): np.asarray(blob) for i, blob in layer.items()}
                       for name, layer in f["data"].items() if len(layer)}
        with h5py.File("%s_iter_%d.solverstate.h5" % (case, it), "r") as f:
            history = [np.asarray(f["history"][str(i)]) for i in range(len(f["history"]))]
        return weights, history
    net = load_weights("%s_iter_%d.caffemodel" % (case, it))
    state = read_binary("%s_iter_%d.solverstate" % (case, it), pb.SolverState())
    return ({layer.name: dict(enumerate(blob_proto_to_array(b) for b in layer.blobs))
             for layer in net.layer if layer.blobs},
            [blob_proto_to_array(b) for b in state.history])


def assert_matches_caffe(solver, case, it=10):
    be = solver.backend
    weights, history = caffe_snapshot(case, it)
    net = solver.net
    for name, layer in zip(net.layer_names, net.layers):
        if layer.blobs:
            for i, blob in enumerate(layer.blobs):
                if i not in weights[name]:
                    continue
                np.testing.assert_allclose(be.asnumpy(blob.data).ravel(),
                                           weights[name][i].ravel(), rtol=2e-4, atol=2e-6,
                                           err_msg="%s: layer %s blob %d" % (case, name, i))
    assert len(history) == len(solver.history)
    for i, (ours, theirs) in enumerate(zip(solver.history, history)):
        np.testing.assert_allclose(be.asnumpy(ours).ravel(), theirs.ravel(), rtol=2e-4,
                                   atol=2e-6, err_msg="%s: history %d" % (case, i))


@pytest.mark.parametrize("case", CASES)
def test_training_gives_caffes_weights_and_history(case, backend, workdir):
    solver = solver_for(case, backend, weights="init.caffemodel")
    solver.solve()
    assert solver.iter == 10
    assert_matches_caffe(solver, case)


@pytest.mark.parametrize("case", CASES)
def test_resuming_caffes_solver_state_continues_its_run(case, backend, workdir):
    state = "%s_iter_5.solverstate%s" % (case, ".h5" if case == "hdf5" else "")
    solver = solver_for(case, backend)
    solver.solve(resume_file=state)
    assert_matches_caffe(solver, case)


@pytest.mark.parametrize("case", LOGGED)
def test_logged_losses_and_test_outputs_are_caffes(case, workdir):
    log = workdir / ("netkit_%s.log" % case)
    handler = logging.FileHandler(log)
    handler.setFormatter(GlogFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        solver_for(case, "cpu", weights="init.caffemodel").solve()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    numbered = re.compile(r"(T\w+ net output #\d+: \S+) =")
    with open(log) as mine, open("%s.log" % case) as caffe:
        assert numbered.findall(mine.read()) == numbered.findall(caffe.read())
    ours, theirs = parse_log(str(log)), parse_log("%s.log" % case)
    for kind, mine, caffe in zip(("train", "test"), ours, theirs):
        assert len(mine) == len(caffe) > 1, kind
        for row, expected in zip(mine, caffe):
            assert row.keys() == expected.keys(), kind
            for key in row:
                if key != "Seconds":
                    assert row[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), \
                        "%s row at iteration %s: %s" % (kind, row["NumIters"], key)
