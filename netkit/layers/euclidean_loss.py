"""EuclideanLoss: half the mean (over the batch) squared distance of two blobs."""
from ..blob import Blob
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("EuclideanLoss")
class EuclideanLossLayer(Layer):
    """loss = sum((a - b)^2) / (2 N), N = the first axis of bottom[0].

    Unlike most losses both bottoms get a gradient, +-(a - b) * loss_weight / N; the top's
    diff holds the loss weight, as in Caffe.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        self.difference = Blob((), self.backend)

    def reshape(self, bottom, top):
        a, b = bottom
        if not a.shape or not b.shape or a.shape[0] != b.shape[0]:
            raise LayerSetupError("EuclideanLoss: both bottoms must have the same first "
                                  "dimension, got %s and %s" % (a.shape, b.shape))
        if a.count != b.count:
            raise LayerSetupError("EuclideanLoss: both bottoms must have the same dimension "
                                  "per item, got %s and %s" % (a.shape, b.shape))
        self.difference.reshape_like(a)
        top[0].reshape(())

    def forward(self, bottom, top):
        d = self.difference.data
        self.xp.subtract(bottom[0].data, bottom[1].data.reshape(d.shape), out=d)
        flat = d.reshape(-1)
        top[0].data[...] = self.xp.dot(flat, flat) / (2 * bottom[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1.0, -1.0)):
            if propagate_down[i]:
                alpha = top[0].diff * (sign / bottom[i].shape[0])
                self.xp.multiply(self.difference.data.reshape(bottom[i].shape), alpha,
                                 out=bottom[i].diff)
