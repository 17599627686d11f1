"""SmoothL1Loss (Fast/Faster R-CNN fork): the box-regression loss, normalized by the batch."""
import numpy as np

from ..blob import Blob
from ..layer import Layer, LayerSetupError
from ..registry import layers


def _legacy_shape(shape):
    """Caffe's (num, channels, height, width) view of a blob of up to 4 axes."""
    return tuple(shape) + (1,) * (4 - len(shape))


@layers.register("SmoothL1Loss")
class SmoothL1LossLayer(Layer):
    """loss = sum(w_out * f(w_in * (pred - target))) / num, num = bottom[0]'s first axis,

    f(x) = 0.5 (sigma x)^2 where |x| < 1 / sigma^2, |x| - 0.5 / sigma^2 elsewhere.

    Bottoms: predictions, targets and optionally inside_weights and outside_weights (both or
    neither). All bottoms have the same num, channels, height and width (Caffe's legacy
    shape, so an (R, 8, 1, 1) prediction meets an (R, 8) target, as in R-FCN). Predictions
    and targets get opposite gradients, scaled by the loss weight the top's diff holds; as
    in the fork, the weights get none (their diff is zeroed if asked for).
    """
    min_bottom = 2
    max_bottom = 4
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        sigma = np.float32(self.layer_param.smooth_l1_loss_param.sigma)
        self.sigma2 = sigma * sigma
        if len(bottom) == 3:
            raise LayerSetupError("SmoothL1Loss: weights need both inside_weights and "
                                  "outside_weights (4 bottoms), got 3 bottoms")
        self.difference = Blob((), self.backend)

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom):
            if len(b.shape) > 4 or _legacy_shape(b.shape) != _legacy_shape(bottom[0].shape):
                raise LayerSetupError("SmoothL1Loss: bottom[%d] has shape %s, bottom[0] has %s; "
                                      "they must agree as (num, channels, height, width)"
                                      % (i, b.shape, bottom[0].shape))
        self.difference.reshape_like(bottom[0])
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        shape = bottom[0].shape
        d = self.difference.data
        xp.subtract(bottom[0].data, bottom[1].data.reshape(shape), out=d)
        if len(bottom) == 4:
            d *= bottom[2].data.reshape(shape)
        magnitude = xp.abs(d)
        errors = xp.where(magnitude < 1 / self.sigma2, (0.5 * self.sigma2) * d * d,
                          magnitude - 0.5 / self.sigma2)
        if len(bottom) == 4:
            errors *= bottom[3].data.reshape(shape)
        top[0].data[...] = errors.sum() / shape[0]

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        d = self.difference.data
        grad = xp.where(xp.abs(d) < 1 / self.sigma2, self.sigma2 * d, xp.sign(d))
        if len(bottom) == 4:
            grad = grad * bottom[2].data.reshape(d.shape) * bottom[3].data.reshape(d.shape)
        for i, sign in enumerate((1.0, -1.0)):
            if propagate_down[i]:
                alpha = top[0].diff * (sign / bottom[i].shape[0])
                bottom[i].diff[...] = (grad * alpha).reshape(bottom[i].shape)
        for i in range(2, len(bottom)):
            if propagate_down[i]:
                bottom[i].diff[...] = 0
