"""Im2col: the convolution columns of the bottom, as a layer."""
from ..layer import Layer, LayerSetupError
from ..ops.im2col import col2im_cf, im2col_cf
from ..ops.workspace import Workspace
from ..registry import layers
from .convolution import conv_geometry, image_channel_axis


@layers.register("Im2col")
class Im2colLayer(Layer):
    """(N, C, H, W) -> (N, C kh kw, OH, OW): each output position's receptive field, in
    Caffe's order (channel, kernel row, kernel column), with the kernel, pad, stride and
    dilation of `convolution_param` and Convolution's output size. Backward sums the column
    diffs back onto the pixels they came from (col2im). Any number of spatial axes may follow
    convolution_param.axis, as in Caffe's im2col_nd: (N, C, *spatial) -> (N, C times the
    kernel's offsets, *output)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.channel_axis, num_axes = image_channel_axis(self, bottom[0].shape)
        self.geom = conv_geometry(self.layer_param.convolution_param, num_axes)
        self.ws = Workspace(self.xp)
        self._plan = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axes = self.channel_axis + 1 + len(self.geom.kernel)
        if len(shape) != axes:
            raise LayerSetupError("Im2col bottom must keep %d axes, got shape %s"
                                  % (axes, shape))
        channels, spatial = shape[self.channel_axis], shape[self.channel_axis + 1:]
        out_spatial = self.geom.output_shape(*spatial)
        if min(out_spatial) < 1:
            raise LayerSetupError("Im2col kernel extent %s exceeds the padded input %s"
                                  % (self.geom.extent, self.geom.padded_shape(*spatial)))
        top[0].reshape(shape[:self.channel_axis] + (channels * self.geom.offsets,) +
                       out_spatial)
        num = 1
        for d in shape[:self.channel_axis]:
            num *= d
        plan = (num, channels) + spatial
        if plan != self._plan:
            self._plan = plan
            self.ws.clear()
        self.image_shape = plan
        self.column_shape = (num, channels) + self.geom.kernel + out_spatial

    def _padded(self, name):
        """A padded copy of the images (zero border kept), needed only when pad > 0."""
        if not any(self.geom.pad):
            return None
        num, channels = self.image_shape[:2]
        return self.ws.get(name, (num, channels) +
                           self.geom.padded_shape(*self.image_shape[2:]), init=0.0)

    def forward(self, bottom, top):
        im2col_cf(self.xp, bottom[0].data.reshape(self.image_shape),
                  top[0].data.reshape(self.column_shape), self.geom, self._padded("padded"))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            col2im_cf(self.xp, top[0].diff.reshape(self.column_shape),
                      bottom[0].diff.reshape(self.image_shape), self.geom,
                      self._padded("padded_diff"))
