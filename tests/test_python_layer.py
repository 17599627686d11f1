"""Python layers: the class named by python_param, found next to the prototxt or in the
current directory, driven by the Net like any layer (param_str, phase, learnable blobs with
lr_mult), pycaffe's spelling, on every backend; one-line errors for a wrong module/class."""
import importlib.util
import os
import sys
import textwrap
import uuid

import numpy as np
import pytest
from google.protobuf import text_format

import netkit
from layertest import blobs, check_gradient, make_layer, run_forward, tops
from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.pycaffe import PYCAFFE_MODULES
from netkit.net import Net
from netkit.solvers import SGDSolver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCALE_SHIFT = '''
import netkit


class ScaleShift(netkit.Layer):
    """top = x * float(param_str) + bias[c]; bias is a learnable blob, 0.5 at setup."""

    def setup(self, bottom, top):
        self.scale = float(self.param_str)
        self.seen_phase = self.phase
        %s

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def _bias(self, ndim):
        return self.blobs[0].data.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = x * self.scale + self._bias(x.ndim)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if self.param_propagate_down[0]:
            axes = (0,) + tuple(range(2, dy.ndim))
            self.blobs[0].diff[...] += dy.sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * self.scale
'''
ADD_BLOB = ("bias = self.blobs.add_blob(bottom[0].shape[1])\n"
            "        bias.data[...] = 0.5")
BY_LIST = ("self.blobs = [netkit.Blob((bottom[0].shape[1],), self.backend)]\n"
           "        self.blobs[0].data[...] = 0.5")


@pytest.fixture
def modules(monkeypatch):
    """Write uniquely named Python modules; sys.path and sys.modules are restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    written = []

    def write(directory, source):
        name = "nk_layer_%s" % uuid.uuid4().hex[:10]
        (directory / ("%s.py" % name)).write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def python_layer_text(module, layer, param_str="", extra=""):
    return ('type: "Python" python_param { module: "%s" layer: "%s" param_str: "%s" %s }'
            % (module, layer, param_str, extra))


@pytest.mark.parametrize("blob_setup", [ADD_BLOB, BY_LIST], ids=["add_blob", "list"])
def test_python_layer_forward_and_gradient(backend, tmp_path, monkeypatch, modules,
                                           blob_setup):
    """Found in the current directory; param_str read; gradient of bottom and blob."""
    module = modules(tmp_path, SCALE_SHIFT % blob_setup)
    monkeypatch.chdir(tmp_path)
    text = python_layer_text(module, "ScaleShift", "1.5")
    x = np.random.RandomState(3).standard_normal((2, 3, 2, 2)).astype(np.float32)
    layer = make_layer(text, backend)
    assert type(layer).__name__ == "ScaleShift" and isinstance(layer, netkit.Layer)
    assert layer.type == "Python"
    (y,) = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(y, x * 1.5 + 0.5, rtol=1e-6)
    check_gradient(make_layer(text, backend), blobs(backend, x), tops(backend, 1))


def test_python_layer_sees_phase_and_layer_param(tmp_path, monkeypatch, modules):
    module = modules(tmp_path, SCALE_SHIFT % ADD_BLOB)
    monkeypatch.chdir(tmp_path)
    for phase in (TRAIN, TEST):
        layer = make_layer(python_layer_text(module, "ScaleShift", "2"), "cpu", phase)
        run_forward(layer, blobs(layer.backend, np.ones((1, 2))), tops(layer.backend, 1))
        assert layer.seen_phase == phase
        assert layer.layer_param.python_param.layer == "ScaleShift"
        assert layer.param_str == "2"


NET = """
name: "py"
layer { name: "in" type: "Input" top: "x" top: "y"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 } } }
layer { name: "scale" type: "Python" bottom: "x" top: "s"
        param { lr_mult: %s }
        python_param { module: "%s" layer: "ScaleShift" param_str: "2" %s } }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "y" top: "loss" }
"""


def test_python_layer_module_next_to_the_prototxt(tmp_path, monkeypatch, modules):
    """The prototxt's directory is searched even when the current directory is elsewhere;
    share_in_parallel is accepted."""
    net_dir, elsewhere = tmp_path / "model", tmp_path / "run"
    net_dir.mkdir()
    elsewhere.mkdir()
    module = modules(net_dir, SCALE_SHIFT % ADD_BLOB)
    (net_dir / "net.prototxt").write_text(NET % (1, module, "share_in_parallel: true"))
    monkeypatch.chdir(elsewhere)
    net = Net(str(net_dir / "net.prototxt"), TEST)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = net.forward(x=x, y=np.zeros((4, 3), np.float32), blobs=["s"])
    np.testing.assert_allclose(out["s"], 2 * x + 0.5)


@pytest.mark.parametrize("lr_mult", [2, 0])
def test_python_layer_blobs_are_learned_with_lr_mult(backend, tmp_path, monkeypatch,
                                                     modules, lr_mult):
    """One SGD step moves the Python layer's blob by base_lr * lr_mult * gradient."""
    module = modules(tmp_path, SCALE_SHIFT % ADD_BLOB)
    monkeypatch.chdir(tmp_path)
    param = text_format.Parse('base_lr: 0.1 lr_policy: "fixed" max_iter: 1 '
                              'snapshot_prefix: "unused"', pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(NET % (lr_mult, module, ""),
                                               pb.NetParameter()))
    solver = SGDSolver(param, backend=backend)
    net = solver.net
    rs = np.random.RandomState(5)
    x = rs.standard_normal((4, 3)).astype(np.float32)
    y = rs.standard_normal((4, 3)).astype(np.float32)
    net.blobs["x"].data[...] = backend.asarray(x)
    net.blobs["y"].data[...] = backend.asarray(y)
    assert [p.lr_mult for p in net.learnable_params] == [lr_mult]
    solver.step(1)
    grad = (2 * x + 0.5 - y).sum(axis=0) / 4
    bias = backend.asnumpy(net.params["scale"][0].data)
    np.testing.assert_allclose(bias, 0.5 - 0.1 * lr_mult * grad, rtol=1e-5, atol=1e-7)


def test_pycaffe_example_loss(backend, monkeypatch):
    """examples/python_layer: `import netkit as caffe`, top[0].reshape(1),
    top[0].data[...] = ..., bottom[i].diff[...] = ... give EuclideanLoss's numbers."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(os.path.dirname(ROOT))
    try:
        net = Net(os.path.join(ROOT, "examples", "python_layer", "linreg.prototxt"), TRAIN,
                  backend=backend)
        loss = net.forward()["loss"]
        net.backward()
    finally:
        sys.modules.pop("pyloss", None)
    ip = backend.asnumpy(net.blobs["ip"].data)
    target = backend.asnumpy(net.blobs["target"].data)
    np.testing.assert_allclose(backend.asnumpy(loss), [((ip - target) ** 2).sum() / 20],
                               rtol=1e-5)
    np.testing.assert_allclose(backend.asnumpy(net.blobs["ip"].diff), (ip - target) / 10,
                               rtol=1e-5)
    assert net.output_loss_weight("loss") == 1


def build(tmp_path, python_param):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                    'layer { name: "py" type: "Python" bottom: "x" top: "z" '
                    'python_param { %s } }\n' % python_param)
    with pytest.raises(NetkitError) as info:
        Net(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("%s: layer 'py' (type Python): " % path)
    return message


def test_python_layer_errors(tmp_path, monkeypatch, modules):
    monkeypatch.chdir(tmp_path)
    message = build(tmp_path, 'module: "no_such_module_here" layer: "X"')
    assert "python_param.module 'no_such_module_here' not found" in message
    assert str(tmp_path) in message
    assert "module must name" in build(tmp_path, 'layer: "X"')
    module = modules(tmp_path, SCALE_SHIFT % ADD_BLOB + "\nNOT_A_LAYER = 3\n")
    assert "layer must name the layer class in module '%s'" % module in build(
        tmp_path, 'module: "%s"' % module)
    message = build(tmp_path, 'module: "%s" layer: "Nope"' % module)
    assert "python_param.layer 'Nope' not found in module '%s'" % module in message
    message = build(tmp_path, 'module: "%s" layer: "NOT_A_LAYER"' % module)
    assert "'%s.NOT_A_LAYER' is not a netkit.Layer subclass" % module in message


PYCAFFE_LOSS = '''
import caffe
import numpy as np
from caffe.proto import caffe_pb2


class HalfSquaredLoss(caffe.Layer):
    """As pycaffe layers are written: numpy on .data/.diff, num, count, reshape(1)."""

    def setup(self, bottom, top):
        assert self.phase == caffe.TRAIN and caffe_pb2.TRAIN == caffe.TRAIN

    def reshape(self, bottom, top):
        assert bottom[0].count == bottom[1].count
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * self.diff / bottom[i].num
'''


def test_unmodified_pycaffe_module_imports_caffe(tmp_path, monkeypatch, modules):
    """A layer module written for pycaffe (`import caffe`, `from caffe.proto import
    caffe_pb2`) runs as it is where no real pycaffe is installed."""
    for name in PYCAFFE_MODULES:  # left by earlier tests' Python layers
        sys.modules.pop(name, None)
    if importlib.util.find_spec("caffe") is not None:
        pytest.skip("a real pycaffe is installed: `import caffe` is that one")
    monkeypatch.chdir(tmp_path)
    module = modules(tmp_path, PYCAFFE_LOSS)
    net_text = ('force_backward: true '
                'layer { name: "in" type: "Input" top: "a" top: "b" input_param { '
                'shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } } }\n'
                'layer { name: "loss" type: "Python" bottom: "a" bottom: "b" top: "loss" '
                'loss_weight: 1 python_param { module: "%s" layer: "HalfSquaredLoss" } }'
                % module)
    try:
        net = Net(net_text, TRAIN, backend="cpu")
        a, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((3, 2), np.float32)
        net.blobs["a"].data[...], net.blobs["b"].data[...] = a, b
        assert net.forward()["loss"] == pytest.approx(((a - b) ** 2).sum() / 6)
        net.backward()
        np.testing.assert_allclose(net.blobs["a"].diff, (a - b) / 3)
    finally:
        for name in PYCAFFE_MODULES:
            sys.modules.pop(name, None)


def test_python_layer_refuses_netkits_own_entry(tmp_path, monkeypatch, modules):
    module = modules(tmp_path, "from netkit.layers.python_layer import PythonLayer\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerSetupError, match="must be the user's layer class"):
        make_layer(python_layer_text(module, "PythonLayer"), "cpu")


def test_errors_raised_in_forward_name_the_file_and_layer(tmp_path, monkeypatch, modules):
    """A NetkitError from a layer's forward (data it cannot take) says where it happened."""
    monkeypatch.chdir(tmp_path)
    module = modules(tmp_path, "import netkit\n\nclass Picky(netkit.Layer):\n"
                               "    def setup(self, bottom, top): pass\n"
                               "    def reshape(self, bottom, top): top[0].reshape(1)\n"
                               "    def forward(self, bottom, top):\n"
                               "        raise netkit.NetkitError('label 7 is out of range')\n")
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                    'layer { name: "py" type: "Python" bottom: "x" top: "z" '
                    'python_param { module: "%s" layer: "Picky" } }\n' % module)
    net = Net(str(path), TEST)
    with pytest.raises(NetkitError) as info:
        net.forward()
    assert str(info.value) == ("%s: layer 'py' (type Python): label 7 is out of range" % path)
