"""YoloDetectionOutput and Yolov3DetectionOutput (eric612/MobileNet-YOLO) against plain
loop references written here from the fork's Forward_cpu: per-cell decoding, thresholding,
score-sorted class-agnostic greedy NMS, and the placeholder rows when nothing is found."""
import math

import numpy as np
import pytest

from layertest import blobs, make_layer, run_forward, tops
from netkit import TEST, Net
from netkit.layer import LayerSetupError


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def iou_center(a, b):
    """The fork's box_iou on centre-form (x, y, w, h) boxes."""
    w = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    h = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    inter = 0.0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def nms_rows(predicts, threshold, num):
    """Sort (score, label, box) descending, drop each box whose IoU with an earlier kept one
    is >= threshold, and write the rows; asserts the case has no near-ties to decide."""
    predicts = sorted(predicts, key=lambda p: -p[0])
    scores = [p[0] for p in predicts]
    assert all(a - b > 2e-6 for a, b in zip(scores, scores[1:])), "near-tied scores"
    removed = set()
    for i in range(len(predicts)):
        if i in removed:
            continue
        for j in range(i + 1, len(predicts)):
            if j not in removed:
                overlap = iou_center(predicts[i][2], predicts[j][2])
                assert abs(overlap - threshold) > 1e-4, "IoU near the NMS threshold"
                if overlap >= threshold:
                    removed.add(j)
    rows = [[0, label + 1, score, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
            for k, (score, label, (x, y, w, h)) in enumerate(predicts) if k not in removed]
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(num)]
    return np.array(rows, np.float64).reshape(1, 1, -1, 7)


def yolov3_reference(heads, classes, num_box, biases, scales, mask, conf, nms):
    predicts = []
    group = len(mask) // len(heads)
    for t, head in enumerate(heads):
        num, _, height, width = head.shape
        for b in range(num):
            for s in range(height * width):
                y, x = divmod(s, width)
                for n in range(num_box):
                    v = head[b, n * (5 + classes):(n + 1) * (5 + classes)].reshape(-1, height * width)[:, s]
                    m = mask[t * group + n]
                    box = ((x + sigmoid(v[0])) / width, (y + sigmoid(v[1])) / height,
                           math.exp(v[2]) * biases[2 * m] / (width * scales[t]),
                           math.exp(v[3]) * biases[2 * m + 1] / (height * scales[t]))
                    obj = sigmoid(v[4])
                    for c in range(classes):
                        score = sigmoid(v[5 + c]) * obj
                        if score > conf:
                            predicts.append((score, c, box))
    return nms_rows(predicts, nms, heads[0].shape[0])


def yolov2_reference(heads, classes, num_box, biases, conf, nms):
    predicts = []
    for head in heads:
        num, _, side, _ = head.shape
        for b in range(num):
            for j in range(side):
                for i in range(side):
                    for n in range(num_box):
                        v = head[b, n * (5 + classes):(n + 1) * (5 + classes), j, i]
                        box = ((i + sigmoid(v[0])) / side, (j + sigmoid(v[1])) / side,
                               math.exp(v[2]) * biases[2 * n] / side,
                               math.exp(v[3]) * biases[2 * n + 1] / side)
                        e = [math.exp(p - max(v[5:])) for p in v[5:]]
                        label = int(np.argmax(e))
                        score = sigmoid(v[4]) * e[label] / sum(e)
                        if score >= conf:
                            predicts.append((score, label, box))
    return nms_rows(predicts, nms, heads[0].shape[0])


BIASES = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]


def v3_text(classes=3, num_box=3, conf=0.3, nms=0.45, scales=(32, 16), mask=(3, 4, 5, 0, 1, 2),
            groups=2, biases=BIASES, extra=""):
    fields = ["num_classes: %d" % classes, "num_box: %d" % num_box,
              "confidence_threshold: %g" % conf, "nms_threshold: %g" % nms,
              "mask_group_num: %d" % groups]
    fields += ["biases: %g" % b for b in biases] + ["anchors_scale: %d" % s for s in scales]
    fields += ["mask: %d" % m for m in mask]
    return ('type: "Yolov3DetectionOutput" yolov3_detection_output_param { %s %s }'
            % (" ".join(fields), extra))


V2_BIASES = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]


def v2_text(classes=4, num_box=3, conf=0.2, nms=0.45, biases=V2_BIASES, extra=""):
    fields = ["num_classes: %d" % classes, "num_box: %d" % num_box,
              "confidence_threshold: %g" % conf, "nms_threshold: %g" % nms]
    fields += ["biases: %g" % b for b in biases]
    return ('type: "YoloDetectionOutput" yolo_detection_output_param { %s %s }'
            % (" ".join(fields), extra))


def run(backend, text, *heads):
    layer = make_layer(text, backend, TEST)
    return run_forward(layer, blobs(backend, *heads), tops(backend, 1))[0]


def assert_rows(actual, expected):
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual[..., :2], expected[..., :2])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num", [1, 2])
def test_yolov3_matches_loop_reference(backend, num):
    rng = np.random.RandomState(7 + num)
    heads = [rng.randn(num, 3 * 8, 3, 4).astype(np.float32) * 2,
             rng.randn(num, 3 * 8, 6, 8).astype(np.float32) * 2]
    out = run(backend, v3_text(), *heads)
    expected = yolov3_reference(heads, 3, 3, BIASES, (32, 16), (3, 4, 5, 0, 1, 2), 0.3, 0.45)
    assert expected.shape[2] > 5
    assert_rows(out, expected)


def test_yolov3_single_head_other_mask_and_loose_nms(backend):
    rng = np.random.RandomState(3)
    head = rng.randn(1, 2 * 7, 5, 5).astype(np.float32) * 2
    text = v3_text(classes=2, num_box=2, conf=0.2, nms=0.7, scales=(8,), mask=(4, 1),
                   groups=1)
    expected = yolov3_reference([head], 2, 2, BIASES, (8,), (4, 1), 0.2, 0.7)
    assert expected.shape[2] > 5
    assert_rows(run(backend, text, head), expected)


@pytest.mark.parametrize("num", [1, 2])
def test_yolov2_matches_loop_reference(backend, num):
    rng = np.random.RandomState(11 + num)
    head = rng.randn(num, 3 * 9, 5, 5).astype(np.float32) * 2
    expected = yolov2_reference([head], 4, 3, V2_BIASES, 0.2, 0.45)
    assert expected.shape[2] > 5
    assert_rows(run(backend, v2_text(), head), expected)


def test_yolov2_two_heads(backend):
    rng = np.random.RandomState(5)
    heads = [rng.randn(1, 3 * 9, 4, 4).astype(np.float32) * 2,
             rng.randn(1, 3 * 9, 7, 7).astype(np.float32) * 2]
    expected = yolov2_reference(heads, 4, 3, V2_BIASES, 0.2, 0.3)
    assert_rows(run(backend, v2_text(nms=0.3), *heads), expected)


def test_nms_is_class_agnostic_and_suppresses_at_equal_iou(backend):
    """Two identical boxes of different classes: only the better survives (IoU 1 >= 1)."""
    head = np.full((1, 1 * 7, 1, 1), -20, np.float32)
    head[0, :5, 0, 0] = [0, 0, 0, 0, 20]       # centre (0.5, 0.5), obj ~1
    head[0, 5:, 0, 0] = [3, 1]                 # both classes pass 0.5
    text = v3_text(classes=2, num_box=1, conf=0.5, nms=1.0, scales=(8,), mask=(0,),
                   groups=1, biases=[4, 2])
    out = run(backend, text, head)
    assert out.shape == (1, 1, 1, 7)
    np.testing.assert_allclose(out[0, 0, 0], [0, 1, sigmoid(3), 0.25, 0.375, 0.75, 0.625],
                               rtol=1e-5)


@pytest.mark.parametrize("text,shape", [
    (v3_text(conf=0.99), None), (v2_text(conf=0.99), (3, 27, 4, 4))])
def test_no_detection_gives_placeholder_rows(backend, text, shape):
    rng = np.random.RandomState(0)
    if shape is None:
        heads = [rng.randn(3, 24, 2, 2).astype(np.float32) - 8,
                 rng.randn(3, 24, 4, 4).astype(np.float32) - 8]
    else:
        heads = [rng.randn(*shape).astype(np.float32) - 8]
    out = run(backend, text, *heads)
    expected = np.full((1, 1, 3, 7), -1.0)
    expected[0, 0, :, 0] = [0, 1, 2]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("text,shapes,match", [
    ('type: "Yolov3DetectionOutput" yolov3_detection_output_param { mask_group_num: 1 }',
     [(1, 24, 2, 2)], "num_classes"),
    (v3_text(), [(1, 24, 2, 2)], "mask_group_num"),
    (v3_text(scales=(32,)), [(1, 24, 2, 2), (1, 24, 4, 4)], "anchors_scale"),
    (v3_text(mask=(3, 4, 5, 0)), [(1, 24, 2, 2), (1, 24, 4, 4)], "mask"),
    (v3_text(mask=(3, 4, 9, 0, 1, 2)), [(1, 24, 2, 2), (1, 24, 4, 4)], "biases"),
    (v3_text(extra="gaussian_box: true"), [(1, 24, 2, 2), (1, 24, 4, 4)], "gaussian_box"),
    (v3_text(), [(1, 25, 2, 2), (1, 24, 4, 4)], "num_classes"),
    (v3_text(), [(1, 24, 2, 2), (2, 24, 4, 4)], "same N"),
    (v2_text(biases=V2_BIASES[:5]), [(1, 27, 2, 2)], "biases"),
    (v2_text(extra="coords: 5"), [(1, 27, 2, 2)], "coords"),
    (v2_text(), [(1, 27, 2, 3)], "square"),
    (v2_text(), [(1, 28, 2, 2)], "num_classes"),
])
def test_bad_parameters_are_refused(backend, text, shapes, match):
    layer = make_layer(text, backend, TEST)
    bottom = blobs(backend, *[np.zeros(s, np.float32) for s in shapes])
    with pytest.raises(LayerSetupError, match=match):
        layer.setup(bottom, tops(backend, 1))
        layer.reshape(bottom, tops(backend, 1))


DEPLOY = """
name: "tiny_yolo"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
    weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
    weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "head16" type: "Convolution" bottom: "c2" top: "head16"
  convolution_param { num_output: 24 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
    weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "head32" type: "Convolution" bottom: "c3" top: "head32"
  convolution_param { num_output: 24 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "detection_out" type: "Yolov3DetectionOutput" bottom: "head32" bottom: "head16"
  top: "detection_out" include { phase: TEST }
  yolov3_detection_output_param { num_classes: 3 confidence_threshold: 0.3 nms_threshold: 0.45
    biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58
    biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319
    anchors_scale: 32 anchors_scale: 16 mask_group_num: 2
    mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 } }
"""


def test_tiny_deploy_net_builds_and_runs(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    net = Net(str(path), TEST)
    rng = np.random.RandomState(2)
    net.blobs["data"].data[...] = rng.rand(1, 3, 32, 32).astype(np.float32)
    out = net.forward()["detection_out"]
    heads = [net.blobs["head32"].data.copy(), net.blobs["head16"].data.copy()]
    assert heads[0].shape == (1, 24, 4, 4) and heads[1].shape == (1, 24, 8, 8)
    expected = yolov3_reference(heads, 3, 3, BIASES, (32, 16), (3, 4, 5, 0, 1, 2), 0.3, 0.45)
    assert expected.shape[2] > 1
    assert_rows(out, expected)
