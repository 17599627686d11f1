"""The protobuf schema: freshness of the generated module, Caffe's file-format
facts (names, numbers, defaults), and parsing of real-world style files."""

import os
import struct
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2, text_format

from netkit import netkit_pb2 as pb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")


# ---------------------------------------------------------------------------
# (a) netkit_pb2.py is generated from the current proto/netkit.proto
# ---------------------------------------------------------------------------

def _normalized(fdp):
    """Drop what protoc adds to a descriptor set but not to the Python
    module (json_name, source info), and spell float defaults one way
    ("1e-08" vs "9.99999994e-09"), so only the schema is compared."""
    FD = descriptor_pb2.FieldDescriptorProto
    fdp.ClearField("source_code_info")

    def fix(f):
        f.ClearField("json_name")
        if f.HasField("default_value") and f.type == FD.TYPE_FLOAT:
            v = struct.unpack("<f", struct.pack("<f", float(f.default_value)))
            f.default_value = repr(v[0])
        elif f.HasField("default_value") and f.type == FD.TYPE_DOUBLE:
            f.default_value = repr(float(f.default_value))

    def walk(msgs):
        for m in msgs:
            for f in list(m.field) + list(m.extension):
                fix(f)
            walk(m.nested_type)
    walk(fdp.message_type)
    for f in fdp.extension:
        fix(f)
    return fdp


def test_generated_module_is_current(tmp_path):
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        pytest.skip("grpc_tools is not installed (pip install grpcio-tools): "
                    "cannot recompile proto/netkit.proto to compare")
    out = tmp_path / "netkit.pb"
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I" + PROTO_DIR,
         "--descriptor_set_out=" + str(out), "netkit.proto"],
        cwd=PROTO_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    assert len(fds.file) == 1
    fresh = _normalized(fds.file[0])
    committed = descriptor_pb2.FileDescriptorProto()
    committed.ParseFromString(pb.DESCRIPTOR.serialized_pb)
    committed = _normalized(committed)
    assert fresh == committed, (
        "netkit/netkit_pb2.py is out of date with proto/netkit.proto: "
        "run proto/generate.sh")


def test_no_duplicate_field_numbers():
    def walk(msgs):
        for m in msgs:
            yield m
            yield from walk(m.nested_types)
    for m in walk(pb.DESCRIPTOR.message_types_by_name.values()):
        nums = [f.number for f in m.fields]
        assert len(nums) == len(set(nums)), m.full_name


# ---------------------------------------------------------------------------
# (b) facts of Caffe's caffe.proto that make files interchangeable
# ---------------------------------------------------------------------------

def _f(msg, field):
    return getattr(pb, msg).DESCRIPTOR.fields_by_name[field]


NUMBERS = [
    ("BlobShape", "dim", 1),
    ("BlobProto", "shape", 7),
    ("BlobProto", "data", 5),
    ("BlobProto", "double_data", 8),
    ("BlobProto", "num", 1),
    ("Datum", "data", 4),
    ("Datum", "encoded", 7),
    ("NetParameter", "layer", 100),
    ("NetParameter", "layers", 2),
    ("NetParameter", "input", 3),
    ("NetParameter", "input_dim", 4),
    ("NetParameter", "input_shape", 8),
    ("LayerParameter", "blobs", 7),
    ("LayerParameter", "include", 8),
    ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "inner_product_param", 117),
    ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "input_param", 143),
    ("LayerParameter", "clip_param", 148),
    ("LayerParameter", "prior_box_param", 203),
    ("LayerParameter", "norm_param", 206),
    ("ConvolutionParameter", "dilation", 18),
    ("ConvolutionParameter", "group", 5),
    ("SolverParameter", "momentum", 11),
    ("SolverParameter", "type", 40),
    ("SolverParameter", "solver_type", 30),
    ("SolverParameter", "layer_wise_reduce", 41),
    ("SolverParameter", "weights", 42),
    ("SolverState", "history", 3),
    ("V1LayerParameter", "blobs_lr", 7),
    ("V1LayerParameter", "layer", 1),
    ("V1LayerParameter", "param", 1001),
    ("V0LayerParameter", "blobs", 50),
    ("V0LayerParameter", "hdf5_output_param", 1001),
]


@pytest.mark.parametrize("msg,field,number", NUMBERS)
def test_field_numbers(msg, field, number):
    assert _f(msg, field).number == number


DEFAULTS = [
    ("ConvolutionParameter", "bias_term", True),
    ("ConvolutionParameter", "group", 1),
    ("ConvolutionParameter", "axis", 1),
    ("PoolingParameter", "pool", pb.PoolingParameter.MAX),
    ("PoolingParameter", "stride", 1),
    ("PoolingParameter", "round_mode", pb.PoolingParameter.CEIL),
    ("FillerParameter", "type", "constant"),
    ("FillerParameter", "std", 1.0),
    ("FillerParameter", "sparse", -1),
    ("LRNParameter", "local_size", 5),
    ("LRNParameter", "beta", 0.75),
    ("DropoutParameter", "dropout_ratio", 0.5),
    ("BatchNormParameter", "eps", pytest.approx(1e-5)),
    ("BatchNormParameter", "moving_average_fraction", pytest.approx(0.999)),
    ("LossParameter", "normalization", pb.LossParameter.VALID),
    ("EltwiseParameter", "operation", pb.EltwiseParameter.SUM),
    ("ParamSpec", "lr_mult", 1.0),
    ("NetState", "phase", pb.TEST),
    ("DataParameter", "backend", pb.DataParameter.LEVELDB),
    ("DataParameter", "prefetch", 4),
    ("SolverParameter", "momentum", 0.0),
    ("SolverParameter", "test_initialization", True),
    ("SolverParameter", "average_loss", 1),
    ("SolverParameter", "type", "SGD"),
    ("SolverParameter", "solver_mode", pb.SolverParameter.GPU),
    ("SolverParameter", "snapshot_format", pb.SolverParameter.BINARYPROTO),
    ("SolverParameter", "random_seed", -1),
    ("SolverParameter", "clip_gradients", -1.0),
    ("SolverParameter", "delta", pytest.approx(1e-8)),
    ("SolverParameter", "momentum2", pytest.approx(0.999)),
    ("SolverParameter", "regularization_type", "L2"),
    ("FlattenParameter", "end_axis", -1),
    ("CropParameter", "axis", 2),
    ("MVNParameter", "eps", pytest.approx(1e-9)),
    ("V0LayerParameter", "biasterm", True),
    ("PriorBoxParameter", "flip", True),
    ("PriorBoxParameter", "offset", 0.5),
    ("NormalizeParameter", "eps", pytest.approx(1e-10)),
    ("MultiBoxLossParameter", "neg_pos_ratio", 3.0),
]


@pytest.mark.parametrize("msg,field,default", DEFAULTS)
def test_defaults(msg, field, default):
    assert _f(msg, field).default_value == default
    # ... and the default is what an empty message reads back.
    assert getattr(getattr(pb, msg)(), field) == default


def test_num_output_has_no_default_and_is_number_1():
    f = _f("ConvolutionParameter", "num_output")
    assert f.number == 1 and not f.has_default_value
    assert f.type == f.TYPE_UINT32


def test_labels_types_and_packing():
    FD = descriptor_pb2.FieldDescriptorProto
    for msg, field in [("BlobProto", "data"), ("BlobProto", "diff"),
                       ("BlobProto", "double_data"), ("BlobShape", "dim")]:
        f = _f(msg, field)
        assert f.is_packed, (msg, field)
    # Datum.float_data is *not* packed in Caffe.
    assert not _f("Datum", "float_data").is_packed
    assert _f("BlobShape", "dim").type == FD.TYPE_INT64
    assert _f("ConvolutionParameter", "kernel_size").is_repeated
    assert not _f("PoolingParameter", "kernel_size").is_repeated
    assert _f("ClipParameter", "min").is_required
    assert _f("SolverParameter", "random_seed").type == FD.TYPE_INT64


def test_enum_values():
    V1 = pb.V1LayerParameter
    assert V1.CONVOLUTION == 4 and V1.SOFTMAX_LOSS == 21 and V1.ABSVAL == 35
    assert V1.DECONVOLUTION == 39 and V1.NONE == 0
    # BVLC's values are 0..39; the others are DeepLab v1's (its IMAGE_SEG_DATA renumbered).
    assert sorted(v for v in V1.LayerType.values() if v < 40) == list(range(40))
    assert {name for name, v in V1.LayerType.items() if v >= 40} == {
        "SEG_ACCURACY", "INTERP", "MAT_WRITE", "MAT_READ", "IMAGE_SEG_DATA"}
    assert (pb.TRAIN, pb.TEST) == (0, 1)
    SP = pb.SolverParameter
    assert [SP.SGD, SP.NESTEROV, SP.ADAGRAD, SP.RMSPROP, SP.ADADELTA,
            SP.ADAM] == list(range(6))
    assert (SP.CPU, SP.GPU, SP.HDF5, SP.BINARYPROTO) == (0, 1, 0, 1)
    C = pb.ConvolutionParameter
    assert (C.DEFAULT, C.CAFFE, C.CUDNN) == (0, 1, 2)
    P = pb.PoolingParameter
    assert (P.MAX, P.AVE, P.STOCHASTIC) == (0, 1, 2)
    L = pb.LossParameter
    assert (L.FULL, L.VALID, L.BATCH_SIZE, L.NONE) == (0, 1, 2, 3)
    assert pb.HingeLossParameter.L1 == 1
    assert pb.ReductionParameter.SUM == 1 and pb.ReductionParameter.MEAN == 4
    assert pb.FillerParameter.VarianceNorm.Name(2) == "AVERAGE"
    assert pb.PriorBoxParameter.CENTER_SIZE == 2
    assert pb.MultiBoxLossParameter.HARD_EXAMPLE == 2


def test_every_caffe_layer_param_is_present():
    names = set(pb.LayerParameter.DESCRIPTOR.fields_by_name)
    for n in """accuracy argmax batch_norm bias clip concat contrastive_loss
            convolution crop data dropout dummy_data eltwise elu embed exp
            flatten hdf5_data hdf5_output hinge_loss image_data infogain_loss
            inner_product input log lrn memory_data mvn parameter pooling
            power prelu python recurrent reduction relu reshape scale sigmoid
            softmax spp slice swish tanh threshold tile window_data transform
            loss annotated_data detection_evaluate detection_output
            multibox_loss norm permute prior_box video_data""".split():
        assert n + "_param" in names, n


# ---------------------------------------------------------------------------
# (c) real-world style text files
# ---------------------------------------------------------------------------

LENET_TRAIN_TEST = """
name: "LeNet"
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "pool1"
  top: "ip1"
  param { lr_mult: 1 }
  param { lr_mult: 2 }
  inner_product_param {
    num_output: 500
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip1"
  bottom: "label"
  top: "accuracy"
  include { phase: TEST }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip1"
  bottom: "label"
  top: "loss"
}
"""


def test_parse_v2_lenet():
    net = text_format.Parse(LENET_TRAIN_TEST, pb.NetParameter())
    assert net.name == "LeNet"
    assert len(net.layer) == 8
    train, test = net.layer[0], net.layer[1]
    assert train.include[0].phase == pb.TRAIN
    assert test.include[0].phase == pb.TEST
    assert train.data_param.backend == pb.DataParameter.LMDB
    assert train.data_param.batch_size == 64
    assert train.transform_param.scale == pytest.approx(1 / 256)
    conv = net.layer[2]
    assert conv.type == "Convolution"
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.num_output == 20
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert [p.lr_mult for p in conv.param] == [1, 2]
    assert conv.param[0].decay_mult == 1  # default
    assert conv.convolution_param.bias_term  # default
    assert net.layer[3].pooling_param.pool == pb.PoolingParameter.MAX
    assert net.layer[5].bottom == net.layer[5].top
    # text round trip
    again = text_format.Parse(text_format.MessageToString(net),
                              pb.NetParameter())
    assert again == net


V1_NET = """
name: "CaffeNet"
layers {
  name: "data"
  type: DATA
  top: "data"
  top: "label"
  data_param { source: "train_lmdb" backend: LMDB batch_size: 256 }
  transform_param { crop_size: 227 mean_file: "mean.binaryproto" mirror: true }
  include: { phase: TRAIN }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 96
    kernel_size: 11
    stride: 4
    weight_filler { type: "gaussian" std: 0.01 }
    bias_filler { type: "constant" value: 0 }
  }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers {
  name: "loss"
  type: SOFTMAX_LOSS
  bottom: "fc8"
  bottom: "label"
}
"""


def test_parse_v1_layers():
    net = text_format.Parse(V1_NET, pb.NetParameter())
    assert len(net.layer) == 0 and len(net.layers) == 4
    data, conv, relu, loss = net.layers
    assert data.type == pb.V1LayerParameter.DATA
    assert data.include[0].phase == pb.TRAIN
    assert data.transform_param.crop_size == 227 and data.transform_param.mirror
    assert conv.type == pb.V1LayerParameter.CONVOLUTION
    assert list(conv.blobs_lr) == [1, 2]
    assert list(conv.weight_decay) == [1, 0]
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.01)
    assert relu.type == pb.V1LayerParameter.RELU
    assert loss.type == pb.V1LayerParameter.SOFTMAX_LOSS


V0_NET = """
name: "CaffeNet"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 227
input_dim: 227
layers {
  layer {
    name: "conv1"
    type: "conv"
    num_output: 96
    kernelsize: 11
    stride: 4
    weight_filler { type: "gaussian" std: 0.01 }
    bias_filler { type: "constant" value: 0. }
    blobs_lr: 1.
    blobs_lr: 2.
    weight_decay: 1.
    weight_decay: 0.
  }
  bottom: "data"
  top: "conv1"
}
layers {
  layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 }
  bottom: "conv1"
  top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 5 alpha: 0.0001 beta: 0.75 }
  bottom: "pool1"
  top: "norm1"
}
"""


def test_parse_v0_layers():
    net = text_format.Parse(V0_NET, pb.NetParameter())
    assert list(net.input) == ["data"]
    assert list(net.input_dim) == [10, 3, 227, 227]
    conv = net.layers[0]
    assert conv.layer.name == "conv1" and conv.layer.type == "conv"
    assert conv.layer.num_output == 96 and conv.layer.kernelsize == 11
    assert conv.layer.biasterm  # default true
    assert list(conv.layer.blobs_lr) == [1, 2]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert not conv.HasField("type")
    assert net.layers[1].layer.pool == pb.V0LayerParameter.MAX
    assert net.layers[2].layer.alpha == pytest.approx(1e-4)


DEPLOY_LEGACY_INPUT = """
name: "GoogleNet"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 224
input_dim: 224
input: "im_info"
input_shape { dim: 1 dim: 3 }
layer {
  name: "conv1/7x7_s2"
  type: "Convolution"
  bottom: "data"
  top: "conv1/7x7_s2"
  convolution_param { num_output: 64 pad: 3 kernel_size: 7 stride: 2 }
}
layer {
  name: "prob" type: "Softmax" bottom: "loss3/classifier" top: "prob"
}
"""


def test_parse_legacy_input_fields():
    net = text_format.Parse(DEPLOY_LEGACY_INPUT, pb.NetParameter())
    assert list(net.input) == ["data", "im_info"]
    assert list(net.input_dim) == [1, 3, 224, 224]
    assert list(net.input_shape[0].dim) == [1, 3]
    cp = net.layer[0].convolution_param
    assert list(cp.pad) == [3] and list(cp.stride) == [2]


def test_parse_input_layer_and_modern_fields():
    net = text_format.Parse("""
        layer { name: "data" type: "Input" top: "data"
                input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }
        layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
                batch_norm_param { use_global_stats: true } }
        layer { name: "sc" type: "Scale" bottom: "data" top: "data"
                scale_param { bias_term: true } }
        layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
                pooling_param { pool: AVE global_pooling: true round_mode: FLOOR } }
        layer { name: "clip" type: "Clip" bottom: "pool" top: "pool"
                clip_param { min: -1 max: 1 } }
        layer { name: "py" type: "Python" bottom: "pool" top: "out"
                python_param { module: "mylayers" layer: "MyLayer"
                               param_str: "{'k': 3}" } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label"
                loss_weight: 1
                loss_param { ignore_label: 255 normalization: BATCH_SIZE }
                propagate_down: true propagate_down: false }
        """, pb.NetParameter())
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]
    assert net.layer[1].batch_norm_param.use_global_stats
    assert net.layer[2].scale_param.bias_term
    pp = net.layer[3].pooling_param
    assert pp.pool == pb.PoolingParameter.AVE and pp.global_pooling
    assert pp.round_mode == pb.PoolingParameter.FLOOR
    assert net.layer[4].clip_param.min == -1
    assert net.layer[5].python_param.param_str == "{'k': 3}"
    loss = net.layer[6]
    assert loss.loss_param.ignore_label == 255
    assert loss.loss_param.normalization == pb.LossParameter.BATCH_SIZE
    assert list(loss.propagate_down) == [True, False]


SSD_SNIPPET = """
name: "VGG_VOC0712_SSD_300x300_train"
layer {
  name: "data"
  type: "AnnotatedData"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param {
    mirror: true
    mean_value: 104
    mean_value: 117
    mean_value: 123
    resize_param {
      prob: 1
      resize_mode: WARP
      height: 300
      width: 300
      interp_mode: LINEAR
      interp_mode: AREA
      interp_mode: NEAREST
      interp_mode: CUBIC
      interp_mode: LANCZOS4
    }
    emit_constraint { emit_type: CENTER }
    distort_param {
      brightness_prob: 0.5
      brightness_delta: 32
      contrast_prob: 0.5
      contrast_lower: 0.5
      contrast_upper: 1.5
      hue_prob: 0.5
      hue_delta: 18
      saturation_prob: 0.5
      saturation_lower: 0.5
      saturation_upper: 1.5
      random_order_prob: 0.0
    }
    expand_param { prob: 0.5 max_expand_ratio: 4.0 }
  }
  data_param { source: "examples/VOC0712/VOC0712_trainval_lmdb" batch_size: 32 backend: LMDB }
  annotated_data_param {
    batch_sampler { max_sample: 1 max_trials: 1 }
    batch_sampler {
      sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 }
      sample_constraint { min_jaccard_overlap: 0.1 }
      max_sample: 1
      max_trials: 50
    }
    label_map_file: "data/VOC0712/labelmap_voc.prototxt"
  }
}
layer {
  name: "conv4_3_norm"
  type: "Normalize"
  bottom: "conv4_3"
  top: "conv4_3_norm"
  norm_param {
    across_spatial: false
    scale_filler { type: "constant" value: 20 }
    channel_shared: false
  }
}
layer {
  name: "conv4_3_norm_mbox_loc_perm"
  type: "Permute"
  bottom: "conv4_3_norm_mbox_loc"
  top: "conv4_3_norm_mbox_loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 }
}
layer {
  name: "conv4_3_norm_mbox_priorbox"
  type: "PriorBox"
  bottom: "conv4_3_norm"
  bottom: "data"
  top: "conv4_3_norm_mbox_priorbox"
  prior_box_param {
    min_size: 30.0
    max_size: 60.0
    aspect_ratio: 2
    flip: true
    clip: false
    variance: 0.1
    variance: 0.1
    variance: 0.2
    variance: 0.2
    step: 8
    offset: 0.5
  }
}
layer {
  name: "mbox_loss"
  type: "MultiBoxLoss"
  bottom: "mbox_loc"
  bottom: "mbox_conf"
  bottom: "mbox_priorbox"
  bottom: "label"
  top: "mbox_loss"
  include { phase: TRAIN }
  propagate_down: true
  propagate_down: true
  propagate_down: false
  propagate_down: false
  loss_param { normalization: VALID }
  multibox_loss_param {
    loc_loss_type: SMOOTH_L1
    conf_loss_type: SOFTMAX
    loc_weight: 1.0
    num_classes: 21
    share_location: true
    match_type: PER_PREDICTION
    overlap_threshold: 0.5
    use_prior_for_matching: true
    background_label_id: 0
    use_difficult_gt: true
    neg_pos_ratio: 3.0
    neg_overlap: 0.5
    code_type: CENTER_SIZE
    ignore_cross_boundary_bbox: false
    mining_type: MAX_NEGATIVE
  }
}
layer {
  name: "detection_out"
  type: "DetectionOutput"
  bottom: "mbox_loc"
  bottom: "mbox_conf_flatten"
  bottom: "mbox_priorbox"
  top: "detection_out"
  include { phase: TEST }
  detection_output_param {
    num_classes: 21
    share_location: true
    background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 400 }
    save_output_param {
      output_directory: "data/VOCdevkit/results/VOC2007/SSD_300x300/Main"
      output_name_prefix: "comp4_det_test_"
      output_format: "VOC"
      label_map_file: "data/VOC0712/labelmap_voc.prototxt"
      name_size_file: "data/VOC0712/test_name_size.txt"
      num_test_image: 4952
    }
    code_type: CENTER_SIZE
    keep_top_k: 200
    confidence_threshold: 0.01
  }
}
layer {
  name: "detection_eval"
  type: "DetectionEvaluate"
  bottom: "detection_out"
  bottom: "label"
  top: "detection_eval"
  include { phase: TEST }
  detection_evaluate_param {
    num_classes: 21
    background_label_id: 0
    overlap_threshold: 0.5
    evaluate_difficult_gt: false
    name_size_file: "data/VOC0712/test_name_size.txt"
  }
}
"""


def test_parse_ssd_layers():
    net = text_format.Parse(SSD_SNIPPET, pb.NetParameter())
    data = net.layer[0]
    tp = data.transform_param
    assert list(tp.mean_value) == [104, 117, 123]
    assert tp.resize_param.resize_mode == pb.ResizeParameter.WARP
    assert tp.resize_param.height == 300
    assert list(tp.resize_param.interp_mode) == [1, 2, 3, 4, 5]
    assert tp.emit_constraint.emit_type == pb.EmitConstraint.CENTER
    assert tp.distort_param.hue_delta == 18
    assert tp.expand_param.max_expand_ratio == 4
    adp = data.annotated_data_param
    assert len(adp.batch_sampler) == 2
    assert adp.batch_sampler[1].sample_constraint.min_jaccard_overlap == \
        pytest.approx(0.1)
    assert adp.batch_sampler[0].use_original_image  # default
    norm = net.layer[1].norm_param
    assert not norm.across_spatial and not norm.channel_shared
    assert norm.scale_filler.value == 20
    assert list(net.layer[2].permute_param.order) == [0, 2, 3, 1]
    pbx = net.layer[3].prior_box_param
    assert list(pbx.min_size) == [30] and list(pbx.max_size) == [60]
    assert list(pbx.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert pbx.step == 8 and pbx.flip and not pbx.clip
    mbl = net.layer[4].multibox_loss_param
    assert mbl.num_classes == 21
    assert mbl.code_type == pb.PriorBoxParameter.CENTER_SIZE
    assert mbl.mining_type == pb.MultiBoxLossParameter.MAX_NEGATIVE
    assert mbl.match_type == pb.MultiBoxLossParameter.PER_PREDICTION
    dop = net.layer[5].detection_output_param
    assert dop.nms_param.top_k == 400
    assert dop.nms_param.nms_threshold == pytest.approx(0.45)
    assert dop.keep_top_k == 200
    assert dop.save_output_param.num_test_image == 4952
    dep = net.layer[6].detection_evaluate_param
    assert dep.num_classes == 21 and not dep.evaluate_difficult_gt


def test_parse_ssd_label_map_and_solver():
    lm = text_format.Parse("""
        item { name: "none_of_the_above" label: 0 display_name: "background" }
        item { name: "aeroplane" label: 1 display_name: "aeroplane" }
        """, pb.LabelMap())
    assert [i.label for i in lm.item] == [0, 1]
    assert lm.item[0].display_name == "background"
    s = text_format.Parse("""
        train_net: "train.prototxt"
        test_net: "test.prototxt"
        test_iter: 619
        test_interval: 10000
        base_lr: 0.001
        lr_policy: "multistep"
        gamma: 0.1
        stepvalue: 80000
        stepvalue: 100000
        max_iter: 120000
        momentum: 0.9
        weight_decay: 0.0005
        solver_mode: GPU
        device_id: 0
        debug_info: false
        snapshot_after_train: true
        test_initialization: false
        average_loss: 10
        iter_size: 1
        type: "SGD"
        eval_type: "detection"
        ap_version: "11point"
        show_per_class_result: true
        """, pb.SolverParameter())
    assert s.eval_type == "detection" and s.ap_version == "11point"
    assert list(s.stepvalue) == [80000, 100000]
    assert not s.test_initialization


def test_parse_solver_legacy_solver_type():
    s = text_format.Parse("""
        net: "examples/mnist/lenet_train_test.prototxt"
        test_iter: 100
        test_interval: 500
        base_lr: 0.01
        momentum: 0.95
        weight_decay: 0.0005
        lr_policy: "inv"
        gamma: 0.0001
        power: 0.75
        display: 100
        max_iter: 10000
        snapshot: 5000
        snapshot_prefix: "examples/mnist/lenet"
        solver_mode: CPU
        solver_type: NESTEROV
        """, pb.SolverParameter())
    assert s.solver_type == pb.SolverParameter.NESTEROV
    assert s.solver_mode == pb.SolverParameter.CPU
    assert s.type == "SGD" and not s.HasField("type")
    assert list(s.test_iter) == [100]
    assert s.power == pytest.approx(0.75)
    assert s.snapshot_format == pb.SolverParameter.BINARYPROTO


def test_parse_solver_type_adam():
    s = text_format.Parse("""
        net: "examples/mnist/lenet_train_test.prototxt"
        base_lr: 0.001
        momentum: 0.9
        momentum2: 0.999
        delta: 1e-8
        lr_policy: "fixed"
        type: "Adam"
        test_state: { stage: "test-on-train" }
        test_state: { stage: "test-on-test" }
        train_state: { level: 0 stage: "" }
        weights: "a.caffemodel"
        weights: "b.caffemodel"
        """, pb.SolverParameter())
    assert s.type == "Adam"
    assert s.solver_type == pb.SolverParameter.SGD  # unset legacy field
    assert not s.HasField("solver_type")
    assert s.momentum2 == pytest.approx(0.999)
    assert s.delta == pytest.approx(1e-8)
    assert [t.stage[0] for t in s.test_state] == ["test-on-train",
                                                   "test-on-test"]
    assert list(s.weights) == ["a.caffemodel", "b.caffemodel"]


def test_unknown_field_is_rejected():
    # a typo must not pass silently
    with pytest.raises(text_format.ParseError):
        text_format.Parse('layer { name: "x" convolution_parm { } }',
                          pb.NetParameter())


# ---------------------------------------------------------------------------
# (d) binary files
# ---------------------------------------------------------------------------

def test_blobproto_binary_round_trip_packed():
    values = [0.5, -1.25, 3.0, 1e-3, 0.0, 42.0]
    b = pb.BlobProto()
    b.shape.dim.extend([2, 3])
    b.data.extend(values)
    raw = b.SerializeToString()
    # Field 5 (data) is one length-delimited run of little-endian float32s,
    # so a reader can map it straight into an array.
    packed = struct.pack("<%df" % len(values), *values)
    assert bytes([5 << 3 | 2, len(packed)]) + packed in raw
    # shape: field 7 holding BlobShape{dim packed [2, 3]}
    assert bytes([7 << 3 | 2, 4, 1 << 3 | 2, 2, 2, 3]) in raw
    back = pb.BlobProto.FromString(raw)
    assert list(back.shape.dim) == [2, 3]
    assert list(back.data) == pytest.approx(values)
    assert back.num == 0 and len(back.diff) == 0


def test_blobproto_reads_unpacked_and_legacy_shape():
    # An old writer's unpacked floats (one tag per value) must still read.
    raw = bytes([1 << 3, 1, 2 << 3, 1, 3 << 3, 1, 4 << 3, 2])
    for v in (1.0, 2.0):
        raw += bytes([5 << 3 | 5]) + struct.pack("<f", v)
    b = pb.BlobProto.FromString(raw)
    assert (b.num, b.channels, b.height, b.width) == (1, 1, 1, 2)
    assert list(b.data) == [1.0, 2.0]


def test_layer_binary_layout_matches_caffe():
    layer = pb.LayerParameter(name="c", type="Convolution")
    layer.convolution_param.num_output = 1
    raw = layer.SerializeToString()
    # field 106, wire type 2 -> varint 850 = d2 06; body: field 1 varint 1
    assert bytes([0xD2, 0x06, 2, 0x08, 1]) in raw
    net = pb.NetParameter()
    net.layer.add().CopyFrom(layer)
    assert net.SerializeToString().startswith(bytes([0xA2, 0x06]))  # field 100


def test_datum_round_trip():
    pixels = bytes(range(2 * 3 * 4))
    d = pb.Datum(channels=2, height=3, width=4, data=pixels, label=7)
    raw = d.SerializeToString()
    back = pb.Datum.FromString(raw)
    assert (back.channels, back.height, back.width) == (2, 3, 4)
    assert back.data == pixels and back.label == 7 and not back.encoded
    assert raw.startswith(bytes([0x08, 2, 0x10, 3, 0x18, 4, 0x22, 24]))
    f = pb.Datum(channels=1, height=1, width=2, float_data=[0.25, 4.0])
    assert list(pb.Datum.FromString(f.SerializeToString()).float_data) == \
        [0.25, 4.0]
    enc = pb.Datum(encoded=True, data=b"\xff\xd8\xff", label=1)
    assert pb.Datum.FromString(enc.SerializeToString()).encoded


def test_annotated_datum_round_trip():
    ad = pb.AnnotatedDatum(type=pb.AnnotatedDatum.BBOX)
    ad.datum.channels = 3
    g = ad.annotation_group.add(group_label=12)
    a = g.annotation.add(instance_id=0)
    a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax = 0.1, 0.2, 0.5, 0.9
    a.bbox.difficult = True
    back = pb.AnnotatedDatum.FromString(ad.SerializeToString())
    assert back == ad
    assert back.annotation_group[0].annotation[0].bbox.ymax == \
        pytest.approx(0.9)
