"""Write the solver reference files that tests/test_caffe_reference_solvers.py checks netkit
against: BVLC Caffe itself (not netkit) trains a small net for 10 iterations from one set of
initial weights, once per solver type, lr policy and update option, snapshotting at 5 and 10.

Run it with BVLC Caffe's `caffe` tool and pycaffe (python3) on the PATH, e.g. Debian
bullseye's `caffe` and `python3-caffe` packages (BVLC master 99bd997, 2018-08-21):

    python3 make_solvers.py OUTDIR

OUTDIR then holds the data (data.h5 and its list file), the net, init.caffemodel, one
solver_NAME.prototxt per case and Caffe's snapshots NAME_iter_{5,10}.{caffemodel,solverstate}
(.h5 for the HDF5 case), and Caffe's training logs of two cases (NAME.log).
"""
import os
import subprocess
import sys

import caffe
import h5py
import numpy as np

NET = """name: "reference"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
        hdf5_data_param { source: "data.txt" batch_size: 8 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
        hdf5_data_param { source: "data.txt" batch_size: 8 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3
          weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "squash" type: "TanH" bottom: "pool" top: "squash" }
layer { name: "ip_a" type: "InnerProduct" bottom: "pool" top: "ip_a"
        param { name: "shared_w" } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 5
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "squash" top: "ip_b"
        param { name: "shared_w" } param { lr_mult: 0.5 decay_mult: 2 }
        inner_product_param { num_output: 5
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip_a" bottom: "ip_b" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""

COMMON = """net: "net.prototxt"
test_iter: 2
test_interval: 5
display: 1
max_iter: 10
snapshot: 5
random_seed: 1
solver_mode: CPU
"""

# name -> the solver fields beyond COMMON; each case changes one thing from its neighbours
CASES = {
    "sgd": 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.005',
    "sgd_l1": 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.005 '
              'regularization_type: "L1"',
    "step": 'base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 3 momentum: 0.5',
    "exp": 'base_lr: 0.1 lr_policy: "exp" gamma: 0.9',
    "inv": 'base_lr: 0.1 lr_policy: "inv" gamma: 0.1 power: 0.75 weight_decay: 0.005',
    "multistep": 'base_lr: 0.1 lr_policy: "multistep" gamma: 0.5 stepvalue: 3 stepvalue: 7',
    "poly": 'base_lr: 0.1 lr_policy: "poly" power: 2',
    "sigmoid": 'base_lr: 0.1 lr_policy: "sigmoid" gamma: 0.5 stepsize: 5',
    "iter_size": 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 2',
    "clip": 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 clip_gradients: 0.05',
    "nesterov": 'type: "Nesterov" base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 '
                'weight_decay: 0.005',
    "adagrad": 'type: "AdaGrad" base_lr: 0.05 lr_policy: "fixed" weight_decay: 0.005',
    "rmsprop": 'type: "RMSProp" base_lr: 0.01 lr_policy: "inv" gamma: 0.1 power: 0.75 '
               'rms_decay: 0.98 weight_decay: 0.005',
    "adadelta": 'type: "AdaDelta" base_lr: 1 lr_policy: "fixed" momentum: 0.95 delta: 1e-6 '
                'weight_decay: 0.005',
    "adam": 'type: "Adam" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999 '
            'weight_decay: 0.005',
    "hdf5": 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 snapshot_format: HDF5',
}
LOGGED = ("sgd", "adam")


def write_data():
    """32 seeded 1x8x8 images with labels 0..4, in one HDF5 file behind a list file."""
    rs = np.random.RandomState(5)
    with h5py.File("data.h5", "w") as f:
        f["data"] = rs.uniform(-1, 1, (32, 1, 8, 8)).astype(np.float32)
        f["label"] = rs.randint(0, 5, 32).astype(np.float32)
    with open("data.txt", "w") as f:
        f.write("data.h5\n")


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    os.chdir(outdir)
    write_data()
    with open("net.prototxt", "w") as f:
        f.write(NET)
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    caffe.Net("net.prototxt", caffe.TRAIN).save("init.caffemodel")
    for name, fields in CASES.items():
        with open("solver_%s.prototxt" % name, "w") as f:
            f.write(COMMON + 'snapshot_prefix: "%s"\n%s\n' % (name, fields))
        log = subprocess.run(["caffe", "train", "-solver", "solver_%s.prototxt" % name,
                              "-weights", "init.caffemodel"],
                             stderr=subprocess.PIPE, universal_newlines=True, check=True).stderr
        if name in LOGGED:
            with open("%s.log" % name, "w") as f:
                f.write(log)


if __name__ == "__main__":
    main(sys.argv[1])
