"""PriorBox (SSD): the default boxes of one feature map, in image-normalised corners."""
import math

import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


def prior_aspect_ratios(ratios, flip):
    """SSD's aspect ratio list: 1 first, then each given ratio not already present (within
    1e-6), each followed by its reciprocal when `flip`."""
    out = [1.0]
    for ar in ratios:
        if any(abs(ar - seen) < 1e-6 for seen in out):
            continue
        out.append(float(np.float32(ar)))
        if flip:
            out.append(float(np.float32(1.0 / ar)))
    return out


@layers.register("PriorBox")
class PriorBoxLayer(Layer):
    """top (1, 2, H*W*num_priors*4): channel 0 holds every prior's [xmin, ymin, xmax, ymax]
    divided by the image size, channel 1 its four variances.

    bottom[0] is the feature map (its H, W); bottom[1], the image, gives the image size
    unless `img_size` or `img_h`/`img_w` do. Priors are ordered by location (row-major),
    then, for each `min_size` in turn: the min_size square, the sqrt(min_size * max_size)
    square when max sizes are given, then one box per aspect ratio other than 1
    (width min_size * sqrt(ar), height min_size / sqrt(ar)). As in SSD, sizes are truncated
    to whole pixels, the step defaults to image size / feature map size, box centres sit at
    (w + offset) * step_w, (h + offset) * step_h, `clip` clamps corners to [0, 1], and the
    variance defaults to 0.1. The values depend only on the bottoms' shapes, so backward
    gives the bottoms a zero gradient (SSD's backward leaves them untouched), which lets
    PriorBox sit on a feature map of a training net.
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.prior_box_param
        if not param.min_size:
            raise LayerSetupError("prior_box_param.min_size must be given")
        if any(s <= 0 for s in param.min_size):
            raise LayerSetupError("prior_box_param.min_size must be positive, got %s"
                                  % list(param.min_size))
        if param.max_size and len(param.max_size) != len(param.min_size):
            raise LayerSetupError("prior_box_param.max_size needs one value per min_size "
                                  "(%d), got %d" % (len(param.min_size), len(param.max_size)))
        for lo, hi in zip(param.min_size, param.max_size):
            if hi <= lo:
                raise LayerSetupError("prior_box_param.max_size %g must be greater than "
                                      "min_size %g" % (hi, lo))
        if any(ar <= 0 for ar in param.aspect_ratio):
            raise LayerSetupError("prior_box_param.aspect_ratio must be positive, got %s"
                                  % list(param.aspect_ratio))
        if len(param.variance) not in (0, 1, 4):
            raise LayerSetupError("prior_box_param.variance takes 1 or 4 values, got %d"
                                  % len(param.variance))
        if any(v <= 0 for v in param.variance):
            raise LayerSetupError("prior_box_param.variance must be positive, got %s"
                                  % list(param.variance))
        self.variance = list(param.variance) or [0.1]
        self.img_h, self.img_w = self._pair(param, "img_size", "img_h", "img_w")
        self.step_h, self.step_w = self._pair(param, "step", "step_h", "step_w")
        self.offset = param.offset
        self.widths, self.heights = self._box_sizes(param)

    @staticmethod
    def _pair(param, both, h, w):
        """(h, w) from either `both` or the `h`/`w` fields (never both kinds); 0 if unset."""
        if param.HasField(h) or param.HasField(w):
            if param.HasField(both):
                raise LayerSetupError("prior_box_param: give either %s or %s/%s, not both"
                                      % (both, h, w))
            for name in (h, w):
                if getattr(param, name) <= 0:
                    raise LayerSetupError("prior_box_param.%s must be positive, got %g"
                                          % (name, getattr(param, name)))
            return getattr(param, h), getattr(param, w)
        if param.HasField(both):
            if getattr(param, both) <= 0:
                raise LayerSetupError("prior_box_param.%s must be positive, got %g"
                                      % (both, getattr(param, both)))
            return getattr(param, both), getattr(param, both)
        return 0, 0

    @staticmethod
    def _box_sizes(param):
        """Widths and heights of the priors at one location, in SSD's order and float32
        rounding (sizes truncated to int as SSD stores them)."""
        ratios = prior_aspect_ratios(param.aspect_ratio, param.flip)
        widths, heights = [], []
        for s, min_size in enumerate(param.min_size):
            lo = int(min_size)
            widths.append(lo)
            heights.append(lo)
            if param.max_size:
                side = np.float32(math.sqrt(lo * int(param.max_size[s])))
                widths.append(side)
                heights.append(side)
            for ar in ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = np.float32(math.sqrt(np.float32(ar)))
                widths.append(np.float32(lo) * root)
                heights.append(np.float32(lo) / root)
        return np.array(widths, np.float32), np.array(heights, np.float32)

    @property
    def num_priors(self):
        return len(self.widths)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise LayerSetupError("PriorBox needs a 4-axis feature map bottom, got shape %s"
                                  % (bottom[0].shape,))
        if not (self.img_h and self.img_w) and len(bottom) < 2:
            raise LayerSetupError("PriorBox needs the image as bottom[1] unless "
                                  "prior_box_param.img_size or img_h/img_w is given")
        height, width = bottom[0].shape[2:]
        if height * width == 0:
            raise LayerSetupError("PriorBox feature map %s has no locations"
                                  % (bottom[0].shape,))
        top[0].reshape(1, 2, height * width * self.num_priors * 4)

    def forward(self, bottom, top):
        xp = self.xp
        height, width = bottom[0].shape[2:]
        img_h, img_w = self.img_h, self.img_w
        if not (img_h and img_w):
            img_h, img_w = bottom[1].shape[2:]
        step_h, step_w = self.step_h, self.step_w
        if not (step_h and step_w):
            step_h = np.float32(img_h) / np.float32(height)
            step_w = np.float32(img_w) / np.float32(width)
        step_h, step_w = np.float32(step_h), np.float32(step_w)
        offset = np.float32(self.offset)
        # Centres in float32, corners in double then rounded once, as SSD computes them.
        cy = ((xp.arange(height, dtype=xp.float32) + offset) * step_h).astype(xp.float64)
        cx = ((xp.arange(width, dtype=xp.float32) + offset) * step_w).astype(xp.float64)
        half_w = self.backend.asarray(self.widths.astype(np.float64) / 2)
        half_h = self.backend.asarray(self.heights.astype(np.float64) / 2)
        shape = (height, width, self.num_priors)
        x = cx.reshape(1, width, 1)
        y = cy.reshape(height, 1, 1)
        corners = xp.stack([xp.broadcast_to((x - half_w) / img_w, shape),
                            xp.broadcast_to((y - half_h) / img_h, shape),
                            xp.broadcast_to((x + half_w) / img_w, shape),
                            xp.broadcast_to((y + half_h) / img_h, shape)], axis=-1)
        corners = corners.astype(xp.float32).reshape(-1)
        if self.layer_param.prior_box_param.clip:
            corners = xp.clip(corners, 0, 1)
        top[0].data[0, 0] = corners
        variance = self.backend.asarray(np.array(self.variance, np.float32))
        top[0].data[0, 1] = xp.tile(variance, corners.size // len(self.variance))

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff[...] = 0
