"""Box matching, target encoding and example mining for SSD's MultiBoxLoss.

Host numpy, with SSD's bbox_util rules (float32 boxes [xmin, ymin, xmax, ymax] in
image-normalised coordinates): these steps are greedy loops and data-dependent selections
over a few thousand priors per image, which SSD also runs on the CPU. The loss arithmetic
that follows them runs on the net's backend, in the layer.
"""
import numpy as np

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from .bbox_util import box_size, decode_boxes, jaccard_overlap, nms_fast

MBL = pb.MultiBoxLossParameter
CORNER = pb.PriorBoxParameter.CORNER
CORNER_SIZE = pb.PriorBoxParameter.CORNER_SIZE


class GroundTruth:
    """The ground truth boxes of one image: `labels` (G,) int64, `boxes` (G, 4) float32."""

    def __init__(self, labels, boxes):
        self.labels = labels
        self.boxes = boxes


def ground_truth(rows, background_label_id, use_difficult_gt):
    """SSD's GetGroundTruth: {item_id: GroundTruth} from (G, 8) rows [item_id, label,
    instance_id, xmin, ymin, xmax, ymax, difficult], in row order.

    Rows with item_id -1 (AnnotatedData's padding) are skipped, and difficult boxes too
    unless `use_difficult_gt`. A box labelled with the background label is an error, as in
    SSD ("Found background label in the dataset").
    """
    rows = np.asarray(rows, np.float32).reshape(-1, 8)
    items = rows[:, 0].astype(np.int64)
    labels = rows[:, 1].astype(np.int64)
    keep = items != -1
    if (labels[keep] == background_label_id).any():
        raise NetkitError("MultiBoxLoss: a ground truth box carries the background label %d"
                         % background_label_id)
    if not use_difficult_gt:
        keep &= rows[:, 7] == 0
    out = {}
    for item in np.unique(items[keep]):
        mine = keep & (items == item)
        out[int(item)] = GroundTruth(labels[mine], rows[mine, 3:7].copy())
    return out


def cross_boundary(boxes):
    """SSD's IsCrossBoundaryBBox: a corner outside [0, 1]."""
    return ((boxes < 0) | (boxes > 1)).any(axis=-1)


def encode_boxes(priors, variances, boxes, code_type, encode_variance_in_target):
    """SSD's EncodeBBox: the regression targets (M, 4) of `boxes` against their `priors`
    (M, 4), float32.

    CORNER: corner offsets; CORNER_SIZE: corner offsets divided by the prior's width and
    height; CENTER_SIZE: centre offsets divided by the prior's size, then log size ratios.
    Without `encode_variance_in_target` each coordinate is further divided by its variance
    (the layer divides by the variance later otherwise, see MultiBoxLoss).
    """
    f32 = np.float32
    priors, variances, boxes = (np.asarray(a, f32) for a in (priors, variances, boxes))
    if code_type == CORNER:
        encoded = boxes - priors
    else:
        prior_w = priors[:, 2] - priors[:, 0]
        prior_h = priors[:, 3] - priors[:, 1]
        if (prior_w <= 0).any() or (prior_h <= 0).any():
            raise NetkitError("MultiBoxLoss: a prior box matched to ground truth has no area; "
                             "size-relative code types need priors of positive size")
        if code_type == CORNER_SIZE:
            encoded = (boxes - priors) / np.stack([prior_w, prior_h, prior_w, prior_h], axis=1)
        else:
            box_w = boxes[:, 2] - boxes[:, 0]
            box_h = boxes[:, 3] - boxes[:, 1]
            if (box_w <= 0).any() or (box_h <= 0).any():
                raise NetkitError("MultiBoxLoss: a ground truth box has no area, which "
                                 "code_type CENTER_SIZE cannot encode")
            prior_cx = (priors[:, 0] + priors[:, 2]) / f32(2)
            prior_cy = (priors[:, 1] + priors[:, 3]) / f32(2)
            box_cx = (boxes[:, 0] + boxes[:, 2]) / f32(2)
            box_cy = (boxes[:, 1] + boxes[:, 3]) / f32(2)
            encoded = np.stack([(box_cx - prior_cx) / prior_w, (box_cy - prior_cy) / prior_h,
                                np.log(box_w / prior_w), np.log(box_h / prior_h)], axis=1)
    if not encode_variance_in_target:
        encoded = encoded / variances
    return encoded.astype(f32)


def match_boxes(overlaps, match_type, overlap_threshold, ignored=None):
    """SSD's MatchBBox of P predicted (or prior) boxes against G ground truth boxes, from
    their (P, G) float32 Jaccard overlaps.

    Returns `indices` (P,) int64, the matched column, -1 for none, -2 for a box `ignored`
    (crossing the image boundary), and `best` (P,) float32, each box's overlap with its
    match, else its largest overlap. Overlaps of 1e-6 or less do not count.

    Bipartite step: repeatedly the largest remaining overlap pairs its box and its ground
    truth, both then leaving the pool (ties: the lower box index, then the lower ground
    truth index), until no ground truth is left or no overlap remains. PER_PREDICTION then
    gives every box still unmatched its best ground truth (the lowest index on ties) if
    that overlap reaches `overlap_threshold`.
    """
    num_boxes, num_gt = overlaps.shape
    indices = np.full(num_boxes, -1, np.int64)
    best = np.zeros(num_boxes, np.float32)
    if num_gt == 0:
        return indices, best
    usable = overlaps.astype(np.float64) > 1e-6
    if ignored is not None:
        indices[ignored] = -2
        usable[ignored] = False
    best[:] = np.where(usable, overlaps, 0).max(axis=1)
    rows = np.flatnonzero(usable.any(axis=1))
    pool = np.where(usable[rows], overlaps[rows], np.float32(-1))
    for _ in range(num_gt if len(rows) else 0):
        flat = int(np.argmax(pool))
        r, g = divmod(flat, num_gt)
        if pool[r, g] < 0:
            break
        indices[rows[r]] = g
        best[rows[r]] = overlaps[rows[r], g]
        pool[r, :] = -1
        pool[:, g] = -1
    if match_type == MBL.PER_PREDICTION:
        rest = rows[indices[rows] == -1]
        candidates = np.where(usable[rest] & (overlaps[rest] >= np.float32(overlap_threshold)),
                              overlaps[rest], np.float32(-1))
        if len(rest):
            choice = np.argmax(candidates, axis=1)
            found = candidates[np.arange(len(rest)), choice] >= 0
            indices[rest[found]] = choice[found]
            best[rest[found]] = candidates[np.arange(len(rest)), choice][found]
    return indices, best


def match_image(gt, priors, variances, loc, param, num_loc_classes):
    """SSD's FindMatches for one image with ground truth `gt`: {label: (indices, best)} as
    match_boxes gives them, indices into gt's boxes.

    The label is -1 with share_location (one set of boxes for every class), else each class
    but the background. With use_prior_for_matching the priors are matched against all
    ground truth and, without share_location, each class keeps the matches to its own
    ground truth; otherwise the image's predicted boxes `loc` (L, P, 4), decoded against the
    priors, are matched, class by class against that class's ground truth.
    """
    ignore = param.ignore_cross_boundary_bbox
    if param.use_prior_for_matching:
        overlaps = jaccard_overlap(priors, gt.boxes)
        indices, best = match_boxes(overlaps, param.match_type, param.overlap_threshold,
                                    cross_boundary(priors) if ignore else None)
        if param.share_location:
            return {-1: (indices, best)}
        matched_label = np.where(indices > -1, gt.labels[np.maximum(indices, 0)], -1)
        return {c: (np.where((indices > -1) & (matched_label == c), indices, -1), best.copy())
                for c in range(num_loc_classes) if c != param.background_label_id}
    out = {}
    for c in range(num_loc_classes):
        label = -1 if param.share_location else c
        if label == param.background_label_id:
            continue
        boxes = decode_boxes(np, loc[c], priors, variances, param.code_type,
                             param.encode_variance_in_target)
        columns = (np.arange(len(gt.labels)) if label == -1
                   else np.flatnonzero(gt.labels == label))
        if not len(columns):
            out[label] = (np.full(len(priors), -1, np.int64), np.zeros(len(priors), np.float32))
            continue
        overlaps = jaccard_overlap(boxes, gt.boxes[columns])
        indices, best = match_boxes(overlaps, param.match_type, param.overlap_threshold,
                                    cross_boundary(boxes) if ignore else None)
        out[label] = (np.where(indices > -1, columns[np.maximum(indices, 0)], indices), best)
    return out


def hard_example_nms(boxes, scores, threshold, top_k):
    """SSD's ApplyNMS as mining uses it: indices of the kept boxes, highest score first.

    The `top_k` highest scores are candidates (ties: lower index first; -1: all; SSD's 0
    when nms_param.top_k is unset keeps none); boxes of area below 1e-5 are dropped; a
    candidate is kept if it overlaps no kept box by more than `threshold`.
    """
    order = np.argsort(-scores, kind="stable")
    if top_k > -1:
        order = order[:top_k]
    order = order[box_size(boxes[order]).astype(np.float64) >= 1e-5]
    kept = nms_fast(boxes[order], scores[order], -np.inf, threshold)
    return order[kept]


def mine_image(loss, matches, param, nms_boxes=None):
    """SSD's MineHardExamples for one image, in place on `matches` ({label: (indices,
    best)}): returns the negative prior indices, label by label, each label's ascending.

    `loss` (P,) float32 holds each prior's confidence loss (plus its localisation loss for
    HARD_EXAMPLE). MAX_NEGATIVE: the unmatched priors whose best overlap is below
    neg_overlap are eligible, and the int(num_pos * neg_pos_ratio) of them with the largest
    loss become negatives. HARD_EXAMPLE: every prior is eligible, the sample_size largest
    losses are selected, selected unmatched priors become negatives and unselected matched
    ones are unmatched. With nms_param (a positive threshold) the selection walks the
    eligible boxes (`nms_boxes(label)`: priors or decoded predictions) through
    hard_example_nms by loss instead of a plain sort. Equal losses: lower index first.
    """
    negatives = []
    hard = param.mining_type == MBL.HARD_EXAMPLE
    use_nms = param.HasField("nms_param") and param.nms_param.nms_threshold > 0
    for label in sorted(matches):
        indices, best = matches[label]
        if hard:
            eligible = np.arange(len(indices))
            num_sel = min(param.sample_size, len(eligible))
        else:
            eligible = np.flatnonzero((indices == -1) & (best < np.float32(param.neg_overlap)))
            num_pos = np.float32(np.count_nonzero(indices > -1))
            num_sel = min(int(num_pos * np.float32(param.neg_pos_ratio)), len(eligible))
        if use_nms:
            kept = hard_example_nms(nms_boxes(label)[eligible], loss[eligible],
                                    np.float32(param.nms_param.nms_threshold),
                                    param.nms_param.top_k)
            chosen = eligible[kept[:num_sel]]
        else:
            chosen = eligible[np.argsort(-loss[eligible], kind="stable")[:num_sel]]
        selected = np.zeros(len(indices), bool)
        selected[chosen] = True
        negatives.append(np.flatnonzero((indices == -1) & selected))
        if hard:
            indices[(indices > -1) & ~selected] = -1
    return np.concatenate(negatives) if negatives else np.zeros(0, np.int64)
