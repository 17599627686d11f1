"""Crop: cut bottom[0] to the shape of bottom[1] (FCN's alignment of score maps)."""
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers


@layers.register("Crop")
class CropLayer(Layer):
    """Axes from `crop_param.axis` (default 2) on take bottom[1]'s size; the axes before it
    keep bottom[0]'s. The window starts at `offset` along each cropped axis: no offset means
    0, one offset applies to every cropped axis, otherwise one per cropped axis. Backward
    places the top diff in the window of a zeroed bottom[0] diff; bottom[1] only gives the
    shape (its gradient is zero)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.crop_param
        num_axes = len(bottom[0].shape)
        start = canonical_axis(param.axis, num_axes, "crop_param.axis")
        if len(param.offset) > 1 and start + len(param.offset) != num_axes:
            raise LayerSetupError("crop_param gives %d offsets; give one, or one per axis from "
                                  "axis %d on (%d)" % (len(param.offset), start,
                                                       num_axes - start))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        param = self.layer_param.crop_param
        shape, like = bottom[0].shape, bottom[1].shape
        start = canonical_axis(param.axis, len(shape), "crop_param.axis")
        if len(like) < len(shape):
            raise LayerSetupError("Crop: bottom[1] %s has fewer axes than bottom[0] %s"
                                  % (like, shape))
        offsets = list(param.offset)
        window, top_shape = [], []
        for i, size in enumerate(shape):
            if i < start:
                window.append(slice(None))
                top_shape.append(size)
                continue
            offset = offsets[0] if len(offsets) == 1 else \
                offsets[i - start] if offsets else 0
            if size - offset < like[i]:
                raise LayerSetupError("Crop: the crop of axis %d is out of bounds: size %d "
                                      "with offset %d leaves less than %d"
                                      % (i, size, offset, like[i]))
            window.append(slice(offset, offset + like[i]))
            top_shape.append(like[i])
        self.window = tuple(window)
        top[0].reshape(tuple(top_shape))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.fill(0)
            bottom[0].diff[self.window] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff.fill(0)
