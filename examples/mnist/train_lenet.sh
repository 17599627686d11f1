#!/usr/bin/env sh
# Train LeNet on MNIST with Caffe's stock solver. Run from the repository root.
set -e
netkit convert_mnist_data examples/mnist
netkit train --solver=examples/mnist/lenet_solver.prototxt "$@"
