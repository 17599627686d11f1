"""Reduction: sum, absolute sum, sum of squares or mean over the trailing axes."""
from .. import netkit_pb2 as pb
from ..layer import Layer, canonical_axis
from ..registry import layers

SUM = pb.ReductionParameter.SUM
ASUM = pb.ReductionParameter.ASUM
SUMSQ = pb.ReductionParameter.SUMSQ
MEAN = pb.ReductionParameter.MEAN


@layers.register("Reduction")
class ReductionLayer(Layer):
    """Every axis from `reduction_param.axis` on is reduced away: the top keeps the axes
    before it (axis 0, the default, gives a scalar). The result is scaled by `coeff`; MEAN is
    SUM with coeff divided by the reduced count. Backward: coeff times the top diff, times
    sign(x) for ASUM and 2x for SUMSQ."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.op = self.layer_param.reduction_param.operation

    def reshape(self, bottom, top):
        param = self.layer_param.reduction_param
        shape = bottom[0].shape
        self.axis = canonical_axis(param.axis, len(shape), "reduction_param.axis")
        top[0].reshape(shape[:self.axis])
        self.num = top[0].count
        dim = bottom[0].count // self.num if self.num else 0
        self.coeff = param.coeff / dim if self.op == MEAN else param.coeff

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.num, -1)
        y = top[0].data.reshape(self.num)
        if self.op in (SUM, MEAN):
            x.sum(axis=1, out=y)
        elif self.op == ASUM:
            xp.abs(x).sum(axis=1, out=y)
        else:
            xp.square(x).sum(axis=1, out=y)
        if self.coeff != 1:
            y *= self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        scale = top[0].diff.reshape(self.num, 1) * self.coeff
        dx = bottom[0].diff.reshape(self.num, -1)
        x = bottom[0].data.reshape(self.num, -1)
        if self.op in (SUM, MEAN):
            dx[...] = scale
        elif self.op == ASUM:
            xp.multiply(xp.sign(x), scale, out=dx)
        else:
            xp.multiply(x, 2 * scale, out=dx)
