"""MVN: mean-variance normalization of each image's channels (or of each whole image)."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("MVN")
class MVNLayer(Layer):
    """y = x - mean, then / (std + eps) if normalize_variance (default true).

    Statistics are taken per (image, channel) over H x W, or per image over C x H x W with
    across_channels. std is the biased (population) deviation and eps is added to it, not
    to the variance. Caffe sees the bottom through the legacy num/channels/height/width
    accessors, so the top is 4-D: an (N, D) bottom gives an (N, D, 1, 1) top (in place the
    blob keeps its shape; the values are the same).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.mvn_param
        self.normalize_variance = param.normalize_variance
        self.across_channels = param.across_channels
        self.eps = param.eps

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 4:
            raise LayerSetupError("MVN takes bottoms of at most 4 axes (Caffe's legacy "
                                  "num/channels/height/width), got shape %s" % (shape,))
        legacy = tuple(shape) + (1,) * (4 - len(shape))
        if top[0] is not bottom[0]:
            top[0].reshape(legacy)
        groups = legacy[0] if self.across_channels else legacy[0] * legacy[1]
        self.groups = (groups, bottom[0].count // groups if groups else 0)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.groups)
        y = top[0].data.reshape(self.groups)
        xp.subtract(x, x.mean(axis=1, keepdims=True), out=y)
        if not self.normalize_variance:
            return
        std = xp.sqrt(xp.square(y).mean(axis=1, keepdims=True))
        std += self.eps
        y /= std
        self.std = std
        # Kept for backward: a later in-place layer may overwrite the top.
        self.y = xp.copy(y)

    def backward(self, top, propagate_down, bottom):
        """dx = dy - mean(dy), then / (std + eps) after also subtracting y * mean(dy * y),
        the means over each normalized group (Caffe's formula, which treats eps as 0 in
        the derivative of the std)."""
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = top[0].diff.reshape(self.groups)
        dx = bottom[0].diff.reshape(self.groups)
        correction = dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            correction = correction + self.y * (dy * self.y).mean(axis=1, keepdims=True)
        xp.subtract(dy, correction, out=dx)
        if self.normalize_variance:
            dx /= self.std
