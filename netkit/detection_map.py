"""Mean average precision over DetectionEvaluate's rows, as SSD's solver computes it for
`eval_type: "detection"` (float32 arithmetic, SSD's ComputeAP)."""
import numpy as np

from .errors import NetkitError

f32 = np.float32
EPS = f32(1e-6)
AP_VERSIONS = ("11point", "MaxIntegral", "Integral")


def average_precision(scores, true_pos, num_pos, ap_version):
    """SSD's ComputeAP for one class: `scores` and `true_pos` (1 for a true positive, 0 for
    a false positive) of its detections, `num_pos` ground truth boxes.

    Detections are ranked by descending score (equal scores keep their order); precision
    and recall after each are float32. "11point" (VOC2007) averages the best precision at
    recall >= 0, 0.1, ..., 1; "MaxIntegral" (VOC2012, ILSVRC) integrates the precision
    envelope over recall; "Integral" sums precision times each recall step. Recall steps
    of 1e-6 or less add nothing. 0 without detections or ground truth.
    """
    if ap_version not in AP_VERSIONS:
        raise NetkitError("solver ap_version %r is not one of SSD's (%s)"
                          % (ap_version, ", ".join(AP_VERSIONS)))
    if not len(scores) or num_pos == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, f32), kind="stable")
    hits = np.asarray(true_pos, np.int64)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    prec = tp.astype(f32) / (tp + fp).astype(f32)
    rec = tp.astype(f32) / f32(num_pos)
    ap = f32(0)
    if ap_version == "11point":
        for j in range(10, -1, -1):
            reached = prec[rec.astype(np.float64) >= j / 10.0]
            ap += (reached.max() if len(reached) else f32(0)) / f32(11)
    elif ap_version == "MaxIntegral":
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(len(rec) - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(cur_rec - rec[i]) > EPS:
                ap += cur_prec * abs(cur_rec - rec[i])
            cur_rec = rec[i]
        ap += cur_rec * cur_prec
    else:
        prev_rec = f32(0)
        for i in range(len(rec)):
            if abs(rec[i] - prev_rec) > EPS:
                ap += prec[i] * abs(rec[i] - prev_rec)
            prev_rec = rec[i]
    return float(ap)


def mean_average_precision(evaluate_tops, ap_version, background_label_id=None):
    """(mAP, {label: AP}) from DetectionEvaluate tops collected over test iterations (host
    arrays of rows [image, label, score, tp, fp], or [-1, label, num_positives, -1, -1]).

    As SSD's solver: the positives of each label are summed over all tops; detections with
    tp = fp = 0 (matched to an ignored difficult box) are dropped; every label that has a
    positives row counts in the mean, but one without any detection gets no AP (SSD only
    warns) and so adds 0; the mean is NaN when no label has a positives row. Rows of
    `background_label_id`, when given, are ignored (DetectionEvaluate writes none).
    """
    num_pos, detections = {}, {}
    for top in evaluate_tops:
        for row in np.asarray(top, np.float32).reshape(-1, 5):
            image, label = int(row[0]), int(row[1])
            if label == background_label_id:
                continue
            if image == -1:
                num_pos[label] = num_pos.get(label, 0) + int(row[2])
                continue
            tp, fp = int(row[3]), int(row[4])
            if tp == 0 and fp == 0:
                continue
            detections.setdefault(label, ([], []))
            detections[label][0].append(row[2])
            detections[label][1].append(tp)
    aps = {}
    total = f32(0)
    for label in sorted(num_pos):
        if label not in detections:
            continue
        scores, hits = detections[label]
        aps[label] = average_precision(scores, hits, num_pos[label], ap_version)
        total += f32(aps[label])
    mean = total / f32(len(num_pos)) if num_pos else f32(np.nan)
    return float(mean), aps
