"""InnerProduct: Caffe's fully connected layer, top = bottom . weight^T + bias.

The bottom is flattened from `axis` on (default 1) into K inputs per row; axes before it are
rows (M). Blobs: weight (num_output, K), or (K, num_output) with `transpose: true`, and with
bias_term a bias (num_output,).
"""
from ..layer import Layer, LayerSetupError
from ..ops.blas import add_product
from ..ops.workspace import Workspace
from ..registry import layers


@layers.register("InnerProduct")
class InnerProductLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.check_arity(bottom, top)
        p = self.layer_param.inner_product_param
        if p.num_output < 1:
            raise LayerSetupError("inner_product_param num_output must be positive")
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = self._axis(bottom[0].shape)
        self.inputs = _count(bottom[0].shape[self.axis:])
        weight_shape = ((self.inputs, self.num_output) if self.transpose
                        else (self.num_output, self.inputs))
        self.weight_and_bias(weight_shape, (self.num_output,) if self.bias_term else None,
                             p.weight_filler, p.bias_filler)
        self.ws = Workspace(self.xp)

    def _axis(self, shape):
        axis = self.layer_param.inner_product_param.axis
        if not -len(shape) <= axis < len(shape):
            raise LayerSetupError("inner_product_param axis %d is out of range for bottom "
                                  "shape %s" % (axis, shape))
        return axis % len(shape)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = self._axis(shape)
        if _count(shape[self.axis:]) != self.inputs:
            raise LayerSetupError("InnerProduct bottom shape %s gives %d inputs per row from "
                                  "axis %d; the weights expect %d"
                                  % (shape, _count(shape[self.axis:]), self.axis, self.inputs))
        self.rows = _count(shape[:self.axis])
        top[0].reshape(shape[:self.axis] + (self.num_output,))

    def _weight_nk(self):
        """The weights as (num_output, K), a view in either storage order."""
        w = self.blobs[0].data
        return w.T if self.transpose else w

    def forward(self, bottom, top):
        """top^T = weight . bottom^T: BLAS streams the (large) weights faster as the left
        operand; the (small) product is then transposed into the top."""
        x = bottom[0].data.reshape(self.rows, self.inputs)
        y = top[0].data.reshape(self.rows, self.num_output)
        product = self.ws.get("top_t", (self.num_output, self.rows))
        self.xp.matmul(self._weight_nk(), x.T, out=product)
        y[...] = product.T
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        x = bottom[0].data.reshape(self.rows, self.inputs)
        dy = top[0].diff.reshape(self.rows, self.num_output)
        if self.param_propagate_down[0]:
            a, b = (x.T, dy) if self.transpose else (dy.T, x)
            add_product(self.xp, a, b, self.blobs[0].diff,
                        lambda shape: self.ws.get("product", shape))
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            xp.matmul(dy, self._weight_nk(), out=bottom[0].diff.reshape(self.rows, self.inputs))


def _count(dims):
    n = 1
    for d in dims:
        n *= d
    return n
