"""Stochastic pooling (Zeiler & Fergus 2013) as Caffe's GPU kernels define it.

Windows start at (ph * stride_h, pw * stride_w) and are clipped to the image; padding is
not used (Caffe's kernels take none). Activations are taken to be non-negative (a ReLU
before), so each window is a distribution over its cells:
  TRAIN: pick a cell with probability proportional to its value (the first cell whose
         running sum reaches u * window sum, u uniform in [0, 1)); the top is its value and
         backward routes the top diff to that cell alone;
  TEST:  the probability-weighted average sum(x^2) / (FLT_MIN + sum(x)).
Caffe's CPU build never implemented it; here both backends run the same array code.
"""
import numpy as np

FLT_MIN = float(np.finfo(np.float32).tiny)


def window_cells(height, width, pooled, kernel, stride):
    """(pooled_h * pooled_w, kernel_h * kernel_w) int64 flat indices h * width + w of each
    window's cells in row-major order; a cell clipped off the image points at index
    height * width (a zero appended to the image)."""
    (ph, pw), (kh, kw), (sh, sw) = pooled, kernel, stride
    rows = np.arange(ph)[:, None] * sh + np.arange(kh)[None, :]  # (ph, kh)
    cols = np.arange(pw)[:, None] * sw + np.arange(kw)[None, :]  # (pw, kw)
    inside = (rows[:, None, :, None] < height) & (cols[None, :, None, :] < width)
    flat = rows[:, None, :, None] * width + cols[None, :, None, :]
    return np.where(inside, flat, height * width).reshape(ph * pw, kh * kw)


def windows(xp, x, cells):
    """x (N, C, H, W) -> (N, C, windows, cells) values, clipped cells reading zero."""
    num, channels, height, width = x.shape
    flat = xp.concatenate([x.reshape(num, channels, height * width),
                           xp.zeros((num, channels, 1), dtype=x.dtype)], axis=2)
    return xp.take(flat, cells, axis=2)


def forward_train(xp, x, y, cells, uniform):
    """Sample one cell per window; y gets its value. Returns the flat bottom index (within
    the image) of every sample, for backward."""
    values = windows(xp, x, cells)
    running = xp.cumsum(values, axis=3)
    threshold = uniform.reshape(running.shape[:3]) * running[..., -1]
    pick = xp.argmax(running >= threshold[..., None], axis=3)
    y[...] = xp.take_along_axis(values, pick[..., None], axis=3).reshape(y.shape)
    window = xp.arange(cells.shape[0]).reshape(1, 1, -1)
    return cells[window, pick]


def forward_test(xp, x, y, cells):
    values = windows(xp, x, cells)
    weighted = (values * values).sum(axis=3)
    y[...] = (weighted / (values.sum(axis=3) + np.float32(FLT_MIN))).reshape(y.shape)


def backward(xp, dy, picked, dx):
    """dx = each top diff added at its sampled cell (windows may overlap)."""
    num, channels, height, width = dx.shape
    image = height * width
    offsets = xp.arange(num * channels).reshape(num, channels, 1) * image
    index = (picked + offsets).ravel()
    sums = xp.bincount(index, weights=dy.reshape(-1), minlength=num * channels * image)
    dx[...] = sums.reshape(dx.shape)
