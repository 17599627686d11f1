"""NetSpec / layers / params (pycaffe's net_spec): LeNet written in Python equals the
shipped prototxt, and the rules for names, fields, tops and enums."""
import os

import numpy as np
import pytest
from google.protobuf import text_format

import netkit as caffe
from netkit import layers as L
from netkit import netkit_pb2 as pb
from netkit import params as P
from netkit.net_spec import param_name_dict
from netkit.protoio import read_text

MNIST = os.path.join(os.path.dirname(__file__), "..", "examples", "mnist")


def lenet_body(n):
    """LeNet after the data layer, as in Caffe's examples/mnist."""
    learned = [dict(lr_mult=1), dict(lr_mult=2)]
    xavier, constant = dict(type="xavier"), dict(type="constant")
    n.conv1 = L.Convolution(n.data, param=learned, num_output=20, kernel_size=5, stride=1,
                            weight_filler=xavier, bias_filler=constant)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=learned, num_output=50, kernel_size=5, stride=1,
                            weight_filler=xavier, bias_filler=constant)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=learned, num_output=500,
                           weight_filler=xavier, bias_filler=constant)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, param=learned, num_output=10,
                           weight_filler=xavier, bias_filler=constant)


def mnist_data(phase, source, batch_size):
    return L.Data(name="mnist", include=dict(phase=phase), transform_param=dict(scale=0.00390625),
                  source=source, batch_size=batch_size, backend=P.Data.LMDB, ntop=2)


def lenet_train_test():
    """lenet_train_test.prototxt: the TEST data layer comes from a NetSpec of its own,
    since one NetSpec names each top once."""
    test = caffe.NetSpec()
    test.data, test.label = mnist_data(caffe.TEST, "examples/mnist/mnist_test_lmdb", 100)
    n = caffe.NetSpec()
    n.data, n.label = mnist_data(caffe.TRAIN, "examples/mnist/mnist_train_lmdb", 64)
    lenet_body(n)
    n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    body = n.to_proto()
    net = pb.NetParameter(name="LeNet")
    net.layer.extend([body.layer[0], test.to_proto().layer[0]] + list(body.layer[1:]))
    return net


def test_lenet_train_test_equals_the_example_prototxt():
    ours = lenet_train_test()
    theirs = read_text(os.path.join(MNIST, "lenet_train_test.prototxt"), pb.NetParameter())
    assert [l.name for l in ours.layer] == [l.name for l in theirs.layer]
    for a, b in zip(ours.layer, theirs.layer):
        assert a == b, "layer %s differs:\n%s\nvs\n%s" % (a.name, a, b)
    assert ours == theirs
    # The prototxt text parses back to the same message.
    assert text_format.Parse(str(ours), pb.NetParameter()) == ours


def lenet_deploy():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[64, 1, 28, 28]))
    n.conv1 = L.Convolution(n.data, num_output=20, kernel_size=5, stride=1)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=50, kernel_size=5, stride=1)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10)
    n.prob = L.Softmax(n.ip2)
    net = n.to_proto()
    net.name = "LeNet"
    return net


def test_generated_deploy_text_builds_the_same_net(tmp_path):
    ours = lenet_deploy()
    theirs = read_text(os.path.join(MNIST, "lenet.prototxt"), pb.NetParameter())
    assert ours == theirs
    path = tmp_path / "lenet.prototxt"
    path.write_text(str(ours))
    reference = caffe.Net(os.path.join(MNIST, "lenet.prototxt"), caffe.TEST)
    rs = np.random.RandomState(0)
    for blobs in reference.params.values():
        for b in blobs:
            b.data[...] = rs.standard_normal(b.shape).astype(np.float32) * 0.1
    weights = str(tmp_path / "lenet.caffemodel")
    reference.save(weights)
    net = caffe.Net(str(path), weights, caffe.TEST)
    assert list(net.blobs) == list(reference.blobs)
    x = rs.uniform(0, 1, (64, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["prob"], reference.forward(data=x)["prob"])


# -- naming --------------------------------------------------------------------------------
def test_unassigned_tops_get_type_numbered_names():
    data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    top = L.ReLU(L.Convolution(data, num_output=2, kernel_size=1))
    net = top.to_proto()
    assert [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer] == [
        ("Input1", "Input", [], ["Input1"]),
        ("Convolution1", "Convolution", ["Input1"], ["Convolution1"]),
        ("ReLU1", "ReLU", ["Convolution1"], ["ReLU1"])]
    assert caffe.to_proto(top) == net


def test_netspec_names_layers_tops_and_in_place_layers():
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    n.fc = L.InnerProduct(n.data, num_output=4, name="classifier")
    n.act = L.ReLU(n.fc, in_place=True)
    n["loss"] = L.SoftmaxWithLoss(n.act, n.label, loss_weight=0.5)
    n.silence = L.Silence(n.label, ntop=0)
    layers = {l.name: l for l in n.to_proto().layer}
    assert list(layers) == ["data", "classifier", "act", "loss", "silence"]
    assert list(layers["data"].top) == ["data", "label"]
    assert list(layers["act"].bottom) == list(layers["act"].top) == ["fc"]
    assert list(layers["loss"].bottom) == ["fc", "label"]
    assert list(layers["loss"].loss_weight) == [0.5]
    assert list(layers["silence"].top) == []
    assert n.loss is n["loss"]
    with pytest.raises(AttributeError, match="no top named 'missing'"):
        n.missing


# -- fields ----------------------------------------------------------------------------------
def test_fields_go_to_the_type_param_else_to_the_layer():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    n.up = L.Deconvolution(n.data, convolution_param=dict(num_output=2, kernel_size=[4],
                                                          stride=2, bias_term=False),
                           param=dict(lr_mult=0), propagate_down=[False])
    n.py = L.Python(n.up, module="mymodule", layer="MyLayer", param_str="'k': 1",
                    include=[dict(phase=caffe.TRAIN), dict(stage="x")])
    layers = {l.name: l for l in n.to_proto().layer}
    up = layers["up"]
    assert up.convolution_param.num_output == 2 and list(up.convolution_param.kernel_size) == [4]
    assert not up.convolution_param.bias_term
    assert [p.lr_mult for p in up.param] == [0] and list(up.propagate_down) == [False]
    py = layers["py"]
    assert (py.python_param.module, py.python_param.layer) == ("mymodule", "MyLayer")
    assert [r.HasField("phase") for r in py.include] == [True, False]
    assert list(py.include[1].stage) == ["x"]
    # No DeconvolutionParameter exists: a bare convolution field is no layer field either.
    with pytest.raises(AttributeError):
        L.Deconvolution(n.data, num_output=2).to_proto()


def test_param_name_dict_follows_parameter_message_types():
    names = param_name_dict()
    assert names["InnerProduct"] == "inner_product"
    assert names["Convolution"] == "convolution"
    assert names["TanH"] == "tanh"
    assert names["PReLU"] == "prelu"
    assert names["HDF5Data"] == "hdf5_data"
    assert names["LRN"] == "lrn"
    assert names["Normalize"] == "norm"  # SSD's NormalizeParameter lives in norm_param
    assert "Deconvolution" not in names and "SoftmaxWithLoss" not in names


def test_params_gives_enum_values_and_bad_input_fails():
    assert P.Pooling.MAX == pb.PoolingParameter.MAX
    assert P.Pooling.AVE == pb.PoolingParameter.AVE
    assert P.Eltwise.SUM == pb.EltwiseParameter.SUM
    assert P.Data.LMDB == pb.DataParameter.LMDB
    with pytest.raises(AttributeError):
        P.Pooling.MEDIAN
    with pytest.raises(TypeError, match="Convolution input 0 is not a Top"):
        L.Convolution(np.zeros(3), num_output=1)
    # protobuf also takes an enum value's name; an unknown name fails.
    assert L.Pooling(L.Input(), pool="AVE").to_proto().layer[1].pooling_param.pool == P.Pooling.AVE
    with pytest.raises(ValueError, match="MEDIAN"):
        L.Pooling(L.Input(), pool="MEDIAN").to_proto()


def test_a_field_no_message_has_says_where_it_belongs():
    """Deconvolution has no DeconvolutionParameter (its fields are convolution_param's):
    a flat keyword names the layer and the field and shows the dict form."""
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.up = L.Deconvolution(n.x, num_output=2)
    with pytest.raises(AttributeError, match=r"L.Deconvolution\(num_output=...\).*"
                                             r"convolution_param=dict\(num_output=2\)"):
        n.to_proto()
    n.up = L.Deconvolution(n.x, convolution_param=dict(num_output=2, kernel_size=2, stride=2))
    assert n.to_proto().layer[1].convolution_param.num_output == 2
