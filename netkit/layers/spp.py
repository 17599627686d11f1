"""SPP: spatial pyramid pooling, a fixed-length vector from any image size."""
from .. import netkit_pb2 as pb
from ..blob import Blob
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .pooling import PoolingLayer

METHODS = {pb.SPPParameter.MAX: pb.PoolingParameter.MAX,
           pb.SPPParameter.AVE: pb.PoolingParameter.AVE,
           pb.SPPParameter.STOCHASTIC: pb.PoolingParameter.STOCHASTIC}


def level_pooling(level, height, width, method):
    """Caffe's pooling parameters for pyramid level `level` (2^level bins per side): the
    kernel covers ceil(size / bins) pixels, strides by itself, and pads half the shortfall
    (rounded up) on each side."""
    bins = 2 ** level
    param = pb.PoolingParameter(pool=method)
    kernel_h, kernel_w = -(-height // bins), -(-width // bins)
    param.kernel_h, param.kernel_w = kernel_h, kernel_w
    param.stride_h, param.stride_w = kernel_h, kernel_w
    param.pad_h = (kernel_h * bins - height + 1) // 2
    param.pad_w = (kernel_w * bins - width + 1) // 2
    return param


@layers.register("SPP")
class SPPLayer(Layer):
    """Pools the bottom (N, C, H, W) at `spp_param.pyramid_height` levels, level l into
    2^l x 2^l bins (MAX or AVE), and joins every level's (N, C bins bins) flattening into
    the top (N, C sum of bins^2), as Caffe composes Split, Pooling, Flatten and Concat. With
    one level the top is the pooling's own (N, C, 1, 1). The levels are netkit Pooling
    layers, rebuilt when the bottom's shape changes; each reads the bottom's data and keeps
    its own diff (a split), and backward sums those diffs.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.spp_param
        if p.pyramid_height < 1:
            raise LayerSetupError("spp_param pyramid_height must be at least 1, got %d"
                                  % p.pyramid_height)
        if p.pool not in METHODS:
            raise LayerSetupError("spp_param pool %s is not supported; use MAX or AVE"
                                  % pb.SPPParameter.PoolMethod.Name(p.pool))
        self.height = p.pyramid_height
        self.method = METHODS[p.pool]
        self._shape = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError("SPP bottom must have 4 axes (num, channels, height, width), "
                                  "got shape %s" % (shape,))
        if shape != self._shape:
            self._build(bottom, top)
            self._shape = shape
        if self.height == 1:
            self.levels[0][0].reshape(bottom, top)
            return
        self._share_bottom(bottom)
        for pool, level_bottom, level_top in self.levels:
            pool.reshape(level_bottom, level_top)
        self.parts = []
        start = 0
        for _, _, level_top in self.levels:
            _, channels, bins_h, bins_w = level_top[0].shape
            stop = start + channels * bins_h * bins_w
            self.parts.append((start, stop))
            start = stop
        top[0].reshape(shape[0], start)

    def _build(self, bottom, top):
        """One Pooling layer per level; level 0 reads and writes the bottom itself, the
        others a blob sharing its data with a diff of their own."""
        _, _, height, width = bottom[0].shape
        self.levels = []
        for level in range(self.height):
            param = pb.LayerParameter(name="%s_level%d" % (self.name, level), type="Pooling")
            param.pooling_param.CopyFrom(level_pooling(level, height, width, self.method))
            pool = PoolingLayer(param, self.phase, self.backend)
            if self.height == 1:
                level_bottom, level_top = bottom, top
            elif level == 0:
                level_bottom, level_top = bottom, [Blob((), self.backend)]
            else:
                level_bottom, level_top = [Blob((), self.backend)], [Blob((), self.backend)]
                level_bottom[0].share_data(bottom[0])
            try:
                pool.setup(level_bottom, level_top)
                pool.reshape(level_bottom, level_top)
            except LayerSetupError as e:
                raise LayerSetupError("SPP pyramid level %d (%d bins per side) does not fit "
                                      "the %dx%d bottom: %s"
                                      % (level, 2 ** level, height, width, e)) from None
            self.levels.append((pool, level_bottom, level_top))

    def _share_bottom(self, bottom):
        for _, level_bottom, _ in self.levels[1:]:
            level_bottom[0].share_data(bottom[0])

    def forward(self, bottom, top):
        if self.height == 1:
            self.levels[0][0].forward(bottom, top)
            return
        num = bottom[0].shape[0]
        # Re-share: the bottom's producer may have replaced its data array since reshape.
        self._share_bottom(bottom)
        for (pool, level_bottom, level_top), (start, stop) in zip(self.levels, self.parts):
            pool.forward(level_bottom, level_top)
            top[0].data[:, start:stop] = level_top[0].data.reshape(num, -1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.height == 1:
            self.levels[0][0].backward(top, propagate_down, bottom)
            return
        for (pool, level_bottom, level_top), (start, stop) in zip(self.levels, self.parts):
            level_top[0].diff[...] = top[0].diff[:, start:stop].reshape(level_top[0].shape)
            pool.backward(level_top, [True], level_bottom)
            if level_bottom[0] is not bottom[0]:
                bottom[0].diff += level_bottom[0].diff
