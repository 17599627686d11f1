"""Old Caffe formats upgraded on every read: V0 and V1 nets (text and .caffemodel), data
transformation fields, input fields, BatchNorm param specs, solver_type; and the three
upgrade_* commands. Expected results are the ones Caffe's own upgrade tests state."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from netkit import TEST, TRAIN, Net
from netkit import netkit_pb2 as pb
from netkit.data.datum import array_to_datum, write_lmdb
from netkit.errors import NetkitError
from netkit.protoio import write_binary
from netkit.upgrade import (fold_v0_padding_layers, net_needs_upgrade, upgrade_net,
                            upgrade_solver, upgrade_v0_net, upgrade_v1_net)
from netkit.weights import copy_trained_layers, load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(text, message=None):
    return text_format.Parse(text, message or pb.NetParameter())


# -- Caffe's upgrade tests: V0 -> V1 -> V2 ----------------------------------------------------
V0_CAFFENET = """
name: 'CaffeNet'
layers { layer { name: 'data' type: 'data' source: '/home/jiayq/Data/ILSVRC12/train-leveldb'
                 meanfile: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
                 batchsize: 256 cropsize: 227 mirror: true }
         top: 'data' top: 'label' }
layers { layer { name: 'pad1' type: 'padding' pad: 2 } bottom: 'data' top: 'pad1' }
layers { layer { name: 'conv1' type: 'conv' num_output: 96 kernelsize: 11 stride: 4
                 weight_filler { type: 'gaussian' std: 0.01 }
                 bias_filler { type: 'constant' value: 0. }
                 blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
         bottom: 'pad1' top: 'conv1' }
layers { layer { name: 'fc8' type: 'innerproduct' num_output: 1000
                 weight_filler { type: 'gaussian' std: 0.01 }
                 bias_filler { type: 'constant' value: 0 }
                 blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
         bottom: 'conv1' top: 'fc8' }
layers { layer { name: 'loss' type: 'softmax_loss' } bottom: 'fc8' bottom: 'label' }
"""

V1_CAFFENET = """
name: 'CaffeNet'
layers { name: 'data' type: DATA
         data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }
         transform_param { crop_size: 227 mirror: true
                           mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
         top: 'data' top: 'label' }
layers { name: 'conv1' type: CONVOLUTION
         convolution_param { num_output: 96 kernel_size: 11 stride: 4 pad: 2
                             weight_filler { type: 'gaussian' std: 0.01 }
                             bias_filler { type: 'constant' value: 0. } }
         blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
         bottom: 'data' top: 'conv1' }
layers { name: 'fc8' type: INNER_PRODUCT
         inner_product_param { num_output: 1000
                               weight_filler { type: 'gaussian' std: 0.01 }
                               bias_filler { type: 'constant' value: 0 } }
         blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
         bottom: 'conv1' top: 'fc8' }
layers { name: 'loss' type: SOFTMAX_LOSS bottom: 'fc8' bottom: 'label' }
"""

V2_CAFFENET = """
name: 'CaffeNet'
layer { name: 'data' type: 'Data'
        data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }
        transform_param { crop_size: 227 mirror: true
                          mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
        top: 'data' top: 'label' }
layer { name: 'conv1' type: 'Convolution'
        convolution_param { num_output: 96 kernel_size: 11 stride: 4 pad: 2
                            weight_filler { type: 'gaussian' std: 0.01 }
                            bias_filler { type: 'constant' value: 0. } }
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        bottom: 'data' top: 'conv1' }
layer { name: 'fc8' type: 'InnerProduct'
        inner_product_param { num_output: 1000
                              weight_filler { type: 'gaussian' std: 0.01 }
                              bias_filler { type: 'constant' value: 0 } }
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        bottom: 'conv1' top: 'fc8' }
layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc8' bottom: 'label' }
"""


def test_caffenet_v0_to_v1_to_v2_as_caffe():
    v1 = upgrade_v0_net(parse(V0_CAFFENET))
    assert v1 == parse(V1_CAFFENET)
    assert upgrade_v1_net(v1) == parse(V2_CAFFENET)
    assert upgrade_net(parse(V0_CAFFENET)) == parse(V2_CAFFENET)


def test_padding_layer_folds_into_conv_and_is_idempotent():
    net = parse(V0_CAFFENET)
    folded = fold_v0_padding_layers(net)
    assert [v.layer.name for v in folded] == ["data", "conv1", "fc8", "loss"]
    assert folded[1].layer.pad == 2 and list(folded[1].bottom) == ["data"]
    again = pb.NetParameter(layers=folded)
    assert fold_v0_padding_layers(again) == folded


V0_ALL_PARAMS = """
name: 'CaffeNet'
input: 'input_data' input_dim: 64 input_dim: 3 input_dim: 32 input_dim: 32
layers { layer { name: 'data' type: 'data' source: '/train-leveldb' meanfile: '/mean'
                 batchsize: 256 cropsize: 227 mirror: true scale: 0.25 rand_skip: 73 }
         top: 'data' top: 'label' }
layers { layer { name: 'images' type: 'images' source: '/train-images' meanfile: '/mean'
                 batchsize: 256 cropsize: 227 mirror: true scale: 0.25 rand_skip: 73
                 shuffle_images: true new_height: 40 new_width: 30 }
         top: 'images_data' top: 'images_label' }
layers { layer { name: 'window_data' type: 'window_data' source: '/train-leveldb'
                 meanfile: '/mean' batchsize: 256 cropsize: 227 mirror: true
                 det_fg_threshold: 0.25 det_bg_threshold: 0.75 det_fg_fraction: 0.5
                 det_context_pad: 16 det_crop_mode: 'square' }
         top: 'window_data' top: 'window_label' }
layers { layer { name: 'hdf5data' type: 'hdf5_data' source: '/my/hdf5/data' batchsize: 256 }
         top: 'hdf5data' }
layers { layer { name: 'conv1' type: 'conv' num_output: 96 biasterm: false pad: 4
                 kernelsize: 11 stride: 4 group: 2
                 weight_filler { type: 'gaussian' std: 0.01 }
                 bias_filler { type: 'constant' value: 3. }
                 blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
         bottom: 'data' top: 'conv1' }
layers { layer { name: 'pool1ave' type: 'pool' pool: AVE kernelsize: 3 stride: 2 }
         bottom: 'conv1' top: 'pool1ave' }
layers { layer { name: 'pool1stoch' type: 'pool' pool: STOCHASTIC kernelsize: 4 stride: 5 }
         bottom: 'conv1' top: 'pool1stoch' }
layers { layer { name: 'concat' type: 'concat' concat_dim: 2 }
         bottom: 'pool1ave' bottom: 'pool1stoch' top: 'pool1concat' }
layers { layer { name: 'norm1' type: 'lrn' local_size: 5 alpha: 0.0001 beta: 0.75 k: 2 }
         bottom: 'pool1concat' top: 'norm1' }
layers { layer { name: 'drop6' type: 'dropout' dropout_ratio: 0.2 }
         bottom: 'norm1' top: 'norm1' }
layers { layer { name: 'loss' type: 'infogain_loss' source: '/my/infogain/matrix' }
         bottom: 'norm1' bottom: 'label' }
layers { layer { name: 'hdf5_output' type: 'hdf5_output'
                 hdf5_output_param { file_name: '/my/hdf5/output/file' } } }
"""

V1_ALL_PARAMS = """
name: 'CaffeNet'
input: 'input_data' input_dim: 64 input_dim: 3 input_dim: 32 input_dim: 32
layers { name: 'data' type: DATA
         data_param { source: '/train-leveldb' batch_size: 256 rand_skip: 73 }
         transform_param { crop_size: 227 mirror: true scale: 0.25 mean_file: '/mean' }
         top: 'data' top: 'label' }
layers { name: 'images' type: IMAGE_DATA
         image_data_param { source: '/train-images' batch_size: 256 rand_skip: 73
                            shuffle: true new_height: 40 new_width: 30 }
         transform_param { mean_file: '/mean' crop_size: 227 mirror: true scale: 0.25 }
         top: 'images_data' top: 'images_label' }
layers { name: 'window_data' type: WINDOW_DATA
         window_data_param { source: '/train-leveldb' batch_size: 256 fg_threshold: 0.25
                             bg_threshold: 0.75 fg_fraction: 0.5 context_pad: 16
                             crop_mode: 'square' }
         transform_param { mirror: true crop_size: 227 mean_file: '/mean' }
         top: 'window_data' top: 'window_label' }
layers { name: 'hdf5data' type: HDF5_DATA
         hdf5_data_param { source: '/my/hdf5/data' batch_size: 256 } top: 'hdf5data' }
layers { name: 'conv1' type: CONVOLUTION
         convolution_param { num_output: 96 bias_term: false pad: 4 kernel_size: 11
                             stride: 4 group: 2
                             weight_filler { type: 'gaussian' std: 0.01 }
                             bias_filler { type: 'constant' value: 3. } }
         blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
         bottom: 'data' top: 'conv1' }
layers { name: 'pool1ave' type: POOLING pooling_param { pool: AVE kernel_size: 3 stride: 2 }
         bottom: 'conv1' top: 'pool1ave' }
layers { name: 'pool1stoch' type: POOLING
         pooling_param { pool: STOCHASTIC kernel_size: 4 stride: 5 }
         bottom: 'conv1' top: 'pool1stoch' }
layers { name: 'concat' type: CONCAT concat_param { concat_dim: 2 }
         bottom: 'pool1ave' bottom: 'pool1stoch' top: 'pool1concat' }
layers { name: 'norm1' type: LRN lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 k: 2 }
         bottom: 'pool1concat' top: 'norm1' }
layers { name: 'drop6' type: DROPOUT dropout_param { dropout_ratio: 0.2 }
         bottom: 'norm1' top: 'norm1' }
layers { name: 'loss' type: INFOGAIN_LOSS infogain_loss_param { source: '/my/infogain/matrix' }
         bottom: 'norm1' bottom: 'label' }
layers { name: 'hdf5_output' type: HDF5_OUTPUT
         hdf5_output_param { file_name: '/my/hdf5/output/file' } }
"""


def test_every_v0_field_lands_where_caffe_puts_it():
    assert upgrade_v0_net(parse(V0_ALL_PARAMS)) == parse(V1_ALL_PARAMS)


def test_v0_layer_types():
    names = ["accuracy", "bnll", "euclidean_loss", "flatten", "im2col", "images",
             "multinomial_logistic_loss", "relu", "sigmoid", "softmax", "softmax_loss",
             "split", "tanh"]
    text = "".join("layers { layer { name: '%s' type: '%s' } }" % (n, n) for n in names)
    types = [layer.type for layer in upgrade_net(parse(text)).layer]
    assert types == ["Accuracy", "BNLL", "EuclideanLoss", "Flatten", "Im2col", "ImageData",
                     "MultinomialLogisticLoss", "ReLU", "Sigmoid", "Softmax",
                     "SoftmaxWithLoss", "Split", "TanH"]


def test_every_v1_layer_type_has_a_v2_name():
    enum = pb.V1LayerParameter.LayerType
    param = pb.NetParameter()
    for value in enum.values():
        param.layers.add(name=enum.Name(value), type=value)
    types = {layer.name: layer.type for layer in upgrade_net(param).layer}
    assert types["NONE"] == ""
    assert all(types[name] for name in enum.keys() if name != "NONE")
    assert len(set(types.values())) == len(types)
    # the irregular ones, as Caffe spells them
    assert (types["ABSVAL"], types["BNLL"], types["IM2COL"], types["SOFTMAX_LOSS"],
            types["TANH"], types["HDF5_DATA"], types["MVN"], types["DUMMY_DATA"]) == \
        ("AbsVal", "BNLL", "Im2col", "SoftmaxWithLoss", "TanH", "HDF5Data", "MVN", "DummyData")


# -- V1 train_val, field by field --------------------------------------------------------------
V1_TRAIN_VAL = """
name: "CaffeNet"
layers {
  name: "data" type: DATA top: "data" top: "label"
  data_param { source: "%(db)s" batch_size: 2 scale: 0.00390625 crop_size: 8 mirror: true }
  include { phase: TRAIN }
}
layers {
  name: "data" type: DATA top: "data" top: "label"
  data_param { source: "%(db)s" batch_size: 3 crop_size: 8 mean_file: "%(mean)s" }
  include { phase: TEST }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
                      weight_filler { type: "gaussian" std: 0.1 }
                      bias_filler { type: "constant" value: 0.5 } }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1"
         lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layers {
  name: "fc6" type: INNER_PRODUCT bottom: "norm1" top: "fc6"
  param: "fc6_w" param: "fc6_b" blob_share_mode: STRICT blob_share_mode: PERMISSIVE
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } }
}
layers { name: "drop6" type: DROPOUT bottom: "fc6" top: "fc6"
         dropout_param { dropout_ratio: 0.5 } exclude { phase: TEST } }
layers { name: "accuracy" type: ACCURACY bottom: "fc6" bottom: "label" top: "accuracy"
         include { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc6" bottom: "label" top: "loss"
         loss_weight: 2 loss_param { ignore_label: 7 } }
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A small LMDB of 3x10x10 uint8 Datums and a matching mean.binaryproto."""
    root = tmp_path_factory.mktemp("db")
    rs = np.random.RandomState(0)
    images = rs.randint(0, 256, size=(6, 3, 10, 10)).astype(np.uint8)
    write_lmdb(str(root / "lmdb"), (("%08d" % i, array_to_datum(im, i % 5).SerializeToString())
                                    for i, im in enumerate(images)))
    mean = pb.BlobProto()
    mean.shape.dim.extend((1, 3, 10, 10))
    mean.data.extend(np.full(300, 100.0).tolist())
    with open(root / "mean.binaryproto", "wb") as f:
        f.write(mean.SerializeToString())
    return {"db": str(root / "lmdb"), "mean": str(root / "mean.binaryproto")}


def test_v1_train_val_upgrades_field_by_field(db, log_lines):
    text = V1_TRAIN_VAL % db
    net = upgrade_net(parse(text), "train_val.prototxt")
    assert not net.layers and not net_needs_upgrade(net)
    by = {}
    for layer in net.layer:
        by.setdefault(layer.name, []).append(layer)
    train, test = by["data"]
    assert train.type == "Data" and list(train.top) == ["data", "label"]
    assert train.include[0].phase == TRAIN and test.include[0].phase == TEST
    assert train.data_param.source == db["db"] and train.data_param.batch_size == 2
    for field in ("scale", "crop_size", "mirror", "mean_file"):
        assert not train.data_param.HasField(field) and not test.data_param.HasField(field)
    t = train.transform_param
    assert (t.scale, t.crop_size, t.mirror, t.HasField("mean_file")) == (0.00390625, 8, True, False)
    t = test.transform_param
    assert (t.crop_size, t.mean_file, t.HasField("scale"), t.HasField("mirror")) == \
        (8, db["mean"], False, False)

    conv = by["conv1"][0]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    assert [(p.lr_mult, p.decay_mult, p.name) for p in conv.param] == [(1, 1, ""), (2, 0, "")]
    assert all(p.HasField("lr_mult") and p.HasField("decay_mult") for p in conv.param)
    c = conv.convolution_param
    assert (c.num_output, list(c.kernel_size), list(c.pad)) == (4, [3], [1])
    assert (c.weight_filler.type, c.weight_filler.std, c.bias_filler.value) == ("gaussian",
                                                                                 np.float32(0.1),
                                                                                 0.5)
    assert by["relu1"][0].type == "ReLU"
    assert by["pool1"][0].pooling_param.pool == pb.PoolingParameter.MAX
    assert by["norm1"][0].type == "LRN" and by["norm1"][0].lrn_param.local_size == 3

    fc6 = by["fc6"][0]
    assert fc6.type == "InnerProduct"
    assert [(p.name, p.share_mode, p.lr_mult, p.decay_mult) for p in fc6.param] == \
        [("fc6_w", pb.ParamSpec.STRICT, 1, 1), ("fc6_b", pb.ParamSpec.PERMISSIVE, 2, 0)]
    assert fc6.inner_product_param.weight_filler.type == "xavier"
    drop = by["drop6"][0]
    assert drop.exclude[0].phase == TEST and drop.dropout_param.dropout_ratio == 0.5
    assert by["accuracy"][0].type == "Accuracy"
    loss = by["loss"][0]
    assert loss.type == "SoftmaxWithLoss" and list(loss.loss_weight) == [2]
    assert loss.loss_param.ignore_label == 7

    assert "Attempting to upgrade input file specified using deprecated transformation " \
           "parameters: train_val.prototxt" in log_lines
    assert "Attempting to upgrade input file specified using deprecated V1LayerParameter: " \
           "train_val.prototxt" in log_lines
    assert "Successfully upgraded file specified using deprecated V1LayerParameter" in log_lines


def test_upgrade_leaves_the_callers_param_alone_unless_asked():
    v1 = parse(V1_CAFFENET)
    assert upgrade_net(v1) == parse(V2_CAFFENET)
    assert v1 == parse(V1_CAFFENET)
    same = upgrade_net(v1, copy=False)
    assert same is v1 and v1 == parse(V2_CAFFENET)
    assert upgrade_net(v1) is v1  # nothing left to do


def test_net_builds_from_v1_text_in_both_phases(db):
    text = V1_TRAIN_VAL % db
    net = Net(text, TRAIN)
    try:
        assert net.layer_names == ["data", "conv1", "relu1", "pool1", "norm1", "fc6", "drop6",
                                   "loss"]
        shapes = {n: net.blobs[n].shape for n in ("data", "conv1", "pool1", "norm1", "fc6")}
        assert shapes == {"data": (2, 3, 8, 8), "conv1": (2, 4, 8, 8), "pool1": (2, 4, 4, 4),
                          "norm1": (2, 4, 4, 4), "fc6": (2, 5)}
        mults = [(p.name, p.lr_mult, p.decay_mult) for p in net.learnable_params]
        assert mults == [("conv1[0]", 1, 1), ("conv1[1]", 2, 0), ("fc6_w", 1, 1),
                         ("fc6_b", 2, 0)]
        assert net.output_loss_weight("loss") == 2
        net.forward()
        data = net.blobs["data"].data
        assert 0 <= float(data.min()) and float(data.max()) <= 255 / 256  # scale reached
        bias = net.params["conv1"][1].data
        assert np.allclose(bias, 0.5)
    finally:
        net.close()
    net = Net(text, TEST)
    try:
        assert "accuracy" in net.layer_names and "drop6" not in net.layer_names
        assert net.blobs["data"].shape == (3, 3, 8, 8) and net.blobs["fc6"].shape == (3, 5)
        net.forward()
        assert float(net.blobs["data"].data.max()) <= 155  # the mean file was subtracted
    finally:
        net.close()


# -- V0 deploy net: padding folded, shapes and numbers ---------------------------------------
V0_DEPLOY = """
name: "v0"
input: "data" input_dim: 2 input_dim: 3 input_dim: 11 input_dim: 11
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 5 stride: 2
                 weight_filler { type: "gaussian" std: 0.1 }
                 bias_filler { type: "gaussian" std: 0.1 } }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 3 } bottom: "pool1" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_net_builds_from_v0_text_with_the_padding_folded(log_lines):
    net = Net(V0_DEPLOY, TEST)
    assert net.layer_names == ["input", "conv1", "relu1", "pool1", "fc", "prob"]
    assert [net.blobs[n].shape for n in ("data", "conv1", "pool1", "fc", "prob")] == \
        [(2, 3, 11, 11), (2, 4, 6, 6), (2, 4, 3, 3), (2, 3), (2, 3)]
    x = np.random.RandomState(1).standard_normal((2, 3, 11, 11)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    w, b = (torch.from_numpy(np.array(blob.data)) for blob in net.params["conv1"])
    expected = F.relu(F.conv2d(torch.from_numpy(x), w, b, stride=2, padding=2)).numpy()
    np.testing.assert_allclose(net.blobs["conv1"].data, expected, rtol=1e-5, atol=1e-5)
    assert "Attempting to upgrade input file specified using deprecated V0LayerParameter: " \
           "<string>" in log_lines
    assert "Attempting to upgrade input file specified using deprecated input fields: " \
           "<string>" in log_lines


# -- V1 .caffemodel weights ------------------------------------------------------------------
V2_DEPLOY = """
name: "deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc6" type: "InnerProduct" bottom: "conv1" top: "fc6"
        inner_product_param { num_output: 5 } }
"""


def legacy_blob(array):
    """A BlobProto with the old num/channels/height/width shape, as V1 files have."""
    proto = pb.BlobProto()
    proto.num, proto.channels, proto.height, proto.width = (1,) * (4 - array.ndim) + array.shape
    proto.data.extend(array.ravel().tolist())
    return proto


def v1_weights():
    rs = np.random.RandomState(2)
    arrays = {"conv1": [rs.standard_normal((4, 3, 3, 3)), rs.standard_normal((1, 1, 1, 4))],
              "fc6": [rs.standard_normal((1, 1, 5, 64)), rs.standard_normal((1, 1, 1, 5))],
              "unused": [rs.standard_normal((1, 1, 1, 7))]}
    arrays = {k: [a.astype(np.float32) for a in v] for k, v in arrays.items()}
    param = pb.NetParameter(name="old")
    param.input.append("data")  # old .caffemodel files name their input without a shape
    for name, layer_type in (("conv1", "CONVOLUTION"), ("relu1", "RELU"),
                             ("fc6", "INNER_PRODUCT"), ("unused", "INNER_PRODUCT")):
        v1 = param.layers.add(name=name, type=pb.V1LayerParameter.LayerType.Value(layer_type))
        v1.blobs.extend(legacy_blob(a) for a in arrays.get(name, []))
        v1.blobs_lr.extend([1, 2])
    return param, arrays


def test_v1_caffemodel_copies_into_a_v2_net_by_name(tmp_path, log_lines):
    param, arrays = v1_weights()
    path = str(tmp_path / "old.caffemodel")
    write_binary(path, param)
    net = Net(V2_DEPLOY, TEST, weights=path)
    for name in ("conv1", "fc6"):
        w, b = net.params[name]
        np.testing.assert_array_equal(w.data, arrays[name][0].reshape(w.shape))
        np.testing.assert_array_equal(b.data, arrays[name][1].ravel())
    assert "Attempting to upgrade input file specified using deprecated V1LayerParameter: " \
           "%s" % path in log_lines
    # a NetParameter given directly is upgraded on a copy, not changed
    fresh = Net(V2_DEPLOY, TEST)
    copy_trained_layers(fresh, param)
    np.testing.assert_array_equal(fresh.params["fc6"][0].data, net.params["fc6"][0].data)
    assert len(param.layers) == 4 and not param.layer and list(param.input) == ["data"]


def test_input_without_a_shape_is_dropped_and_with_one_becomes_an_input_layer():
    old = upgrade_net(parse('input: "data" layer { name: "r" type: "ReLU" }'))
    assert not old.input and [lp.name for lp in old.layer] == ["r"]
    new = upgrade_net(parse('input: "a" input_shape { dim: 2 } input: "b" '
                            'input_shape { dim: 3 dim: 4 } layer { name: "r" type: "ReLU" }'))
    assert not new.input and not new.input_shape
    assert [lp.name for lp in new.layer] == ["input", "r"]
    assert list(new.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in new.layer[0].input_param.shape] == [[2], [3, 4]]


def test_batch_norm_with_three_param_specs_gets_zero_multipliers(log_lines):
    net = upgrade_net(parse("""
        layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 name: "m" } param { lr_mult: 2 }
                param { decay_mult: 3 } }
        layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } }"""),
        "bn.prototxt")
    bn, bn2 = net.layer
    assert [(p.name, p.lr_mult, p.decay_mult) for p in bn.param] == \
        [("m", 0, 0), ("", 0, 0), ("", 0, 0)]
    assert [p.lr_mult for p in bn2.param] == [1, 1]  # only the three-spec form is upgraded
    assert "Attempting to upgrade batch norm layers using deprecated params: bn.prototxt" \
        in log_lines


# -- solvers ---------------------------------------------------------------------------------
SOLVER = """
net: 'examples/mnist/lenet_train_test.prototxt' test_iter: 100 test_interval: 500
base_lr: 0.01 momentum: 0.0 weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: 10000 snapshot: 5000 snapshot_prefix: 'examples/mnist/lenet_rmsprop'
solver_mode: GPU
"""


@pytest.mark.parametrize("old,new", [("SGD", "SGD"), ("ADAGRAD", "AdaGrad"),
                                     ("NESTEROV", "Nesterov"), ("RMSPROP", "RMSProp"),
                                     ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_enum_becomes_the_type_string(old, new):
    param = parse(SOLVER + "solver_type: %s" % old, pb.SolverParameter())
    assert upgrade_solver(param, "solver.prototxt") is param
    assert param == parse(SOLVER + "type: '%s'" % new, pb.SolverParameter())
    assert not param.HasField("solver_type")


def test_current_solver_is_untouched_and_both_fields_is_an_error():
    param = parse(SOLVER + "type: 'Adam'", pb.SolverParameter())
    assert upgrade_solver(param) == parse(SOLVER + "type: 'Adam'", pb.SolverParameter())
    both = parse(SOLVER + "type: 'Adam' solver_type: ADAM", pb.SolverParameter())
    with pytest.raises(NetkitError, match=r"^s\.prototxt: .*solver_type.*type"):
        upgrade_solver(both, "s.prototxt")


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,match", [
    ("layers { layer { name: 'r' type: 'relu' num_output: 3 } }",
     r"^net\.prototxt: layer 'r': V0 field 'num_output' has no meaning for layer type 'relu'"),
    ("layers { layer { name: 'q' type: 'quux' } }",
     r"^net\.prototxt: layer 'q': unknown V0 layer type 'quux'"),
    ("input: 'd' layers { layer { name: 'p' type: 'padding' pad: 1 } bottom: 'd' top: 'p' }"
     "layers { layer { name: 'r' type: 'relu' } bottom: 'p' top: 'r' }",
     r"^net\.prototxt: layer 'r' reads padding layer 'p', but only conv and pool"),
    ("layers { layer { name: 'c' type: 'conv' } bottom: 'nowhere' top: 'c' }",
     r"^net\.prototxt: layer 'c': unknown bottom blob 'nowhere'"),
    ("layer { name: 'a' type: 'ReLU' } layers { name: 'b' type: RELU }",
     r"^net\.prototxt: the net has both 'layer' and 'layers'"),
])
def test_what_cannot_be_upgraded_is_a_one_line_error(text, match):
    with pytest.raises(NetkitError, match=match) as info:
        upgrade_net(parse(text), "net.prototxt")
    assert "\n" not in str(info.value)


def test_unknown_v1_enum_value_in_a_binary_file(tmp_path):
    layer = pb.V1LayerParameter(name="fork").SerializeToString() + bytes([5 << 3, 99])
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(bytes([2 << 3 | 2, len(layer)]) + layer)
    with pytest.raises(NetkitError, match=r"fork\.caffemodel: layer 'fork': unknown V1 type "
                                          r"value 99$"):
        Net(V2_DEPLOY, TEST, weights=str(path))


# -- the upgrade_* commands ------------------------------------------------------------------
def netkit(*args):
    return subprocess.run([sys.executable, "-m", "netkit.tools.cli"] + [str(a) for a in args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_upgrade_net_proto_text_round_trip(tmp_path, db):
    old, new, again = tmp_path / "old.prototxt", tmp_path / "new.prototxt", tmp_path / "again"
    old.write_text(V1_TRAIN_VAL % db)
    result = netkit("upgrade_net_proto_text", old, new)
    assert result.returncode == 0, result.stderr
    assert "Attempting to upgrade input file specified using deprecated V1LayerParameter: " \
           "%s" % old in result.stderr
    assert "Wrote upgraded NetParameter text proto to %s" % new in result.stderr
    upgraded = parse(new.read_text())
    assert upgraded == upgrade_net(parse(old.read_text())) and not upgraded.layers
    result = netkit("upgrade_net_proto_text", new, again)
    assert result.returncode == 0 and "File already in latest proto format: %s" % new \
        in result.stderr
    assert parse(again.read_text()) == upgraded
    net = Net(str(new), TEST)
    try:
        assert net.blobs["fc6"].shape == (3, 5)
    finally:
        net.close()


def test_upgrade_net_proto_binary_keeps_the_weights(tmp_path):
    param, arrays = v1_weights()
    old, new = tmp_path / "old.caffemodel", tmp_path / "new.caffemodel"
    write_binary(str(old), param)
    result = netkit("upgrade_net_proto_binary", old, new)
    assert result.returncode == 0, result.stderr
    assert "Wrote upgraded NetParameter binary proto to %s" % new in result.stderr
    upgraded = load_weights(str(new))
    assert not upgraded.layers and not upgraded.input
    assert [(lp.name, lp.type) for lp in upgraded.layer] == [
        ("conv1", "Convolution"), ("relu1", "ReLU"), ("fc6", "InnerProduct"),
        ("unused", "InnerProduct")]
    assert [p.lr_mult for p in upgraded.layer[2].param] == [1, 2]
    assert upgraded.layer[0].blobs[1] == legacy_blob(arrays["conv1"][1])
    net = Net(V2_DEPLOY, TEST, weights=str(new))
    np.testing.assert_array_equal(net.params["conv1"][0].data, arrays["conv1"][0])


def test_upgrade_solver_proto_text(tmp_path):
    old, new = tmp_path / "old_solver.prototxt", tmp_path / "solver.prototxt"
    old.write_text(SOLVER + "solver_type: NESTEROV\n")
    result = netkit("upgrade_solver_proto_text", old, new)
    assert result.returncode == 0, result.stderr
    assert "Wrote upgraded SolverParameter text proto to %s" % new in result.stderr
    assert parse(new.read_text(), pb.SolverParameter()) == \
        parse(SOLVER + "type: 'Nesterov'", pb.SolverParameter())


def test_upgrade_errors_are_one_line_and_write_nothing(tmp_path):
    bad, out = tmp_path / "bad.prototxt", tmp_path / "out.prototxt"
    bad.write_text("layers { layer { name: 'r' type: 'relu' kernelsize: 3 } }\n")
    result = netkit("upgrade_net_proto_text", bad, out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "netkit: error: %s: layer 'r': V0 field 'kernelsize' has no meaning for layer type "
        "'relu' and cannot be upgraded" % bad)
    assert not out.exists()
