#!/usr/bin/env sh
# Converts MNIST into examples/mnist/mnist_train_lmdb and mnist_test_lmdb, the LMDBs of
# Datum records that lenet_train_test.prototxt reads. Run from the repository root, as in
# Caffe. Extra arguments go to the command, e.g. --url to use another mirror of the four
# MNIST idx .gz files (or set NETKIT_MNIST_URL).
set -e

EXAMPLE=examples/mnist

echo "Creating lmdb..."
netkit convert_mnist_data "$EXAMPLE" "$@"
echo "Done."
