"""MAX pooling forward (with argmax) and backward, Caffe's MaxPoolForward/MaxPoolBackward:
the twins of netkit.ops.pooling.max_pool and max_pool_backward as the Pooling layer uses
them (windows at (ph * stride_h - pad_h, pw * stride_w - pad_w), clipped cells reading
-FLT_MAX).

The argmax is the layer's convention, not Caffe's flat index: the kernel offset i * kw + j
of the maximum inside its (unclipped) window, as int32. Offsets are visited in row-major
order and a value must be greater to win, so ties go to the first maximum; a NaN wins and
sticks, as with numpy's maximum in the twin (Caffe's kernel would skip it). Backward runs
one thread per bottom pixel and gathers the top diffs whose argmax points at it (Caffe's
formulation, no atomics), adding them in top order as the twin and Caffe do, so all give
the same bits.
"""
import numpy as np

from . import Program, check_array

SOURCE = r"""
extern "C" __global__ void nk_max_pool_forward(
    const long long count, const float* __restrict__ bottom, const long long height,
    const long long width, const long long pooled_h, const long long pooled_w,
    const long long kernel_h, const long long kernel_w, const long long stride_h,
    const long long stride_w, const long long pad_h, const long long pad_w,
    float* __restrict__ top, int* __restrict__ argmax) {
  // count = num * channels * pooled_h * pooled_w; one thread per top element.
  NK_KERNEL_LOOP(index, count) {
    const long long pw = index % pooled_w;
    const long long ph = (index / pooled_w) % pooled_h;
    const long long plane = index / (pooled_w * pooled_h);
    const float* image = bottom + plane * height * width;
    const long long h0 = ph * stride_h - pad_h;
    const long long w0 = pw * stride_w - pad_w;
    float best = 0.0f;
    int best_offset = 0;
    for (long long i = 0; i < kernel_h; ++i) {
      const long long h = h0 + i;
      for (long long j = 0; j < kernel_w; ++j) {
        const long long w = w0 + j;
        const int offset = (int)(i * kernel_w + j);
        const float value = (h >= 0 && h < height && w >= 0 && w < width)
            ? image[h * width + w] : -NK_FLT_MAX;
        if (offset == 0) {
          best = value;
        } else if (!(value <= best)) {
          // Greater, or a NaN on either side: numpy's maximum propagates NaN.
          if (best == best) best = value;
          best_offset = offset;
        }
      }
    }
    top[index] = best;
    argmax[index] = best_offset;
  }
}

extern "C" __global__ void nk_max_pool_backward(
    const long long count, const float* __restrict__ top_diff,
    const int* __restrict__ argmax, const long long height, const long long width,
    const long long pooled_h, const long long pooled_w, const long long kernel_h,
    const long long kernel_w, const long long stride_h, const long long stride_w,
    const long long pad_h, const long long pad_w, float* __restrict__ bottom_diff) {
  // count = num * channels * height * width; one thread per bottom pixel.
  NK_KERNEL_LOOP(index, count) {
    const long long x = index % width + pad_w;
    const long long y = (index / width) % height + pad_h;
    const long long plane = index / (width * height);
    // Windows whose rows cover padded row y: ph * stride_h <= y < ph * stride_h + kernel_h.
    const long long ph_first = y < kernel_h ? 0 : (y - kernel_h) / stride_h + 1;
    const long long ph_last = nk_min(y / stride_h, pooled_h - 1);
    const long long pw_first = x < kernel_w ? 0 : (x - kernel_w) / stride_w + 1;
    const long long pw_last = nk_min(x / stride_w, pooled_w - 1);
    const long long base = plane * pooled_h * pooled_w;
    float sum = 0.0f;
    // Windows in top order, the order Caffe's MaxPoolBackward adds them in.
    for (long long ph = ph_first; ph <= ph_last; ++ph) {
      for (long long pw = pw_first; pw <= pw_last; ++pw) {
        const long long offset = (y - ph * stride_h) * kernel_w + (x - pw * stride_w);
        const long long at = base + ph * pooled_w + pw;
        if (argmax[at] == offset) sum += top_diff[at];
      }
    }
    bottom_diff[index] = sum;
  }
}
"""

PROGRAM = Program("pooling", SOURCE, ("nk_max_pool_forward", "nk_max_pool_backward"))


def _window_args(bottom_shape, top_shape, kernel, stride, pad):
    return tuple(np.int64(v) for v in tuple(bottom_shape[2:]) + tuple(top_shape[2:])
                 + tuple(kernel) + tuple(stride) + tuple(pad))


def max_pool_forward(x, y, argmax, kernel, stride, pad):
    """y (N, C, PH, PW) = the maximum of each window of x (N, C, H, W); argmax (int32, like
    y) = its kernel offset. kernel, stride, pad are (h, w) pairs."""
    check_array("pooling bottom", x)
    check_array("pooling top", y)
    check_array("pooling argmax", argmax, y.shape, np.int32)
    PROGRAM.launch("nk_max_pool_forward", y.size, x,
                   *_window_args(x.shape, y.shape, kernel, stride, pad), y, argmax)


def max_pool_backward(dy, argmax, dx, kernel, stride, pad):
    """dx (assigned) = each top diff routed to the bottom pixel its argmax names."""
    check_array("pooling top diff", dy)
    check_array("pooling argmax", argmax, dy.shape, np.int32)
    check_array("pooling bottom diff", dx)
    PROGRAM.launch("nk_max_pool_backward", dx.size, dy, argmax,
                   *_window_args(dx.shape, dy.shape, kernel, stride, pad), dx)
