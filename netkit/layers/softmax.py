"""Softmax and SoftmaxWithLoss (softmax followed by multinomial logistic loss).

Both normalise over one axis (`softmax_param.axis`, default 1): a blob of shape
(outer..., channels, inner...) holds outer * inner independent distributions.
"""
import numpy as np

from .. import kernels
from ..blob import Blob
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers
from .loss_util import normalization_mode, normalizer

# Caffe clamps the probability of the true class at FLT_MIN before the log, so a confidently
# wrong prediction costs -log(FLT_MIN) = 87.3365 rather than infinity.
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def split_shape(shape, axis):
    """(outer, channels, inner) element counts around `axis`."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), shape[axis],
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


def check_label_count(layer_type, data_shape, label_count, outer, inner, axis):
    if outer * inner != label_count:
        raise LayerSetupError(
            "%s: number of labels (%d) must match the number of predictions (%d): with "
            "axis %d and prediction shape %s the label blob needs %d values"
            % (layer_type, label_count, outer * inner, axis, data_shape, outer * inner))


class LabelIndexer:
    """Flat positions of each label's score in a (outer, channels, inner) blob.

    For label l at outer position i and inner position j the score sits at
    i * channels * inner + l * inner + j; the (i, j) part is built once per shape on the
    device, so a forward pass needs one multiply-add and one gather, not a one-hot matrix.
    """

    def __init__(self, xp):
        self.xp = xp
        self.shape = None
        self.base = None

    def reshape(self, outer, channels, inner):
        if self.shape == (outer, channels, inner):
            return
        xp = self.xp
        self.shape = (outer, channels, inner)
        rows = xp.arange(outer, dtype=xp.int64) * (channels * inner)
        cols = xp.arange(inner, dtype=xp.int64)
        self.base = (rows[:, None] + cols[None, :]).reshape(-1)

    def positions(self, labels):
        """Flat score positions of integer `labels` (ignored ones already 0), after checking
        that each is a class index."""
        outer, channels, inner = self.shape
        check_label_range(self.xp, labels, channels)
        return self.base + labels * inner if inner > 1 else self.base + labels


def check_label_range(xp, labels, channels):
    """Refuse labels outside [0, channels): numpy would wrap a negative one round to the
    last classes and fail on a large one with an IndexError (Caffe leaves both undefined)."""
    bad = (labels < 0) | (labels >= channels)
    if bool(bad.any()):
        at = int(xp.argmax(bad))
        raise NetkitError("label %d (at position %d of the label blob) is not a class index "
                          "in [0, %d); labels count from 0, and positions to skip need "
                          "loss_param ignore_label" % (int(labels[at]), at, channels))


def read_labels(xp, label_blob, has_ignore, ignore_label):
    """Integer labels (truncated as Caffe's static_cast<int>) and the mask of used ones.

    Ignored labels are replaced by 0 so that gathering with them stays in range; the mask
    (None when there is no ignore_label) zeroes their contribution.
    """
    labels = label_blob.data.reshape(-1).astype(xp.int64)
    if not has_ignore:
        return labels, None
    valid = labels != ignore_label
    return labels * valid, valid


def softmax(xp, x, axis, out):
    """Numerically stable softmax of `x` along `axis` into `out` (which may be `x`)."""
    peak = x.max(axis=axis, keepdims=True)
    xp.subtract(x, peak, out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


@layers.register("Softmax")
class SoftmaxLayer(Layer):
    """y = exp(x) / sum(exp(x)) along `softmax_param.axis`."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.layer_param.softmax_param.axis,
                                   bottom[0].num_axes, "softmax_param.axis")
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        softmax(self.xp, bottom[0].data, self.axis, top[0].data)

    def backward(self, top, propagate_down, bottom):
        """dx = (dy - sum(dy * y)) * y; reads only top data, so it also works in place."""
        if not propagate_down[0]:
            return
        y, dy = top[0].data, top[0].diff
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        self.xp.subtract(dy, dot, out=bottom[0].diff)
        bottom[0].diff *= y


@layers.register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(Layer):
    """Softmax over `softmax_param.axis`, then loss = -sum log(max(p[label], FLT_MIN)) / n.

    bottom[0]: scores; bottom[1]: integer class labels, one per (outer, inner) position,
    any shape with that count. top[0]: the scalar loss; an optional top[1] shares the
    probabilities. `loss_param` sets ignore_label and the normalizer n (FULL, VALID,
    BATCH_SIZE, NONE; the legacy `normalize: false` means BATCH_SIZE). Labels get no
    gradient. The top's diff holds the loss weight, as in Caffe.
    """
    exact_num_bottom = 2
    min_top = 1
    max_top = 2
    is_loss = True

    def setup(self, bottom, top):
        loss_param = self.layer_param.loss_param
        self.has_ignore = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        self.normalization = normalization_mode(loss_param)
        self.prob = Blob((), self.backend)
        self.indexer = LabelIndexer(self.xp)
        # On a real GPU, the loss and its gradient are CUDA kernels
        # (netkit.kernels.softmax_loss); the softmax stays xp code.
        self.cuda = kernels.available(self.backend)

    def reshape(self, bottom, top):
        data_shape = bottom[0].shape
        if not data_shape or not bottom[1].shape or data_shape[0] != bottom[1].shape[0]:
            raise LayerSetupError("SoftmaxWithLoss: the data %s and label %s blobs must have "
                                  "the same first dimension" % (data_shape, bottom[1].shape))
        self.axis = canonical_axis(self.layer_param.softmax_param.axis, len(data_shape),
                                   "softmax_param.axis")
        self.outer, channels, self.inner = split_shape(data_shape, self.axis)
        check_label_count(self.type, data_shape, bottom[1].count, self.outer, self.inner,
                          self.axis)
        self.indexer.reshape(self.outer, channels, self.inner)
        self.prob.reshape_like(bottom[0])
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)

    def forward(self, bottom, top):
        xp = self.xp
        prob = softmax(xp, bottom[0].data, self.axis, self.prob.data)
        if self.cuda:
            labels, _ = read_labels(xp, bottom[1], self.has_ignore, self.ignore_label)
            check_label_range(xp, labels, self.indexer.shape[1])
            loss = xp.empty(self.outer * self.inner, dtype=xp.float32)
            counts = xp.empty_like(loss)
            kernels.softmax_loss.softmax_loss_forward(
                prob.reshape(self.outer, -1, self.inner), bottom[1].data, self.has_ignore,
                self.ignore_label, loss, counts)
            self.norm = normalizer(xp, self.normalization, self.outer, self.inner,
                                   counts if self.has_ignore else None)
            top[0].data[...] = loss.sum() / self.norm
            return
        labels, valid = read_labels(xp, bottom[1], self.has_ignore, self.ignore_label)
        self.positions = self.indexer.positions(labels)
        log_prob = xp.log(xp.maximum(prob.reshape(-1)[self.positions], FLT_MIN))
        if valid is not None:
            log_prob *= valid
        self.valid = valid
        self.norm = normalizer(xp, self.normalization, self.outer, self.inner, valid)
        top[0].data[...] = -log_prob.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        """d loss / d x = (p - onehot(label)) * loss_weight / n, zero at ignored positions."""
        if len(propagate_down) > 1 and propagate_down[1]:
            raise LayerSetupError("SoftmaxWithLoss cannot backpropagate to its label input "
                                  "(bottom[1])")
        if not propagate_down[0]:
            return
        if self.cuda:
            scale = (top[0].diff / self.norm).astype(self.xp.float32)
            kernels.softmax_loss.softmax_loss_backward(
                self.prob.data.reshape(self.outer, -1, self.inner), bottom[1].data,
                self.has_ignore, self.ignore_label, scale.reshape(1),
                bottom[0].diff.reshape(self.outer, -1, self.inner))
            return
        grad = self.prob.data.reshape(-1).copy()
        grad[self.positions] -= 1
        scale = top[0].diff / self.norm
        if self.valid is None:
            self.xp.multiply(grad.reshape(bottom[0].shape), scale, out=bottom[0].diff)
        else:
            used = self.valid.reshape(self.outer, 1, self.inner) * scale
            out = bottom[0].diff.reshape(self.outer, -1, self.inner)
            self.xp.multiply(grad.reshape(out.shape), used, out=out)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
