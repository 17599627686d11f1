"""Flatten: merge the axes from `axis` to `end_axis` into one."""
import numpy as np

from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers



@layers.register("Flatten")
class FlattenLayer(Layer):
    """(N, C, H, W) -> (N, C*H*W) with the defaults axis 1, end_axis -1.

    The top data is a reshaped view of the bottom data (Caffe's ShareData), taken in reshape
    for the layers reshaped after this one and again in forward in case the producer
    replaced its array; backward copies the top diff into the bottom's own diff array, so
    no blob's diff is ever replaced under another layer. Not in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise LayerSetupError("Flatten layer does not allow in-place computation "
                                  "(its top is its bottom)")
        shape = bottom[0].shape
        param = self.layer_param.flatten_param
        start = canonical_axis(param.axis, len(shape), "flatten_param.axis")
        end = canonical_axis(param.end_axis, len(shape), "flatten_param.end_axis")
        if end < start:
            raise LayerSetupError("flatten_param.end_axis (%d) must not come before axis (%d)"
                                  % (param.end_axis, param.axis))
        merged = int(np.prod(shape[start:end + 1], dtype=np.int64))
        top[0].reshape(shape[:start] + (merged,) + shape[end + 1:])
        top[0].data = bottom[0].data.reshape(top[0].shape)

    def forward(self, bottom, top):
        top[0].data = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)
