"""Reorg (YOLOv2 ports): darknet's space-to-depth rearrangement of a feature map."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Reorg")
class ReorgLayer(Layer):
    """Moves stride x stride blocks of positions into channels: (N, C, H, W) becomes
    (N, C * stride^2, H / stride, W / stride), in darknet's order, which YOLOv2's
    published weights depend on.

    Darknet's reorg is not the plain space-to-depth: it reads the bottom as if it were
    (C / stride^2, H * stride, W * stride) and writes a (C, H, W) array, read back as the
    output shape. With c' = C / stride^2, output element (k, h, w) of that (C, H, W) array,
    where k = (i * stride + j) * c' + c, is input element (c, h * stride + i,
    w * stride + j) of the reinterpreted bottom. `reverse: true` runs that index map the
    other way over the same (C, H, W) grid of the bottom, writing (N, C / stride^2,
    H * stride, W * stride). Backward applies the inverse permutation to the top diff.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.reorg_param
        if not p.HasField("stride") or p.stride == 0:
            raise LayerSetupError("Reorg needs reorg_param.stride > 0")
        if top[0] is bottom[0]:
            raise LayerSetupError("Reorg cannot run in place (its top changes shape)")
        self.stride, self.reverse = p.stride, p.reverse

    def reshape(self, bottom, top):
        s = self.stride
        if bottom[0].num_axes != 4:
            raise LayerSetupError("Reorg bottom must be 4-D (N, C, H, W), got shape %s"
                                  % (bottom[0].shape,))
        num, channels, height, width = bottom[0].shape
        if channels % (s * s):
            raise LayerSetupError("Reorg needs channels divisible by reorg_param.stride^2 = "
                                  "%d, got shape %s" % (s * s, bottom[0].shape))
        if self.reverse:
            top[0].reshape(num, channels // (s * s), height * s, width * s)
            return
        if height % s or width % s:
            raise LayerSetupError("Reorg needs height and width divisible by "
                                  "reorg_param.stride %d, got shape %s" % (s, bottom[0].shape))
        top[0].reshape(num, channels * s * s, height // s, width // s)

    def _gather(self, array, shape):
        """Darknet's reorg over the bottom's (N, C, H, W) `shape`: `array` read as
        (C / s^2, H * s, W * s) blocks, returned in (C, H, W) order."""
        s, (num, channels, height, width) = self.stride, shape
        blocks = array.reshape(num, channels // (s * s), height, s, width, s)
        return blocks.transpose(0, 3, 5, 1, 2, 4)

    def _scatter(self, array, shape):
        """The inverse of `_gather`: (C, H, W) order back to (C / s^2, H * s, W * s)."""
        s, (num, channels, height, width) = self.stride, shape
        grid = array.reshape(num, s, s, channels // (s * s), height, width)
        return grid.transpose(0, 3, 4, 1, 5, 2)

    def forward(self, bottom, top):
        move = self._scatter if self.reverse else self._gather
        top[0].data[...] = move(bottom[0].data, bottom[0].shape).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        move = self._gather if self.reverse else self._scatter
        bottom[0].diff[...] = move(top[0].diff, bottom[0].shape).reshape(bottom[0].shape)
