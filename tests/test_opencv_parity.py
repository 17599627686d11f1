"""Files netkit writes load in OpenCV's Caffe importer and give netkit's numbers.

OpenCV's dnn module (opencv-python-headless < 5) is an implementation of Caffe's layers
that we did not write: it reads our .caffemodel with the deploy prototxt.
"""
import os

import numpy as np
import pytest

from netkit import TEST, Net

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe importer")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def opencv_forward(deploy, weights, x, output=None):
    net = cv2.dnn.readNetFromCaffe(deploy, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return net.forward(output) if output else net.forward()


def test_lenet_caffemodel_loads_in_opencv_with_same_probabilities(tmp_path):
    deploy = os.path.join(EXAMPLES, "mnist", "lenet.prototxt")
    train = Net(deploy, TEST)
    # Give every parameter non-trivial values (the deploy net has no fillers).
    rs = np.random.RandomState(0)
    for blobs in train.params.values():
        for b in blobs:
            b.data[...] = rs.standard_normal(b.shape).astype(np.float32) * 0.1
    path = str(tmp_path / "lenet.caffemodel")
    train.save(path)

    x = rs.uniform(0, 1, (64, 1, 28, 28)).astype(np.float32)
    net = Net(deploy, TEST, weights=path)
    ours = net.forward(data=x)["prob"]
    theirs = opencv_forward(deploy, path, x)
    assert ours.shape == theirs.shape == (64, 10)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    # Intermediate blobs too.
    for name in ("conv1", "pool1", "conv2", "pool2", "ip2"):
        np.testing.assert_allclose(net.blobs[name].data, opencv_forward(deploy, path, x, name),
                                   atol=1e-4, rtol=1e-4)
