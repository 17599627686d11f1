"""Permute (SSD): reorder the axes of a blob, e.g. NCHW -> NHWC before flattening the
per-location predictions of a detection head."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


def permute_order(order, num_axes):
    """SSD's full axis order: the given `permute_param.order`, then every axis it leaves
    out, in increasing order."""
    given = []
    for axis in order:
        if axis >= num_axes:
            raise LayerSetupError("permute_param.order %d is out of range for a bottom with "
                                  "%d axes" % (axis, num_axes))
        if axis in given:
            raise LayerSetupError("permute_param.order lists axis %d twice" % axis)
        given.append(axis)
    return tuple(given + [a for a in range(num_axes) if a not in given])


@layers.register("Permute")
class PermuteLayer(Layer):
    """top = the bottom with its axes reordered: top axis i is bottom axis order[i].

    Axes missing from `permute_param.order` follow in their natural order, as in SSD. The
    identity order passes the bottom's data through (SSD shares it); backward copies the
    top diff back, permuted by the inverse order.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.order = permute_order(self.layer_param.permute_param.order, bottom[0].num_axes)
        self.inverse = tuple(self.order.index(a) for a in range(len(self.order)))
        self.identity = self.order == tuple(range(len(self.order)))

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise LayerSetupError("Permute layer does not allow in-place computation "
                                  "(its top is its bottom)")
        if bottom[0].num_axes != len(self.order):
            raise LayerSetupError("Permute was set up for %d axes, the bottom now has %d"
                                  % (len(self.order), bottom[0].num_axes))
        top[0].reshape(tuple(bottom[0].shape[a] for a in self.order))
        if self.identity:
            top[0].data = bottom[0].data

    def forward(self, bottom, top):
        if self.identity:
            top[0].data = bottom[0].data
        else:
            top[0].data[...] = self.xp.transpose(bottom[0].data, self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.xp.transpose(top[0].diff, self.inverse)
