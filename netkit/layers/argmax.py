"""ArgMax: the indices (or values) of the top_k largest entries."""
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers

# Below every float32 (including -FLT_MAX) yet finite: stands for -inf inputs so that -inf
# stays free to mark entries already taken.
BELOW_FLOAT32 = -1e308


@layers.register("ArgMax")
class ArgMaxLayer(Layer):
    """Caffe's ArgMax, which has no backward.

    With `argmax_param.axis`: the top is the bottom with that axis cut to top_k, holding the
    indices of the largest entries along it (their values with out_max_val). Without: each
    item (axis 0) is flattened and the top is (N, 1, top_k) padded with ones to the bottom's
    axes; out_max_val makes it (N, 2, top_k) with the indices, then the values. Entries come
    in descending order and, like Caffe's sort of (value, index) pairs, ties go to the larger
    index first. Indices are written as floats.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.argmax_param
        if param.top_k < 1:
            raise LayerSetupError("argmax_param top_k must be at least 1, got %d" % param.top_k)
        self.top_k = param.top_k
        self.out_max_val = param.out_max_val
        self.has_axis = param.HasField("axis")

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            self.axis = canonical_axis(self.layer_param.argmax_param.axis, len(shape),
                                       "argmax_param.axis")
            dim = shape[self.axis]
            top_shape = shape[:self.axis] + (self.top_k,) + shape[self.axis + 1:]
        else:
            dim = bottom[0].count // shape[0] if shape and shape[0] else 0
            top_shape = [1] * max(len(shape), 3)
            top_shape[0] = shape[0]
            top_shape[1] = 2 if self.out_max_val else 1
            top_shape[2] = self.top_k
        if self.top_k > dim:
            raise LayerSetupError("argmax_param top_k %d exceeds the %d entries it ranks"
                                  % (self.top_k, dim))
        self.dim = dim
        top[0].reshape(tuple(top_shape))

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.has_axis:
            shape = x.shape
            lead = 1
            for d in shape[:self.axis]:
                lead *= d
            # (lead, dim, trail) -> rows of `dim` candidates.
            rows = x.reshape(lead, self.dim, -1).transpose(0, 2, 1).reshape(-1, self.dim)
            index, value = self._top_k(rows)
            result = value if self.out_max_val else index
            y.reshape(lead, self.top_k, -1)[...] = \
                result.reshape(lead, -1, self.top_k).transpose(0, 2, 1)
        else:
            index, value = self._top_k(x.reshape(x.shape[0], self.dim))
            out = y.reshape(x.shape[0], -1, self.top_k)
            out[:, 0] = index
            if self.out_max_val:
                out[:, 1] = value

    def _top_k(self, rows):
        """(indices, values) of each row's top_k entries, both float32 (M, top_k).

        Each round takes the last maximum (the first maximum of the reversed row) and marks
        it -inf; a float64 working copy keeps that mark below every real value.
        """
        xp = self.xp
        m = rows.shape[0]
        work = rows[:, ::-1].astype(xp.float64)
        xp.maximum(work, BELOW_FLOAT32, out=work)
        which = xp.arange(m)
        index = xp.empty((m, self.top_k), dtype=xp.int64)
        for j in range(self.top_k):
            last = xp.argmax(work, axis=1)
            index[:, j] = self.dim - 1 - last
            work[which, last] = -xp.inf
        value = xp.take_along_axis(rows, index, axis=1)
        return index.astype(xp.float32), value
