"""Write the tool reference files that tests/test_caffe_reference_tools.py checks netkit
against: BVLC Caffe's own data tools, data layers and upgraders (not netkit) run on small
inputs this script makes itself.

Run it with BVLC Caffe's tools and pycaffe (python3, numpy, PIL) on the PATH, e.g. Debian
bullseye's `caffe` and `python3-caffe` packages (BVLC master 99bd997, 2018-08-21, with
OpenCV 4.5.1 and libjpeg-turbo 2.0.6), here in a chroot holding them, from
tests/caffe_reference/ (a few seconds):

    mkdir -p CHROOT/tmp/tools_gen && cp make_tools.py CHROOT/tmp/tools_gen/
    chroot CHROOT env OPENBLAS_NUM_THREADS=1 python3 /tmp/tools_gen/make_tools.py \
        /tmp/tools_gen/out
    rm -rf tools && cp -r CHROOT/tmp/tools_gen/out tools

OUTDIR (which must not exist) then holds, all paths relative to it:

- images/ and list.txt: six seeded images, PNG and JPEG, colour and grey, 20..26 pixels a
  side, one in a folder with a space in its name; list.txt names them with labels;
- lmdb_NAME/: convert_imageset's LMDB for each case of CONVERT (flags in manifest.json);
- mean.binaryproto, mean_encoded.binaryproto: compute_image_mean of lmdb_resized and of
  lmdb_resized_encoded, and compute_image_mean.log: its log lines;
- net_NAME.prototxt and tops_NAME.npz: TEST-phase nets with one Data or ImageData layer
  (DATA_NETS) and pycaffe's tops of its first FORWARDS forward passes (data_0, label_0, ...);
- mnist/: IDX files of 20 seeded 28x28 images and their labels, and convert_mnist_data's
  LMDB of them (mnist/lmdb);
- upgrade/: old-format nets and solvers (NAME.prototxt, NAME.caffemodel written here with
  caffe_pb2) and what Caffe's upgrade_net_proto_text, upgrade_net_proto_binary and
  upgrade_solver_proto_text make of them (NAME.upgraded.prototxt / .caffemodel) and their
  logs (NAME.log);
- manifest.json: the cases above.

LMDB lock files are removed (readers open the databases without locking).
"""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

os.environ.setdefault("GLOG_minloglevel", "2")  # pycaffe: errors and worse
import caffe  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

# (path under images/, label, (height, width), grey?)
IMAGES = [
    ("a_red.png", 3, (20, 24), False),
    ("b.jpg", 0, (22, 26), False),
    ("c_grey.png", 7, (24, 20), True),
    ("d_grey.jpg", 1, (20, 24), True),
    ("e.JPEG", -1, (21, 23), False),
    ("sub dir/f.png", 12, (23, 22), False),
]

# convert_imageset cases: LMDB name -> flags
CONVERT = {
    "raw": [],
    "encoded": ["--encoded"],
    "resized": ["--resize_height", "20", "--resize_width", "24"],
    "gray": ["--gray"],
    "png": ["--encode_type", "png"],
    "jpg": ["--encode_type", "jpg"],
    "resized_encoded": ["--encoded", "--resize_height", "20", "--resize_width", "24"],
    "gray_resized_encoded": ["--gray", "--encoded", "--resize_height", "18",
                             "--resize_width", "22"],
}

# compute_image_mean cases: output file -> LMDB
MEANS = {"mean.binaryproto": "lmdb_resized", "mean_encoded.binaryproto": "lmdb_resized_encoded"}

FORWARDS = 2  # 2 batches of 4 read 8 of the 6 records: the second batch wraps around

DATA = """layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{source}" batch_size: 4 backend: LMDB }}
  transform_param {{ {transform} }} }}
"""
IMAGE_DATA = """layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  image_data_param {{ source: "list.txt" root_folder: "images/" batch_size: 4 {param} }}
  transform_param {{ {transform} }} }}
"""

# TEST-phase nets of one data layer: name -> prototxt
DATA_NETS = {
    # all 20x24: a centred crop of the mean image
    "data_mean_file": DATA.format(
        source="lmdb_resized",
        transform='crop_size: 16 mean_file: "mean.binaryproto" scale: 0.25'),
    # raw records of different sizes, cropped to one
    "data_mean_value_mixed_sizes": DATA.format(
        source="lmdb_raw", transform="crop_size: 18 mean_value: 100 mean_value: 110 "
                                     "mean_value: 120 scale: 0.5"),
    # encoded (the files' own JPEG and PNG bytes) decoded grey
    "data_encoded_force_gray": DATA.format(
        source="lmdb_encoded", transform="crop_size: 16 mean_value: 128 scale: 0.0078125 "
                                         "force_gray: true"),
    # PNG records, grey files among them, decoded in colour
    "data_png_force_color": DATA.format(
        source="lmdb_png", transform="crop_size: 19 mean_value: 20 mean_value: 40 "
                                     "mean_value: 60 force_color: true"),
    # raw grey records: force_color applies to encoded records only
    "data_gray_raw": DATA.format(
        source="lmdb_gray", transform="crop_size: 20 mean_value: 50 force_color: true"),
    # encoded, all 20x24, the whole mean image, no crop
    "data_encoded_mean_file": DATA.format(
        source="lmdb_resized_encoded",
        transform='mean_file: "mean_encoded.binaryproto" scale: 0.00390625'),
    "image_data_gray_resized": IMAGE_DATA.format(
        param="new_height: 20 new_width: 24 is_color: false",
        transform="mean_value: 10 scale: 0.5"),
    "image_data_color_crop": IMAGE_DATA.format(
        param="", transform="crop_size: 18 mean_value: 104 mean_value: 117 mean_value: 123"),
    "image_data_resized_mean_file": IMAGE_DATA.format(
        param="new_height: 20 new_width: 24",
        transform='crop_size: 14 mean_file: "mean.binaryproto"'),
}

MNIST_ITEMS = 20

# -- old-format nets and solvers for the upgraders -------------------------------------------
V0_TRAIN = """name: "v0_train"
force_backward: true
layers { layer { name: "data" type: "data" source: "lmdb_resized" meanfile: "mean.binaryproto"
                 batchsize: 4 cropsize: 16 mirror: true scale: 0.00390625 rand_skip: 3 }
         top: "data" top: "label" }
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 2 group: 1
                 biasterm: true weight_filler { type: "gaussian" std: 0.01 }
                 bias_filler { type: "constant" value: 0.1 }
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 pad: 1 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 k: 2 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "norm1" top: "pad2" }
layers { layer { name: "conv2" type: "conv" num_output: 6 kernelsize: 3 group: 2
                 biasterm: false weight_filler { type: "xavier" } }
         bottom: "pad2" top: "conv2" }
layers { layer { name: "pool2" type: "pool" pool: AVE kernelsize: 2 stride: 2 }
         bottom: "conv2" top: "pool2" }
layers { layer { name: "pool3" type: "pool" pool: STOCHASTIC kernelsize: 2 }
         bottom: "pool2" top: "pool3" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10 biasterm: false
                 weight_filler { type: "gaussian" std: 0.005 } blobs_lr: 1 weight_decay: 1 }
         bottom: "pool3" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
layers { layer { name: "loss" type: "softmax_loss" } bottom: "fc" bottom: "label" }
layers { layer { name: "accuracy" type: "accuracy" } bottom: "fc" bottom: "label"
         top: "accuracy" }
"""

V0_MANY = """name: "v0_many"
layers { layer { name: "images" type: "images" source: "list.txt" batchsize: 2
                 new_height: 20 new_width: 24 shuffle_images: true rand_skip: 1
                 cropsize: 18 meanfile: "mean.binaryproto" }
         top: "images" top: "image_labels" }
layers { layer { name: "windows" type: "window_data" source: "windows.txt" batchsize: 3
                 det_fg_threshold: 0.6 det_bg_threshold: 0.4 det_fg_fraction: 0.3
                 det_context_pad: 2 det_crop_mode: "square" cropsize: 16 mirror: false }
         top: "windows" top: "window_labels" }
layers { layer { name: "h5" type: "hdf5_data" source: "h5.txt" batchsize: 5 }
         top: "h5" top: "h5_label" }
layers { layer { name: "concat" type: "concat" concat_dim: 1 } bottom: "h5" bottom: "h5"
         top: "cat" }
layers { layer { name: "split" type: "split" } bottom: "cat" top: "cat_a" top: "cat_b" }
layers { layer { name: "flat" type: "flatten" } bottom: "cat_a" top: "flat" }
layers { layer { name: "sig" type: "sigmoid" } bottom: "flat" top: "sig" }
layers { layer { name: "tanh" type: "tanh" } bottom: "sig" top: "tanh" }
layers { layer { name: "bnll" type: "bnll" } bottom: "tanh" top: "bnll" }
layers { layer { name: "i2c" type: "im2col" }
         bottom: "images" top: "cols" }
layers { layer { name: "soft" type: "softmax" } bottom: "bnll" top: "prob" }
layers { layer { name: "mlogistic" type: "multinomial_logistic_loss" } bottom: "prob"
         bottom: "h5_label" }
layers { layer { name: "infogain" type: "infogain_loss" source: "infogain.binaryproto" }
         bottom: "prob" bottom: "h5_label" }
layers { layer { name: "euclid" type: "euclidean_loss" } bottom: "flat" bottom: "cat_b" }
layers { layer { name: "out" type: "hdf5_output"
                 hdf5_output_param { file_name: "out.h5" } }
         bottom: "windows" bottom: "window_labels" }
"""

V0_DEPLOY = """name: "v0_deploy"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 20 input_dim: 24
layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "pad" }
layers { layer { name: "conv" type: "conv" num_output: 4 kernelsize: 3
                 weight_filler { type: "constant" value: 0.5 } } bottom: "pad" top: "conv" }
layers { layer { name: "pool" type: "pool" kernelsize: 2 stride: 2 } bottom: "conv"
         top: "pool" }
layers { layer { name: "prob" type: "softmax" } bottom: "pool" top: "prob" }
"""

V1_TRAIN_VAL = """name: "v1_train_val"
layers { name: "data" type: DATA top: "data" top: "label"
         data_param { source: "lmdb_resized" batch_size: 4 backend: LMDB
                      scale: 0.00390625 mean_file: "mean.binaryproto" crop_size: 16
                      mirror: true }
         include { phase: TRAIN } }
layers { name: "data" type: DATA top: "data" top: "label"
         data_param { source: "lmdb_resized" batch_size: 2 backend: LMDB }
         transform_param { crop_size: 16 mean_value: 100 }
         include { phase: TEST stage: "val" } }
layers { name: "images" type: IMAGE_DATA top: "images" top: "image_labels"
         image_data_param { source: "list.txt" root_folder: "images/" batch_size: 2
                            new_height: 20 new_width: 24 mirror: false crop_size: 14 }
         exclude { phase: TEST } }
layers { name: "windows" type: WINDOW_DATA top: "windows" top: "window_labels"
         window_data_param { source: "windows.txt" batch_size: 2 fg_threshold: 0.6
                             scale: 2 mean_file: "mean.binaryproto" crop_mode: "square" } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         param: "conv1_w" param: "conv1_b" blob_share_mode: STRICT blob_share_mode: PERMISSIVE
         convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 1 group: 1
                             weight_filler { type: "msra" } bias_filler { type: "constant" } } }
layers { name: "conv1b" type: CONVOLUTION bottom: "data" top: "conv1b"
         param: "conv1_w" param: "conv1_b"
         convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1"
         relu_param { negative_slope: 0.1 } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1
         inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss"
         loss_weight: 2 loss_param { ignore_label: 4 normalize: false } }
layers { name: "accuracy" type: ACCURACY bottom: "fc" bottom: "label" top: "accuracy"
         accuracy_param { top_k: 2 } include { phase: TEST } }
"""

V1_MANY = """name: "v1_many"
layers { name: "dummy" type: DUMMY_DATA top: "a" top: "b"
         dummy_data_param { num: 2 channels: 3 height: 4 width: 5
                            data_filler { type: "gaussian" std: 2 } } }
layers { name: "memory" type: MEMORY_DATA top: "m" top: "m_label"
         memory_data_param { batch_size: 2 channels: 3 height: 4 width: 5 }
         transform_param { scale: 0.5 } }
layers { name: "h5" type: HDF5_DATA top: "h" top: "h_label"
         hdf5_data_param { source: "h5.txt" batch_size: 2 shuffle: true } }
layers { name: "abs" type: ABSVAL bottom: "a" top: "abs" }
layers { name: "argmax" type: ARGMAX bottom: "a" top: "argmax"
         argmax_param { out_max_val: true top_k: 2 } }
layers { name: "bnll" type: BNLL bottom: "a" top: "bnll" }
layers { name: "concat" type: CONCAT bottom: "a" bottom: "b" top: "concat"
         concat_param { axis: 1 } }
layers { name: "contrastive" type: CONTRASTIVE_LOSS bottom: "a" bottom: "b"
         bottom: "m_label" top: "contrastive" contrastive_loss_param { margin: 2 } }
layers { name: "deconv" type: DECONVOLUTION bottom: "a" top: "deconv"
         blobs_lr: 0 blobs_lr: 0
         convolution_param { num_output: 3 kernel_size: 4 stride: 2 group: 3
                             bias_term: false weight_filler { type: "bilinear" } } }
layers { name: "dropout" type: DROPOUT bottom: "a" top: "dropout"
         dropout_param { dropout_ratio: 0.25 } }
layers { name: "euclidean" type: EUCLIDEAN_LOSS bottom: "a" bottom: "b" top: "euclidean"
         loss_weight: 0.5 }
layers { name: "eltwise" type: ELTWISE bottom: "a" bottom: "b" top: "eltwise"
         eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layers { name: "exp" type: EXP bottom: "a" top: "exp"
         exp_param { base: 2 scale: 0.5 shift: 1 } }
layers { name: "flatten" type: FLATTEN bottom: "a" top: "flatten" }
layers { name: "hinge" type: HINGE_LOSS bottom: "flatten" bottom: "m_label" top: "hinge"
         hinge_loss_param { norm: L2 } }
layers { name: "im2col" type: IM2COL bottom: "a" top: "im2col"
         convolution_param { kernel_size: 2 } }
layers { name: "infogain" type: INFOGAIN_LOSS bottom: "flatten" bottom: "m_label"
         top: "infogain" infogain_loss_param { source: "infogain.binaryproto" } }
layers { name: "lrn" type: LRN bottom: "a" top: "lrn"
         lrn_param { local_size: 3 alpha: 2 beta: 0.5 norm_region: WITHIN_CHANNEL } }
layers { name: "mlogistic" type: MULTINOMIAL_LOGISTIC_LOSS bottom: "flatten"
         bottom: "m_label" top: "mlogistic" }
layers { name: "mvn" type: MVN bottom: "a" top: "mvn"
         mvn_param { normalize_variance: false across_channels: true } }
layers { name: "power" type: POWER bottom: "a" top: "power"
         power_param { power: 2 scale: 3 shift: 4 } }
layers { name: "sigmoid" type: SIGMOID bottom: "a" top: "sigmoid"
         sigmoid_param { engine: CAFFE } }
layers { name: "sigmoid_ce" type: SIGMOID_CROSS_ENTROPY_LOSS bottom: "a" bottom: "b"
         top: "sigmoid_ce" }
layers { name: "silence" type: SILENCE bottom: "h" bottom: "h_label" }
layers { name: "slice" type: SLICE bottom: "a" top: "s1" top: "s2"
         slice_param { slice_dim: 1 slice_point: 1 } }
layers { name: "softmax" type: SOFTMAX bottom: "a" top: "softmax"
         softmax_param { axis: 1 } }
layers { name: "split" type: SPLIT bottom: "s1" top: "s1a" top: "s1b" }
layers { name: "tanh" type: TANH bottom: "a" top: "tanh" tanh_param { engine: CAFFE } }
layers { name: "threshold" type: THRESHOLD bottom: "a" top: "threshold"
         threshold_param { threshold: 0.25 } }
layers { name: "pool" type: POOLING bottom: "a" top: "pool"
         pooling_param { pool: AVE global_pooling: true } }
layers { name: "relu" type: RELU bottom: "a" top: "relu" }
layers { name: "ip" type: INNER_PRODUCT bottom: "a" top: "ip"
         inner_product_param { num_output: 3 axis: 1 } }
layers { name: "out" type: HDF5_OUTPUT bottom: "a" bottom: "b"
         hdf5_output_param { file_name: "out.h5" } }
layers { name: "softmax_loss" type: SOFTMAX_LOSS bottom: "flatten" bottom: "m_label"
         top: "softmax_loss" loss_param { normalization: VALID } }
layers { name: "accuracy" type: ACCURACY bottom: "flatten" bottom: "m_label"
         top: "accuracy" }
"""

# A V1 data upgrade that touches only one of two data layers (and no V1 transform fields
# of the other), and a layer with a name and no type.
V1_DATA_ONE = """name: "v1_data_one"
layers { name: "a" type: DATA top: "a" data_param { source: "lmdb_raw" batch_size: 1 } }
layers { name: "b" type: IMAGE_DATA top: "b" top: "b_label"
         image_data_param { source: "list.txt" batch_size: 1 scale: 0.5 } }
layers { name: "c" type: WINDOW_DATA top: "c" top: "c_label" }
layers { name: "notype" bottom: "a" top: "d" }
"""

INPUT_DEPLOY = """name: "input_deploy"
input: "data"
input_dim: 2
input_dim: 3
input_dim: 20
input_dim: 24
input: "extra"
input_dim: 2
input_dim: 1
input_dim: 1
input_dim: 1
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "scale" type: "Scale" bottom: "conv" bottom: "extra" top: "scaled"
        scale_param { axis: 0 } }
"""

INPUT_SHAPE = """name: "input_shape"
input: "data"
input_shape { dim: 1 dim: 3 dim: 20 dim: 24 }
input: "label"
input_shape { dim: 1 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
"""

V1_INPUT = """name: "v1_input"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1
         convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "prob" type: SOFTMAX bottom: "conv" top: "prob" }
"""

BATCH_NORM = """name: "batch_norm"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 name: "shared_var" }
        param { lr_mult: 0 decay_mult: 0 } batch_norm_param { use_global_stats: true } }
layer { name: "bn2" type: "BatchNorm" bottom: "bn" top: "bn2"
        param { lr_mult: 0 } batch_norm_param { eps: 0.001 } }
"""

# Already current: Caffe rewrites it unchanged (and says so).
CURRENT = """name: "current"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } convolution_param { num_output: 2 kernel_size: 3 } }
"""

NETS = {
    "v0_train": V0_TRAIN, "v0_many": V0_MANY, "v0_deploy": V0_DEPLOY,
    "v1_train_val": V1_TRAIN_VAL, "v1_many": V1_MANY, "v1_data_one": V1_DATA_ONE,
    "input_deploy": INPUT_DEPLOY, "input_shape": INPUT_SHAPE, "v1_input": V1_INPUT,
    "batch_norm": BATCH_NORM, "current": CURRENT,
}

SOLVER_COMMON = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 100
max_iter: 300
snapshot_prefix: "snap"
solver_mode: CPU
"""

SOLVERS = {
    "solver_sgd": SOLVER_COMMON + "momentum: 0.9\nweight_decay: 0.0005\nsolver_type: SGD\n",
    "solver_nesterov": SOLVER_COMMON + "momentum: 0.95\nsolver_type: NESTEROV\n",
    "solver_adagrad": SOLVER_COMMON + "delta: 1e-7\nsolver_type: ADAGRAD\n",
    "solver_rmsprop": SOLVER_COMMON + "rms_decay: 0.95\nsolver_type: RMSPROP\n",
    "solver_adadelta": SOLVER_COMMON + "momentum: 0.95\ndelta: 1e-6\nsolver_type: ADADELTA\n",
    "solver_adam": SOLVER_COMMON + "momentum: 0.9\nmomentum2: 0.999\ndelta: 1e-8\n"
                                   "solver_type: ADAM\n",
    # an inline V1 net: the solver tool upgrades the solver fields only
    "solver_inline_v1_net": """base_lr: 0.1
lr_policy: "fixed"
solver_type: NESTEROV
momentum: 0.9
train_net_param { name: "inline"
  layers { name: "ip" type: INNER_PRODUCT top: "ip" blobs_lr: 2 } }
""",
    # already current
    "solver_current": SOLVER_COMMON + 'type: "Adam"\n',
}


def run(args, log=None, cwd=None):
    """Run a Caffe tool; its log lines go to `log` (a path) when given."""
    result = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True,
                            env=dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0"))
    if log:
        with open(log, "w") as f:
            f.write(result.stdout)
    if result.returncode != 0:
        sys.exit("%s failed:\n%s" % (" ".join(args), result.stdout))
    return result.stdout


def make_images(out):
    """IMAGES, seeded: smooth colour gradients and rings with some noise (so that JPEG has
    something to do), written with PIL; and list.txt."""
    rs = np.random.RandomState(20180821)
    for i, (path, _, (h, w), grey) in enumerate(IMAGES):
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        rings = 127 + 120 * np.sin(np.hypot(y - h * rs.rand(), x - w * rs.rand()) / (2 + i))
        channels = [rings, 255 * x / (w - 1), 255 * (1 - y / (h - 1))]
        rgb = np.stack(channels, axis=2) + rs.normal(0, 12, (h, w, 3))
        rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
        image = Image.fromarray(rgb, "RGB")
        if grey:
            image = image.convert("L")
        target = os.path.join(out, "images", path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if path.lower().endswith((".jpg", ".jpeg")):
            image.save(target, "JPEG", quality=85)
        else:
            image.save(target, "PNG")
    with open(os.path.join(out, "list.txt"), "w") as f:
        f.write("".join("%s %d\n" % (path, label) for path, label, _, _ in IMAGES))


def remove_lock(db):
    lock = os.path.join(db, "lock.mdb")
    if os.path.exists(lock):
        os.remove(lock)


def make_databases(out):
    for name, flags in CONVERT.items():
        run(["convert_imageset"] + flags + ["images/", "list.txt", "lmdb_" + name],
            log=os.path.join(out, "convert_imageset_%s.log" % name), cwd=out)
        remove_lock(os.path.join(out, "lmdb_" + name))
    for mean, db in MEANS.items():
        run(["compute_image_mean", db, mean],
            log=os.path.join(out, "compute_image_mean_%s.log" % db[len("lmdb_"):]), cwd=out)


def make_tops(out):
    """pycaffe's tops of each DATA_NETS net (run in OUTDIR, where its paths are)."""
    here = os.getcwd()
    os.chdir(out)
    try:
        caffe.set_mode_cpu()
        for name, text in DATA_NETS.items():
            with open("net_%s.prototxt" % name, "w") as f:
                f.write('name: "%s"\n%s' % (name, text))
            net = caffe.Net("net_%s.prototxt" % name, caffe.TEST)
            tops = {}
            for i in range(FORWARDS):
                net.forward()
                tops["data_%d" % i] = net.blobs["data"].data.copy()
                tops["label_%d" % i] = net.blobs["label"].data.copy()
            del net
            np.savez_compressed("tops_%s.npz" % name, **tops)
    finally:
        os.chdir(here)
    for db in CONVERT:
        remove_lock(os.path.join(out, "lmdb_" + db))


def make_mnist(out):
    """Tiny IDX files (Caffe's convert_mnist_data input format) and Caffe's LMDB of them."""
    rs = np.random.RandomState(28)
    images = rs.randint(0, 256, size=(MNIST_ITEMS, 28, 28)).astype(np.uint8)
    images[:, :4] = 0  # MNIST has empty borders
    labels = rs.randint(0, 10, size=MNIST_ITEMS).astype(np.uint8)
    folder = os.path.join(out, "mnist")
    os.makedirs(folder)
    with open(os.path.join(folder, "images-idx3-ubyte"), "wb") as f:
        f.write(np.array([2051, MNIST_ITEMS, 28, 28], ">u4").tobytes() + images.tobytes())
    with open(os.path.join(folder, "labels-idx1-ubyte"), "wb") as f:
        f.write(np.array([2049, MNIST_ITEMS], ">u4").tobytes() + labels.tobytes())
    run(["convert_mnist_data", "images-idx3-ubyte", "labels-idx1-ubyte", "lmdb"],
        log=os.path.join(folder, "convert_mnist_data.log"), cwd=folder)
    remove_lock(os.path.join(folder, "lmdb"))


def blob(rs, *shape):
    """A legacy 4-D BlobProto of seeded values."""
    shape = (1,) * (4 - len(shape)) + shape
    proto = caffe_pb2.BlobProto(num=shape[0], channels=shape[1], height=shape[2],
                                width=shape[3])
    proto.data.extend(rs.normal(0, 1, int(np.prod(shape))).astype(np.float32).tolist())
    return proto


def binary_nets():
    """A V1 .caffemodel (enum types, blobs, blobs_lr, a legacy net-level input without a
    shape) and a V0 one (with a padding layer), built with Caffe's own caffe_pb2."""
    rs = np.random.RandomState(99)
    V1 = caffe_pb2.V1LayerParameter
    v1 = caffe_pb2.NetParameter(name="v1_binary", input=["data"])
    conv = v1.layers.add(name="conv1", type=V1.CONVOLUTION, bottom=["data"], top=["conv1"],
                         blobs_lr=[1, 2], weight_decay=[1, 0])
    conv.convolution_param.num_output = 2
    conv.convolution_param.kernel_size.append(3)
    conv.blobs.extend([blob(rs, 2, 3, 3, 3), blob(rs, 2)])
    v1.layers.add(name="relu1", type=V1.RELU, bottom=["conv1"], top=["conv1"])
    ip = v1.layers.add(name="fc", type=V1.INNER_PRODUCT, bottom=["conv1"], top=["fc"],
                       param=["fc_w"], blobs_lr=[1, 2])
    ip.inner_product_param.num_output = 4
    ip.blobs.extend([blob(rs, 4, 18), blob(rs, 4)])
    loss = v1.layers.add(name="loss", type=V1.SOFTMAX_LOSS, bottom=["fc", "label"])
    loss.include.add(phase=caffe_pb2.TRAIN)

    v0 = caffe_pb2.NetParameter(name="v0_binary", input=["data"], input_dim=[1, 3, 8, 8])
    pad = v0.layers.add(bottom=["data"], top=["pad"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad", "padding", 1
    conv = v0.layers.add(bottom=["pad"], top=["conv"])
    conv.layer.name, conv.layer.type = "conv", "conv"
    conv.layer.num_output, conv.layer.kernelsize = 2, 3
    conv.layer.blobs_lr.extend([1, 2])
    conv.layer.blobs.extend([blob(rs, 2, 3, 3, 3), blob(rs, 2)])
    ip = v0.layers.add(bottom=["conv"], top=["ip"])
    ip.layer.name, ip.layer.type, ip.layer.num_output = "ip", "innerproduct", 3
    ip.layer.blobs.extend([blob(rs, 3, 128), blob(rs, 3)])
    return {"v1_binary": v1, "v0_binary": v0}


def make_upgrades(out):
    folder = os.path.join(out, "upgrade")
    os.makedirs(folder)
    cases = {}
    for kind, tool, ext, inputs in [
            ("net_text", "upgrade_net_proto_text", ".prototxt", NETS),
            ("net_binary", "upgrade_net_proto_binary", ".caffemodel",
             {name: param.SerializeToString() for name, param in binary_nets().items()}),
            ("solver_text", "upgrade_solver_proto_text", ".prototxt", SOLVERS)]:
        for name, content in inputs.items():
            with open(os.path.join(folder, name + ext),
                      "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
            run([tool, name + ext, name + ".upgraded" + ext],
                log=os.path.join(folder, name + ".log"), cwd=folder)
            cases.setdefault(kind, []).append(name)
    return cases


def main(out):
    if os.path.exists(out):
        sys.exit("%s exists; give a new directory" % out)
    os.makedirs(out)
    make_images(out)
    make_databases(out)
    make_tops(out)
    make_mnist(out)
    upgrades = make_upgrades(out)
    manifest = {
        "caffe": "BVLC Caffe 1.0.0+git20180821.99bd997 (Debian bullseye)",
        "images": [{"path": p, "label": label, "size": list(size), "grey": grey}
                   for p, label, size, grey in IMAGES],
        "convert_imageset": CONVERT,
        "compute_image_mean": MEANS,
        "data_nets": sorted(DATA_NETS),
        "forwards": FORWARDS,
        "mnist_items": MNIST_ITEMS,
        "upgrade": upgrades,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
