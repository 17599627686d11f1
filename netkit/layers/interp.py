"""Interp (PSPNet / DeepLab-v2 forks): bilinear resize with aligned corners."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


def interp_matrix(size_in, size_out):
    """(size_out, size_in) float32 weights of the fork's 1-D linear interpolation.

    Output i reads input position r = i * (size_in - 1) / (size_out - 1), with the ratio
    and the product rounded to float32 as the fork computes them: weight 1 - f on
    floor(r) and f = r - floor(r) on the next input (the same one on the last)."""
    ratio = np.float32(0)
    if size_out > 1:
        ratio = np.float32(size_in - 1) / np.float32(size_out - 1)
    pos = ratio * np.arange(size_out, dtype=np.float32)
    low = pos.astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    frac = pos - low.astype(np.float32)
    weights = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), np.float32(1) - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


@layers.register("Interp")
class InterpLayer(Layer):
    """Resizes the height and width of a 4-D bottom by bilinear interpolation whose corner
    pixels of input and output coincide (PyTorch's align_corners=True).

    The input is first cropped by -pad_beg rows and columns at the start and -pad_end at
    the end (only pads <= 0 are supported). The output size, in the fork's order of
    precedence: a second bottom's height and width (then no size field may be given);
    `shrink_factor` alone: (in - 1) / shrink + 1; `zoom_factor` alone:
    in + (in - 1)(zoom - 1); `height` and `width`; both factors: shrink, then zoom.

    Forward and backward are each a pair of matrix products over the whole batch, with
    the fork's float32 interpolation weights. The size bottom gets no gradient.
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.interp_param
        if p.pad_beg > 0:
            raise LayerSetupError("interp_param.pad_beg must be <= 0 (only cropping is "
                                  "supported), got %d" % p.pad_beg)
        if p.pad_end > 0:
            raise LayerSetupError("interp_param.pad_end must be <= 0 (only cropping is "
                                  "supported), got %d" % p.pad_end)
        self.crop = -p.pad_beg
        self.shape_key = None

    def _output_size(self, bottom, eff_h, eff_w):
        p = self.layer_param.interp_param
        sizes = [f for f in ("shrink_factor", "zoom_factor", "height", "width")
                 if p.HasField(f)]
        if len(bottom) > 1:
            if sizes:
                raise LayerSetupError("Interp takes its size from bottom[1] or from "
                                      "interp_param, not both (%s given)" % ", ".join(sizes))
            if bottom[1].num_axes != 4 or bottom[1].shape[0] != bottom[0].shape[0]:
                raise LayerSetupError("Interp bottom[1] must be 4-D with bottom[0]'s num %d, "
                                      "got shape %s" % (bottom[0].shape[0], bottom[1].shape))
            return bottom[1].shape[2], bottom[1].shape[3]
        shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
        if shrink and p.shrink_factor < 1:
            raise LayerSetupError("interp_param.shrink_factor must be >= 1, got %d"
                                  % p.shrink_factor)
        if zoom and p.zoom_factor < 1:
            raise LayerSetupError("interp_param.zoom_factor must be >= 1, got %d"
                                  % p.zoom_factor)
        if shrink or zoom:
            h, w = eff_h, eff_w
            if shrink:
                h, w = (h - 1) // p.shrink_factor + 1, (w - 1) // p.shrink_factor + 1
            if zoom:
                h, w = h + (h - 1) * (p.zoom_factor - 1), w + (w - 1) * (p.zoom_factor - 1)
            return h, w
        if p.HasField("height") and p.HasField("width"):
            return p.height, p.width
        raise LayerSetupError("Interp needs interp_param zoom_factor, shrink_factor, or "
                              "height and width, or a second bottom giving the size")

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise LayerSetupError("Interp bottom[0] must be 4-D (N, C, H, W), got shape %s"
                                  % (bottom[0].shape,))
        p = self.layer_param.interp_param
        num, channels, height, width = bottom[0].shape
        eff_h = height + p.pad_beg + p.pad_end
        eff_w = width + p.pad_beg + p.pad_end
        if eff_h <= 0 or eff_w <= 0:
            raise LayerSetupError("interp_param pad_beg %d and pad_end %d crop all of a "
                                  "%d x %d bottom" % (p.pad_beg, p.pad_end, height, width))
        out_h, out_w = self._output_size(bottom, eff_h, eff_w)
        if out_h <= 0 or out_w <= 0:
            raise LayerSetupError("Interp output size must be positive, got %d x %d"
                                  % (out_h, out_w))
        top[0].reshape(num, channels, out_h, out_w)
        key = (eff_h, eff_w, out_h, out_w)
        if key != self.shape_key:
            self.shape_key = key
            self.rows = self.backend.asarray(interp_matrix(eff_h, out_h))
            self.cols = self.backend.asarray(interp_matrix(eff_w, out_w))
        self.window = (slice(None), slice(None), slice(self.crop, self.crop + eff_h),
                       slice(self.crop, self.crop + eff_w))

    def forward(self, bottom, top):
        xp = self.xp
        along_w = xp.tensordot(bottom[0].data[self.window], self.cols, axes=(3, 1))
        top[0].data[...] = xp.tensordot(self.rows, along_w, axes=(1, 2)).transpose(1, 2, 0, 3)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        if len(bottom) > 1 and propagate_down[1]:
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = 0
        along_w = xp.tensordot(top[0].diff, self.cols, axes=(3, 0))
        diff[self.window] = xp.tensordot(self.rows, along_w, axes=(0, 2)).transpose(1, 2, 0, 3)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
