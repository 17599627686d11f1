"""SoftmaxWithLoss's per-position loss and its gradient, Caffe's SoftmaxLossForwardGPU and
SoftmaxLossBackwardGPU: the twins of the loss and gradient steps of
netkit.layers.softmax.SoftmaxWithLossLayer (the softmax itself stays xp code).

Scores are (outer, channels, inner); the label of position (n, s) is the float
label[n * inner + s] truncated to an integer. Forward writes, per position,
loss = -log(max(prob[label], FLT_MIN)) and count = 1, or 0 and 0 where the label is the
ignore_label; the layer sums them and normalises. Backward writes
(prob - onehot(label)) * scale[0], with scale = loss weight / normaliser read on the device,
and 0 at ignored positions.

A label outside [0, channels) that is not ignored reads no memory: its loss is NaN, so the
mistake shows in the loss, and backward leaves its gradient at prob * scale.
"""
import numpy as np

from . import Program, check_array

SOURCE = r"""
extern "C" __global__ void nk_softmax_loss_forward(
    const long long count, const float* __restrict__ prob, const float* __restrict__ label,
    const long long channels, const long long inner, const int has_ignore,
    const long long ignore_label, float* __restrict__ loss, float* __restrict__ counts) {
  // count = outer * inner; one thread per position (n, s), index = n * inner + s.
  NK_KERNEL_LOOP(index, count) {
    const long long n = index / inner;
    const long long s = index % inner;
    const long long target = (long long)label[index];
    if (has_ignore && target == ignore_label) {
      loss[index] = 0.0f;
      counts[index] = 0.0f;
    } else if (target < 0 || target >= channels) {
      loss[index] = __int_as_float(0x7fc00000);  // NaN: a label out of range
      counts[index] = 1.0f;
    } else {
      const float p = prob[(n * channels + target) * inner + s];
      loss[index] = -logf(fmaxf(p, NK_FLT_MIN));
      counts[index] = 1.0f;
    }
  }
}

extern "C" __global__ void nk_softmax_loss_backward(
    const long long count, const float* __restrict__ prob, const float* __restrict__ label,
    const long long channels, const long long inner, const int has_ignore,
    const long long ignore_label, const float* __restrict__ scale,
    float* __restrict__ bottom_diff) {
  // count = outer * channels * inner; one thread per score (n, c, s).
  NK_KERNEL_LOOP(index, count) {
    const long long s = index % inner;
    const long long c = (index / inner) % channels;
    const long long n = index / (inner * channels);
    const long long target = (long long)label[n * inner + s];
    if (has_ignore && target == ignore_label) {
      bottom_diff[index] = 0.0f;
    } else {
      const float p = prob[index];
      bottom_diff[index] = (c == target ? p - 1.0f : p) * scale[0];
    }
  }
}
"""

PROGRAM = Program("softmax_loss", SOURCE,
                  ("nk_softmax_loss_forward", "nk_softmax_loss_backward"))


def _label_args(prob, label, has_ignore, ignore_label):
    outer, channels = prob.shape[:2]
    inner = prob.size // max(1, outer * channels)
    check_array("SoftmaxWithLoss probabilities", prob)
    check_array("SoftmaxWithLoss labels", label)
    if label.size != outer * inner:
        raise ValueError("SoftmaxWithLoss has %d labels for %d positions"
                         % (label.size, outer * inner))
    return (np.int64(channels), np.int64(inner), np.int32(bool(has_ignore)),
            np.int64(ignore_label))


def softmax_loss_forward(prob, label, has_ignore, ignore_label, loss, counts):
    """loss and counts (outer * inner each) per position of prob (outer, channels, inner)."""
    args = _label_args(prob, label, has_ignore, ignore_label)
    check_array("SoftmaxWithLoss loss", loss, (label.size,))
    check_array("SoftmaxWithLoss counts", counts, (label.size,))
    PROGRAM.launch("nk_softmax_loss_forward", label.size, prob, label, *args, loss, counts)


def softmax_loss_backward(prob, label, has_ignore, ignore_label, scale, dx):
    """dx (like prob, assigned) = (prob - onehot(label)) * scale[0], 0 where ignored;
    scale is a 1-element device array (loss weight / normaliser)."""
    args = _label_args(prob, label, has_ignore, ignore_label)
    check_array("SoftmaxWithLoss scale", scale)
    check_array("SoftmaxWithLoss bottom diff", dx, prob.shape)
    if scale.size != 1:
        raise ValueError("SoftmaxWithLoss scale must hold one value, got %d" % scale.size)
    PROGRAM.launch("nk_softmax_loss_backward", prob.size, prob, label, *args, scale, dx)
