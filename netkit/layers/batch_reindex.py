"""BatchReindex: gather items of a batch by index (permute, repeat or drop them)."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers
from .embed import scatter_add_rows


@layers.register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom[0][int(bottom[1][i])]: bottom[1] is a 1-axis blob of item indices,
    which may repeat items or leave some out. Backward sums the diffs of every copy into the
    item it came from (zero for items never picked); the indices get no gradient.

    Out-of-range indices are an error, as in Caffe, checked on a host copy of the indices.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        if len(bottom[1].shape) != 1:
            raise LayerSetupError("BatchReindex: bottom[1] (the indices) must have 1 axis, got "
                                  "shape %s" % (bottom[1].shape,))
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def _indices(self, bottom):
        host = self.backend.asnumpy(bottom[1].data)
        if host.size and (host.min() < 0 or host.max() >= bottom[0].shape[0]):
            bad = host[(host < 0) | (host >= bottom[0].shape[0])][0]
            raise LayerSetupError("BatchReindex: index %g is outside the batch of %d items"
                                  % (bad, bottom[0].shape[0]))
        return self.backend.asarray(host.astype(np.int64))

    def forward(self, bottom, top):
        self.index = self._indices(bottom)
        self.xp.take(bottom[0].data, self.index, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise LayerSetupError("BatchReindex cannot backpropagate to its indices (bottom[1])")
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        summed = scatter_add_rows(self.xp, self.index, top[0].diff.reshape(len(self.index), -1),
                                  dx.shape[0])
        dx[...] = summed.reshape(dx.shape)
