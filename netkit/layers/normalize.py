"""Normalize (SSD): L2-normalise each image, or each spatial location, then scale."""
import numpy as np

from .. import netkit_pb2 as pb
from ..fillers import fill
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Normalize")
class NormalizeLayer(Layer):
    """top = scale * bottom / sqrt(sum(bottom^2) + eps), SSD's conv4_3_norm.

    `norm_param.across_spatial` (default true) sums over all of an image's C*H*W values;
    false sums over the C channels at each location. `eps` goes inside the square root, as
    in SSD. The scale is one learned blob: a scalar (0 axes) with `channel_shared` (default)
    or one value per channel, filled by `scale_filler` (default constant 1).

    Backward is the exact gradient. SSD's own backward with `channel_shared: false` leaves
    the per-channel scale out of the norm's term (right only while all scales are equal, as
    in its tests) and gets the scale gradient as sum(top * top_diff) / scale; here both use
    bottom / norm, which is also defined when a scale is 0.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise LayerSetupError("Normalize needs a bottom with at least 2 axes (num, "
                                  "channels), got shape %s" % (bottom[0].shape,))
        param = self.layer_param.norm_param
        channels = bottom[0].shape[1]
        shape = () if param.channel_shared else (channels,)
        if self.blobs:
            if self.blobs[0].count != int(np.prod(shape)):
                raise LayerSetupError("Normalize scale blob has %d values, norm_param."
                                      "channel_shared %s needs %d"
                                      % (self.blobs[0].count, param.channel_shared,
                                         int(np.prod(shape))))
        else:
            filler = param.scale_filler
            if not param.HasField("scale_filler"):
                filler = pb.FillerParameter(type="constant", value=1.0)
            self.add_param_blob(shape, fill(filler, shape))
        if not self.param_propagate_down:
            self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise LayerSetupError("Normalize needs a bottom with at least 2 axes, got shape %s"
                                  % (bottom[0].shape,))
        if not self.layer_param.norm_param.channel_shared and \
                bottom[0].shape[1] != self.blobs[0].count:
            raise LayerSetupError("Normalize scale has %d channels, the bottom now has %d"
                                  % (self.blobs[0].count, bottom[0].shape[1]))
        top[0].reshape(bottom[0].shape)

    def _grouped(self, array):
        """(num, channels, spatial) view of a bottom-shaped array."""
        return array.reshape(array.shape[0], array.shape[1], -1)

    def _scale(self):
        """The scale blob broadcast against (num, channels, spatial)."""
        return self.blobs[0].data.reshape(1, -1, 1)

    def _sum_axes(self):
        return (1, 2) if self.layer_param.norm_param.across_spatial else (1,)

    def forward(self, bottom, top):
        x = self._grouped(bottom[0].data)
        squares = (x * x).sum(axis=self._sum_axes(), keepdims=True)
        self.norm = self.xp.sqrt(squares + self.layer_param.norm_param.eps)
        top[0].data[...] = (x / self.norm * self._scale()).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        x = self._grouped(bottom[0].data)
        unit = x / self.norm
        dtop = self._grouped(top[0].diff)
        if self.param_propagate_down[0]:
            if self.layer_param.norm_param.channel_shared:
                self.blobs[0].diff += (dtop * unit).sum().reshape(self.blobs[0].shape)
            else:
                self.blobs[0].diff += (dtop * unit).sum(axis=(0, 2)).reshape(self.blobs[0].shape)
        if propagate_down[0]:
            scaled = dtop * self._scale()
            along = (scaled * unit).sum(axis=self._sum_axes(), keepdims=True)
            bottom[0].diff[...] = ((scaled - unit * along) / self.norm).reshape(bottom[0].shape)
