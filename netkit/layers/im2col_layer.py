"""Im2col: the convolution columns of the bottom, as a layer."""
from ..layer import Layer, LayerSetupError
from ..ops.im2col import col2im_cf, im2col_cf
from ..ops.workspace import Workspace
from ..registry import layers
from .convolution import conv_geometry


@layers.register("Im2col")
class Im2colLayer(Layer):
    """(N, C, H, W) -> (N, C kh kw, OH, OW): each output position's receptive field, in
    Caffe's order (channel, kernel row, kernel column), with the kernel, pad, stride and
    dilation of `convolution_param` and Convolution's output size. Backward sums the column
    diffs back onto the pixels they came from (col2im)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.convolution_param
        num_axes = len(bottom[0].shape)
        if not -num_axes <= p.axis < num_axes:
            raise LayerSetupError("convolution_param axis %d is out of range for a %d-axis "
                                  "bottom" % (p.axis, num_axes))
        self.channel_axis = p.axis % num_axes
        self.geom = conv_geometry(p)
        self.ws = Workspace(self.xp)
        self._plan = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != self.channel_axis + 3:
            raise LayerSetupError("Im2col supports 2 spatial axes after convolution_param "
                                  "axis %d, got bottom shape %s" % (self.channel_axis, shape))
        channels, height, width = shape[self.channel_axis:]
        out_h, out_w = self.geom.output_shape(height, width)
        if out_h < 1 or out_w < 1:
            raise LayerSetupError("Im2col kernel extent %s exceeds the padded input %s"
                                  % (self.geom.extent, self.geom.padded_shape(height, width)))
        kh, kw = self.geom.kernel
        top[0].reshape(shape[:self.channel_axis] + (channels * kh * kw, out_h, out_w))
        num = 1
        for d in shape[:self.channel_axis]:
            num *= d
        plan = (num, channels, height, width)
        if plan != self._plan:
            self._plan = plan
            self.ws.clear()
        self.image_shape = plan
        self.column_shape = (num, channels, kh, kw, out_h, out_w)

    def _padded(self, name):
        """A padded copy of the images (zero border kept), needed only when pad > 0."""
        if self.geom.pad == (0, 0):
            return None
        num, channels, height, width = self.image_shape
        return self.ws.get(name, (num, channels) + self.geom.padded_shape(height, width),
                           init=0.0)

    def forward(self, bottom, top):
        im2col_cf(self.xp, bottom[0].data.reshape(self.image_shape),
                  top[0].data.reshape(self.column_shape), self.geom, self._padded("padded"))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            col2im_cf(self.xp, top[0].diff.reshape(self.column_shape),
                      bottom[0].diff.reshape(self.image_shape), self.geom,
                      self._padded("padded_diff"))
