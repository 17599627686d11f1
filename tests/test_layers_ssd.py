"""SSD's layers (Normalize, Permute, PriorBox, DetectionOutput): forward values against
closed-form numpy and a literal loop transcription of SSD's detection algorithm written here,
against OpenCV's Caffe importer (an implementation of SSD's layers we did not write) on small
whole nets; Caffe's gradient check on every backend; error cases naming the field."""
import math

import numpy as np
import pytest

from layertest import assert_close, blobs, check_gradient, fails, make_layer, run_forward, tops
from netkit import TEST, Net
from netkit.layer import LayerSetupError

RS = np.random.RandomState(5)
FLT_MAX = float(np.finfo(np.float32).max)


def rand(*shape):
    return RS.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- Permute

@pytest.mark.parametrize("shape,order,full", [
    ((2, 3, 4, 5), [0, 2, 3, 1], (0, 2, 3, 1)),
    ((2, 3, 4, 5), [3, 1], (3, 1, 0, 2)),        # missing axes follow in natural order
    ((2, 3, 4, 5), [], (0, 1, 2, 3)),            # identity: data passed through
    ((3, 4, 2), [2, 0, 1], (2, 0, 1)),
    ((2, 3, 4, 1, 2), [0, 4, 2], (0, 4, 2, 1, 3)),
])
def test_permute_matches_numpy_transpose(backend, shape, order, full):
    x = rand(*shape)
    text = 'type: "Permute" permute_param { %s }' % " ".join("order: %d" % a for a in order)
    out, = run_forward(make_layer(text, backend), blobs(backend, x), tops(backend, 1))
    np.testing.assert_array_equal(out, np.transpose(x, full))


@pytest.mark.parametrize("order", [[0, 2, 3, 1], [1, 0], [0, 1, 2, 3]])
def test_permute_gradient(backend, order):
    text = 'type: "Permute" permute_param { %s }' % " ".join("order: %d" % a for a in order)
    layer = make_layer(text, backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 2, 3)), tops(backend, 1))


@pytest.mark.parametrize("order,match", [
    ([0, 4], "permute_param.order 4 is out of range"),
    ([1, 2, 1], "permute_param.order lists axis 1 twice"),
])
def test_permute_bad_order(backend, order, match):
    text = 'type: "Permute" permute_param { %s }' % " ".join("order: %d" % a for a in order)
    fails(backend, text, rand(2, 3, 4, 5), match=match)


# --------------------------------------------------------------------------- Normalize

def normalize_numpy(x, scale, across_spatial, eps):
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim)) if across_spatial else (1,)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True) + eps)
    return x / norm * np.asarray(scale, np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def norm_text(across, shared, filler='type: "uniform" min: 0.5 max: 2', eps=None):
    return ('type: "Normalize" norm_param { across_spatial: %s channel_shared: %s %s '
            'scale_filler { %s } }' % (str(across).lower(), str(shared).lower(),
                                       "eps: %g" % eps if eps is not None else "", filler))


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 6)])
def test_normalize_matches_numpy(backend, across, shared, shape):
    x = rand(*shape)
    layer = make_layer(norm_text(across, shared), backend)
    out, = run_forward(layer, blobs(backend, x), tops(backend, 1))
    scale = backend.asnumpy(layer.blobs[0].data)
    assert scale.shape == (() if shared else (shape[1],))
    if not shared:
        assert np.ptp(scale) > 0.1  # a non-uniform per-channel scale is really exercised
    assert_close(out, normalize_numpy(x, scale, across, 1e-10), rtol=1e-6)


def test_normalize_eps_goes_inside_the_square_root(backend):
    x = np.array([[[[3.0]], [[4.0]]]], np.float32)   # |x| = 5
    layer = make_layer(norm_text(True, True, 'type: "constant" value: 1', eps=11), backend)
    out, = run_forward(layer, blobs(backend, x), tops(backend, 1))
    np.testing.assert_allclose(out.ravel(), [0.5, 2 / 3.0], rtol=1e-6)   # x / sqrt(25 + 11)


def test_normalize_default_scale_is_one(backend):
    x = rand(2, 3, 2, 2)
    layer = make_layer('type: "Normalize"', backend)
    out, = run_forward(layer, blobs(backend, x), tops(backend, 1))
    assert layer.blobs[0].shape == ()
    assert_close(out, normalize_numpy(x, 1.0, True, 1e-10), rtol=1e-6)


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_gradient(backend, across, shared):
    layer = make_layer(norm_text(across, shared), backend)
    check_gradient(layer, blobs(backend, rand(2, 3, 3, 2)), tops(backend, 1),
                   stepsize=1e-2 if across else 1e-3, threshold=2e-3, max_checks=60)


def test_normalize_needs_two_axes(backend):
    fails(backend, 'type: "Normalize"', rand(5), match="at least 2 axes")


# ---------------------------------------------------------------------------- PriorBox

def prior_text(params):
    return 'type: "PriorBox" prior_box_param { %s }' % params


def priors(backend, params, feature=(1, 1, 1, 2), image=(1, 3, 10, 20)):
    bottoms = [np.zeros(feature, np.float32)] + ([np.zeros(image, np.float32)] if image else [])
    out, = run_forward(make_layer(prior_text(params), backend), blobs(backend, *bottoms),
                       tops(backend, 1))
    return out


def test_prior_box_by_hand(backend):
    """A 1x2 feature map on a 10x20 image: step 10 both ways, centres (5, 5) and (15, 5);
    per location the 4x4 square, the sqrt(4*9) = 6 square, then aspect 2 and its flip 1/2."""
    out = priors(backend, "min_size: 4 max_size: 9 aspect_ratio: 2 variance: 0.1 "
                 "variance: 0.1 variance: 0.2 variance: 0.2")
    r2 = math.sqrt(2)
    expected = []
    for cx in (5, 15):
        for w, h in ((4, 4), (6, 6), (4 * r2, 4 / r2), (4 / r2, 4 * r2)):
            expected += [(cx - w / 2) / 20, (5 - h / 2) / 10, (cx + w / 2) / 20, (5 + h / 2) / 10]
    assert out.shape == (1, 2, 2 * 4 * 4)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0, 1], np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), 8))


def test_prior_box_variants_by_hand(backend):
    # Two min sizes (truncated to whole pixels as SSD stores them), no flip, a duplicate and
    # a 1 aspect ratio ignored, explicit image size and steps, offset 0, clip, one variance.
    out = priors(backend, "min_size: 2.7 min_size: 6 aspect_ratio: 4 aspect_ratio: 1 "
                 "aspect_ratio: 4.0000001 flip: false clip: true img_h: 8 img_w: 16 "
                 "step_h: 3 step_w: 5 offset: 0 variance: 0.3", image=None)
    expected = []
    for cx in (0, 5):
        for w, h in ((2, 2), (4, 1), (6, 6), (12, 3)):
            expected += [(cx - w / 2) / 16, (0 - h / 2) / 8, (cx + w / 2) / 16, (0 + h / 2) / 8]
    np.testing.assert_allclose(out[0, 0], np.clip(expected, 0, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0, 1], np.full(32, np.float32(0.3)))


def test_prior_box_flip_skips_duplicates_and_defaults(backend):
    # 2 then 0.5 (= 1/2, already there): priors 1, 2, 1/2 only; variance defaults to 0.1;
    # img_size and step set both dimensions.
    out = priors(backend, "min_size: 4 aspect_ratio: 2 aspect_ratio: 0.5 img_size: 10 step: 4",
                 feature=(1, 1, 2, 1), image=None)
    assert out.shape == (1, 2, 2 * 3 * 4)
    r2 = math.sqrt(2)
    expected = []
    for cy in (2, 6):
        for w, h in ((4, 4), (4 * r2, 4 / r2), (4 / r2, 4 * r2)):
            expected += [(2 - w / 2) / 10, (cy - h / 2) / 10, (2 + w / 2) / 10, (cy + h / 2) / 10]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0, 1], np.full(24, np.float32(0.1)))


def test_prior_box_gives_its_bottoms_zero_gradient(backend):
    layer = make_layer(prior_text("min_size: 4"), backend)
    bottom = blobs(backend, rand(1, 2, 2, 2), rand(1, 3, 8, 8))
    top = tops(backend, 1)
    run_forward(layer, bottom, top)
    for b in bottom:
        b.diff[...] = 7
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(backend.asnumpy(bottom[0].diff), 0)
    np.testing.assert_array_equal(backend.asnumpy(bottom[1].diff), 7)


@pytest.mark.parametrize("params,match", [
    ("aspect_ratio: 2", "prior_box_param.min_size must be given"),
    ("min_size: 0", "prior_box_param.min_size must be positive"),
    ("min_size: 4 max_size: 3", "prior_box_param.max_size 3 must be greater"),
    ("min_size: 4 min_size: 8 max_size: 9", "prior_box_param.max_size needs one value"),
    ("min_size: 4 aspect_ratio: 0", "prior_box_param.aspect_ratio must be positive"),
    ("min_size: 4 variance: 0.1 variance: 0.2", "prior_box_param.variance takes 1 or 4"),
    ("min_size: 4 variance: -0.1", "prior_box_param.variance must be positive"),
    ("min_size: 4 img_size: 8 img_h: 8 img_w: 8", "either img_size or img_h/img_w"),
    ("min_size: 4 img_h: 8", "prior_box_param.img_w must be positive"),
    ("min_size: 4 step: 8 step_w: 8 step_h: 8", "either step or step_h/step_w"),
])
def test_prior_box_bad_params(backend, params, match):
    fails(backend, prior_text(params), np.zeros((1, 1, 2, 2)), np.zeros((1, 3, 8, 8)),
          match=match)


def test_prior_box_needs_the_image_or_its_size(backend):
    fails(backend, prior_text("min_size: 4"), np.zeros((1, 1, 2, 2)),
          match="bottom\\[1\\] unless prior_box_param.img_size")


# --------------------------------------------------------------------- DetectionOutput

def ssd_reference(loc, conf, prior, num_classes, share_location=True, background=0,
                  nms_threshold=0.3, top_k=-1, eta=1.0, code_type="CORNER",
                  variance_encoded_in_target=False, keep_top_k=-1, threshold=-FLT_MAX):
    """SSD's DetectionOutput::Forward_cpu transcribed as plain loops in float64."""
    num, num_priors = loc.shape[0], prior.shape[2] // 4
    boxes_p = prior[0, 0].reshape(num_priors, 4).astype(np.float64)
    variances = prior[0, 1].reshape(num_priors, 4).astype(np.float64)
    locs = loc.reshape(num, num_priors, -1, 4).astype(np.float64)
    confs = conf.reshape(num, num_priors, num_classes)

    def decode(p, v, t):
        if not variance_encoded_in_target:
            t = v * t
        w, h = p[2] - p[0], p[3] - p[1]
        if code_type == "CORNER":
            return p + t
        if code_type == "CORNER_SIZE":
            return p + t * [w, h, w, h]
        cx, cy = (p[0] + p[2]) / 2 + t[0] * w, (p[1] + p[3]) / 2 + t[1] * h
        bw, bh = math.exp(t[2]) * w, math.exp(t[3]) * h
        return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])

    def iou(a, b):
        iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)  # noqa: E731
        return iw * ih / (area(a) + area(b) - iw * ih)

    rows = []
    for i in range(num):
        kept = {}
        for c in range(num_classes):
            if c == background:
                continue
            boxes = [decode(boxes_p[p], variances[p], locs[i, p, 0 if share_location else c])
                     for p in range(num_priors)]
            cands = sorted([(confs[i, p, c], p) for p in range(num_priors)
                            if confs[i, p, c] > threshold], key=lambda s: -s[0])
            if top_k > -1:
                cands = cands[:top_k]
            kept[c], limit = [], nms_threshold
            for _, p in cands:
                if all(iou(boxes[p], boxes[k]) <= limit for k in kept[c]):
                    kept[c].append(p)
                    if eta < 1 and limit > 0.5:
                        limit *= eta
            kept[c] = [(c, p, boxes[p]) for p in kept[c]]
        dets = [d for c in sorted(kept) for d in kept[c]]
        if -1 < keep_top_k < len(dets):
            dets = sorted(dets, key=lambda d: -confs[i, d[1], d[0]])[:keep_top_k]
            dets = sorted(dets, key=lambda d: d[0])
        rows += [[i, c, confs[i, p, c]] + list(b) for c, p, b in dets]
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(num)]
    return np.array(rows, np.float64)


def det_text(num_classes, **kw):
    fields = dict(num_classes=num_classes, **kw)
    nms = {k: fields.pop(k) for k in ("nms_threshold", "top_k", "eta") if k in fields}
    text = " ".join("%s: %s" % (k, str(v).lower() if isinstance(v, bool) else v)
                    for k, v in fields.items())
    nms_text = " ".join("%s: %s" % kv for kv in nms.items())
    return ('type: "DetectionOutput" detection_output_param { %s nms_param { %s } }'
            % (text, nms_text))


def random_head(num, num_priors, num_classes, loc_classes=1):
    """Overlapping priors on a coarse grid with 4 variances, small offsets, scores."""
    centres = RS.uniform(0.2, 0.8, (num_priors, 2))
    sizes = RS.uniform(0.15, 0.4, (num_priors, 2))
    corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    prior = np.stack([corners.ravel(), np.tile([0.1, 0.1, 0.2, 0.2], num_priors)])[None]
    loc = RS.standard_normal((num, num_priors * loc_classes * 4)) * 0.5
    conf = RS.uniform(0, 1, (num, num_priors * num_classes))
    return [a.astype(np.float32) for a in (loc, conf, prior)]


def run_detection(backend, text, loc, conf, prior):
    out, = run_forward(make_layer(text, backend), blobs(backend, loc, conf, prior),
                       tops(backend, 1))
    assert out.ndim == 4 and out.shape[:2] == (1, 1) and out.shape[3] == 7
    return out[0, 0]


def test_detection_output_by_hand(backend):
    """Zero offsets on CORNER priors: the boxes are the priors. B overlaps A (IoU 0.68)."""
    a, b, c = [0, 0, 0.5, 0.5], [0.05, 0.05, 0.55, 0.55], [0.6, 0.6, 1, 1]
    prior = np.array([[a + b + c, [1] * 12]], np.float32)
    conf = np.array([[0.0, 0.9, 0.1, 0.0, 0.8, 0.7, 0.0, 0.3, 0.6]], np.float32)
    loc = np.zeros((1, 12), np.float32)
    text = det_text(3, nms_threshold=0.5, confidence_threshold=0.2)
    np.testing.assert_allclose(run_detection(backend, text, loc, conf, prior), [
        [0, 1, 0.9] + a, [0, 1, 0.3] + c, [0, 2, 0.7] + b, [0, 2, 0.6] + c], rtol=1e-6)
    # keep_top_k keeps the image's best 3, still grouped by label.
    text = det_text(3, nms_threshold=0.5, confidence_threshold=0.2, keep_top_k=3)
    np.testing.assert_allclose(run_detection(backend, text, loc, conf, prior), [
        [0, 1, 0.9] + a, [0, 2, 0.7] + b, [0, 2, 0.6] + c], rtol=1e-6)
    # A looser threshold keeps B; top_k 1 keeps only each class's best candidate.
    text = det_text(3, nms_threshold=0.7, top_k=1, confidence_threshold=0.2)
    np.testing.assert_allclose(run_detection(backend, text, loc, conf, prior), [
        [0, 1, 0.9] + a, [0, 2, 0.7] + b], rtol=1e-6)


@pytest.mark.parametrize("kw", [
    dict(code_type="CORNER", nms_threshold=0.3),
    dict(code_type="CENTER_SIZE", nms_threshold=0.45, top_k=12, keep_top_k=15),
    dict(code_type="CORNER_SIZE", nms_threshold=0.5, confidence_threshold=0.4),
    dict(code_type="CENTER_SIZE", variance_encoded_in_target=True, nms_threshold=0.6),
    dict(code_type="CENTER_SIZE", nms_threshold=0.9, eta=0.8, background_label_id=2),
    dict(code_type="CORNER_SIZE", share_location=False, nms_threshold=0.4, keep_top_k=20),
    dict(code_type="CENTER_SIZE", share_location=False, background_label_id=-1,
         nms_threshold=0.35, top_k=8),
])
def test_detection_output_matches_ssd_loops(backend, kw):
    num_classes = 4
    share = kw.get("share_location", True)
    loc, conf, prior = random_head(2, 40, num_classes, 1 if share else num_classes)
    ours = run_detection(backend, det_text(num_classes, **kw), loc, conf, prior)
    ref_kw = {k: v for k, v in kw.items() if k not in ("background_label_id",
                                                        "confidence_threshold")}
    expected = ssd_reference(loc, conf, prior, num_classes,
                             background=kw.get("background_label_id", 0),
                             threshold=kw.get("confidence_threshold", -FLT_MAX), **ref_kw)
    assert len(expected) > 10
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_detection_output_ties_keep_the_lower_prior_index(backend):
    """Equal scores keep their prior order (SSD's stable sort): of 40 nearly identical boxes
    with one score, NMS keeps prior 0 of class 1 and, with keep_top_k, class 1 before 2."""
    prior = np.array([[[0.2, 0.2, 0.6, 0.6] * 40, [0.1] * 160]], np.float32)
    conf = np.full((1, 40 * 3), 0.5, np.float32)
    loc = np.zeros((40, 4), np.float32)
    loc[:, 0] = np.arange(40) * 0.01     # box p starts at x = 0.2 + 0.001 p
    loc = loc.reshape(1, 160)
    out = run_detection(backend, det_text(3, nms_threshold=0.5, keep_top_k=1), loc, conf,
                        prior)
    np.testing.assert_allclose(out, [[0, 1, 0.5, 0.2, 0.2, 0.6, 0.6]], rtol=1e-6)


def test_detection_output_eta_shrinks_the_threshold(backend):
    loc, conf, prior = random_head(1, 40, 2)
    plain = run_detection(backend, det_text(2, nms_threshold=0.9), loc, conf, prior)
    adaptive = run_detection(backend, det_text(2, nms_threshold=0.9, eta=0.7), loc, conf, prior)
    assert len(adaptive) < len(plain)


def test_detection_output_without_detections(backend):
    """SSD's placeholder: one row [image, -1, -1, -1, -1, -1, -1] per image."""
    loc, conf, prior = random_head(3, 10, 3)
    out = run_detection(backend, det_text(3, confidence_threshold=1.5), loc, conf, prior)
    np.testing.assert_array_equal(out, [[0] + [-1] * 6, [1] + [-1] * 6, [2] + [-1] * 6])
    # Images without detections contribute no rows when another image has some.
    conf[1] = 0
    out = run_detection(backend, det_text(3, confidence_threshold=0.5), loc, conf, prior)
    assert set(out[:, 0]) == {0, 2}


@pytest.mark.parametrize("text,match", [
    ('type: "DetectionOutput"', "detection_output_param.num_classes must be given"),
    (det_text(3, eta=1.5), "nms_param.eta must be in"),
    (det_text(3, nms_threshold=-0.1), "nms_param.nms_threshold must be non-negative"),
    (det_text(4), "conf .* must hold num_priors \\(10\\) \\* num_classes \\(4\\)"),
    (det_text(3, share_location=False), "loc .* must hold num_priors \\(10\\) \\* 3 \\* 4"),
])
def test_detection_output_bad_params(backend, text, match):
    loc, conf, prior = random_head(2, 10, 3)
    layer = make_layer(text, backend)
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, blobs(backend, loc, conf, prior), tops(backend, 1))


def test_detection_output_ignores_save_output_param(backend, tmp_path):
    loc, conf, prior = random_head(1, 10, 3)
    text = det_text(3).replace("nms_param", 'save_output_param { output_directory: "%s" '
                               'output_format: "VOC" } nms_param' % (tmp_path / "out"))
    assert len(run_detection(backend, text, loc, conf, prior))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ OpenCV parity (nets)

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe importer")


def opencv_outputs(deploy, weights, x, names):
    net = cv2.dnn.readNetFromCaffe(deploy, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return dict(zip(names, net.forward(names)))


def random_weights(net, tmp_path, std, seed=0):
    rs = np.random.RandomState(seed)
    for params in net.params.values():
        for b in params:
            b.data[...] = rs.standard_normal(b.shape).astype(np.float32) * std
    path = str(tmp_path / "net.caffemodel")
    net.save(path)
    return path


@pytest.mark.parametrize("across,shared", [(True, True), (False, True), (False, False)])
def test_normalize_permute_net_matches_opencv(tmp_path, across, shared):
    # (OpenCV has no per-channel scale with across_spatial; numpy covers that case above.)
    deploy = tmp_path / "net.prototxt"
    deploy.write_text('''name: "n"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "norm" type: "Normalize" bottom: "conv" top: "norm"
  norm_param { across_spatial: %s channel_shared: %s } }
layer { name: "perm" type: "Permute" bottom: "norm" top: "perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
''' % (str(across).lower(), str(shared).lower()))
    net = Net(str(deploy), TEST)
    weights = random_weights(net, tmp_path, 0.5)
    net.params["norm"][0].data[...] = np.random.RandomState(1).uniform(
        0.5, 20, net.params["norm"][0].shape)
    net.save(weights)
    x = rand(2, 3, 6, 5)
    net.forward(data=x)
    theirs = opencv_outputs(str(deploy), weights, x, ["norm", "perm", "flat"])
    for name in ("norm", "perm", "flat"):
        assert_close(net.blobs[name].data, theirs[name], rtol=1e-6)


HEAD = '''
layer { name: "%(f)s_loc" type: "Convolution" bottom: "%(f)s" top: "%(f)s_loc"
  convolution_param { num_output: %(nl)d kernel_size: 3 pad: 1 } }
layer { name: "%(f)s_loc_perm" type: "Permute" bottom: "%(f)s_loc" top: "%(f)s_loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "%(f)s_loc_flat" type: "Flatten" bottom: "%(f)s_loc_perm" top: "%(f)s_loc_flat" }
layer { name: "%(f)s_conf" type: "Convolution" bottom: "%(f)s" top: "%(f)s_conf"
  convolution_param { num_output: %(nc)d kernel_size: 3 pad: 1 } }
layer { name: "%(f)s_conf_perm" type: "Permute" bottom: "%(f)s_conf" top: "%(f)s_conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "%(f)s_conf_flat" type: "Flatten" bottom: "%(f)s_conf_perm" top: "%(f)s_conf_flat" }
layer { name: "%(f)s_prior" type: "PriorBox" bottom: "%(f)s" bottom: "data" top: "%(f)s_prior"
  prior_box_param { %(pb)s } }
'''

PRIORS1 = ("min_size: 8 max_size: 16 aspect_ratio: 2 flip: true clip: false "
           "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2")
PRIORS2 = ("min_size: 16 max_size: 28 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true "
           "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.25")


def ssd_net(detection, num_classes, loc_classes):
    """Two feature maps (a normalised stride-2 one with 4 priors per location, a stride-4
    one with 6), SSD's Permute/Flatten/Concat head, Softmax over classes, DetectionOutput."""
    text = '''name: "mini_ssd"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 32 dim: 24 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "Normalize" bottom: "conv1" top: "norm1"
  norm_param { across_spatial: false channel_shared: false } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
'''
    text += HEAD % dict(f="norm1", nl=4 * 4 * loc_classes, nc=4 * num_classes, pb=PRIORS1)
    text += HEAD % dict(f="conv2", nl=6 * 4 * loc_classes, nc=6 * num_classes, pb=PRIORS2)
    text += '''
layer { name: "mbox_loc" type: "Concat" bottom: "norm1_loc_flat" bottom: "conv2_loc_flat"
  top: "mbox_loc" concat_param { axis: 1 } }
layer { name: "mbox_conf" type: "Concat" bottom: "norm1_conf_flat" bottom: "conv2_conf_flat"
  top: "mbox_conf" concat_param { axis: 1 } }
layer { name: "mbox_priorbox" type: "Concat" bottom: "norm1_prior" bottom: "conv2_prior"
  top: "mbox_priorbox" concat_param { axis: 2 } }
layer { name: "conf_reshape" type: "Reshape" bottom: "mbox_conf" top: "conf_reshape"
  reshape_param { shape { dim: 0 dim: -1 dim: %d } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax"
  softmax_param { axis: 2 } }
layer { name: "conf_flatten" type: "Flatten" bottom: "conf_softmax" top: "conf_flatten" }
layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc"
  bottom: "conf_flatten" bottom: "mbox_priorbox" top: "detection_out"
  detection_output_param { num_classes: %d %s } }
''' % (num_classes, num_classes, detection)
    return text


def by_rows(detections, min_score=0.0):
    """Detection rows in a canonical order (OpenCV sorts an image's rows by score and pads
    with zero rows up to keep_top_k per image; SSD groups them by label)."""
    d = detections.reshape(-1, 7).astype(np.float64)
    d = d[d[:, 2] > min_score]
    return d[np.lexsort((d[:, 3], -d[:, 2], d[:, 1], d[:, 0]))]


# OpenCV needs share_location, background_label_id, nms_threshold and keep_top_k spelled out,
# knows no CORNER_SIZE, ignores eta and wants 1-channel priors with variance_encoded_in_target:
# those cases are covered by the loop transcription above.
SSD_CASES = {
    "center_size": ("share_location: true background_label_id: 0 code_type: CENTER_SIZE "
                    "nms_param { nms_threshold: 0.45 top_k: 100 } keep_top_k: 50 "
                    "confidence_threshold: 0.2", 0.2, 1, True),
    "corner_per_class": ("share_location: false background_label_id: 0 code_type: CORNER "
                         "nms_param { nms_threshold: 0.3 top_k: 60 } keep_top_k: 40 "
                         "confidence_threshold: 0.2", 0.1, 4, True),
    "uncapped": ("share_location: true background_label_id: 3 code_type: CENTER_SIZE "
                 "nms_param { nms_threshold: 0.5 } keep_top_k: 400 "
                 "confidence_threshold: 0.35", 0.2, 1, False),
}


@pytest.mark.parametrize("case", sorted(SSD_CASES))
def test_mini_ssd_matches_opencv(tmp_path, case):
    detection, std, loc_classes, capped = SSD_CASES[case]
    deploy = tmp_path / "ssd.prototxt"
    deploy.write_text(ssd_net(detection, 4, loc_classes))
    net = Net(str(deploy), TEST)
    weights = random_weights(net, tmp_path, std)
    x = np.random.RandomState(2).standard_normal((2, 3, 32, 24)).astype(np.float32)
    net.forward(data=x)
    names = ["norm1_prior", "conv2_prior", "mbox_priorbox", "norm1", "mbox_loc",
             "conf_flatten", "detection_out"]
    theirs = opencv_outputs(str(deploy), weights, x, names)
    assert net.blobs["mbox_priorbox"].shape == (1, 2, (16 * 12 * 4 + 8 * 6 * 6) * 4)
    for name in names[:-1]:
        assert_close(net.blobs[name].data, theirs[name], rtol=1e-5)
    ours, cv = by_rows(net.blobs["detection_out"].data), by_rows(theirs["detection_out"])
    assert len(ours) > 20
    assert (len(ours) == 2 * int(detection.split("keep_top_k: ")[1].split()[0])) == capped
    assert ours.shape == cv.shape
    assert_close(ours, cv, rtol=1e-5)
