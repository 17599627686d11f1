"""Split: one bottom feeding several consumers (inserted by the Net, as in Caffe)."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Split")
class SplitLayer(Layer):
    """Every top shares the bottom's data; each top keeps its own diff and backward sums
    them into the bottom diff. Not in place: a top that is the bottom is an error."""
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            if t is bottom[0]:
                raise LayerSetupError("Split layer does not allow in-place computation "
                                      "(a top is its bottom)")
            t.reshape_like(bottom[0])
            t.share_data(bottom[0])

    def forward(self, bottom, top):
        # Re-share: the bottom's producer may have replaced its data array since reshape.
        for t in top:
            t.share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        self.xp.add(top[0].diff, top[1].diff, out=diff)
        for t in top[2:]:
            diff += t.diff
