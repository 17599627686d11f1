"""netkit classify: Caffe's classification example on real photos, checked against the
preprocessing and forward pass written out by hand."""
import re

import cv2
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

from netkit import netkit_pb2 as pb
from netkit.layer import TEST
from netkit.net import Net
from netkit.tools.classify import command
from netkit.weights import array_to_blob_proto

DEPLOY = """
name: "tiny_classifier"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 5 stride: 2
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
LABELS = ["n0 zero", "n1 one", "n2 two", "n3 three", "n4 four", "n5 five"]
MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # BGR


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify")
    (d / "deploy.prototxt").write_text(DEPLOY)
    Net(str(d / "deploy.prototxt"), phase=TEST).save(str(d / "w.caffemodel"))
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
    photos = []
    for name in ("astronaut", "coffee", "chelsea"):
        path = str(d / (name + ".jpg"))
        cv2.imwrite(path, getattr(skimage.data, name)()[:, :, ::-1])
        photos.append(path)
    mean = np.broadcast_to(MEAN.reshape(3, 1, 1), (3, 40, 40)).copy()
    (d / "mean.binaryproto").write_bytes(array_to_blob_proto(mean[None]).SerializeToString())
    return d, photos


def by_hand(d, photos, dims, crop=32):
    """RGB in [0,1] -> resize (bilinear) -> centre crop -> CHW -> BGR -> x255 -> -mean."""
    net = Net(str(d / "deploy.prototxt"), str(d / "w.caffemodel"), TEST)
    batch = []
    for path in photos:
        image = cv2.imread(path)[:, :, ::-1].astype(np.float32) / 255
        image = cv2.resize(image, (dims[1], dims[0]), interpolation=cv2.INTER_LINEAR)
        top, left = (dims[0] - crop) // 2, (dims[1] - crop) // 2
        image = image[top:top + crop, left:left + crop].transpose(2, 0, 1)[::-1] * 255
        batch.append(image - MEAN.reshape(3, 1, 1))
    probs = []
    for start in range(0, len(batch), 2):
        chunk = np.zeros((2, 3, crop, crop), np.float32)
        chunk[:len(batch[start:start + 2])] = batch[start:start + 2]
        probs.append(net.forward(data=chunk)["prob"].reshape(2, -1).copy())
    return np.concatenate(probs)[:len(photos)]


def test_centre_crop_top_k_and_npy_match_the_hand_pipeline(files, tmp_path):
    d, photos = files
    out = tmp_path / "probs.npy"
    result = CliRunner().invoke(command, [
        "--model", str(d / "deploy.prototxt"), "--weights", str(d / "w.caffemodel"),
        "--mean", str(d / "mean.binaryproto"), "--images_dim", "48,40", "--center_only",
        "--labels", str(d / "labels.txt"), "--top_k", "3", "--output", str(out)] + photos)
    assert result.exit_code == 0, result.output
    expected = by_hand(d, photos, (48, 40))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-6)
    blocks = result.output.split("---------- Prediction for ")[1:]
    assert len(blocks) == 3
    for block, path, p in zip(blocks, photos, expected):
        lines = block.strip().splitlines()
        assert lines[0] == "%s ----------" % path
        shown = [re.match(r'(\d\.\d{4}) - "(.*)"$', line).groups() for line in lines[1:4]]
        top = np.argsort(-p, kind="stable")[:3]
        assert [label for _, label in shown] == [LABELS[k] for k in top]
        np.testing.assert_allclose([float(v) for v, _ in shown], p[top], atol=1e-4)


def test_ten_crops_average_the_crops_and_mean_values_work(files, tmp_path):
    d, photos = files
    out = tmp_path / "probs.npy"
    result = CliRunner().invoke(command, [
        "--model", str(d / "deploy.prototxt"), "--weights", str(d / "w.caffemodel"),
        "--mean_value", "104,117,123", "--images_dim", "40,40", "--output", str(out),
        photos[0]])
    assert result.exit_code == 0, result.output
    assert re.search(r'^\d\.\d{4} - "\d"$', result.output, re.M)  # no labels: class index
    centre = by_hand(d, photos[:1], (40, 40))
    ten = np.load(out)
    assert ten.shape == (1, 6) and np.isclose(ten.sum(), 1, atol=1e-5)
    assert not np.allclose(ten, centre, atol=1e-7)  # the corners and mirrors count


@pytest.mark.parametrize("args,message", [
    (["--labels", "short"], "has 2 labels but the net gives 6 classes"),
    (["--mean_value", "1,x"], "--mean_value expects comma-separated numbers"),
    (["--mean_value", "1,2,3", "--mean", "m"], "give --mean or --mean_value, not both"),
    (["missing.jpg"], "missing.jpg: cannot read the image"),
])
def test_bad_input_is_one_line(files, tmp_path, args, message):
    d, photos = files
    (tmp_path / "short").write_text("a\nb\n")
    images = [] if args[-1].endswith(".jpg") else photos[:1]
    result = CliRunner().invoke(command, [
        "--model", str(d / "deploy.prototxt"), "--weights", str(d / "w.caffemodel")]
        + [str(tmp_path / a) if a == "short" else a for a in args] + images)
    assert result.exit_code != 0
    assert message in str(result.exception), result.output
