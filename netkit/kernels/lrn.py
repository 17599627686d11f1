"""LRN across channels, Caffe's LRNFillScale, LRNComputeOutput and LRNComputeDiff: the twins
of the ACROSS_CHANNELS path of netkit.layers.lrn.

    scale = k + alpha / size * (sum of x^2 over the size channels centred on c)
    top   = x * scale^-beta
    dx    = dy * scale^-beta
            - 2 alpha beta / size * x * (sum of dy * top / scale over the same window)

Channels beyond the first and last count as zero. Each thread computes one element and
sums its own window in ascending channel order, as the twin's shifted slices do (Caffe
slides one running sum along the channels instead: fewer loads, more rounding).
"""
import numpy as np

from . import Program, check_array

SOURCE = r"""
extern "C" __global__ void nk_lrn_scale(
    const long long count, const float* __restrict__ bottom, const long long channels,
    const long long spatial, const long long size, const float alpha_over_size,
    const float k, float* __restrict__ scale) {
  // count = num * channels * spatial (spatial = height * width).
  const long long half = (size - 1) / 2;
  NK_KERNEL_LOOP(index, count) {
    const long long c = (index / spatial) % channels;
    const float* column = bottom + (index - c * spatial);  // channel 0 at this pixel
    float sum = 0.0f;
    for (long long t = 0; t < size; ++t) {
      const long long other = c - half + t;
      if (other >= 0 && other < channels) {
        const float value = column[other * spatial];
        sum += value * value;
      }
    }
    scale[index] = sum * alpha_over_size + k;
  }
}

// A separate pass, so that top may be bottom (an in-place LRN in a deploy net).
extern "C" __global__ void nk_lrn_output(
    const long long count, const float* bottom, const float* __restrict__ scale,
    const float negative_beta, float* top) {
  NK_KERNEL_LOOP(index, count) {
    top[index] = bottom[index] * powf(scale[index], negative_beta);
  }
}

extern "C" __global__ void nk_lrn_backward(
    const long long count, const float* __restrict__ bottom,
    const float* __restrict__ top, const float* __restrict__ scale,
    const float* __restrict__ top_diff, const long long channels, const long long spatial,
    const long long size, const float negative_beta, const float cache_ratio,
    float* __restrict__ bottom_diff) {
  const long long half = (size - 1) / 2;
  NK_KERNEL_LOOP(index, count) {
    const long long c = (index / spatial) % channels;
    const long long first = index - c * spatial;  // channel 0 at this pixel
    float sum = 0.0f;
    for (long long t = 0; t < size; ++t) {
      const long long other = c - half + t;
      if (other >= 0 && other < channels) {
        const long long at = first + other * spatial;
        sum += top_diff[at] * top[at] / scale[at];
      }
    }
    bottom_diff[index] = top_diff[index] * powf(scale[index], negative_beta)
        - sum * bottom[index] * cache_ratio;
  }
}
"""

PROGRAM = Program("lrn", SOURCE, ("nk_lrn_scale", "nk_lrn_output", "nk_lrn_backward"))


def _layout(x):
    num, channels = x.shape[:2]
    return np.int64(channels), np.int64(x.size // max(1, num * channels))


def lrn_forward(x, scale, y, size, alpha, beta, k):
    """scale and y (both shaped like x, N x C x H x W) for ACROSS_CHANNELS LRN."""
    for name, arr in (("LRN bottom", x), ("LRN scale", scale), ("LRN top", y)):
        check_array(name, arr, x.shape)
    # alpha / size in double, then float32: the twin's python-float scalar on a float32 array.
    PROGRAM.launch("nk_lrn_scale", x.size, x, *_layout(x), np.int64(size),
                   np.float32(alpha / size), np.float32(k), scale)
    PROGRAM.launch("nk_lrn_output", x.size, x, scale, np.float32(-beta), y)


def lrn_backward(x, y, scale, dy, dx, size, alpha, beta):
    """dx (assigned) for ACROSS_CHANNELS LRN from the forward's x, y and scale and dy."""
    for name, arr in (("LRN bottom", x), ("LRN top", y), ("LRN scale", scale),
                      ("LRN top diff", dy), ("LRN bottom diff", dx)):
        check_array(name, arr, x.shape)
    PROGRAM.launch("nk_lrn_backward", x.size, x, y, scale, dy, *_layout(x), np.int64(size),
                   np.float32(-beta), np.float32(2.0 * alpha * beta / size), dx)
