"""ROIPooling (Fast/Faster R-CNN fork): max pooling of each region of interest into a grid."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


def _c_round(x):
    """C's round(): halves go away from zero (numpy's round goes to even)."""
    x = np.float64(x)
    return int(np.sign(x) * np.floor(np.abs(x) + 0.5))


@layers.register("ROIPooling")
class ROIPoolingLayer(Layer):
    """Pools bottom[0] (N, C, H, W) inside each ROI of bottom[1] into a (C, pooled_h, pooled_w)
    grid; top[0] is (R, C, pooled_h, pooled_w).

    Each ROI row is [batch_index, x1, y1, x2, y2] in image pixels. As in the fork, the corners
    are scaled by spatial_scale and rounded (C's round), the ROI spans at least one cell, bin
    (ph, pw) covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) from the ROI's start (in
    float32, as the fork computes them), clipped to the image, and an empty bin outputs 0
    with argmax -1. Ties keep the first maximum in row-major order.

    The ROIs are read to the host once per forward (R x 5 numbers) to build each ROI's bin
    geometry; the pooling itself runs on the device, one ROI at a time, vectorized over
    channels and bins. Backward sends each top diff to its argmax (no gradient where
    argmax is -1); the ROI coordinates get zero gradient.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.roi_pooling_param
        if p.pooled_h == 0:
            raise LayerSetupError("roi_pooling_param.pooled_h must be > 0")
        if p.pooled_w == 0:
            raise LayerSetupError("roi_pooling_param.pooled_w must be > 0")
        self.pooled_h, self.pooled_w = p.pooled_h, p.pooled_w
        self.spatial_scale = np.float32(p.spatial_scale)

    def reshape(self, bottom, top):
        data, rois = bottom
        if len(data.shape) != 4:
            raise LayerSetupError("ROIPooling: bottom[0] must be 4-D (N, C, H, W), got shape %s"
                                  % (data.shape,))
        if len(rois.shape) < 1 or rois.count != 5 * rois.shape[0]:
            raise LayerSetupError("ROIPooling: bottom[1] (rois) must have shape (R, 5), one "
                                  "[batch_index, x1, y1, x2, y2] per row, got shape %s"
                                  % (rois.shape,))
        shape = (rois.shape[0], data.shape[1], self.pooled_h, self.pooled_w)
        top[0].reshape(shape)
        self.argmax = self.xp.full(shape, -1, dtype=self.xp.int64)
        self.batch_index = self.xp.zeros(shape[0], dtype=self.xp.int64)

    def _bins(self, start, end, pooled, size):
        """Start and end (excluded) of each bin along one axis, clipped to [0, size]."""
        extent = np.float32(max(end - start + 1, 1))
        bin_size = extent / np.float32(pooled)
        steps = np.arange(pooled + 1, dtype=np.float32) * bin_size
        lo = np.floor(steps[:-1]).astype(np.int64) + start
        hi = np.ceil(steps[1:]).astype(np.int64) + start
        return np.clip(lo, 0, size), np.clip(hi, 0, size)

    def forward(self, bottom, top):
        xp, be = self.xp, self.backend
        data, out = bottom[0].data, top[0].data
        num, channels, height, width = data.shape
        rois = be.asnumpy(bottom[1].data).reshape(-1, 5)
        index = rois[:, 0].astype(np.int64)  # truncation, as the fork's int cast
        bad = (index < 0) | (index >= num)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise LayerSetupError("ROIPooling: roi %d has batch index %d, outside [0, %d)"
                                  % (r, index[r], num))
        self.batch_index[...] = be.asarray(index)
        for r, roi in enumerate(rois):
            x1, y1, x2, y2 = (_c_round(v * self.spatial_scale) for v in roi[1:])
            hs, he = self._bins(y1, y2, self.pooled_h, height)
            ws, we = self._bins(x1, x2, self.pooled_w, width)
            kh, kw = int((he - hs).max()), int((we - ws).max())
            if kh <= 0 or kw <= 0:
                out[r] = 0
                self.argmax[r] = -1
                continue
            # Each bin padded to kh x kw cells; cells past the bin's end are masked out.
            rows = hs[:, None] + np.arange(kh)
            cols = ws[:, None] + np.arange(kw)
            inside = ((rows < he[:, None])[:, :, None, None]
                      & (cols < we[:, None])[None, None, :, :])
            empty = (he <= hs)[:, None] | (we <= ws)[None, :]
            rows = be.asarray(np.minimum(rows, height - 1))
            cols = be.asarray(np.minimum(cols, width - 1))
            # (C, pooled_h, kh, pooled_w, kw) -> (C, pooled_h, pooled_w, kh * kw)
            cells = data[index[r]][:, rows[:, :, None, None], cols[None, None, :, :]]
            cells = xp.where(be.asarray(inside), cells, xp.float32(-xp.inf))
            cells = cells.transpose(0, 1, 3, 2, 4).reshape(
                channels, self.pooled_h, self.pooled_w, kh * kw)
            best = cells.argmax(axis=-1)
            corner = be.asarray(hs[:, None] * width + ws[None, :])
            where = corner + (best // kw) * width + best % kw
            empty = be.asarray(empty)
            out[r] = xp.where(empty, xp.float32(0), cells.max(axis=-1))
            self.argmax[r] = xp.where(empty, -1, where)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        if propagate_down[1]:
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        num, channels, height, width = bottom[0].shape
        pooled = self.argmax >= 0
        image = self.batch_index[:, None] * channels + xp.arange(channels)[None, :]
        target = image[:, :, None, None] * (height * width) + self.argmax
        target = xp.where(pooled, target, 0).reshape(-1)
        weight = xp.where(pooled, top[0].diff, xp.float32(0)).reshape(-1)
        grad = xp.bincount(target, weights=weight, minlength=bottom[0].count)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)
