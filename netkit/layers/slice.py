"""Slice: cut one bottom into several tops along an axis."""
from ..layer import Layer, LayerSetupError, axis_or_legacy
from ..registry import layers


@layers.register("Slice")
class SliceLayer(Layer):
    """The tops are consecutive pieces of the bottom along `slice_param.axis` (or the legacy
    `slice_dim`): cut at the `slice_point`s (one fewer than the tops), or in equal parts
    when none are given. Backward puts each top's diff back in its piece of the bottom."""
    exact_num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.slice_param
        if param.HasField("axis") and param.HasField("slice_dim"):
            raise LayerSetupError("slice_param: give either axis or slice_dim, not both")
        self.points = list(param.slice_point)
        if self.points and len(self.points) != len(top) - 1:
            raise LayerSetupError("slice_param gives %d slice_point(s) for %d tops; give one "
                                  "fewer than the tops" % (len(self.points), len(top)))

    def reshape(self, bottom, top):
        param = self.layer_param.slice_param
        shape = bottom[0].shape
        self.axis = axis_or_legacy(param, "slice_dim", len(shape), "slice_param")
        size = shape[self.axis]
        if self.points:
            if len(top) > size:
                raise LayerSetupError("Slice: %d tops cannot be cut from axis %d of size %d"
                                      % (len(top), self.axis, size))
            bounds = [0] + self.points + [size]
            for prev, point in zip(bounds, bounds[1:-1]):
                if point <= prev:
                    raise LayerSetupError("slice_param slice_point values must increase from "
                                          "above 0, got %s" % (self.points,))
            if bounds[-2] > size:
                raise LayerSetupError("slice_param slice_point %d is beyond axis %d of size %d"
                                      % (bounds[-2], self.axis, size))
        else:
            if size % len(top):
                raise LayerSetupError("Slice: %d tops do not divide axis %d of size %d evenly; "
                                      "give slice_point" % (len(top), self.axis, size))
            step = size // len(top)
            bounds = list(range(0, size + 1, step))
        lead = (slice(None),) * self.axis
        self.pieces = [lead + (slice(start, stop),) for start, stop in zip(bounds, bounds[1:])]
        for t, (start, stop) in zip(top, zip(bounds, bounds[1:])):
            t.reshape(shape[:self.axis] + (stop - start,) + shape[self.axis + 1:])

    def forward(self, bottom, top):
        for t, piece in zip(top, self.pieces):
            t.data[...] = bottom[0].data[piece]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            for t, piece in zip(top, self.pieces):
                bottom[0].diff[piece] = t.diff
