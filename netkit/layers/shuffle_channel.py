"""ShuffleChannel (ShuffleNet fork): interleaves the channels of `group` channel groups."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("ShuffleChannel")
class ShuffleChannelLayer(Layer):
    """Views the C channels as a group x (C / group) matrix and transposes it, so output
    channel j * group + i is input channel i * (C / group) + j. Axes past the channels
    move along unchanged; backward applies the inverse permutation to the top diff.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.group = self.layer_param.shuffle_channel_param.group
        if self.group <= 0:
            raise LayerSetupError("shuffle_channel_param.group must be > 0")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] % self.group:
            raise LayerSetupError("ShuffleChannel needs a channel axis divisible by "
                                  "shuffle_channel_param.group %d, got shape %s"
                                  % (self.group, shape))
        top[0].reshape(shape)

    def _shuffle(self, array, rows):
        """Channels as rows x (C / rows), transposed."""
        num, channels = array.shape[:2]
        grid = array.reshape(num, rows, channels // rows, -1)
        return grid.transpose(0, 2, 1, 3).reshape(array.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self._shuffle(bottom[0].data, self.group)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            channels = bottom[0].shape[1]
            bottom[0].diff[...] = self._shuffle(top[0].diff, channels // self.group)
