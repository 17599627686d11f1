"""Tile: repeat the bottom along one axis."""
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers


@layers.register("Tile")
class TileLayer(Layer):
    """The block of axes from `tile_param.axis` on is repeated `tiles` times, so
    (N, C, H, W) with axis 1 and 2 tiles gives (N, 2C, H, W) holding [x, x] per item.
    Backward sums the copies' diffs."""
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.tile_param
        if not param.HasField("tiles"):
            raise LayerSetupError("tile_param needs tiles (the number of copies)")
        if param.tiles < 1:
            raise LayerSetupError("tile_param tiles must be positive, got %d" % param.tiles)
        self.tiles = param.tiles

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self.layer_param.tile_param.axis, len(shape),
                                   "tile_param.axis")
        # Items are the axes before `axis`; each item's block (the rest) is repeated whole.
        self.items = 1
        for d in shape[:self.axis]:
            self.items *= d
        top[0].reshape(shape[:self.axis] + (shape[self.axis] * self.tiles,) +
                       shape[self.axis + 1:])

    def forward(self, bottom, top):
        top[0].data.reshape(self.items, self.tiles, -1)[...] = \
            bottom[0].data.reshape(self.items, 1, -1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.reshape(self.items, -1)[...] = \
                top[0].diff.reshape(self.items, self.tiles, -1).sum(axis=1)
