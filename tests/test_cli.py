"""The `netkit` command as a user runs it: Caffe's flag spellings, one-line errors."""
import os
import subprocess
import sys

import pytest

from netkit.tools.cli import normalize_argv, parse_gpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def netkit(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "netkit.tools.cli"] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_gflags_spellings_are_normalized():
    assert normalize_argv(["train", "-solver", "s.prototxt", "-gpu=0", "--weights", "w", "-h"]) \
        == ["train", "--solver", "s.prototxt", "--gpu=0", "--weights", "w", "-h"]


@pytest.mark.parametrize("spec,ids", [("-1", []), ("", []), ("0", [0]), ("1,3", [1, 3])])
def test_parse_gpus(spec, ids):
    assert parse_gpus(spec) == ids


def one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("netkit: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_gpu_without_a_usable_gpu_is_one_line():
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a usable GPU is present")
    except Exception:
        pass
    line = one_line_error(netkit("time", "-model", "examples/mnist/lenet.prototxt", "-gpu", "0"))
    assert "GPU" in line


def test_solver_mode_gpu_without_a_usable_gpu_trains_on_the_cpu(tmp_path):
    """BVLC's solver files say solver_mode: GPU; without --gpu and without a usable GPU
    netkit warns once and trains on the CPU (with --gpu 0 it is an error, above)."""
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a usable GPU is present")
    except Exception:
        pass
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param { '
                   'shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" } '
                   'data_filler { type: "constant" value: 1 } } }\nlayer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
                   'inner_product_param { num_output: 2 } }\nlayer { name: "loss" type: '
                   '"SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed" max_iter: 2 display: 1 '
                      'snapshot_after_train: false solver_mode: GPU device_id: 0' % net)
    result = netkit("train", "-solver", str(solver))
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [l for l in result.stderr.splitlines() if "solver_mode is GPU" in l]
    assert len(warnings) == 1 and warnings[0].startswith("W") and "training on the CPU" in \
        warnings[0], result.stderr[-2000:]
    assert "Optimization Done" in result.stderr


def test_unknown_layer_type_lists_known_types(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "x" type: "Convolutoin" top: "y" }\n')
    line = one_line_error(netkit("time", "--model=%s" % net))
    assert "unknown layer type 'Convolutoin'" in line and "Convolution" in line
    assert str(net) in line and "layer 'x'" in line


def test_malformed_prototxt(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer {\n  name: "x"\n  type: "ReLU"\n  bottom "y"\n}\n')
    line = one_line_error(netkit("time", "--model", str(net)))
    assert "%s:4:" % net in line


def test_solver_without_net(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('base_lr: 0.01\nmax_iter: 10\n')
    line = one_line_error(netkit("train", "-solver", str(solver)))
    assert str(solver) in line and "no net" in line


def test_missing_solver_file(tmp_path):
    line = one_line_error(netkit("train", "--solver", str(tmp_path / "nope.prototxt")))
    assert "nope.prototxt" in line


def test_missing_lmdb_names_the_path(tmp_path):
    net = open(os.path.join(ROOT, "examples", "mnist", "lenet_train_test.prototxt")).read()
    (tmp_path / "net.prototxt").write_text(net.replace("examples/mnist", str(tmp_path)))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s/net.prototxt"\nbase_lr: 0.01\nmax_iter: 1\n' % tmp_path)
    line = one_line_error(netkit("train", "--solver", str(solver)))
    assert str(tmp_path / "mnist_train_lmdb") in line


def test_missing_hdf5_list_names_the_path(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "HDF5Data" top: "data" top: "label"\n'
                   '  hdf5_data_param { source: "%s/nope.txt" batch_size: 2 } }\n' % tmp_path)
    line = one_line_error(netkit("time", "--model", str(net)))
    assert str(tmp_path / "nope.txt") in line


def test_weights_that_do_not_fit_say_rename(tmp_path):
    small = open(os.path.join(ROOT, "examples", "mnist", "lenet.prototxt")).read()
    from netkit import TEST, Net
    Net(small, TEST).save(str(tmp_path / "w.caffemodel"))
    (tmp_path / "big.prototxt").write_text(small.replace("num_output: 500", "num_output: 400"))
    line = one_line_error(netkit("test", "--model", str(tmp_path / "big.prototxt"),
                                 "--weights", str(tmp_path / "w.caffemodel")))
    assert "layer 'ip1'" in line and "rename the layer" in line


def test_help_lists_commands():
    out = netkit("--help").stdout
    for cmd in ("train", "test", "time", "device_query", "convert_mnist_data"):
        assert cmd in out


def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [l for l in f.read().splitlines() if l.startswith("python3 -m venv")]
    assert len(ci) == 1 and ("    " + ci[0]) in readme.splitlines()


def test_in_process_main_leaves_the_log_on_the_current_stderr(tmp_path, capsys):
    """A script calling netkit.tools.cli.main() with stderr redirected for the call, then
    using netkit as a library: later log lines go to the stderr of their moment, not to the
    (closed) stream of the call."""
    import contextlib
    import io

    from netkit.log import logger
    from netkit.tools.cli import main
    model = tmp_path / "m.prototxt"
    model.write_text('layer { name: "x" type: "DummyData" top: "x" dummy_data_param '
                     '{ shape { dim: 2 dim: 3 } } }\n')
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        with io.StringIO() as err, contextlib.redirect_stderr(err):
            assert main(["time", "--model", str(model), "--iterations", "1"]) in (0, None)
            assert "Average Forward pass" in err.getvalue()
        logger.info("after the call")
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "after the call" in err and "Logging error" not in err, err
