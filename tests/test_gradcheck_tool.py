"""`netkit layer_list` and `netkit gradcheck`, and the library checker behind the latter
(netkit.gradcheck): Caffe's rule, the same numbers as the test suite's checker, kinks,
reseeding for stochastic layers, in-place layers checked on their real input."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import netkit.layers  # noqa: F401  (registers every layer type)
from layertest import blobs, check_gradient, make_layer, tops
from netkit.gradcheck import check_layer, check_net
from netkit.layer import TRAIN
from netkit.net import Net
from netkit.registry import layers
from netkit.tools.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Python layers for the nets below: a correct one, one whose gradient is off by a factor,
# and an in-place one that remembers the input it saw.
MODULE = '''
import netkit


class Scaled(netkit.Layer):
    """y = 3 x; backward reports float(param_str) * 3 dy (1 is right)."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * 3

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * (3 * float(self.param_str))


class Square(netkit.Layer):
    """y = x * x, in place; keeps the input it saw last."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        self.input = bottom[0].data.copy()
        top[0].data[...] = self.input * self.input

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * 2 * self.input
'''

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 2 dim: 5 dim: 5 } } }
layer { name: "label" type: "DummyData" top: "label"
        dummy_data_param { shape { dim: 2 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "scaled" type: "Python" bottom: "conv" top: "scaled"
        python_param { module: "gc_layers" layer: "Scaled" param_str: "%s" } }
layer { name: "square" type: "Python" bottom: "scaled" top: "scaled"
        python_param { module: "gc_layers" layer: "Square" } }
layer { name: "drop" type: "Dropout" bottom: "scaled" top: "dropped" }
layer { name: "ip" type: "InnerProduct" bottom: "dropped" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def model(tmp_path, monkeypatch):
    """A prototxt with its Python layer module beside it; `factor` makes Scaled wrong."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "gc_layers.py").write_text(textwrap.dedent(MODULE))

    def write(factor="1"):
        path = tmp_path / ("net_%s.prototxt" % factor)
        path.write_text(NET % factor)
        return str(path)

    yield write
    sys.modules.pop("gc_layers", None)


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.strip().splitlines()


def test_layer_list_prints_every_registered_type_sorted(capsys):
    code, lines, _ = run(capsys, "layer_list")
    assert code == 0
    assert lines == sorted(layers.names())
    for name in ("Python", "InfogainLoss", "ContrastiveLoss", "Convolution"):
        assert name in lines


def test_layer_list_through_the_installed_command():
    result = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "layer_list"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SoftmaxWithLoss" in result.stdout.split()


def test_gradcheck_skips_relu_kinks_by_default(capsys, tmp_path):
    """Without --kink_range, inputs within a step of ReLU's kink are skipped (the numeric
    derivative straddles it there), so a correct ReLU net passes; --kink_range 0 checks
    them and may fail; zero weights put every ReLU input at the kink: SKIP."""
    net = tmp_path / "relu.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 '
                   'dim: 6 } } }\nlayer { name: "ip" type: "InnerProduct" bottom: "x" '
                   'top: "h" inner_product_param { num_output: 8 weight_filler { type: '
                   '"%s" } } }\nlayer { name: "relu" type: "ReLU" bottom: "h" top: "r" }\n')
    text = net.read_text()
    net.write_text(text % "gaussian")
    code, lines, err = run(capsys, "gradcheck", "--model", str(net), "--stepsize", "0.5")
    assert code == 0, (lines, err)
    relu = [line for line in lines if line.startswith("relu (ReLU)")]
    assert relu and relu[0].endswith("PASS") and "at the kink" in relu[0]
    code, lines, _ = run(capsys, "gradcheck", "--model", str(net), "--stepsize", "0.5",
                         "--kink_range", "0")
    assert code == 1 and any(l.startswith("relu (ReLU)") and ": FAIL" in l
                             for l in lines), lines
    net.write_text(text % "constant")
    code, lines, _ = run(capsys, "gradcheck", "--model", str(net))
    assert code == 0 and [l for l in lines if l.startswith("relu")][0].endswith("SKIP"), lines


def test_gradcheck_passes_on_a_correct_net(capsys, model):
    code, lines, err = run(capsys, "gradcheck", "--model", model(), "--kink_range", "0.02",
                           "--max_checks", "30")
    assert code == 0, err
    checked = {" ".join(line.split(":")[0].split()[:3]) for line in lines}
    assert checked == {
        "conv (Convolution) bottom[0]", "conv (Convolution) param[0]",
        "conv (Convolution) param[1]", "relu (ReLU) bottom[0]",
        "scaled (Python) bottom[0]", "square (Python) bottom[0]", "drop (Dropout) bottom[0]",
        "ip (InnerProduct) bottom[0]", "ip (InnerProduct) param[0]",
        "ip (InnerProduct) param[1]", "loss (SoftmaxWithLoss) bottom[0]",
        # Splits inserted where a blob feeds two layers are layers of the net too.
        "label_label_0_split (Split) bottom[0]", "ip_ip_0_split (Split) bottom[0]"}
    assert all(line.endswith(": PASS") for line in lines), lines
    assert "relu (ReLU) bottom[0] 'conv': worst relative error" in "\n".join(lines)


def test_gradcheck_reports_a_wrong_backward(capsys, model):
    code, lines, err = run(capsys, "gradcheck", "-model", model("1.01"), "-layer", "scaled",
                           "-layer", "acc")
    assert code == 1
    assert lines[0].startswith("scaled (Python) bottom[0] 'conv': worst relative error")
    assert ": FAIL (element" in lines[0]
    assert lines[1] == "acc (Accuracy): nothing to check: no backward"
    assert err[-1] == "netkit: error: gradient check failed for 1 of 1 blobs (threshold 0.001)"
    # A looser threshold lets the 1% error through.
    code, lines, _ = run(capsys, "gradcheck", "--model", model("1.01"), "--layer", "scaled",
                         "--threshold", "0.02")
    assert code == 0 and lines[0].endswith(": PASS")


def test_gradcheck_unknown_layer_is_one_line(capsys, model):
    code, _, err = run(capsys, "gradcheck", "--model", model(), "--layer", "nope")
    assert code == 1
    assert err[-1] == "netkit: error: no layer named 'nope' in net 'small'"


def test_check_net_uses_the_real_input_of_in_place_layers(model):
    """`square` runs in place on `scaled`; it must be checked on 3 * relu(conv), which
    is >= 0, not on its own output, and Dropout (TRAIN) sees one mask throughout."""
    net = Net(model(), TRAIN)
    checks = {c.name: c for c in check_net(net, ["relu", "square", "drop"], max_checks=20,
                                           kink_range=0.02)}
    square = net.layers[net.layer_index("square")]
    expected = 3 * net.backend.asnumpy(net.blobs["conv"].data)  # conv holds relu(conv)
    seen = net.backend.asnumpy(square.input)  # the last check perturbed one element
    np.testing.assert_allclose(seen, expected, rtol=1e-5, atol=0.011)
    assert np.abs(seen - expected).max() > 0.009
    relu_input = checks["relu"]
    assert relu_input.results[0].at_kink < relu_input.results[0].count
    assert all(r.passed and r.checked for c in checks.values() for r in c.results)


def test_check_net_without_reseeding_would_fail_for_dropout(model, monkeypatch):
    """The reseed before every forward (Caffe's checker) is what makes Dropout checkable."""
    import netkit.gradcheck as gc
    monkeypatch.setattr(gc, "_reseed", lambda backend, seed: None)
    net = Net(model(), TRAIN)
    (check,) = check_net(net, ["drop"], max_checks=20)
    assert not check.results[0].passed


@pytest.mark.parametrize("text,shape,options", [
    ('type: "InnerProduct" inner_product_param { num_output: 3 '
     'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }',
     (2, 4), {}),
    ('type: "ReLU"', (3, 5), {"kink": 0.0, "kink_range": 0.05}),
])
def test_check_layer_matches_the_suites_checker(backend, text, shape, options):
    """Same objective, sample and rule as tests/layertest.py: the same worst error."""
    x = np.random.RandomState(2).standard_normal(shape).astype(np.float32)
    layer = make_layer(text, backend)
    results = check_layer(layer, blobs(backend, x), tops(backend, 1), setup=True, **options)
    worst = check_gradient(make_layer(text, backend), blobs(backend, x), tops(backend, 1),
                           **options)
    assert all(r.passed for r in results)
    np.testing.assert_allclose(max(r.worst for r in results), worst, rtol=1e-6)
    if options:
        assert results[0].at_kink == int((np.abs(x) < 0.05).sum())
        assert results[0].checked == x.size - results[0].at_kink


RULE_MODULE = '''
import netkit


class Linear(netkit.Layer):
    """y = a x with a from param_str "a,f"; backward reports f * a dy (f = 1 is right)."""

    def setup(self, bottom, top):
        self.a, self.f = (float(v) for v in self.param_str.split(","))

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.a

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff * (self.a * self.f)
'''


def test_check_layer_rule_is_relative_above_one_and_absolute_below(tmp_path, monkeypatch):
    """|a - n| <= threshold * max(|a|, |n|, 1): a 1% error in gradients of size about 3
    fails at threshold 1e-3; the same 1% error in gradients of size about 3e-3 is an
    absolute error near 3e-5 and passes."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gc_rule.py").write_text(textwrap.dedent(RULE_MODULE))
    x = np.random.RandomState(4).standard_normal((2, 3)).astype(np.float32)
    results = {}
    try:
        for a in ("3", "3e-3"):
            layer = make_layer('type: "Python" python_param { module: "gc_rule" '
                               'layer: "Linear" param_str: "%s,1.01" }' % a, "cpu")
            (results[a],) = check_layer(layer, blobs(layer.backend, x),
                                        tops(layer.backend, 1), setup=True)
    finally:
        sys.modules.pop("gc_rule", None)
    assert not results["3"].passed and 0.005 < results["3"].worst < 0.011
    assert results["3e-3"].passed and results["3e-3"].worst < 1e-4
