"""Filter: keep the items whose selector is nonzero."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Filter")
class FilterLayer(Layer):
    """bottom[0..K-1] are filtered by the selector, the last bottom (N, 1, ...): top k holds
    the items (axis 0) of bottom k whose selector value is nonzero, in order. Backward routes
    each kept item's diff back to its place and zeroes the diffs of dropped items; the
    selector gets no gradient.

    The top shapes depend on the selector's values, so reshape reads them on the host. As in
    Caffe, the first reshape (at net setup, before any data) keeps the whole batch.
    """
    min_bottom = 2
    min_top = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise LayerSetupError("Filter needs one top per filtered bottom (%d), got %d"
                                  % (len(bottom) - 1, len(top)))
        self.first_reshape = True

    def allow_force_backward(self, bottom_index):
        return bottom_index < len(self.layer_param.bottom) - 1

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if any(d != 1 for d in selector.shape[1:]):
            raise LayerSetupError("Filter: the selector (last bottom) must be (N, 1, ...), got "
                                  "shape %s" % (selector.shape,))
        for i, b in enumerate(bottom[:-1]):
            if b.shape[0] != selector.shape[0]:
                raise LayerSetupError("Filter: bottom[%d] has %d items, the selector %d"
                                      % (i, b.shape[0], selector.shape[0]))
        keep = np.flatnonzero(self.backend.asnumpy(selector.data).reshape(-1))
        self.keep = self.backend.asarray(keep, dtype=np.int64)
        kept = selector.shape[0] if self.first_reshape else len(keep)
        self.first_reshape = False
        for b, t in zip(bottom, top):
            t.reshape((kept,) + b.shape[1:])

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            t.data[:len(self.keep)] = self.xp.take(b.data, self.keep, axis=0)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise LayerSetupError("Filter cannot backpropagate to its selector (last bottom)")
        for b, t, down in zip(bottom, top, propagate_down):
            if down:
                b.diff.fill(0)
                b.diff[self.keep] = t.diff[:len(self.keep)]
