"""Net building and running: wiring, errors, sharing, need_backward, loss weights, weights I/O."""
import logging

import numpy as np
import pytest

from netkit import TEST, TRAIN, Net
from netkit.errors import NetkitError

MLP = """
name: "mlp"
force_backward: %s
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


def mlp(backend, phase=TRAIN, force=False):
    net = Net(MLP % ("true" if force else "false"), phase, backend=backend)
    rs = np.random.RandomState(3)
    net.blobs["data"].data[...] = backend.asarray(rs.standard_normal((4, 3, 2, 2)).astype(np.float32))
    net.blobs["label"].data[...] = backend.asarray(np.array([0, 2, 1, 2], np.float32))
    return net


def test_wiring_in_place_splits_and_outputs(backend):
    net = mlp(backend, TEST)
    assert net.layer_names == ["data", "label_data_1_split", "ip1", "relu", "ip2",
                               "ip2_ip2_0_split", "loss", "acc"]
    assert net.blobs["ip1"].shape == (4, 5)
    assert net.outputs == ["acc", "loss"]  # by name, as Caffe's std::set
    assert list(net.params) == ["ip1", "ip2"]
    out = net.forward()
    assert set(out) == {"loss", "acc"}
    relu = net.layers[net.layer_index("relu")]
    assert net.bottom_vecs[3][0] is net.top_vecs[3][0]  # in place
    assert relu.type == "ReLU"


def test_net_gradient_matches_finite_differences(backend):
    net = mlp(backend, force=True)
    be = backend
    net.clear_param_diffs()
    net.forward_backward()
    w = net.params["ip1"][0]
    analytic = be.asnumpy(w.diff).copy()
    data_grad = be.asnumpy(net.blobs["data"].diff).copy()
    host = be.asnumpy(w.data).copy()
    h = 1e-2
    for idx in [(0, 0), (2, 5), (4, 11)]:
        for sign, store in ((1, "p"), (-1, "m")):
            mod = host.copy()
            mod[idx] += sign * h
            w.data[...] = be.asarray(mod)
            if store == "p":
                plus = net.forward_layers()
            else:
                minus = net.forward_layers()
        w.data[...] = be.asarray(host)
        numeric = (plus - minus) / (2 * h)
        assert abs(numeric - analytic[idx]) <= 1e-3 * max(1, abs(numeric))
    assert np.abs(data_grad).sum() > 0  # force_backward reached the input


def test_backward_pruned_without_force(backend):
    net = mlp(backend)
    i = net.layer_index("ip1")
    assert net.layer_need_backward[i] and net.bottom_need_backward[i] == [False]
    assert net.bottom_need_backward[net.layer_index("loss")] == [True, False]


def test_lr_mult_zero_freezes_and_prunes(backend):
    text = MLP.replace('layer { name: "ip1" type: "InnerProduct"',
                       'layer { name: "ip1" type: "InnerProduct" param { lr_mult: 0 } '
                       'param { lr_mult: 0 }') % "false"
    net = Net(text, TRAIN, backend=backend)
    i = net.layer_index("ip1")
    assert not net.layer_need_backward[i]
    assert not net.layer_need_backward[net.layer_index("relu")]
    assert [p.lr_mult for p in net.learnable_params] == [0, 0, 1, 1]


def test_loss_weight_scales_loss_and_gradient(backend):
    base = mlp(backend)
    loss1 = base.forward_layers()
    text = MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 2.5 }') % "false"
    net = Net(text, TRAIN, backend=backend)
    net.copy_from(base.to_proto())
    net.blobs["data"].data[...] = base.blobs["data"].data
    net.blobs["label"].data[...] = base.blobs["label"].data
    assert net.forward_layers() == pytest.approx(2.5 * loss1, rel=1e-6)


def test_param_sharing_by_name_accumulates_diffs(backend):
    text = """
    layer { name: "data" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" }
            inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" } } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" }
            inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "ya" bottom: "yb" top: "loss" }
    """
    net = Net(text, TRAIN, backend=backend)
    assert net.params["ipa"][0] is net.params["ipb"][0]
    assert len(net.learnable_params) == 1
    rs = np.random.RandomState(0)
    a, b = rs.standard_normal((2, 3)), rs.standard_normal((2, 3))
    net.blobs["a"].data[...] = backend.asarray(a.astype(np.float32))
    net.blobs["b"].data[...] = backend.asarray(b.astype(np.float32))
    net.clear_param_diffs()
    net.forward_backward()
    W = backend.asnumpy(net.params["ipa"][0].data).astype(np.float64)
    r = (a - b) @ W.T
    expected = (r.T @ (a - b)) / 2  # d/dW of sum(r^2)/(2N), both uses accumulated
    np.testing.assert_allclose(backend.asnumpy(net.params["ipa"][0].diff), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("text,message", [
    ('layer { name: "x" type: "NoSuchLayer" top: "y" }', "unknown layer type 'NoSuchLayer' ("),
    ('layer { name: "r" type: "ReLU" bottom: "ghost" top: "y" }', "unknown bottom blob 'ghost'"),
    ('layer { name: "d" type: "Input" top: "y" input_param { shape { dim: 1 } } }\n'
     'layer { name: "e" type: "Input" top: "y" input_param { shape { dim: 1 } } }',
     "top blob 'y' is produced by more than one layer"),
])
def test_bad_nets_give_one_clear_error(text, message):
    with pytest.raises(NetkitError) as e:
        Net(text, TRAIN)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_prototxt_names_file_and_line(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  typo_field: 3\n}\n')
    with pytest.raises(NetkitError) as e:
        Net(str(path), TRAIN)
    assert str(e.value).startswith("%s:4:" % path)
    assert "typo_field" in str(e.value)


def test_comments_in_other_encodings_parse(tmp_path):
    """Published prototxts carry GBK or Latin-1 comments; Caffe parses bytes, so must we."""
    path = tmp_path / "gbk.prototxt"
    path.write_bytes('# 输入层\nname: "gbk"\nlayer { name: "in" type: "Input" top: "x" '
                     'input_param { shape { dim: 1 dim: 2 } } }  # 形状\n'.encode("gbk"))
    net = Net(str(path), TEST)
    assert net.name == "gbk" and net.blobs["x"].shape == (1, 2)


def test_save_and_copy_from_by_layer_name(tmp_path, backend):
    net = mlp(backend)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    other = Net(MLP % "false", TEST, weights=path, backend=backend)
    for name in ("ip1", "ip2"):
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(backend.asnumpy(a.data), backend.asnumpy(b.data))


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_copy_from_logs_ignored_source_layers_and_warns_when_nothing_fits(tmp_path, caplog,
                                                                          suffix):
    """Caffe logs every source layer the net lacks; netkit also warns when no layer at all
    received weights (renamed layers, or the wrong file, look like a fine-tune otherwise)."""
    net = Net(MLP % "false", TRAIN)
    path = str(tmp_path / ("w" + suffix))
    net.save_hdf5(path) if suffix.endswith(".h5") else net.save(path)
    caplog.set_level(logging.INFO, logger="netkit")
    Net(MLP.replace('name: "ip2"', 'name: "ip2_new"') % "false", TRAIN, weights=path)
    assert "Ignoring source layer ip2" in caplog.text
    assert "nothing was copied" not in caplog.text
    caplog.clear()
    renamed = MLP.replace('name: "ip1"', 'name: "fc1"').replace('name: "ip2"', 'name: "fc2"')
    Net(renamed % "false", TRAIN, weights=path)
    assert "Ignoring source layer ip1" in caplog.text
    assert [r.levelname for r in caplog.records if "nothing was copied" in r.message] == \
        ["WARNING"]


def test_copy_from_shape_mismatch_says_rename(tmp_path):
    net = Net(MLP % "false", TRAIN)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    other = MLP.replace("num_output: 5", "num_output: 6") % "false"
    with pytest.raises(NetkitError, match="rename the layer"):
        Net(other, TRAIN, weights=path)


def test_legacy_input_fields_become_an_input_layer():
    net = Net('name: "d" input: "data" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5\n'
              'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', TEST)
    assert net.blobs["data"].shape == (2, 3, 4, 5)
    assert net.layers[0].type == "Input"


@pytest.mark.parametrize("text", [
    """layer { name: "in" type: "Input" top: "x" top: "label"
               input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
       layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
               inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
       layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }""",
    # V1, as BVLC's early train nets were written
    """input: "x" input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
       input: "label" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
       layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "ip"
                inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
       layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" }"""])
def test_loss_layer_without_top_gets_an_anonymous_one(backend, text):
    """Caffe's AutoTopBlobs: the loss still counts (and trains), but is no net output."""
    net = Net(text, TRAIN, backend=backend)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    net.blobs["x"].data[...] = backend.asarray(x.reshape(net.blobs["x"].shape))
    net.blobs["label"].data[...] = backend.asarray(np.float32([1, 3]).reshape(
        net.blobs["label"].shape))
    loss = net.forward_layers()
    w = backend.asnumpy(net.params["ip"][0].data)
    logits = x @ w.T
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-(logp[0, 1] + logp[1, 3]) / 2, rel=1e-5)
    assert net.outputs == []
    net.clear_param_diffs()
    net.backward_layers()
    assert np.abs(backend.asnumpy(net.params["ip"][0].diff)).sum() > 0
