"""snapshot_format: HDF5 as Caffe writes it (Net::ToHDF5, SnapshotSolverStateToHDF5), read
back with h5py against Caffe's names, and resumed from bit-exactly."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from leastsquares import D, feed_once, least_squares_data, least_squares_param
from netkit import netkit_pb2 as pb
from netkit import protoio
from netkit.data.datum import staged_directory
from netkit.errors import NetkitError
from netkit.net import Net
from netkit.solvers import get_solver

LEAST_SQUARES = least_squares_param((1, 1, 2, 1))  # lr_mult 1 / 2, default decay_mult
SGD = 'type: "SGD" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9'
ADAM = 'type: "Adam" base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999'


def make_solver(backend, text, prefix="unused"):
    param = text_format.Parse(text + " random_seed: 5 snapshot_format: HDF5", pb.SolverParameter())
    param.net_param.CopyFrom(LEAST_SQUARES)
    param.snapshot_prefix = str(prefix)
    solver = get_solver(param, backend=backend)
    feed_once(solver, *least_squares_data())
    return solver


def params_of(backend, solver):
    return [backend.asnumpy(p.blob.data) for p in solver.net.learnable_params]


def test_hdf5_layout_has_caffes_names(tmp_path, backend):
    solver = make_solver(backend, SGD, tmp_path / "ls")
    solver.step(3)
    model, state = solver.snapshot()
    assert model == str(tmp_path / "ls_iter_3.caffemodel.h5")
    assert state == str(tmp_path / "ls_iter_3.solverstate.h5")
    with h5py.File(model, "r") as f:
        assert set(f) == {"data"}  # no "diff" group without snapshot_diff
        assert set(f["data"]) == {"data", "ip", "loss"}  # a group for every layer
        assert len(f["data/data"]) == 0 and len(f["data/loss"]) == 0
        assert set(f["data/ip"]) == {"0", "1"}
        assert f["data/ip/0"].shape == (1, D) and f["data/ip/0"].dtype == np.float32
        np.testing.assert_array_equal(f["data/ip/0"][()], params_of(backend, solver)[0])
        np.testing.assert_array_equal(f["data/ip/1"][()], params_of(backend, solver)[1])
    with h5py.File(state, "r") as f:
        assert set(f) == {"iter", "learned_net", "current_step", "history"}
        assert f["iter"].shape == (1,) and f["iter"][0] == 3
        assert f["current_step"][0] == 1  # step policy: 3 // stepsize 2
        assert f["learned_net"][()].decode() == model
        assert f["learned_net"].id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        assert set(f["history"]) == {"0", "1"}
        np.testing.assert_array_equal(f["history/0"][()], backend.asnumpy(solver.history[0]))


@pytest.mark.parametrize("text,history", [(SGD, 2), (ADAM, 4)])
def test_resume_from_hdf5_is_bit_exact(tmp_path, backend, text, history):
    straight = make_solver(backend, text)
    straight.step(6)
    half = make_solver(backend, text, tmp_path / "ls")
    half.step(3)
    _, state = half.snapshot()
    with h5py.File(state, "r") as f:
        assert len(f["history"]) == history  # Adam keeps two history sets
    resumed = make_solver(backend, text)
    resumed.restore(state)
    assert resumed.iter == 3
    resumed.step(3)
    for a, b in zip(params_of(backend, straight), params_of(backend, resumed)):
        np.testing.assert_array_equal(a, b)


def test_copy_from_caffemodel_h5(tmp_path, backend):
    solver = make_solver(backend, SGD, tmp_path / "ls")
    solver.step(2)
    model, _ = solver.snapshot()
    fresh = Net(LEAST_SQUARES, phase=pb.TRAIN, backend=backend)
    assert not np.array_equal(backend.asnumpy(fresh.params["ip"][0].data), params_of(backend, solver)[0])
    fresh.copy_from(model)
    for a, b in zip(params_of(backend, solver), [backend.asnumpy(b.data) for b in fresh.params["ip"]]):
        np.testing.assert_array_equal(a, b)
    # A renamed file is still known as HDF5 by its signature.
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(open(model, "rb").read())
    fresh = Net(LEAST_SQUARES, phase=pb.TRAIN, backend=backend)
    fresh.copy_from(str(renamed))
    np.testing.assert_array_equal(backend.asnumpy(fresh.params["ip"][1].data), params_of(backend, solver)[1])


def test_copy_from_hdf5_shape_mismatch_is_an_error(tmp_path, backend):
    path = str(tmp_path / "bad.caffemodel.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip/0", data=np.zeros((2, D), np.float32))
        f.create_dataset("data/ip/1", data=np.zeros((1,), np.float32))
    net = Net(LEAST_SQUARES, phase=pb.TRAIN, backend=backend)
    with pytest.raises(NetkitError, match="shape mismatch"):
        net.copy_from(path)


def test_snapshot_diff_writes_diffs(tmp_path, backend):
    solver = make_solver(backend, SGD + " snapshot_diff: true", tmp_path / "ls")
    solver.step(1)
    solver.net.forward_backward()
    model, _ = solver.snapshot()
    with h5py.File(model, "r") as f:
        assert set(f) == {"data", "diff"}
        assert set(f["diff"]) == {"data", "ip", "loss"}
        for i in range(2):
            diff = backend.asnumpy(solver.net.params["ip"][i].diff)
            assert np.any(diff != 0)
            np.testing.assert_array_equal(f["diff/ip/%d" % i][()], diff)


def test_snapshot_is_atomic(tmp_path, backend, monkeypatch):
    """A failure while writing leaves the previous file and no temporary behind."""
    solver = make_solver(backend, SGD, tmp_path / "ls")
    model, _ = solver.snapshot()
    before = open(model, "rb").read()
    solver.step(1)
    solver.iter = 0

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError):
        solver.snapshot()
    assert open(model, "rb").read() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ls_iter_0.caffemodel.h5",
                                                          "ls_iter_0.solverstate.h5"]


def test_staged_leftovers_of_dead_writers_are_removed(tmp_path):
    """What a writer killed mid-write leaves (a staged file or LMDB directory) is removed
    by the next staging in that directory; a live writer's and another host's are kept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = protoio._HOST
    leftovers = {
        ".m_iter_5.caffemodel.nk%s-%d.ab_c12x.tmp" % (host, dead.pid): "file",
        ".train_lmdb.nk%s-%d.q1w2e3r4.tmp" % (host, dead.pid): "dir",
    }
    kept = {
        ".m_iter_6.caffemodel.nk%s-%d.zzzzzzzz.tmp" % (host, os.getpid()): "file",
        ".m_iter_7.caffemodel.nkother-host-%d.yyyyyyyy.tmp" % dead.pid: "file",
        ".notes.tmp": "file",
    }
    for name, kind in {**leftovers, **kept}.items():
        if kind == "dir":
            (tmp_path / name).mkdir()
            (tmp_path / name / "data.mdb").write_bytes(b"half a database")
        else:
            (tmp_path / name).write_bytes(b"half a file")
    protoio.write_atomic(str(tmp_path / "m_iter_8.caffemodel"), b"complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(list(kept) +
                                                                ["m_iter_8.caffemodel"])
    (tmp_path / "db").mkdir()
    stale = tmp_path / "db" / (".x_lmdb.nk%s-%d.abcdefgh.tmp" % (host, dead.pid))
    stale.mkdir()
    with staged_directory(str(tmp_path / "db" / "y_lmdb")) as staged:
        assert not stale.exists()
        assert os.path.basename(staged).startswith(protoio.staging_prefix("y_lmdb"))
