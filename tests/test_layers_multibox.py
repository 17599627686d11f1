"""SSD's training and evaluation layers (MultiBoxLoss, DetectionEvaluate) and mean average
precision: matching and encoding against plain-loop references written here (and SSD's own
published test cases), the loss against PyTorch on matches and mined negatives computed
independently here, Caffe's gradient check on every backend, AP against hand-worked
examples, SSD's published numbers and textbook formulas, error cases naming the field, and
a tiny SSD-style net that trains."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from layertest import blobs, check_gradient, forward_backward, make_layer, run_forward, tops
from netkit import TEST, Net, netkit_pb2 as pb
from netkit.detection_map import average_precision, mean_average_precision
from netkit.errors import NetkitError
from netkit.layer import LayerSetupError
from netkit.layers.bbox_util import decode_boxes
from netkit.layers.detection_evaluate import original_boxes
from netkit.layers.multibox_util import encode_boxes, match_boxes
from netkit.solvers import SGDSolver

MBL = pb.MultiBoxLossParameter
CODES = {"CORNER": pb.PriorBoxParameter.CORNER, "CENTER_SIZE": pb.PriorBoxParameter.CENTER_SIZE,
         "CORNER_SIZE": pb.PriorBoxParameter.CORNER_SIZE}


# ------------------------------------------------------- references: plain loops, floats

def area(b):
    return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def ref_iou(a, b):
    """Intersection over union; boxes that do not meet, or only in a line, overlap 0."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / (area(a) + area(b) - iw * ih)


def ref_match(preds, gts, per_prediction, threshold, ignore_cross=False):
    """SSD's matching written out: bipartite (global best pair first), then each remaining
    prediction's best ground truth if it reaches the threshold."""
    n = len(preds)
    indices, best = [-1] * n, [0.0] * n
    if not len(gts):
        return indices, best
    overlaps = {}
    for i, p in enumerate(preds):
        if ignore_cross and any(v < 0 or v > 1 for v in p):
            indices[i] = -2
            continue
        for j, g in enumerate(gts):
            o = ref_iou(p, g)
            if o > 1e-6:
                overlaps[i, j] = o
                best[i] = max(best[i], o)
    pool = list(range(len(gts)))
    while pool:
        pick = None
        for i in range(n):
            for j in pool:
                if indices[i] == -1 and (i, j) in overlaps and (
                        pick is None or overlaps[i, j] > overlaps[pick]):
                    pick = (i, j)
        if pick is None:
            break
        indices[pick[0]], best[pick[0]] = pick[1], overlaps[pick]
        pool.remove(pick[1])
    if per_prediction:
        for i in range(n):
            if indices[i] != -1:
                continue
            choice = None
            for j in range(len(gts)):
                o = overlaps.get((i, j), -1.0)
                if o >= threshold and (choice is None or o > overlaps[i, choice]):
                    choice = j
            if choice is not None:
                indices[i], best[i] = choice, overlaps[i, choice]
    return indices, best


def ref_encode(prior, var, box, code, variance_in_target=False):
    px0, py0, px1, py1 = (float(v) for v in prior)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    pw, ph = px1 - px0, py1 - py0
    if code == "CORNER":
        out = [bx0 - px0, by0 - py0, bx1 - px1, by1 - py1]
    elif code == "CORNER_SIZE":
        out = [(bx0 - px0) / pw, (by0 - py0) / ph, (bx1 - px1) / pw, (by1 - py1) / ph]
    else:
        out = [((bx0 + bx1) / 2 - (px0 + px1) / 2) / pw, ((by0 + by1) / 2 - (py0 + py1) / 2) / ph,
               math.log((bx1 - bx0) / pw), math.log((by1 - by0) / ph)]
    return out if variance_in_target else [o / float(v) for o, v in zip(out, var)]


def ref_decode(prior, var, offset, code, variance_in_target=False):
    o = [float(x) if variance_in_target else float(x) * float(v) for x, v in zip(offset, var)]
    px0, py0, px1, py1 = (float(v) for v in prior)
    pw, ph = px1 - px0, py1 - py0
    if code == "CORNER":
        return [px0 + o[0], py0 + o[1], px1 + o[2], py1 + o[3]]
    if code == "CORNER_SIZE":
        return [px0 + o[0] * pw, py0 + o[1] * ph, px1 + o[2] * pw, py1 + o[3] * ph]
    cx, cy = o[0] * pw + (px0 + px1) / 2, o[1] * ph + (py0 + py1) / 2
    w, h = math.exp(o[2]) * pw, math.exp(o[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


DEFAULTS = dict(num_classes=3, share_location=True, match="PER_PREDICTION", overlap=0.5,
                use_prior=True, background=0, use_difficult=True, mining="NONE", ratio=3.0,
                neg_overlap=0.5, sample_size=64, code="CORNER", variance_in_target=False,
                loc_loss="SMOOTH_L1", conf_loss="SOFTMAX", loc_weight=1.0,
                normalization="VALID", agnostic=False, ignore_cross=False, bp_inside=False)


def prototxt(cfg):
    c = dict(DEFAULTS, **cfg)
    text = ("num_classes: %d share_location: %s match_type: %s overlap_threshold: %g "
            "use_prior_for_matching: %s background_label_id: %d use_difficult_gt: %s "
            "mining_type: %s neg_pos_ratio: %g neg_overlap: %g sample_size: %d code_type: %s "
            "encode_variance_in_target: %s loc_loss_type: %s conf_loss_type: %s "
            "loc_weight: %g map_object_to_agnostic: %s ignore_cross_boundary_bbox: %s "
            "bp_inside: %s" % (
                c["num_classes"], str(c["share_location"]).lower(), c["match"], c["overlap"],
                str(c["use_prior"]).lower(), c["background"], str(c["use_difficult"]).lower(),
                c["mining"], c["ratio"], c["neg_overlap"], c["sample_size"], c["code"],
                str(c["variance_in_target"]).lower(), c["loc_loss"], c["conf_loss"],
                c["loc_weight"], str(c["agnostic"]).lower(), str(c["ignore_cross"]).lower(),
                str(c["bp_inside"]).lower()))
    return ('type: "MultiBoxLoss" multibox_loss_param { %s } loss_param { normalization: %s }'
            % (text, c["normalization"]))


def reference_loss(loc, conf, prior, gt_rows, cfg):
    """MultiBoxLoss written out with loops and PyTorch: returns the loss and the details
    (matches, negatives, mining losses, residuals) the tests inspect."""
    c = dict(DEFAULTS, **cfg)
    num, num_classes, bg = loc.shape[0], c["num_classes"], c["background"]
    priors, variances = prior.reshape(2, -1, 4)
    num_priors = len(priors)
    num_loc = 1 if c["share_location"] else num_classes
    offsets = loc.reshape(num, num_priors, num_loc, 4).astype(np.float64)
    scores = torch.from_numpy(conf.reshape(num, num_priors, num_classes).astype(np.float64))
    gts = {}
    for row in gt_rows.reshape(-1, 8):
        if row[0] == -1 or (row[7] and not c["use_difficult"]):
            continue
        gts.setdefault(int(row[0]), []).append((int(row[1]), row[3:7]))

    # matching: {image: {label: [gt index or -1 per prior]}} and best overlaps
    matches, overlaps = {}, {}
    per_prediction = c["match"] == "PER_PREDICTION"
    for i, boxes in gts.items():
        if i >= num:
            continue
        gt_boxes = [b for _, b in boxes]
        if c["use_prior"]:
            idx, best = ref_match(priors, gt_boxes, per_prediction, c["overlap"],
                                  c["ignore_cross"])
            if c["share_location"]:
                matches[i], overlaps[i] = {-1: idx}, {-1: best}
            else:
                matches[i] = {k: [g if g >= 0 and boxes[g][0] == k else -1 for g in idx]
                              for k in range(num_classes) if k != bg}
                overlaps[i] = {k: best for k in matches[i]}
        else:
            preds = [ref_decode(priors[p], variances[p], offsets[i, p, 0], c["code"],
                                c["variance_in_target"]) for p in range(num_priors)]
            idx, best = ref_match(preds, gt_boxes, per_prediction, c["overlap"],
                                  c["ignore_cross"])
            matches[i], overlaps[i] = {-1: idx}, {-1: best}

    def target_label(i, g):
        return bg + 1 if c["agnostic"] else gts[i][g][0]

    def positives():
        out = []
        for i in sorted(matches):
            for key in sorted(matches[i]):
                for p, g in enumerate(matches[i][key]):
                    if g >= 0:
                        out.append((i, p, max(key, 0), g))
        return out

    def residuals(pos):
        res = []
        for i, p, slot, g in pos:
            target = ref_encode(priors[p], variances[p], gts[i][g][1], c["code"],
                                c["variance_in_target"])
            pred = list(offsets[i, p, slot])
            if c["bp_inside"]:
                pred = [t if priors[p][k] < 0 or priors[p][k] > 1 else pred[k]
                        for k, t in enumerate(target)]
            if c["variance_in_target"]:
                target = [t / float(v) for t, v in zip(target, variances[p])]
                pred = [x / float(v) for x, v in zip(pred, variances[p])]
            res.append([x - t for x, t in zip(pred, target)])
        return torch.tensor(res, dtype=torch.float64).reshape(-1, 4)

    def loc_terms(res):
        if c["loc_loss"] == "SMOOTH_L1":
            return F.smooth_l1_loss(res, torch.zeros_like(res), reduction="none", beta=1.0)
        return 0.5 * res * res

    def conf_loss(rows, labels, logistic_targets=None):
        x = (torch.stack([scores[i, p] for i, p in rows]) if rows
             else torch.zeros(0, num_classes, dtype=torch.float64))
        if c["conf_loss"] == "SOFTMAX":
            return F.cross_entropy(x, torch.tensor(labels, dtype=torch.long), reduction="none")
        target = (F.one_hot(torch.tensor(labels, dtype=torch.long), num_classes).double()
                  if logistic_targets is None else logistic_targets)
        return F.binary_cross_entropy_with_logits(x, target, reduction="none").sum(dim=1)

    # mining
    negatives = {i: [] for i in range(num)}
    mining_gaps = []
    if c["mining"] != "NONE":
        pos = positives()
        labels = {(i, p): target_label(i, g) for i, p, _, g in pos}
        rows = [(i, p) for i in range(num) for p in range(num_priors)]
        loss = conf_loss(rows, [labels.get(r, bg) for r in rows]).reshape(num, num_priors)
        if c["mining"] == "HARD_EXAMPLE" and pos:
            for (i, p, _, _), value in zip(pos, loc_terms(residuals(pos)).sum(dim=1)):
                loss[i, p] += value
        for i in sorted(matches):
            idx, best = matches[i][-1], overlaps[i][-1]
            if c["mining"] == "MAX_NEGATIVE":
                eligible = [p for p in range(num_priors)
                            if idx[p] == -1 and best[p] < c["neg_overlap"]]
                count = min(int(sum(g >= 0 for g in idx) * c["ratio"]), len(eligible))
            else:
                eligible = list(range(num_priors))
                count = min(c["sample_size"], len(eligible))
            ranked = sorted(eligible, key=lambda p: (-float(loss[i, p]), p))
            chosen = set(ranked[:count])
            if 0 < count < len(ranked):
                mining_gaps.append(float(loss[i, ranked[count - 1]] - loss[i, ranked[count]]))
            negatives[i] = [p for p in range(num_priors) if idx[p] == -1 and p in chosen]
            if c["mining"] == "HARD_EXAMPLE":
                matches[i][-1] = [g if p in chosen else -1 for p, g in enumerate(idx)]

    pos = positives()
    res = residuals(pos)
    loc_loss = float(loc_terms(res).sum()) if pos else 0.0
    if c["mining"] != "NONE":
        rows, labels = [], []
        for i in range(num):
            rows += [(j, p) for j, p, _, _ in pos if j == i] + [(i, p) for p in negatives[i]]
            labels += ([target_label(j, g) for j, _, _, g in pos if j == i]
                       + [bg] * len(negatives[i]))
        conf_total = float(conf_loss(rows, labels).sum()) if rows else 0.0
    else:
        rows = [(i, p) for i in range(num) for p in range(num_priors)]
        labels = {(i, p): target_label(i, g) for i, p, _, g in pos}
        logistic = torch.zeros(len(rows), num_classes, dtype=torch.float64)
        for k, r in enumerate(rows):
            if r in labels:
                logistic[k, labels[r]] = 1
        conf_total = float(conf_loss(rows, [labels.get(r, bg) for r in rows], logistic).sum())
    normalizer = max(1, {"FULL": num * num_priors, "VALID": len(pos), "BATCH_SIZE": num,
                         "NONE": 1}[c["normalization"]])
    return ((c["loc_weight"] * loc_loss + conf_total) / normalizer,
            dict(positives=pos, negatives=negatives, residuals=res, mining_gaps=mining_gaps,
                 normalizer=normalizer))


# ------------------------------------------------------------------------------ scenes

def grid_priors():
    """27 priors: a 3x3 grid of centres, three shapes each, some crossing the border."""
    boxes = []
    for cy in (1 / 6, 1 / 2, 5 / 6):
        for cx in (1 / 6, 1 / 2, 5 / 6):
            for w, h in ((0.3, 0.3), (0.5, 0.25), (0.25, 0.5)):
                boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    boxes = np.array(boxes, np.float32)
    variances = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (len(boxes), 1))
    return np.stack([boxes.reshape(-1), variances.reshape(-1)])[None]


def scene(seed, cfg, num=2):
    """Random offsets, scores and ground truth whose matching and mining have no near
    ties (so float32 and float64 agree, and gradient steps never flip a decision)."""
    c = dict(DEFAULTS, **cfg)
    prior = grid_priors()
    num_priors = prior.shape[2] // 4
    num_loc = 1 if c["share_location"] else c["num_classes"]
    for attempt in range(200):
        rs = np.random.RandomState(seed * 1000 + attempt)
        rows = []
        for i, count in zip(range(num), (2, 1, 2)):
            for _ in range(count):
                cx, cy = rs.uniform(0.25, 0.75, 2)
                w, h = rs.uniform(0.2, 0.5, 2)
                rows.append([i, rs.randint(1, c.get("max_label", c["num_classes"])), 0,
                             cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 0])
        gt = np.array(rows, np.float32)[None, None]
        loc = (rs.standard_normal((num, num_priors * num_loc * 4)) * 0.3).astype(np.float32)
        conf = (rs.standard_normal((num, num_priors * c["num_classes"])) * 2).astype(np.float32)
        if well_separated(loc, conf, prior, gt, c):
            return loc, conf, prior, gt
    raise AssertionError("no tie-free scene found")


def well_separated(loc, conf, prior, gt, c):
    priors = prior.reshape(2, -1, 4)[0]
    for i in range(loc.shape[0]):
        boxes = [r[3:7] for r in gt.reshape(-1, 8) if r[0] == i]
        values = sorted(ref_iou(p, b) for p in priors for b in boxes)
        values = [v for v in values if v > 1e-6]
        if any(b - a < 1e-4 for a, b in zip(values, values[1:])):
            return False
        if any(abs(v - t) < 1e-3 for v in values for t in (c["overlap"], c["neg_overlap"])):
            return False
    _, info = reference_loss(loc, conf, prior, gt, c)
    if any(gap < 0.1 for gap in info["mining_gaps"]):
        return False
    res = info["residuals"].numpy()
    return not len(res) or np.abs(np.abs(res) - 1).min() > 0.05


def loss_of(backend, cfg, loc, conf, prior, gt):
    layer = make_layer(prototxt(cfg), backend)
    out, = run_forward(layer, blobs(backend, loc, conf, prior, gt), tops(backend, 1))
    return float(out)


# ---------------------------------------------------------------- matching and encoding

def random_boxes(rs, n):
    centre = rs.uniform(0.1, 0.9, (n, 2))
    size = rs.uniform(0.05, 0.5, (n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_prediction", [False, True])
@pytest.mark.parametrize("ignore_cross", [False, True])
def test_match_boxes_matches_the_loop_reference(seed, per_prediction, ignore_cross):
    from netkit.layers.bbox_util import jaccard_overlap
    from netkit.layers.multibox_util import cross_boundary
    rs = np.random.RandomState(seed)
    preds, gts = random_boxes(rs, 40), random_boxes(rs, 1 + seed % 4)
    overlaps = jaccard_overlap(preds, gts)
    flat = np.sort(overlaps[overlaps > 1e-6].astype(np.float64))
    assert (np.diff(flat) > 1e-6).all()   # tie-free
    threshold = 0.3
    assert np.abs(flat - threshold).min() > 1e-5
    indices, best = match_boxes(overlaps, MBL.PER_PREDICTION if per_prediction else MBL.BIPARTITE,
                                threshold, cross_boundary(preds) if ignore_cross else None)
    ref_idx, ref_best = ref_match(preds, gts, per_prediction, threshold, ignore_cross)
    np.testing.assert_array_equal(indices, ref_idx)
    np.testing.assert_allclose(best, ref_best, rtol=1e-5, atol=1e-7)
    assert (indices >= 0).any()


def ssd_test_boxes():
    """SSD's own MatchBBox test scene (test_bbox_util.cpp): two ground truth boxes with
    labels 1 and 2, six predictions."""
    gts = np.array([[0.1, 0.1, 0.3, 0.3], [0.3, 0.3, 0.6, 0.5]], np.float32)
    preds = np.array([[0.1, 0.0, 0.4, 0.3], [0.0, 0.1, 0.2, 0.3], [0.2, 0.1, 0.4, 0.4],
                      [0.4, 0.3, 0.7, 0.5], [0.5, 0.4, 0.7, 0.7], [0.7, 0.7, 0.8, 0.8]],
                     np.float32)
    return preds, gts


@pytest.mark.parametrize("label_one,match,threshold,indices", [
    (True, MBL.BIPARTITE, -1, [0, -1, -1, -1, -1, -1]),
    (False, MBL.BIPARTITE, -1, [0, -1, -1, 1, -1, -1]),
    (True, MBL.PER_PREDICTION, 0.3, [0, 0, -1, -1, -1, -1]),
    (False, MBL.PER_PREDICTION, 0.3, [0, 0, -1, 1, -1, -1]),
    (False, MBL.PER_PREDICTION, 0.001, [0, 0, 0, 1, 1, -1]),
])
def test_match_boxes_reproduces_ssd_published_cases(label_one, match, threshold, indices):
    from netkit.layers.bbox_util import jaccard_overlap
    preds, gts = ssd_test_boxes()
    gts = gts[:1] if label_one else gts
    got, best = match_boxes(jaccard_overlap(preds, gts), match, threshold)
    np.testing.assert_array_equal(got, indices)
    expected = [4 / 9, 2 / 6, 2 / 8, 0, 0, 0] if label_one else [4 / 9, 2 / 6, 2 / 8, 4 / 8,
                                                                   1 / 11, 0]
    np.testing.assert_allclose(best, expected, atol=1e-6)


def test_bipartite_ties_take_the_lower_prior_then_the_lower_ground_truth():
    overlaps = np.array([[0.5, 0.5], [0.5, 0.2], [0.1, 0.5]], np.float32)
    indices, _ = match_boxes(overlaps, MBL.BIPARTITE, 0.5)
    np.testing.assert_array_equal(indices, [0, -1, 1])
    indices, _ = match_boxes(overlaps, MBL.PER_PREDICTION, 0.5)
    np.testing.assert_array_equal(indices, [0, 0, 1])


@pytest.mark.parametrize("code", ["CORNER", "CENTER_SIZE", "CORNER_SIZE"])
@pytest.mark.parametrize("variance_in_target", [False, True])
def test_encode_boxes_matches_the_loop_reference_and_decodes_back(code, variance_in_target):
    rs = np.random.RandomState(3)
    priors, boxes = random_boxes(rs, 30), random_boxes(rs, 30)
    variances = rs.uniform(0.1, 0.3, (30, 4)).astype(np.float32)
    got = encode_boxes(priors, variances, boxes, CODES[code], variance_in_target)
    expected = [ref_encode(p, v, b, code, variance_in_target)
                for p, v, b in zip(priors, variances, boxes)]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    # bbox_util's DecodeBBox (another author's code) inverts it
    decoded = decode_boxes(np, got, priors, variances, CODES[code], variance_in_target)
    np.testing.assert_allclose(decoded, boxes, atol=2e-6)


def test_center_size_encoding_refuses_empty_boxes():
    with pytest.raises(NetkitError, match="no area"):
        encode_boxes(np.float32([[0, 0, 0.5, 0.5]]), np.ones((1, 4), np.float32),
                     np.float32([[0.2, 0.2, 0.2, 0.4]]), CODES["CENTER_SIZE"], False)


# ----------------------------------------------------------------- loss against PyTorch

CONFIGS = {
    "ssd300": dict(code="CENTER_SIZE", mining="MAX_NEGATIVE"),
    "bipartite_corner_l2_logistic": dict(match="BIPARTITE", loc_loss="L2", conf_loss="LOGISTIC"),
    "hard_example_full": dict(code="CORNER_SIZE", mining="HARD_EXAMPLE", sample_size=8,
                              loc_weight=0.7, normalization="FULL"),
    "per_class_loc": dict(share_location=False, normalization="BATCH_SIZE", code="CENTER_SIZE"),
    "per_class_logistic": dict(share_location=False, conf_loss="LOGISTIC",
                               normalization="NONE"),
    "match_predictions": dict(use_prior=False, code="CENTER_SIZE", mining="MAX_NEGATIVE",
                              overlap=0.3),
    "variance_in_target_hard_logistic": dict(code="CENTER_SIZE", variance_in_target=True,
                                             mining="HARD_EXAMPLE", sample_size=10,
                                             conf_loss="LOGISTIC"),
    "max_negative_logistic": dict(mining="MAX_NEGATIVE", conf_loss="LOGISTIC", ratio=2.0,
                                  neg_overlap=0.4),
    "bipartite_neg_overlap": dict(match="BIPARTITE", mining="MAX_NEGATIVE", neg_overlap=0.2),
    "cross_boundary_ignored": dict(ignore_cross=True, mining="MAX_NEGATIVE", overlap=0.4),
    "agnostic": dict(num_classes=2, agnostic=True, mining="MAX_NEGATIVE", max_label=5),
    "bp_inside": dict(bp_inside=True, loc_loss="SMOOTH_L1"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_matches_pytorch_on_reference_matches(backend, name):
    cfg = CONFIGS[name]
    loc, conf, prior, gt = scene(1, cfg)
    expected, info = reference_loss(loc, conf, prior, gt, cfg)
    assert info["positives"]   # every scene has matches to learn from
    if cfg.get("mining", "NONE") != "NONE":
        assert any(info["negatives"].values())
    got = loss_of(backend, cfg, loc, conf, prior, gt)
    assert got == pytest.approx(expected, rel=2e-5)


def test_difficult_ground_truth_is_skipped_when_asked(backend):
    cfg = dict(code="CENTER_SIZE", mining="MAX_NEGATIVE")
    loc, conf, prior, gt = scene(2, cfg)
    gt = gt.copy()
    gt[0, 0, 0, 7] = 1
    for use in (True, False):
        cfg["use_difficult"] = use
        expected, _ = reference_loss(loc, conf, prior, gt, cfg)
        assert loss_of(backend, cfg, loc, conf, prior, gt) == pytest.approx(expected, rel=2e-5)
    assert reference_loss(loc, conf, prior, gt, cfg)[0] != pytest.approx(
        reference_loss(loc, conf, prior, gt, dict(cfg, use_difficult=True))[0])


def test_legacy_normalize_false_divides_by_the_batch(backend):
    cfg = dict(mining="MAX_NEGATIVE")
    loc, conf, prior, gt = scene(3, cfg)
    text = prototxt(cfg).replace("loss_param { normalization: VALID }",
                                 "loss_param { normalize: false }")
    layer = make_layer(text, backend)
    out, = run_forward(layer, blobs(backend, loc, conf, prior, gt), tops(backend, 1))
    expected, _ = reference_loss(loc, conf, prior, gt, dict(cfg, normalization="BATCH_SIZE"))
    assert float(out) == pytest.approx(expected, rel=2e-5)


def test_propagate_down_false_leaves_a_term_out(backend):
    cfg = dict(mining="MAX_NEGATIVE")
    loc, conf, prior, gt = scene(4, cfg)
    text = prototxt(cfg) + " propagate_down: false propagate_down: true " \
                           "propagate_down: false propagate_down: false"
    out, = run_forward(make_layer(text, backend), blobs(backend, loc, conf, prior, gt),
                       tops(backend, 1))
    expected, _ = reference_loss(loc, conf, prior, gt, dict(cfg, loc_weight=0.0))
    assert float(out) == pytest.approx(expected, rel=2e-5)


def test_no_match_in_the_batch_gives_zero_loss_and_gradients(backend):
    cfg = dict(mining="MAX_NEGATIVE")
    loc, conf, prior, _ = scene(5, cfg)
    # one box outside every prior and padding rows: nothing matches
    gt = np.array([[0, 1, 0, 2.0, 2.0, 2.5, 2.5, 0], [-1] * 8], np.float32)[None, None]
    layer = make_layer(prototxt(cfg), backend)
    outputs, diffs, _ = forward_backward(layer, backend, [loc, conf, prior, gt], [1.0],
                                         [True, True, False, False])
    assert float(outputs[0]) == 0
    assert not diffs[0].any() and not diffs[1].any()


def test_background_label_in_ground_truth_is_an_error(backend):
    loc, conf, prior, gt = scene(6, {})
    gt = gt.copy()
    gt[0, 0, 1, 1] = 0
    layer = make_layer(prototxt({}), backend)
    with pytest.raises(NetkitError, match="background label 0"):
        run_forward(layer, blobs(backend, loc, conf, prior, gt), tops(backend, 1))


def test_hard_example_nms_keeps_one_of_two_overlapping_priors(backend):
    """Priors A and B overlap heavily, C is the ground truth. Losses rank A > B > C: plain
    hard mining of 2 samples takes A and B (dropping the match C); with NMS B is
    suppressed by A, so A becomes a negative and C stays matched."""
    boxes = np.float32([[0, 0, 0.5, 0.5], [0.02, 0, 0.52, 0.5], [0.5, 0.5, 1, 1]])
    prior = np.stack([boxes.reshape(-1), np.full(12, 0.1, np.float32)])[None]
    gt = np.float32([[0, 1, 0, 0.5, 0.5, 1, 1, 0]])[None, None]
    conf = np.float32([[-4, 4, 0, -3, 3, 0, 0, 0.5, 0]])   # background scores low for A, B
    loc = np.zeros((1, 12), np.float32)
    loc[0, 8:] = 0.3                                       # C's offsets: a gradient to see
    base = ("mining_type: HARD_EXAMPLE sample_size: 2 use_prior_for_nms: true "
            "num_classes: 3 ")
    rows = {}
    for name, extra in (("plain", ""), ("nms", "nms_param { nms_threshold: 0.5 top_k: 10 }"),
                        ("top_k unset", "nms_param { nms_threshold: 0.5 }")):
        layer = make_layer('type: "MultiBoxLoss" multibox_loss_param { %s %s }' % (base, extra),
                           backend)
        outputs, diffs, _ = forward_backward(layer, backend, [loc, conf, prior, gt], [1.0],
                                             [True, True, False, False])
        rows[name] = sorted(np.flatnonzero(np.abs(diffs[1]).reshape(3, 3).sum(axis=1)))
        rows[name + " loc"] = bool(diffs[0].any())
        rows[name + " loss"] = float(outputs[0])
    assert rows["plain"] == [0, 1] and not rows["plain loc"]
    assert rows["nms"] == [0, 2] and rows["nms loc"]
    assert rows["top_k unset"] == [] and rows["top_k unset loss"] == 0   # SSD's top_k 0


def test_encode_variance_in_target_passes_the_gradient_undivided(backend):
    """SSD divides prediction and target by the variance, but copies the loss layer's
    gradient back without the 1/variance of the chain rule."""
    cfg = dict(code="CENTER_SIZE", variance_in_target=True, loc_loss="L2")
    loc, conf, prior, gt = scene(7, cfg)
    _, info = reference_loss(loc, conf, prior, gt, cfg)
    layer = make_layer(prototxt(cfg), backend)
    _, diffs, _ = forward_backward(layer, backend, [loc, conf, prior, gt], [2.0],
                                   [True, True, False, False])
    expected = np.zeros((loc.shape[0], loc.shape[1] // 4, 4))
    for (i, p, _, _), r in zip(info["positives"], info["residuals"].numpy()):
        expected[i, p] = 2.0 * r / info["normalizer"]
    np.testing.assert_allclose(diffs[0].reshape(expected.shape), expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- gradient checks

GRADIENT_CONFIGS = [
    dict(mining="NONE", conf_loss="SOFTMAX", loc_loss="SMOOTH_L1", code="CENTER_SIZE"),
    dict(mining="NONE", conf_loss="LOGISTIC", loc_loss="L2", share_location=False),
    dict(mining="MAX_NEGATIVE", conf_loss="SOFTMAX", loc_loss="L2", loc_weight=0.5),
    dict(mining="MAX_NEGATIVE", conf_loss="LOGISTIC", loc_loss="SMOOTH_L1",
         normalization="FULL"),
    dict(mining="HARD_EXAMPLE", conf_loss="SOFTMAX", loc_loss="SMOOTH_L1", sample_size=12,
         code="CORNER_SIZE"),
    dict(mining="HARD_EXAMPLE", conf_loss="LOGISTIC", loc_loss="L2", sample_size=12),
]


@pytest.mark.parametrize("k", range(len(GRADIENT_CONFIGS)))
def test_gradient(backend, k):
    cfg = GRADIENT_CONFIGS[k]
    loc, conf, prior, gt = scene(10 + k, cfg)
    layer = make_layer(prototxt(cfg), backend)
    check_gradient(layer, blobs(backend, loc, conf, prior, gt), tops(backend, 1),
                   check_bottom=[0, 1], max_checks=40, threshold=2e-3)


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("params,match", [
    ("", "num_classes must be given"),
    ("num_classes: 0", "num_classes must be positive"),
    ("num_classes: 3 share_location: false mining_type: MAX_NEGATIVE", "needs share_location"),
    ("num_classes: 3 mining_type: NONE do_neg_mining: true", "do_neg_mining"),
    ("num_classes: 3 background_label_id: 3", "background_label_id 3 must be below"),
    ("num_classes: 3 map_object_to_agnostic: true", "map_object_to_agnostic needs num_classes 2"),
    ("num_classes: 3 mining_type: HARD_EXAMPLE sample_size: 0", "sample_size must be positive"),
])
def test_bad_params(backend, params, match):
    loc, conf, prior, gt = scene(0, {})
    layer = make_layer('type: "MultiBoxLoss" multibox_loss_param { %s }' % params, backend)
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, blobs(backend, loc, conf, prior, gt), tops(backend, 1))


def test_legacy_do_neg_mining_that_agrees_is_accepted(backend):
    loc, conf, prior, gt = scene(0, dict(mining="MAX_NEGATIVE"))
    text = prototxt(dict(mining="MAX_NEGATIVE")).replace("mining_type", "do_neg_mining: true "
                                                                        "mining_type")
    out, = run_forward(make_layer(text, backend), blobs(backend, loc, conf, prior, gt),
                       tops(backend, 1))
    assert float(out) == pytest.approx(reference_loss(loc, conf, prior, gt,
                                                      dict(mining="MAX_NEGATIVE"))[0], rel=2e-5)


def test_bad_shapes(backend):
    loc, conf, prior, gt = scene(0, {})
    layer = make_layer(prototxt({}), backend)
    with pytest.raises(LayerSetupError, match="loc .* must hold num_priors"):
        run_forward(layer, blobs(backend, loc[:, :-4], conf, prior, gt), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="num_classes"):
        run_forward(layer, blobs(backend, loc, conf[:, :-1], prior, gt), tops(backend, 1))
    with pytest.raises(LayerSetupError, match="8 values per box"):
        run_forward(layer, blobs(backend, loc, conf, prior, gt[..., :7]), tops(backend, 1))


def test_no_backward_to_priors_or_ground_truth(backend):
    loc, conf, prior, gt = scene(0, {})
    text = prototxt({}) + " propagate_down: true propagate_down: true " \
                          "propagate_down: true propagate_down: false"
    with pytest.raises(LayerSetupError, match="propagate_down false for bottoms 2 and 3"):
        run_forward(make_layer(text, backend), blobs(backend, loc, conf, prior, gt),
                    tops(backend, 1))
    layer = make_layer(prototxt({}), backend)
    with pytest.raises(LayerSetupError, match="cannot backpropagate to the priors"):
        forward_backward(layer, backend, [loc, conf, prior, gt], [1.0],
                         [True, True, False, True])


# ------------------------------------------------------------------- average precision

def textbook_ap(scores, hits, num_pos, version):
    """VOC formulas in float64, from the ranked precision/recall curve."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(hits, float)[order]
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    prec, rec = tp / (tp + fp), tp / num_pos
    if version == "11point":
        return sum(max([p for p, r in zip(prec, rec) if r >= t] or [0])
                   for t in [j / 10 for j in range(11)]) / 11
    if version == "Integral":
        return float(np.sum(prec * np.diff(np.concatenate([[0], rec]))))
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    return float(np.sum(envelope * np.diff(np.concatenate([[0], rec]))))


def test_average_precision_by_hand():
    """Ranked: TP, FP, FP, TP, TP with 3 positives (given shuffled).
    precision 1, 1/2, 1/3, 1/2, 3/5; recall 1/3, 1/3, 1/3, 2/3, 1.
    11-point: recall >= 0 .. 0.3 reach precision 1, >= 0.4 .. 1 reach 3/5: (4 + 7 * 0.6) / 11.
    Integral: (1 + 1/2 + 3/5) / 3. MaxIntegral (envelope 1, 3/5, 3/5): (1 + 0.6 + 0.6) / 3."""
    scores = [0.6, 0.9, 0.5, 0.8, 0.7]
    hits = [1, 1, 1, 0, 0]
    assert average_precision(scores, hits, 3, "11point") == pytest.approx(8.2 / 11, rel=1e-6)
    assert average_precision(scores, hits, 3, "Integral") == pytest.approx(2.1 / 3, rel=1e-6)
    assert average_precision(scores, hits, 3, "MaxIntegral") == pytest.approx(2.2 / 3, rel=1e-6)


def test_average_precision_reproduces_ssd_published_values():
    """SSD's ComputeAP test (test_bbox_util.cpp): equal scores keep their order."""
    scores = [1.0, 1.0, 0.9, 0.9, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4, 0.4]
    hits = [0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    last_prec = 5 / 11
    for version, value, cut in (("Integral", 0.558528, last_prec * 0.2),
                                ("MaxIntegral", 0.591861, last_prec * 0.2),
                                ("11point", 0.598662, last_prec * 2 / 11)):
        assert average_precision(scores, hits, 5, version) == pytest.approx(value, abs=1e-5)
        assert average_precision(scores[:7], hits[:7], 5, version) == pytest.approx(
            value - cut, abs=1e-5)


@pytest.mark.parametrize("version", ["11point", "MaxIntegral", "Integral"])
def test_average_precision_matches_textbook_formulas(version):
    rs = np.random.RandomState(8)
    for n in (1, 7, 40):
        scores = rs.permutation(n) / n   # no ties
        hits = (rs.uniform(size=n) < 0.6).astype(int)
        num_pos = hits.sum() + rs.randint(0, 3) or 1
        assert average_precision(scores, hits, num_pos, version) == pytest.approx(
            textbook_ap(scores, hits, num_pos, version), rel=1e-5, abs=1e-7)


def test_average_precision_edge_cases():
    assert average_precision([], [], 3, "Integral") == 0
    assert average_precision([0.5], [0], 0, "Integral") == 0
    with pytest.raises(NetkitError, match="ap_version"):
        average_precision([0.5], [1], 1, "VOC")


def test_mean_average_precision_over_test_iterations():
    first = np.float32([[-1, 1, 2, -1, -1], [-1, 2, 1, -1, -1], [-1, 3, 1, -1, -1],
                        [0, 1, 0.9, 1, 0], [0, 1, 0.4, 0, 1],
                        [0, 2, 0.8, 0, 0]])           # tp = fp = 0: ignored difficult match
    second = np.float32([[-1, 1, 1, -1, -1], [-1, 2, 1, -1, -1], [-1, 3, 0, -1, -1],
                         [0, 1, 0.6, 1, 0], [0, 2, 0.7, 0, 1], [1, 2, 0.3, 1, 0],
                         [0, 0, 0.9, 1, 0]])          # background rows are ignored
    mean, aps = mean_average_precision([first.reshape(1, 1, -1, 5), second], "Integral", 0)
    # class 1 ranks TP, TP, FP of 3: 1/3 + 1/3; class 2 FP, TP of 2: 1/2 * 1/2
    ap1 = average_precision([0.9, 0.4, 0.6], [1, 0, 1], 3, "Integral")
    ap2 = average_precision([0.7, 0.3], [0, 1], 2, "Integral")
    assert (ap1, ap2) == (pytest.approx(2 / 3, rel=1e-6), pytest.approx(0.25, rel=1e-6))
    assert aps == {1: pytest.approx(ap1), 2: pytest.approx(ap2)}   # class 3: no detection
    assert mean == pytest.approx((ap1 + ap2) / 3, rel=1e-6)
    assert math.isnan(mean_average_precision([], "Integral", 0)[0])
    # without background_label_id the label-0 detection is read, but a label with no
    # positives row is not averaged
    assert mean_average_precision([first, second], "Integral") == (pytest.approx(mean), aps)


# ----------------------------------------------------------------- DetectionEvaluate

SSD_GT = np.float32([[0, 1, 0, 0.1, 0.1, 0.3, 0.3, 0], [0, 1, 0, 0.6, 0.6, 0.8, 0.8, 1],
                     [1, 2, 0, 0.3, 0.3, 0.6, 0.5, 0], [1, 1, 0, 0.7, 0.1, 0.9, 0.3, 0]])
SSD_DET = np.float32([[0, 1, 0.3, 0.1, 0.0, 0.4, 0.3], [0, 1, 0.7, 0.0, 0.1, 0.2, 0.3],
                      [0, 1, 0.9, 0.7, 0.6, 0.8, 0.8], [1, 2, 0.8, 0.2, 0.1, 0.4, 0.4],
                      [1, 2, 0.1, 0.4, 0.3, 0.7, 0.5], [1, 1, 0.2, 0.8, 0.1, 1.0, 0.3],
                      [1, 3, 0.2, 0.8, 0.1, 1.0, 0.3], [2, 1, 0.2, 0.8, 0.1, 1.0, 0.3]])


def evaluate(backend, params, det, gt):
    layer = make_layer('type: "DetectionEvaluate" detection_evaluate_param { %s }' % params,
                       backend)
    out, = run_forward(layer, blobs(backend, det[None, None], gt[None, None]), tops(backend, 1))
    return out[0, 0]


@pytest.mark.parametrize("difficult", [True, False])
def test_detection_evaluate_reproduces_ssd_published_case(backend, difficult):
    """SSD's test_detection_evaluate_layer.cpp scene and expected rows."""
    out = evaluate(backend, "num_classes: 3 background_label_id: 0 overlap_threshold: 0.3 "
                   "evaluate_difficult_gt: %s" % str(difficult).lower(), SSD_DET, SSD_GT)
    expected = [[-1, 1, 3 if difficult else 2, -1, -1], [-1, 2, 1, -1, -1],
                [0, 1, 0.9, 1 if difficult else 0, 0], [0, 1, 0.7, 1, 0], [0, 1, 0.3, 0, 1],
                [1, 1, 0.2, 1, 0], [1, 2, 0.8, 0, 1], [1, 2, 0.1, 1, 0], [1, 3, 0.2, 0, 1],
                [2, 1, 0.2, 0, 1]]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_detection_evaluate_orders_and_skips_rows(backend):
    det = np.float32([[0, 2, 0.2, 0.5, 0.5, 0.6, 0.6],    # label 2 has no ground truth:
                      [0, 2, 0.9, 0.5, 0.5, 0.6, 0.6],    # false positives in input order
                      [0, 1, 0.4, 0.1, 0.1, 0.3, 0.3],    # sorted by score where ground
                      [0, 1, 0.8, 0.12, 0.1, 0.3, 0.3],   # truth exists
                      [1, -1, -1, -1, -1, -1, -1],        # placeholder row: nothing
                      [-1, 1, 0.5, 0, 0, 1, 1]])          # padding: an unused zero row
    gt = np.float32([[0, 1, 0, 0.1, 0.1, 0.3, 0.3, 0], [-1, 1, 0, 0, 0, 1, 1, 0],
                     [1, 1, 0, 0.1, 0.1, 0.3, 0.3, 0]])   # rows after image -1 are not read
    out = evaluate(backend, "num_classes: 3", det, gt)
    expected = [[-1, 1, 1, -1, -1], [-1, 2, 0, -1, -1],
                [0, 1, 0.8, 1, 0], [0, 1, 0.4, 0, 1], [0, 2, 0.2, 0, 1], [0, 2, 0.9, 0, 1],
                [0, 0, 0, 0, 0]]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_detection_evaluate_compares_in_pixels_with_name_size_file(backend, tmp_path):
    """On a 10x10 image, ground truth [0, 0, 4, 4] px (5 x 5 pixels) and detection
    [0, 0, 3, 3] px (4 x 4) overlap 16 / 25 = 0.64 in pixels but 0.09 / 0.16 = 0.5625
    normalised: a true positive at threshold 0.6 only in pixels. The second image with
    detections takes the file's second size (20 x 10: the same boxes are 8 x 4 px and
    6 x 3 px, 7 * 4 / (9 * 5) = 0.622), the third wraps around to the first."""
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("a 10 10\nb 10 20\n")
    det = np.float32([[i, 1, 0.5, 0, 0, 0.3, 0.3] for i in range(3)])
    gt = np.float32([[i, 1, 0, 0, 0, 0.4, 0.4, 0] for i in range(3)])
    out = evaluate(backend, "num_classes: 2 overlap_threshold: 0.6", det, gt)
    np.testing.assert_array_equal(out[1:, 3], [0, 0, 0])
    layer = make_layer('type: "DetectionEvaluate" detection_evaluate_param { num_classes: 2 '
                       'overlap_threshold: 0.63 name_size_file: "%s" }' % sizes, backend)
    bottom, top = blobs(backend, det[None, None], gt[None, None]), tops(backend, 1)
    out, = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(out[0, 0, 1:, 3], [1, 0, 1])
    layer.forward(bottom, top)   # three more images: sizes b, a, b
    np.testing.assert_array_equal(backend.asnumpy(top[0].data)[0, 0, 1:, 3], [0, 1, 0])


def test_original_boxes_undo_the_resize():
    box = np.float32([[0.5, 0.25, 1.0, 0.5]])
    warp, size = original_boxes(box, (100, 200), None)
    np.testing.assert_allclose(warp, [[100, 25, 200, 50]])
    assert size[0] == pytest.approx(101 * 26)
    pad = pb.ResizeParameter(resize_mode=pb.ResizeParameter.FIT_LARGE_SIZE_AND_PAD,
                             height=100, width=100)
    # a 100 x 200 image fit into 100 x 100 sits in rows 25..75: y 0.25 -> 0, 0.5 -> 0.5
    boxes, _ = original_boxes(box, (100, 200), pad)
    np.testing.assert_allclose(boxes, [[100, 0, 200, 50]], atol=1e-4)
    small = pb.ResizeParameter(resize_mode=pb.ResizeParameter.FIT_SMALL_SIZE, height=100,
                               width=100, height_scale=300, width_scale=600)
    boxes, size = original_boxes(box, (100, 200), small)
    np.testing.assert_allclose(boxes, [[200, 75, 200, 100]])   # scaled, then clipped
    assert size[0] == 0


@pytest.mark.parametrize("params,det,match", [
    ("overlap_threshold: 0.5", SSD_DET, "num_classes must be given"),
    ("num_classes: 3 overlap_threshold: 0", SSD_DET, "overlap_threshold must be positive"),
    ('num_classes: 3 name_size_file: "/nonexistent/sizes.txt"', SSD_DET, "cannot be read"),
    ("num_classes: 3", SSD_DET[:, :6], "detections bottom must have shape"),
])
def test_detection_evaluate_errors(backend, params, det, match):
    layer = make_layer('type: "DetectionEvaluate" detection_evaluate_param { %s }' % params,
                       backend)
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, blobs(backend, det[None, None], SSD_GT[None, None]), tops(backend, 1))


def test_detection_evaluate_refuses_background_detections(backend):
    det = SSD_DET.copy()
    det[0, 1] = 0
    with pytest.raises(NetkitError, match="background label 0"):
        evaluate(backend, "num_classes: 3", det, SSD_GT)


# ----------------------------------------------------------------------- a tiny SSD

TINY_SSD = """
name: "tiny_ssd"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 }
                      shape { dim: 1 dim: 1 dim: 1 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
""" + "".join("""
layer { name: "%(f)s_loc" type: "Convolution" bottom: "%(f)s" top: "%(f)s_loc"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "%(f)s_loc_perm" type: "Permute" bottom: "%(f)s_loc" top: "%(f)s_loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "%(f)s_loc_flat" type: "Flatten" bottom: "%(f)s_loc_perm" top: "%(f)s_loc_flat" }
layer { name: "%(f)s_conf" type: "Convolution" bottom: "%(f)s" top: "%(f)s_conf"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "%(f)s_conf_perm" type: "Permute" bottom: "%(f)s_conf" top: "%(f)s_conf_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "%(f)s_conf_flat" type: "Flatten" bottom: "%(f)s_conf_perm"
        top: "%(f)s_conf_flat" }
layer { name: "%(f)s_priors" type: "PriorBox" bottom: "%(f)s" bottom: "data"
        top: "%(f)s_priors"
        prior_box_param { min_size: %(size)d aspect_ratio: 2 flip: false clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
""" % dict(f=f, size=size) for f, size in (("conv2", 6), ("pool2", 11))) + """
layer { name: "loc" type: "Concat" bottom: "conv2_loc_flat" bottom: "pool2_loc_flat"
        top: "loc" concat_param { axis: 1 } }
layer { name: "conf" type: "Concat" bottom: "conv2_conf_flat" bottom: "pool2_conf_flat"
        top: "conf" concat_param { axis: 1 } }
layer { name: "priors" type: "Concat" bottom: "conv2_priors" bottom: "pool2_priors"
        top: "priors" concat_param { axis: 2 } }
layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf"
        bottom: "priors" bottom: "label" top: "mbox_loss" include { phase: TRAIN }
        propagate_down: true propagate_down: true propagate_down: false propagate_down: false
        loss_param { normalization: VALID }
        multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1
                              num_classes: 2 share_location: true match_type: PER_PREDICTION
                              overlap_threshold: 0.5 use_prior_for_matching: true
                              background_label_id: 0 use_difficult_gt: true
                              neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE
                              ignore_cross_boundary_bbox: false mining_type: MAX_NEGATIVE } }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf" top: "conf_reshape"
        include { phase: TEST } reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax"
        include { phase: TEST } softmax_param { axis: 2 } }
layer { name: "conf_prob" type: "Flatten" bottom: "conf_softmax" top: "conf_prob"
        include { phase: TEST } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf_prob"
        bottom: "priors" top: "detection_out" include { phase: TEST }
        detection_output_param { num_classes: 2 share_location: true background_label_id: 0
                                 nms_param { nms_threshold: 0.45 top_k: 20 } keep_top_k: 10
                                 code_type: CENTER_SIZE confidence_threshold: 0.01 } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "detection_out"
        bottom: "label" top: "detection_eval" include { phase: TEST }
        detection_evaluate_param { num_classes: 2 background_label_id: 0
                                   overlap_threshold: 0.5 evaluate_difficult_gt: false } }
"""


def test_tiny_ssd_trains(backend):
    """30 SGD steps on one image with one box more than halve the loss, and the TEST phase
    (DetectionOutput, DetectionEvaluate, then mAP) finds the box first."""
    param = text_format.Parse('base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 '
                              'random_seed: 5 snapshot_prefix: "unused"', pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(TINY_SSD, pb.NetParameter()))
    solver = SGDSolver(param, backend=backend)
    net, test = solver.net, Net(param.net_param, phase=TEST, backend=backend)
    image = np.zeros((1, 3, 16, 16), np.float32)
    image[0, :, 4:11, 5:13] = 1                       # one bright box on a dark image
    label = np.float32([[[[0, 1, 0, 5 / 16, 4 / 16, 13 / 16, 11 / 16, 0]]]])
    for n in (net, test):
        n.blobs["data"].data[...] = backend.asarray(image)
        n.blobs["label"].data[...] = backend.asarray(label)
    assert net.blobs["priors"].shape == (1, 2, (16 + 4) * 2 * 4)

    def mean_ap():
        for name, params in net.params.items():
            for mine, trained in zip(test.params[name], params):
                mine.data[...] = trained.data
        test.forward_layers()
        return mean_average_precision([backend.asnumpy(test.blobs["detection_eval"].data)],
                                      "11point", 0)[0]

    before = mean_ap()
    losses = []
    for _ in range(30):
        solver.step(1)
        losses.append(float(backend.asnumpy(net.blobs["mbox_loss"].data)))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.abs(backend.asnumpy(net.params["conv1"][0].diff)).sum() > 0
    after = mean_ap()
    assert before < 0.5 and after == pytest.approx(1.0, abs=1e-5)


def test_solver_detection_eval_reports_mean_ap(backend, caplog):
    """eval_type "detection" (SSD's solver): the test net's DetectionEvaluate rows, gathered
    over test_iter batches, are reported as one mAP per output, as SSD's solver logs it."""
    param = text_format.Parse('base_lr: 0.01 lr_policy: "fixed" test_iter: 2 '
                              'test_interval: 100 eval_type: "detection" ap_version: "11point" '
                              'show_per_class_result: true snapshot_prefix: "unused"',
                              pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(TINY_SSD, pb.NetParameter()))
    solver = SGDSolver(param, backend=backend)
    test = solver.test_nets[0]
    test.blobs["data"].data[...] = backend.asarray(np.random.default_rng(0).uniform(
        0, 1, test.blobs["data"].shape).astype(np.float32))
    test.blobs["label"].data[...] = backend.asarray(
        np.float32([[[[0, 1, 0, 0.3, 0.25, 0.8, 0.7, 0]]]]))
    with caplog.at_level(logging.INFO, logger="netkit"):
        means = solver.test(0)
    test.forward_layers()
    rows = backend.asnumpy(test.blobs["detection_eval"].data)
    expect = mean_average_precision([rows, rows], "11point")[0]
    assert list(means) == ["detection_eval"]
    assert means["detection_eval"][0] == pytest.approx(expect)
    assert "Test net output #0: detection_eval = " in caplog.text
    assert "class1: " in caplog.text
