"""Concat: join bottoms along one axis."""
from ..layer import Layer, LayerSetupError, axis_or_legacy
from ..registry import layers



@layers.register("Concat")
class ConcatLayer(Layer):
    """top = the bottoms joined along `concat_param.axis` (or the legacy `concat_dim`);
    every other axis must agree. Backward hands each bottom its slice of the top diff.
    A single bottom is passed through by sharing its data and diff."""
    min_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.concat_param
        if param.HasField("axis") and param.HasField("concat_dim"):
            raise LayerSetupError("concat_param: give either axis or concat_dim, not both")

    def reshape(self, bottom, top):
        param = self.layer_param.concat_param
        first = bottom[0].shape
        self.axis = axis_or_legacy(param, "concat_dim", len(first), "concat_param")
        top_shape = list(first)
        for i, b in enumerate(bottom[1:], 1):
            if len(b.shape) != len(first) or any(
                    n != m for k, (n, m) in enumerate(zip(b.shape, first)) if k != self.axis):
                raise LayerSetupError("Concat: all bottoms must have the same shape except "
                                      "along axis %d; bottom[0] is %s, bottom[%d] is %s"
                                      % (self.axis, first, i, b.shape))
            top_shape[self.axis] += b.shape[self.axis]
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])
            return
        top[0].reshape(top_shape)
        self.slices = []
        start = 0
        lead = (slice(None),) * self.axis
        for b in bottom:
            stop = start + b.shape[self.axis]
            self.slices.append(lead + (slice(start, stop),))
            start = stop

    def forward(self, bottom, top):
        if len(bottom) > 1:
            self.xp.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        for b, part, down in zip(bottom, self.slices, propagate_down):
            if down:
                b.diff[...] = top[0].diff[part]
