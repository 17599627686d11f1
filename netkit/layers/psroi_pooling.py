"""PSROIPooling (R-FCN fork): position-sensitive average pooling of regions of interest."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


def _c_round(x):
    """C's round() of float64 values: halves go away from zero (numpy's go to even)."""
    size = np.abs(x)
    whole = np.floor(size)
    return np.copysign(whole + (size - whole >= 0.5), x)


def _bin_bounds(start, length, groups, size):
    """Start and end (excluded) rows of each ROI's bins, (R, groups) each, clipped to
    [0, size]. As the fork's CUDA kernel computes them: bin_size = length / groups in
    float32, bound k at k * bin_size + start rounded once to float32 (a fused
    multiply-add), then floor for the start and ceil for the end."""
    bin_size = length / np.float32(groups)
    steps = np.arange(groups + 1, dtype=np.float64)[None, :]
    edges = (steps * bin_size[:, None] + start[:, None]).astype(np.float32)
    lo = np.floor(edges[:, :-1]).astype(np.int64)
    hi = np.ceil(edges[:, 1:]).astype(np.int64)
    return np.clip(lo, 0, size), np.clip(hi, 0, size)


@layers.register("PSROIPooling")
class PSROIPoolingLayer(Layer):
    """Pools each ROI of bottom[1] into group_size x group_size bins, top[0] shaped
    (R, output_dim, group_size, group_size); bin (i, j) of output channel c averages
    bottom channel (c * group_size + i) * group_size + j over the bin's cells, so bottom[0]
    must have output_dim * group_size^2 channels.

    Each ROI row is [batch_index, x1, y1, x2, y2] in image pixels. As in the fork, the
    corners are rounded (C's round), the ROI spans [x1, x2 + 1) scaled by spatial_scale
    (at least 0.1 wide and high), the bins split it evenly (see `_bin_bounds`) and are
    clipped to the image, and an empty bin outputs 0.

    The ROIs are read to the host once per forward to build the bins; the sums use a
    summed-area table of the bottom, so every bin costs four lookups whatever its size.
    Backward spreads each top diff evenly over its bin through the same table, built the
    other way round; the ROI coordinates get zero gradient.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.psroi_pooling_param
        for field in ("spatial_scale", "output_dim", "group_size"):
            if not p.HasField(field):
                raise LayerSetupError("psroi_pooling_param.%s is required" % field)
        if p.output_dim <= 0:
            raise LayerSetupError("psroi_pooling_param.output_dim must be > 0")
        if p.group_size <= 0:
            raise LayerSetupError("psroi_pooling_param.group_size must be > 0")
        self.output_dim, self.group = p.output_dim, p.group_size
        self.spatial_scale = np.float32(p.spatial_scale)

    def reshape(self, bottom, top):
        data, rois = bottom
        want = self.output_dim * self.group * self.group
        if data.num_axes != 4 or data.shape[1] != want:
            raise LayerSetupError("PSROIPooling bottom[0] must be (N, output_dim * group_size^2 "
                                  "= %d, H, W), got shape %s" % (want, data.shape))
        if rois.num_axes < 1 or rois.count != 5 * rois.shape[0]:
            raise LayerSetupError("PSROIPooling bottom[1] (rois) must have shape (R, 5), one "
                                  "[batch_index, x1, y1, x2, y2] per row, got shape %s"
                                  % (rois.shape,))
        top[0].reshape(rois.shape[0], self.output_dim, self.group, self.group)

    def _corners(self, bottom):
        """Flat indices into a (N, C, H + 1, W + 1) table of the four corners of every bin,
        (4, R, output_dim, group, group), and each bin's cell count."""
        num, channels, height, width = bottom[0].shape
        rois = self.backend.asnumpy(bottom[1].data).reshape(-1, 5)
        index = rois[:, 0].astype(np.int64)  # truncation, as the fork's int cast
        bad = (index < 0) | (index >= num)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise LayerSetupError("PSROIPooling: roi %d has batch index %d, outside [0, %d)"
                                  % (r, index[r], num))
        corners = _c_round(rois[:, 1:].astype(np.float64)).astype(np.float32)
        start = corners[:, :2] * self.spatial_scale
        end = (corners[:, 2:] + np.float32(1)) * self.spatial_scale
        extent = np.maximum(end - start, np.float32(0.1))
        ws, we = _bin_bounds(start[:, 0], extent[:, 0], self.group, width)
        hs, he = _bin_bounds(start[:, 1], extent[:, 1], self.group, height)
        g = self.group
        channel = np.arange(self.output_dim * g * g).reshape(1, self.output_dim, g, g)
        plane = (index[:, None, None, None] * channels + channel) * (height + 1)
        rows = [h[:, None, :, None] for h in (hs, he)]
        cols = [w[:, None, None, :] for w in (ws, we)]
        flat = np.stack([(plane + r) * (width + 1) + c for r in rows for c in cols])
        area = (he - hs)[:, None, :, None] * (we - ws)[:, None, None, :]
        area = np.broadcast_to(area, flat.shape[1:])
        return self.backend.asarray(flat), self.backend.asarray(area, dtype=np.float64)

    def forward(self, bottom, top):
        xp = self.xp
        num, channels, height, width = bottom[0].shape
        self.corners, self.area = self._corners(bottom)
        table = xp.zeros((num, channels, height + 1, width + 1), dtype=xp.float64)
        table[:, :, 1:, 1:] = bottom[0].data.cumsum(axis=2, dtype=xp.float64).cumsum(axis=3)
        table = table.reshape(-1)
        c = self.corners
        total = table[c[3]] - table[c[2]] - table[c[1]] + table[c[0]]
        mean = total / xp.maximum(self.area, 1)
        top[0].data[...] = xp.where(self.area > 0, mean, 0)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        if propagate_down[1]:
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        num, channels, height, width = bottom[0].shape
        share = top[0].diff / xp.maximum(self.area, 1)
        share = xp.where(self.area > 0, share, 0).reshape(-1)
        # +share at the bin's top-left corner, -share past each edge, +share past both:
        # the 2-D running sum of these marks is the share on every cell of the bin.
        marks = xp.concatenate([share, -share, -share, share])
        table = xp.bincount(self.corners.reshape(-1), weights=marks,
                            minlength=num * channels * (height + 1) * (width + 1))
        table = table.reshape(num, channels, height + 1, width + 1)
        grad = table.cumsum(axis=2).cumsum(axis=3)[:, :, :height, :width]
        bottom[0].diff[...] = grad.astype(xp.float32)
