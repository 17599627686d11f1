"""Soak test: `kill -9` at random moments never costs more than the work since the last
snapshot. Twenty times, training is killed mid-run; every snapshot file under its final
name must then parse completely, and training resumes from the newest solver state. The
run that was killed twenty times ends with the same weights, to the bit, as a run that
never was."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit.protoio import read_binary
from netkit.weights import load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = 20
ENDLESS = 1000000  # max_iter while killing; the finish line is set after the last kill

NET = """
name: "soak"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "%(list)s" batch_size: 16 shuffle: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 192 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """
net: "%(net)s"
type: "%(type)s"
base_lr: 0.01
momentum: 0.9
momentum2: 0.999
lr_policy: "step"
gamma: 0.5
stepsize: 60
weight_decay: 0.0005
max_iter: %(max_iter)d
display: 20
snapshot: 1
snapshot_prefix: "%(prefix)s"
random_seed: 7
"""


def setup_run(directory, data_list, solver_type, max_iter):
    directory.mkdir(exist_ok=True)
    net = directory / "net.prototxt"
    net.write_text(NET % {"list": data_list})
    solver = directory / "solver.prototxt"
    solver.write_text(SOLVER % {"net": net, "type": solver_type, "max_iter": max_iter,
                                "prefix": directory / "soak"})
    return str(solver)


def netkit_train(*args):
    return subprocess.Popen([sys.executable, "-m", "netkit.tools.cli", "train"] + list(args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def wait_until_training(proc):
    """Read the log until the first `Iteration N` line: start-up is over, kills now land
    among iterations and snapshot writes however slow the machine is."""
    for line in proc.stderr:
        if re.search(r"Iteration \d+", line):
            return
    raise AssertionError("training ended before its first iteration (exit %s)" % proc.wait())


def iteration_of(path):
    return int(re.search(r"_iter_(\d+)\.", path).group(1))


def check_snapshots(directory):
    """Every snapshot under its final name parses completely; returns the newest state."""
    states = glob.glob(str(directory / "soak_iter_*.solverstate"))
    for path in glob.glob(str(directory / "soak_iter_*.caffemodel")):
        layers = {lp.name: lp for lp in load_weights(path).layer}
        assert [len(layers[n].blobs) for n in ("ip1", "ip2")] == [2, 2], path
        assert len(layers["ip1"].blobs[0].data) == 192 * 96, path
    for path in states:
        state = read_binary(path, pb.SolverState())
        assert state.iter == iteration_of(path), path
        assert os.path.exists(state.learned_net), "%s names a missing %s" % (path, state.learned_net)
        assert len(state.history) >= 4, path
    return max(states, key=iteration_of) if states else None


@pytest.fixture(scope="module")
def data_list(tmp_path_factory):
    directory = tmp_path_factory.mktemp("soak_data")
    rs = np.random.RandomState(0)
    with h5py.File(directory / "train.h5", "w") as f:
        f["data"] = rs.standard_normal((200, 96)).astype(np.float32)
        f["label"] = rs.randint(0, 10, 200).astype(np.float32)
    (directory / "list.txt").write_text(str(directory / "train.h5") + "\n")
    return str(directory / "list.txt")


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_twenty_kill_9s_lose_nothing_and_end_where_a_straight_run_ends(
        tmp_path, data_list, solver_type):
    killed_dir = tmp_path / "killed"
    killed = setup_run(killed_dir, data_list, solver_type, ENDLESS)
    rs = np.random.RandomState(1)
    state, progress = None, []
    for _ in range(KILLS):
        proc = netkit_train("--solver", killed, *(["--snapshot", state] if state else []))
        wait_until_training(proc)
        time.sleep(rs.uniform(0.0, 0.8))  # somewhere in an iteration, often mid-snapshot
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = check_snapshots(killed_dir) or state
        progress.append(iteration_of(state) if state else 0)
    assert progress == sorted(progress) and progress[-1] > 0, progress

    # Finish both runs a little past the last kill; "step" lr does not depend on max_iter.
    finish = progress[-1] + 25
    killed = setup_run(killed_dir, data_list, solver_type, finish)
    proc = netkit_train("--solver", killed, "--snapshot", state)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "Resuming from %s" % state in err or "Restoring previous solver status" in err, err
    check_snapshots(killed_dir)
    # Files staged by killed writers went with the first snapshot the resumed run wrote.
    assert glob.glob(str(killed_dir / ".*.tmp")) == []
    straight = setup_run(tmp_path / "straight", data_list, solver_type, finish)
    proc = netkit_train("--solver", straight)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]

    final = "soak_iter_%d.caffemodel" % finish
    a = load_weights(str(tmp_path / "straight" / final))
    b = load_weights(str(killed_dir / final))
    for la, lb in zip(a.layer, b.layer):
        for x, y in zip(la.blobs, lb.blobs):
            assert np.array_equal(np.array(x.data), np.array(y.data)), la.name
