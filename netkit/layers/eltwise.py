"""Eltwise: element-wise PROD, SUM (with coefficients) or MAX of equally shaped bottoms."""
from .. import netkit_pb2 as pb
from ..layer import Layer, LayerSetupError
from ..registry import layers

PROD = pb.EltwiseParameter.PROD
SUM = pb.EltwiseParameter.SUM
MAX = pb.EltwiseParameter.MAX


@layers.register("Eltwise")
class EltwiseLayer(Layer):
    """top = prod(bottoms), sum(coeff_i * bottom_i) or max(bottoms), element by element.

    PROD's gradient is the product of the other bottoms (stable_prod_grad, the default) or
    top / bottom_i. MAX sends each element's gradient to the bottom that won it, with
    Caffe's tie rule: bottom[1] beats bottom[0] on a tie, and after that a later bottom wins
    only when strictly greater.
    """
    min_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.eltwise_param
        self.operation = param.operation
        if param.coeff and len(param.coeff) != len(bottom):
            raise LayerSetupError("eltwise_param.coeff takes one coefficient per bottom blob: "
                                  "got %d for %d bottoms" % (len(param.coeff), len(bottom)))
        if param.coeff and self.operation != SUM:
            raise LayerSetupError("eltwise_param.coeff is only allowed with operation SUM")
        self.coeffs = list(param.coeff) or [1.0] * len(bottom)
        self.stable_prod_grad = param.stable_prod_grad

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise LayerSetupError("Eltwise: all bottoms must have the same shape; "
                                      "bottom[0] is %s, bottom[%d] is %s"
                                      % (bottom[0].shape, i, b.shape))
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        xp = self.xp
        out = top[0].data
        if self.operation == PROD:
            xp.multiply(bottom[0].data, bottom[1].data, out=out)
            for b in bottom[2:]:
                out *= b.data
        elif self.operation == SUM:
            self._sum(bottom, out)
        else:
            a, b = bottom[0].data, bottom[1].data
            # Caffe: bottom[0] wins only when strictly greater than bottom[1].
            index_type = xp.int8 if len(bottom) < 128 else xp.int32
            winner = xp.logical_not(a > b).astype(index_type)
            xp.maximum(a, b, out=out)
            for k, blob in enumerate(bottom[2:], 2):
                # Every earlier winner index is below k, so max() records k where it wins.
                xp.maximum(winner, (blob.data > out) * index_type(k), out=winner)
                xp.maximum(out, blob.data, out=out)
            self.winner = winner

    def _sum(self, bottom, out):
        xp = self.xp
        for i, (b, c) in enumerate(zip(bottom, self.coeffs)):
            if i == 0:
                if c == 1:
                    out[...] = b.data
                else:
                    xp.multiply(b.data, c, out=out)
            elif c == 1:
                out += b.data
            else:
                out += c * b.data

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        dy = top[0].diff
        for i, down in enumerate(propagate_down):
            if not down:
                continue
            dx = bottom[i].diff
            if self.operation == PROD:
                if self.stable_prod_grad:
                    others = [b.data for j, b in enumerate(bottom) if j != i]
                    xp.multiply(others[0], dy, out=dx)
                    for o in others[1:]:
                        dx *= o
                else:
                    xp.divide(top[0].data, bottom[i].data, out=dx)
                    dx *= dy
            elif self.operation == SUM:
                if self.coeffs[i] == 1:
                    dx[...] = dy
                else:
                    xp.multiply(dy, self.coeffs[i], out=dx)
            else:
                xp.multiply(dy, self.winner == i, out=dx)
