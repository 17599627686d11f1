"""Loss normalization shared by the loss layers (Caffe's LossParameter rules)."""
from .. import netkit_pb2 as pb

VALID = pb.LossParameter.VALID
FULL = pb.LossParameter.FULL
BATCH_SIZE = pb.LossParameter.BATCH_SIZE


def normalization_mode(loss_param, default=VALID):
    """`loss_param.normalization` when given; else the legacy `normalize` (true: VALID,
    false: BATCH_SIZE); else the layer's default (VALID for SoftmaxWithLoss, BATCH_SIZE for
    SigmoidCrossEntropyLoss)."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return VALID if loss_param.normalize else BATCH_SIZE
    return default


def normalizer(xp, mode, outer, inner, valid):
    """Caffe's get_normalizer, never below 1 (a batch with no used label gives loss 0).

    FULL: outer * inner outputs; VALID: the outputs whose label is not ignored (`valid`,
    a device mask, or None when there is no ignore_label, meaning all of them);
    BATCH_SIZE: outer; NONE: 1. The VALID count stays on the device.
    """
    if mode == VALID and valid is not None:
        return xp.maximum(valid.sum(), 1).astype(xp.float32)
    if mode in (FULL, VALID):
        return float(max(1, outer * inner))
    if mode == BATCH_SIZE:
        return float(max(1, outer))
    return 1.0
