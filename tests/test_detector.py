"""netkit.Detector (pycaffe's caffe.Detector): R-CNN window crops with context padding
against expectations worked out by hand, detect_windows against the pipeline written out
with OpenCV, and Selective Search's missing module."""
import os
import sys
import types

import cv2
import numpy as np
import pytest

import netkit
from netkit import Detector, NetkitError
from netkit.layer import TEST
from netkit.net import Net

MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # BGR, in [0, 255]


def deploy(size, batch=2):
    """Input (batch, 3, size, size) -> Convolution -> InnerProduct -> Softmax."""
    return """
name: "tiny_rcnn"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: %d dim: 3 dim: %d dim: %d } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 5 stride: 3
                            weight_filler { type: "gaussian" std: 0.01 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
""" % (batch, size, size)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{input size: (deploy path, weights path)} for 20 x 20 and R-CNN's 227 x 227."""
    d = tmp_path_factory.mktemp("detector")
    out = {}
    for size in (20, 227):
        model = d / ("deploy%d.prototxt" % size)
        model.write_text(deploy(size))
        weights = d / ("w%d.caffemodel" % size)
        Net(str(model), phase=TEST).save(str(weights))
        out[size] = (str(model), str(weights))
    return out


def detector(models, size, **kwargs):
    model, weights = models[size]
    return Detector(model, weights, **kwargs)


def caffe_style(models, size, context_pad, **kwargs):
    """A Detector configured as R-CNN's: BGR, [0, 255], the ImageNet mean per channel."""
    return detector(models, size, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                    context_pad=context_pad, **kwargs)


def image(height, width, seed=0):
    return np.random.RandomState(seed).rand(height, width, 3).astype(np.float32)


# The context fill: the mean taken back to image space (RGB, [0, 1]).
IMAGE_MEAN = MEAN[::-1] / 255


# -- crop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("context_pad", [None, 0])
def test_crop_without_context_is_the_window(models, context_pad):
    det = caffe_style(models, 20, context_pad)
    im = image(40, 50)
    np.testing.assert_array_equal(det.crop(im, (5, 7, 31, 22)), im[5:31, 7:22])
    assert np.array_equal(det.crop_dims, [20, 20, 3])


def test_rcnn_context_inside_the_image(models):
    # R-CNN: 227 x 227 inputs, 16 pixels of context. A window 195 pixels high (counted
    # inclusively, 100..294) grows by 227/195 about its centre 197.5: 113.5 each way,
    # rows 84..311, 228 inclusive rows, 227 of them in the slice 84:311, which is resized
    # to the 227 rows the input gives it (round(228 * 227/228)): unchanged. So the crop
    # is the window with 16 pixels of context on each side.
    det = caffe_style(models, 227, 16)
    im = image(320, 330)
    crop = det.crop(im, np.array([100, 50, 294, 244]))
    np.testing.assert_array_equal(crop, im[84:311, 34:261])


def test_rcnn_context_beyond_the_top_left_is_the_mean(models):
    # Window 0..194: the box is -16..211; the 16 rows before the image take
    # round(16 * 227/228) = 16 input rows of mean; rows 0:211 fill the other 211.
    det = caffe_style(models, 227, 16)
    im = image(320, 330)
    crop = det.crop(im, np.array([0, 0, 194, 194]))
    assert crop.shape == (227, 227, 3)
    np.testing.assert_array_equal(crop[16:, 16:], im[0:211, 0:211])
    np.testing.assert_allclose(crop[:16].reshape(-1, 3), np.tile(IMAGE_MEAN, (16 * 227, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(crop[:, :16].reshape(-1, 3),
                               np.tile(IMAGE_MEAN, (16 * 227, 1)), rtol=1e-6)


def test_rcnn_context_beyond_the_bottom_right_is_the_mean(models):
    # Window (125, 135)..(319, 329) of a 320 x 330 image: the box is (109, 119)..(336, 346),
    # clipped to (109, 119)..(320, 330): 212 inclusive rows give round(212 * 227/228) =
    # 211 input rows, filled with the 211 rows of the slice 109:320; the rest is mean.
    det = caffe_style(models, 227, 16)
    im = image(320, 330)
    crop = det.crop(im, np.array([125, 135, 319, 329]))
    np.testing.assert_array_equal(crop[:211, :211], im[109:320, 119:330])
    np.testing.assert_allclose(crop[211:].reshape(-1, 3), np.tile(IMAGE_MEAN, (16 * 227, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(crop[:, 211:].reshape(-1, 3),
                               np.tile(IMAGE_MEAN, (16 * 227, 1)), rtol=1e-6)


def test_context_crop_is_resized_into_its_share(models):
    # 20 x 20 input, 2 pixels of context: the box grows by 20/16. Window (30, 40)..(39, 49)
    # of a 40 x 50 image: centre (35, 45), half 5 -> 6.25, box (29, 39)..(41, 51), 13
    # inclusive rows; clipped to (29, 39)..(40, 50), 12 rows -> round(12 * 20/13) = 18
    # input rows, filled with the 11 x 11 slice resized (bilinear) to 18 x 18.
    det = caffe_style(models, 20, 2)
    im = image(40, 50)
    crop = det.crop(im, [30, 40, 39, 49])
    expected = cv2.resize(im[29:40, 39:50], (18, 18), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(crop[:18, :18], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(crop[18:].reshape(-1, 3), np.tile(IMAGE_MEAN, (40, 1)),
                               rtol=1e-6)


def test_context_rounding_takes_halves_up(models):
    # Window 0..4 with 20/16 growth: box -0.625..5.625 -> -1..6, 8 inclusive rows, so the
    # row before the image takes 20/8 = 2.5 input rows: 3, as pycaffe (written for
    # Python 2, whose round() takes halves away from zero) computed it. The 7 clipped rows
    # would take 17.5 -> 18, cut to the 17 rows left; the slice 0:6 is resized into them.
    det = caffe_style(models, 20, 2)
    im = image(40, 50)
    crop = det.crop(im, [0, 0, 4, 4])
    expected = cv2.resize(im[0:6, 0:6], (17, 17), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(crop[3:, 3:], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(crop[:3].reshape(-1, 3), np.tile(IMAGE_MEAN, (60, 1)),
                               rtol=1e-6)


def test_context_mean_image_and_no_mean(models):
    # A mean image (K, H, W) in net space fills the context pixel by pixel, taken back to
    # (H, W, K), RGB and [0, 1]; without a mean the context is zero.
    mean_image = np.random.RandomState(3).uniform(0, 255, (3, 20, 20)).astype(np.float32)
    det = detector(models, 20, mean=mean_image, raw_scale=255, channel_swap=(2, 1, 0),
                   context_pad=2)
    im = image(40, 50)
    crop = det.crop(im, [0, 0, 4, 4])
    image_mean = mean_image.transpose(1, 2, 0)[:, :, ::-1] / 255
    np.testing.assert_allclose(crop[:3], image_mean[:3], rtol=1e-6)
    np.testing.assert_allclose(crop[:, :3], image_mean[:, :3], rtol=1e-6)
    plain = detector(models, 20, context_pad=2)
    assert np.array_equal(plain.crop(im, [0, 0, 4, 4])[:3], np.zeros((3, 20, 3)))


def test_configure_crop_switches_context(models):
    det = caffe_style(models, 20, None)
    im = image(40, 50)
    det.configure_crop(2)
    np.testing.assert_array_equal(det.crop(im, [10, 12, 25, 27]), im[8:28, 10:30])
    det.configure_crop(0)
    np.testing.assert_array_equal(det.crop(im, [10, 12, 25, 27]), im[10:25, 12:27])


def test_empty_windows_are_an_error(models):
    im = image(40, 50)
    with pytest.raises(NetkitError, match="empty"):
        caffe_style(models, 20, None).crop(im, [10, 10, 10, 20])
    with pytest.raises(NetkitError, match="outside the 40x50 image"):
        caffe_style(models, 20, 2).crop(im, [60, 60, 70, 70])


# -- detect_windows -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two PNG images (lossless, so the pipeline by hand reads the same pixels)."""
    d = tmp_path_factory.mktemp("photos")
    paths = []
    for k, (h, w) in enumerate([(40, 50), (33, 36)]):
        path = str(d / ("im%d.png" % k))
        cv2.imwrite(path, np.random.RandomState(10 + k).randint(0, 256, (h, w, 3), np.uint8))
        paths.append(path)
    return paths


def by_hand(models, crops):
    """Each (H, W, 3) RGB [0, 1] crop -> bilinear resize to 20 x 20 -> CHW -> BGR -> x255
    -> minus the mean, through the net two at a time."""
    net = Net(models[20][0], models[20][1], TEST)
    batch = []
    for crop in crops:
        x = cv2.resize(crop, (20, 20), interpolation=cv2.INTER_LINEAR)
        batch.append(x.transpose(2, 0, 1)[::-1] * 255 - MEAN.reshape(3, 1, 1))
    probs = []
    for start in range(0, len(batch), 2):
        chunk = np.zeros((2, 3, 20, 20), np.float32)
        chunk[:len(batch[start:start + 2])] = batch[start:start + 2]
        probs.append(net.forward(data=chunk)["prob"].copy())
    return np.concatenate(probs)[:len(crops)]


def read_rgb(path):
    return cv2.imread(path)[:, :, ::-1].astype(np.float32) / 255


def test_detect_windows_matches_the_pipeline_by_hand(models, photos, backend):
    det = caffe_style(models, 20, None, backend=backend)
    windows = [[np.array([0, 0, 40, 50]), np.array([5, 10, 30, 22]), np.array([12, 3, 19, 47])],
               [np.array([1, 2, 33, 36]), np.array([10, 10, 20, 20])]]
    detections = det.detect_windows(zip(photos, windows))  # an iterator, as pycaffe's
    assert len(detections) == 5
    expected_crops, k = [], 0
    for path, wins in zip(photos, windows):
        im = read_rgb(path)
        for w in wins:
            d = detections[k]
            assert set(d) == {"window", "prediction", "filename"}
            assert d["filename"] == path and d["window"] is w
            expected_crops.append(im[w[0]:w[2], w[1]:w[3]])
            k += 1
    predictions = np.stack([d["prediction"] for d in detections])
    assert predictions.shape == (5, 5)
    np.testing.assert_allclose(predictions.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(predictions, by_hand(models, expected_crops),
                               rtol=1e-4, atol=1e-6)


def test_detect_windows_with_context(models, photos):
    # 20 x 20 input, context 2: a window 16 pixels high grows to 20 rows about its centre
    # (half 8 -> 10), 21 inclusive, resized to round(21 * 20/21) = 20: unchanged.
    det = caffe_style(models, 20, 2)
    detections = det.detect_windows([(photos[0], [[10, 12, 25, 27]])])
    im = read_rgb(photos[0])
    np.testing.assert_allclose(detections[0]["prediction"], by_hand(models, [im[8:28, 10:30]])[0],
                               rtol=1e-4, atol=1e-6)


def test_no_windows_no_detections(models, photos):
    assert caffe_style(models, 20, None).detect_windows([(photos[0], [])]) == []


# -- selective search ---------------------------------------------------------------------
def test_selective_search_module_missing(models, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", None)
    with pytest.raises(NetkitError, match="selective_search_ijcv_with_python"):
        caffe_style(models, 20, None).detect_selective_search(photos)


def test_selective_search_proposals_are_classified(models, photos, monkeypatch, tmp_path):
    calls = []

    def get_windows(image_fnames, cmd):
        calls.append((list(image_fnames), cmd))
        return [[np.array([0, 0, 20, 20])], [np.array([3, 4, 30, 30]), np.array([0, 0, 9, 9])]]

    module = types.ModuleType("selective_search_ijcv_with_python")
    module.get_windows = get_windows
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", module)
    monkeypatch.chdir(tmp_path)
    relative = [os.path.relpath(p) for p in photos]
    detections = caffe_style(models, 20, None).detect_selective_search(relative)
    # Absolute paths go to the proposal code (MATLAB runs elsewhere) and come back.
    assert calls == [(photos, "selective_search_rcnn")]
    assert [d["filename"] for d in detections] == [photos[0], photos[1], photos[1]]
    im = read_rgb(photos[1])
    np.testing.assert_allclose(detections[1]["prediction"], by_hand(models, [im[3:30, 4:30]])[0],
                               rtol=1e-4, atol=1e-6)


# -- construction -------------------------------------------------------------------------
def test_detector_needs_an_input(tmp_path):
    model = tmp_path / "train.prototxt"
    model.write_text('layer { name: "d" type: "DummyData" top: "d" dummy_data_param { '
                     'shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }')
    with pytest.raises(NetkitError, match="needs a deploy net"):
        Detector(str(model), None)


def test_exported_like_pycaffe():
    assert netkit.Detector is Detector and "Detector" in netkit.__all__
    assert issubclass(Detector, netkit.Net)
