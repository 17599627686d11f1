"""The `netkit` command as a user runs it: Caffe's flag spellings, one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from netkit.tools.cli import normalize_argv, parse_gpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def netkit(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "netkit"] + list(args), cwd=cwd,
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


DUMMY_NET = ('layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param { '
             'shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" } '
             'data_filler { type: "constant" value: 1 } } }\n'
             'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
             'inner_product_param { num_output: 2 weight_filler { type: "%s" } } }\n'
             'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }\n'
             'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "y" top: "acc" }\n')


def test_filler_typo_names_file_and_layer(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(DUMMY_NET % "xavierr")
    line = one_line_error(netkit("time", "-model", str(net), "-iterations", "1"))
    assert "%s: layer 'ip' (type InnerProduct): unknown filler type 'xavierr'" % net in line
    assert "did you mean 'xavier'" in line


@pytest.mark.parametrize("command", ["test", "time"])
@pytest.mark.parametrize("count", ["0", "-5"])
def test_iterations_must_be_positive(tmp_path, command, count):
    net = tmp_path / "net.prototxt"
    net.write_text(DUMMY_NET % "xavier")
    result = netkit(command, "-model", str(net), "-iterations", count)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Invalid value for '--iterations'" in result.stderr


def test_test_iter_zero_tests_nothing(tmp_path):
    """test_iter: 0 runs the test pass with no batches; Caffe then prints no outputs."""
    net = tmp_path / "net.prototxt"
    net.write_text(DUMMY_NET % "xavier")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" test_iter: 0 test_interval: 1 base_lr: 0.1 lr_policy: "fixed" '
                      'max_iter: 2 display: 1 snapshot_after_train: false' % net)
    result = netkit("train", "-solver", str(solver))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Testing net (#0)" in result.stderr and "Test net output" not in result.stderr


def test_python_layer_without_reshape_names_file_and_layer(tmp_path):
    (tmp_path / "halfdone.py").write_text(
        "import netkit\n"
        "class NoReshape(netkit.Layer):\n"
        "    def setup(self, bottom, top):\n"
        "        pass\n"
        "    def forward(self, bottom, top):\n"
        "        pass\n")
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                   'layer { name: "p" type: "Python" bottom: "x" top: "y" python_param { '
                   'module: "halfdone" layer: "NoReshape" } }\n')
    line = one_line_error(netkit("time", "-model", str(net), "-iterations", "1", cwd=tmp_path))
    assert "%s: layer 'p' (type Python): layer class NoReshape does not implement reshape" \
        % net in line


def test_classify_errors_are_one_line(tmp_path):
    cv2 = pytest.importorskip("cv2")
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                      'dim: 1 dim: 3 dim: 6 dim: 6 } } }\nlayer { name: "fc" type: '
                      '"InnerProduct" bottom: "data" top: "fc" inner_product_param { '
                      'num_output: 2 } }\nlayer { name: "prob" type: "Softmax" bottom: "fc" '
                      'top: "prob" }\n')
    weights = tmp_path / "w.caffemodel"
    from netkit import TEST, Net
    Net(str(deploy), TEST).save(str(weights))
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((10, 10, 3), np.uint8))
    train = tmp_path / "train.prototxt"
    train.write_text(DUMMY_NET % "xavier")
    cases = [(["-model", str(train)], "needs a deploy net"),
             (["-model", str(deploy), "-mean_value", "1,2"], "one value per input channel"),
             (["-model", str(deploy), "-channel_swap", "1,0"], "one value per input channel"),
             (["-model", str(deploy), "-images_dim", "4,4"], "larger than the 4x4 images"),
             (["-model", str(deploy), "-images_dim", "4,4,4"], "HEIGHT,WIDTH")]
    for args, message in cases:
        line = one_line_error(netkit("classify", *args, "-weights", str(weights), str(image)))
        assert message in line, (args, line)
    square = netkit("classify", "-model", str(deploy), "-weights", str(weights),
                    "-images_dim", "8", str(image))
    assert square.returncode == 0, square.stderr[-2000:]


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


def test_more_mistakes_are_one_clear_line(tmp_path):
    """Mistakes a Caffe user makes, each one line naming what the user gave (never a
    hidden temporary file) and found before any training."""
    import h5py
    net = tmp_path / "net.prototxt"
    net.write_text(DUMMY_NET % "xavier")

    def solver(extra):
        path = tmp_path / ("solver%d.prototxt" % len(list(tmp_path.glob("solver*"))))
        path.write_text('net: "%s" base_lr: 0.1 display: 1 %s' % (net, extra))
        return str(path)

    weights = tmp_path / "w.caffemodel"
    from netkit import TRAIN, Net
    Net(str(net), TRAIN).save(str(weights))
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros((4, 3), np.float32)
    h5net = tmp_path / "h5.prototxt"
    h5net.write_text('layer { name: "d" type: "HDF5Data" top: "x" hdf5_data_param { '
                     'source: "%s" batch_size: 2 } }\n' % h5)
    cases = [
        (("train", "-solver", solver('lr_policy: "fixed" max_iter: 2 snapshot: 1 '
                                     'snapshot_prefix: "%s"' % (tmp_path / "nodir" / "s"))),
         "cannot write to snapshot prefix"),
        (("train", "-solver", solver('lr_policy: "stepp" max_iter: 2')),
         "unknown lr_policy 'stepp'"),
        (("train", "-solver", solver('lr_policy: "fixed" max_iter: 2'), "-snapshot",
          str(weights)),
         "is a weights file; --snapshot resumes from a .solverstate"),
        (("test", "-model", str(weights), "-weights", str(net), "-iterations", "1"),
         "a binary file (a .caffemodel or .solverstate?), not prototxt text"),
        (("time", "-model", str(h5net), "-iterations", "1"), "is an HDF5 file; source names"),
        (("draw_net", str(net), str(tmp_path / "nodir" / "net.svg")),
         "cannot write %s: directory %s does not exist" % (tmp_path / "nodir" / "net.svg",
                                                           tmp_path / "nodir")),
        (("device_query", "-gpu", "-1"), "device_query needs a GPU id"),
    ]
    for args, message in cases:
        line = one_line_error(netkit(*args))
        assert message in line, (args, line)
    assert os.path.basename(cases[1][0][2]) in one_line_error(netkit(*cases[1][0]))
    ok = netkit("test", "-model", str(net), "-weights", "%s," % weights, "-iterations", "1")
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_run_executes_an_unchanged_pycaffe_script(tmp_path):
    """`netkit run script.py ARGS`: the script's `import caffe` family gives netkit and its
    arguments reach it untouched (single-dash flags included)."""
    import importlib.util
    if importlib.util.find_spec("caffe") is not None:
        pytest.skip("a real pycaffe is installed: the script would import it")
    net = tmp_path / "net.prototxt"
    net.write_text(DUMMY_NET % "xavier")
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "import caffe\n"
        "import caffe.draw\n"
        "from caffe.proto import caffe_pb2\n"
        "from caffe import layers as L\n"
        "caffe.set_mode_cpu()\n"
        "net = caffe.Net(sys.argv[1], caffe.TRAIN)\n"
        "assert isinstance(net.params['ip'], caffe._caffe.BlobVec)\n"
        "print('script args', sys.argv[1:], caffe_pb2.NetParameter.__name__,\n"
        "      sorted(net.forward()))\n")
    result = netkit("run", str(script), str(net), "-flag", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "script args ['%s', '-flag', 'x'] NetParameter ['acc', 'loss']" % net \
        in result.stdout, result.stdout
