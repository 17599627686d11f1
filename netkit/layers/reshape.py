"""Reshape: give the bottom's values a new shape without copying them."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Reshape")
class ReshapeLayer(Layer):
    """`reshape_param.shape` replaces the bottom axes [axis, axis + num_axes) (all of them by
    default); in it a 0 copies the bottom's axis at that place and one -1 is inferred from
    the count, as in Caffe.

    The top data is a view of the bottom data (Caffe's ShareData), taken in reshape for the
    layers reshaped after this one and again in forward in case the producer replaced its
    array. The diffs stay separate arrays and backward copies the top diff into the bottom's,
    as Flatten does: a diff aliased across two blobs would let a layer that clears one blob's
    diff clear the other's behind its back. Not in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        dims = list(self.layer_param.reshape_param.shape.dim)
        if dims.count(-1) > 1:
            raise LayerSetupError("reshape_param shape has %d dims of -1; at most one may be "
                                  "inferred" % dims.count(-1))
        if any(d < -1 for d in dims):
            raise LayerSetupError("reshape_param shape dims must be positive, 0 (copy) or -1 "
                                  "(infer), got %s" % (dims,))
        self.dims = dims

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise LayerSetupError("Reshape layer does not allow in-place computation "
                                  "(its top is its bottom)")
        param = self.layer_param.reshape_param
        shape = bottom[0].shape
        start = param.axis if param.axis >= 0 else len(shape) + param.axis + 1
        if not 0 <= start <= len(shape):
            raise LayerSetupError("reshape_param.axis %d is out of range for a blob with %d "
                                  "axes" % (param.axis, len(shape)))
        if param.num_axes < -1:
            raise LayerSetupError("reshape_param.num_axes must be >= 0, or -1 for all, got %d"
                                  % param.num_axes)
        end = len(shape) if param.num_axes == -1 else start + param.num_axes
        if end > len(shape):
            raise LayerSetupError("reshape_param axis %d + num_axes %d is beyond the bottom's "
                                  "%d axes" % (start, param.num_axes, len(shape)))
        new = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= len(shape):
                    raise LayerSetupError("reshape_param shape dim %d is 0 (copy) but the "
                                          "bottom has no axis %d" % (i, start + i))
                d = shape[start + i]
            new.append(d)
        count = int(np.prod(shape, dtype=np.int64))
        if -1 in new:
            known = int(np.prod(shape[:start] + shape[end:], dtype=np.int64)) * \
                int(-np.prod(new, dtype=np.int64))
            if known == 0 or count % known:
                raise LayerSetupError("Reshape: bottom count %d is not divisible by the "
                                      "product %d of the specified dimensions"
                                      % (count, known))
            new[new.index(-1)] = count // known
        top_shape = shape[:start] + tuple(new) + shape[end:]
        if int(np.prod(top_shape, dtype=np.int64)) != count:
            raise LayerSetupError("Reshape: top shape %s has %d values, the bottom %s has %d"
                                  % (top_shape, int(np.prod(top_shape, dtype=np.int64)),
                                     shape, count))
        top[0].reshape(top_shape)
        top[0].data = bottom[0].data.reshape(top_shape)

    def forward(self, bottom, top):
        top[0].data = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)
