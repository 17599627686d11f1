"""Silence: consume blobs that nothing else uses, so the Net does not report them."""
from ..layer import Layer
from ..registry import layers


@layers.register("Silence")
class SilenceLayer(Layer):
    """No tops and no forward work; backward gives each bottom a zero diff, as Caffe does."""
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff.fill(0)
