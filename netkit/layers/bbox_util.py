"""Box arithmetic shared by SSD's detection layers: decoding offsets against priors (array
code on any backend) and greedy non-maximum suppression (host numpy, SSD's CPU rules).

Boxes are [xmin, ymin, xmax, ymax] in image-normalised coordinates along the last axis.
"""
import numpy as np

from .. import netkit_pb2 as pb

CODE_TYPES = {pb.PriorBoxParameter.CORNER: "CORNER",
              pb.PriorBoxParameter.CENTER_SIZE: "CENTER_SIZE",
              pb.PriorBoxParameter.CORNER_SIZE: "CORNER_SIZE"}


def decode_boxes(xp, loc, priors, variances, code_type, variance_encoded_in_target):
    """Boxes from predicted offsets `loc` (..., P, 4) against `priors` and their
    `variances` (P, 4), in float32 as SSD's DecodeBBox computes them.

    CORNER adds the (variance-scaled) offsets to the prior's corners; CORNER_SIZE scales
    them by the prior's width/height first; CENTER_SIZE moves the prior's centre by offset *
    size and scales its size by exp(offset). With `variance_encoded_in_target` the offsets
    are used as they are, without the variances.
    """
    if not variance_encoded_in_target:
        loc = variances * loc
    if code_type == pb.PriorBoxParameter.CORNER:
        return priors + loc
    width = priors[:, 2] - priors[:, 0]
    height = priors[:, 3] - priors[:, 1]
    if code_type == pb.PriorBoxParameter.CORNER_SIZE:
        return priors + loc * xp.stack([width, height, width, height], axis=-1)
    center_x = (priors[:, 0] + priors[:, 2]) / 2
    center_y = (priors[:, 1] + priors[:, 3]) / 2
    box_cx = loc[..., 0] * width + center_x
    box_cy = loc[..., 1] * height + center_y
    half_w = xp.exp(loc[..., 2]) * width / 2
    half_h = xp.exp(loc[..., 3]) * height / 2
    return xp.stack([box_cx - half_w, box_cy - half_h, box_cx + half_w, box_cy + half_h],
                    axis=-1)


def box_size(boxes):
    """Area of each box; 0 for an invalid box (xmax < xmin or ymax < ymin)."""
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return np.where((width < 0) | (height < 0), np.float32(0), width * height)


def intersection_sides(a, b):
    """Width and height of the intersection of each box in `a` (n, 4) with each in `b`
    (m, 4), each (n, m); negative where the boxes do not meet along that axis."""
    a, b = a[:, None, :], b[None, :, :]
    iwidth = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    iheight = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return iwidth, iheight


def jaccard_overlap(a, b):
    """float32 intersection over union of each box in `a` with each in `b` (host arrays),
    shape (len(a), len(b)), with SSD's rules: boxes that do not meet, or meet only in a line
    or a point, overlap 0; an invalid box has area 0."""
    iwidth, iheight = intersection_sides(a, b)
    inter = iwidth * iheight
    union = box_size(a)[:, None] + box_size(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=(iwidth > 0) & (iheight > 0))


def nms_fast(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1, block=512):
    """SSD's ApplyNMSFast on host arrays: indices of the kept boxes, best score first.

    Candidates score above `score_threshold`, sorted by score (ties: lower index first),
    at most `top_k` of them (-1: all). A candidate is kept if its overlap with every box
    kept before it is at most the threshold; with `eta` < 1 the threshold shrinks by eta
    after each kept box while it is above 0.5.

    The loop stays sequential, as SSD's, but reads overlaps computed a block of candidates
    at a time: each candidate's largest overlap with the boxes kept so far is kept up to
    date, so deciding on it is one comparison.
    """
    candidates = np.flatnonzero(scores > score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    kept = []
    threshold = np.float32(nms_threshold)
    for start in range(0, len(order), block):
        chunk = order[start:start + block]
        among = jaccard_overlap(boxes[chunk], boxes[chunk])
        worst = (jaccard_overlap(boxes[kept], boxes[chunk]).max(axis=0) if kept
                 else np.zeros(len(chunk), np.float32))
        for j, idx in enumerate(chunk):
            if worst[j] > threshold:
                continue
            kept.append(idx)
            np.maximum(worst, among[j], out=worst)
            if eta < 1 and threshold > 0.5:
                threshold = np.float32(threshold * np.float32(eta))
    return np.array(kept, np.int64)
