"""Embed: look up one learned row per integer input (a one-hot InnerProduct)."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


def scatter_add_rows(xp, index, rows, num):
    """(num, D) float64 array whose row k is the sum of the `rows` (M, D) whose `index` (M,)
    is k; repeated indices accumulate. One bincount over flat (row, column) positions."""
    width = rows.shape[1]
    flat = (index.reshape(-1, 1) * width + xp.arange(width)).reshape(-1)
    return xp.bincount(flat, weights=rows.reshape(-1), minlength=num * width) \
        .reshape(num, width)


@layers.register("Embed")
class EmbedLayer(Layer):
    """top[..., :] = weight[int(bottom[...])] (+ bias): the top is the bottom's shape plus one
    axis of num_output. Blobs: weight (input_dim, num_output), transposed from
    InnerProduct's as in Caffe, and with bias_term a bias (num_output,).

    The bottom holds indices in [0, input_dim) stored as floats; it gets no gradient (Caffe
    refuses to backpropagate to it). Rows looked up several times accumulate their diffs.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.embed_param
        if p.num_output < 1:
            raise LayerSetupError("embed_param num_output must be positive")
        if p.input_dim < 1:
            raise LayerSetupError("embed_param input_dim must be positive")
        self.num_output, self.input_dim, self.bias_term = p.num_output, p.input_dim, p.bias_term
        weight_shape = (self.input_dim, self.num_output)
        self.weight_and_bias(weight_shape, (self.num_output,) if self.bias_term else None,
                             p.weight_filler, p.bias_filler)

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def _indices(self, bottom):
        # Caffe's static_cast<int>: truncation toward zero.
        return bottom[0].data.reshape(-1).astype(self.xp.int64)

    def forward(self, bottom, top):
        y = top[0].data.reshape(-1, self.num_output)
        self.xp.take(self.blobs[0].data, self._indices(bottom), axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise LayerSetupError("Embed cannot backpropagate to its bottom (the indices)")
        prop = list(self.param_propagate_down) + [False] * len(self.blobs)
        dy = top[0].diff.reshape(-1, self.num_output)
        if prop[0]:
            self.blobs[0].diff += scatter_add_rows(self.xp, self._indices(bottom), dy,
                                                   self.input_dim).astype(self.xp.float32)
        if self.bias_term and prop[1]:
            self.blobs[1].diff += dy.sum(axis=0)
