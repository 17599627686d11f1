"""`netkit parse_log`: Caffe's parse_log tables from Caffe's own log lines and from netkit's."""
import csv
import os
import subprocess
import sys

import pytest

from netkit.tools.parse_log import parse_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines as BVLC Caffe's glog writes them (solver.cpp / sgd_solver.cpp), trimmed.
CAFFE_LOG = """\
I1121 10:00:00.000000  1234 caffe.cpp:218] Using GPUs 0
I1121 10:00:01.000000  1234 solver.cpp:289] Solving LeNet
I1121 10:00:01.000100  1234 solver.cpp:290] Learning Rate Policy: inv
I1121 10:00:01.500000  1234 solver.cpp:347] Iteration 0, Testing net (#0)
I1121 10:00:02.000000  1234 solver.cpp:414]     Test net output #0: accuracy = 0.0952
I1121 10:00:02.000000  1234 solver.cpp:414]     Test net output #1: loss = 2.30 (* 1 = 2.30 loss)
I1121 10:00:02.100000  1234 solver.cpp:231] Iteration 0, loss = 2.31
I1121 10:00:02.100000  1234 solver.cpp:247]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I1121 10:00:02.100000  1234 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I1121 10:00:03.100000  1234 solver.cpp:231] Iteration 100, loss = 0.25
I1121 10:00:03.100000  1234 solver.cpp:247]     Train net output #0: loss = 0.25 (* 1 = 0.25 loss)
I1121 10:00:03.100000  1234 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I1121 10:00:04.000000  1234 solver.cpp:347] Iteration 200, Testing net (#0)
I1121 10:00:04.500000  1234 solver.cpp:414]     Test net output #0: accuracy = 0.9702
I1121 10:00:04.500000  1234 solver.cpp:414]     Test net output #1: loss = 0.09 (* 1 = 0.09 loss)
I1121 10:00:04.600000  1234 solver.cpp:231] Iteration 200, loss = 1.5e-01
I1121 10:00:04.600000  1234 solver.cpp:247]     Train net output #0: loss = 1.5e-01 (* 1 = 0.15 loss)
I1121 10:00:04.600000  1234 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
"""


def test_caffe_log_gives_caffes_tables(tmp_path):
    log = tmp_path / "caffe.log"
    log.write_text(CAFFE_LOG)
    train, test = parse_log(str(log))
    # As Caffe's script: a row's rate is the last 'lr =' seen before its outputs, and the
    # first row borrows the second row's.
    assert [(r["NumIters"], r["Seconds"], r["LearningRate"], r["loss"]) for r in train] == [
        (0, pytest.approx(1.1), 0.01, 2.31),
        (100, pytest.approx(2.1), 0.01, 0.25),
        (200, pytest.approx(3.6), 0.00992565, 0.15)]
    assert [(r["NumIters"], r["LearningRate"], r["accuracy"], r["loss"]) for r in test] == [
        (0, 0.00992565, 0.0952, 2.30), (200, 0.00992565, 0.9702, 0.09)]


def test_cli_writes_csv_tables(tmp_path):
    log = tmp_path / "caffe.log"
    log.write_text(CAFFE_LOG)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "parse_log", str(log),
                        str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    with open(out / "caffe.log.train", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert rows[1][0] == "0.0" and rows[3][3] == "0.15"
    with open(out / "caffe.log.test", newline="") as f:
        assert next(csv.reader(f)) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]


def test_netkit_training_log_parses(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text("""
      layer { name: "data" type: "DummyData" top: "x" top: "y"
              dummy_data_param { shape { dim: 8 dim: 3 } shape { dim: 8 dim: 1 }
                                 data_filler { type: "gaussian" } data_filler { type: "gaussian" } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
              inner_product_param { num_output: 1 weight_filler { type: "gaussian" } } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
    """)
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "step" gamma: 0.5 stepsize: 10\n'
                      'max_iter: 30\ndisplay: 10\ntest_iter: 2\ntest_interval: 10\n'
                      'snapshot_prefix: "%s/s"\n' % (net, tmp_path))
    r = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "train", "--solver",
                        str(solver)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    log = tmp_path / "train.log"
    log.write_text(r.stderr)
    train, test = parse_log(str(log))
    assert [row["NumIters"] for row in train] == [0, 10, 20]
    assert [row["LearningRate"] for row in train] == [0.01, 0.01, 0.005]
    assert [row["NumIters"] for row in test] == [0, 10, 20, 30]
    assert all(set(row) == {"NumIters", "Seconds", "LearningRate", "loss"} for row in train + test)
    assert all(b["Seconds"] >= a["Seconds"] >= 0 for a, b in zip(train, train[1:]))


def test_not_a_log_is_one_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    r = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "parse_log", str(path),
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.strip() == "netkit: error: %s: no 'Solving' line: not a netkit or Caffe " \
        "training log" % path


def test_plot_training_log_draws_each_chart(tmp_path):
    pytest.importorskip("matplotlib", reason="plot_training_log needs the plot extra")
    log = tmp_path / "caffe.log"
    log.write_text(CAFFE_LOG)
    for chart in range(8):
        out = tmp_path / ("chart%d.png" % chart)
        r = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "plot_training_log",
                            str(chart), str(out), str(log)], capture_output=True, text=True,
                           cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    image = matplotlib.image.imread(str(tmp_path / "chart6.png"))
    assert image.shape[0] > 100 and image.std() > 0  # something was drawn
