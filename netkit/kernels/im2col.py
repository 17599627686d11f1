"""im2col and col2im, Caffe's kernels batched over images: the twins of
netkit.ops.im2col.im2col_cf and col2im_cf (channels-first columns).

Geometry as in Caffe: the column entry (c, i, j, oh, ow) of an image reads pixel
(oh * stride_h - pad_h + i * dilation_h, ow * stride_w - pad_w + j * dilation_w), zero
outside the image. im2col runs one thread per column entry. col2im runs one thread per
pixel and gathers the entries that read it (Caffe's formulation, no atomics), summing the
kernel offsets (i, j) in row-major order as the twin does, so both give the same bits.
"""
import numpy as np

from . import Program, block_stride, check_array

SOURCE = r"""
extern "C" __global__ void nk_im2col(
    const long long count, const float* __restrict__ image, const long long channels,
    const long long height, const long long width,
    const long long kernel_h, const long long kernel_w, const long long pad_h,
    const long long pad_w, const long long stride_h, const long long stride_w,
    const long long dilation_h, const long long dilation_w,
    const long long out_h, const long long out_w, const long long col_block,
    float* __restrict__ col) {
  // count = blocks * channels * kernel_h * kernel_w * out_h * out_w; col[b] starts at
  // b * col_block and is contiguous within.
  const long long per_block = channels * kernel_h * kernel_w * out_h * out_w;
  NK_KERNEL_LOOP(index, count) {
    long long rest = index;
    const long long ow = rest % out_w; rest /= out_w;
    const long long oh = rest % out_h; rest /= out_h;
    const long long j = rest % kernel_w; rest /= kernel_w;
    const long long i = rest % kernel_h; rest /= kernel_h;
    const long long c = rest % channels;
    const long long b = rest / channels;
    const long long h = oh * stride_h - pad_h + i * dilation_h;
    const long long w = ow * stride_w - pad_w + j * dilation_w;
    float value = 0.0f;
    if (h >= 0 && h < height && w >= 0 && w < width) {
      value = image[((b * channels + c) * height + h) * width + w];
    }
    col[b * col_block + index % per_block] = value;
  }
}

extern "C" __global__ void nk_col2im(
    const long long count, const float* __restrict__ col, const long long channels,
    const long long height, const long long width,
    const long long kernel_h, const long long kernel_w, const long long pad_h,
    const long long pad_w, const long long stride_h, const long long stride_w,
    const long long dilation_h, const long long dilation_w,
    const long long out_h, const long long out_w, const long long col_block,
    float* __restrict__ image) {
  // count = blocks * channels * height * width; one thread per pixel (b, c, y, x).
  const long long extent_h = dilation_h * (kernel_h - 1) + 1;
  const long long extent_w = dilation_w * (kernel_w - 1) + 1;
  NK_KERNEL_LOOP(index, count) {
    const long long x = index % width + pad_w;
    const long long y = (index / width) % height + pad_h;
    const long long plane = index / (width * height);  // b * channels + c
    const long long c = plane % channels;
    const long long b = plane / channels;
    // Output rows oh whose window covers padded row y: oh * stride_h <= y and
    // y - oh * stride_h < extent_h; likewise for columns.
    const long long oh_first = y < extent_h ? 0 : (y - extent_h) / stride_h + 1;
    const long long oh_last = nk_min(y / stride_h, out_h - 1);
    const long long ow_first = x < extent_w ? 0 : (x - extent_w) / stride_w + 1;
    const long long ow_last = nk_min(x / stride_w, out_w - 1);
    const float* block = col + b * col_block + c * kernel_h * kernel_w * out_h * out_w;
    float sum = 0.0f;
    // Descending oh and ow visit the kernel offsets i and j in ascending order.
    for (long long oh = oh_last; oh >= oh_first; --oh) {
      const long long di = y - oh * stride_h;
      if (di % dilation_h != 0) continue;
      const long long i = di / dilation_h;
      for (long long ow = ow_last; ow >= ow_first; --ow) {
        const long long dj = x - ow * stride_w;
        if (dj % dilation_w != 0) continue;
        const long long j = dj / dilation_w;
        sum += block[((i * kernel_w + j) * out_h + oh) * out_w + ow];
      }
    }
    image[index] = sum;
  }
}
"""

PROGRAM = Program("im2col", SOURCE, ("nk_im2col", "nk_col2im"))


def _geometry_args(image_shape, col_shape, geom):
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = geom.kernel, geom.pad, geom.stride, geom.dilation
    _, channels, height, width = image_shape
    expected = (image_shape[0], channels, kh, kw) + geom.output_shape(height, width)
    if tuple(col_shape) != expected:
        raise ValueError("columns of shape %s do not match images %s and kernel geometry "
                         "(expected %s)" % (tuple(col_shape), tuple(image_shape), expected))
    return tuple(np.int64(v) for v in (channels, height, width, kh, kw, ph, pw, sh, sw,
                                       dh, dw) + expected[4:])


def im2col(x, col, geom):
    """col (B, C, kh, kw, OH, OW) = the columns of the images x (B, C, H, W), C-contiguous.
    Each col[b] must be contiguous; col itself may stride over a larger buffer."""
    check_array("im2col image", x)
    args = _geometry_args(x.shape, col.shape, geom)
    PROGRAM.launch("nk_im2col", col.size, x, *args, block_stride("im2col columns", col), col)


def col2im(col, dx, geom):
    """dx (B, C, H, W), assigned = each column entry summed into the pixel it came from."""
    check_array("col2im image", dx)
    args = _geometry_args(dx.shape, col.shape, geom)
    PROGRAM.launch("nk_col2im", dx.size, col, *args, block_stride("col2im columns", col), dx)
