"""Axpy (SENet and MobileNet ports): a channel-wise scale and a sum in one layer."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Axpy")
class AxpyLayer(Layer):
    """top = a * x + y, SENet's excitation step: bottom[0] is a, one scale per image and
    channel, shaped (N, C) or (N, C, 1, 1); bottom[1] is x and bottom[2] is y, both
    (N, C, ...) of one shape, which top takes. Gradients flow to all three bottoms:
    da = sum over each channel's positions of top_diff * x, dx = a * top_diff,
    dy = top_diff.
    """
    exact_num_bottom = 3
    exact_num_top = 1

    def reshape(self, bottom, top):
        scale, x, y = (b.shape for b in bottom)
        if len(x) < 2 or x != y:
            raise LayerSetupError("Axpy bottom[1] (x) and bottom[2] (y) must have one shape "
                                  "with at least 2 axes, got %s and %s" % (x, y))
        if tuple(scale[:2]) != tuple(x[:2]) or any(d != 1 for d in scale[2:]):
            raise LayerSetupError("Axpy bottom[0] (the scale) must be (N, C) or (N, C, 1, 1) "
                                  "with x's N, C %s, got shape %s" % (tuple(x[:2]), scale))
        top[0].reshape(x)

    def _per_channel(self, array, like):
        """(N, C, 1, ...) view of a (N, C) array against `like`'s axes."""
        return array.reshape(like.shape[:2] + (1,) * (len(like.shape) - 2))

    def forward(self, bottom, top):
        scale = self._per_channel(bottom[0].data, bottom[1])
        top[0].data[...] = scale * bottom[1].data + bottom[2].data

    def backward(self, top, propagate_down, bottom):
        dtop = top[0].diff
        if propagate_down[0]:
            x = bottom[1].data
            grad = (dtop * x).reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
            bottom[0].diff[...] = grad.reshape(bottom[0].shape)
        if propagate_down[1]:
            bottom[1].diff[...] = self._per_channel(bottom[0].data, bottom[1]) * dtop
        if propagate_down[2]:
            bottom[2].diff[...] = dtop
