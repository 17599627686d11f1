"""Parameter: expose a learned blob as a top, for layers that take weights as bottoms."""
import numpy as np

from ..layer import Layer
from ..registry import layers


@layers.register("Parameter")
class ParameterLayer(Layer):
    """One parameter blob of `parameter_param.shape`, zero until trained or loaded (Caffe
    gives it no filler). The top data is a view of the blob's data; backward adds the top
    diff to the blob's diff."""
    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        shape = tuple(self.layer_param.parameter_param.shape.dim)
        if not self.blobs:
            self.add_param_blob(shape, np.zeros(shape, dtype=np.float32))
        if not self.param_propagate_down:
            self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].data = self.blobs[0].data

    def forward(self, bottom, top):
        # The Net may have swapped in a shared or loaded blob since reshape.
        top[0].data = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff
