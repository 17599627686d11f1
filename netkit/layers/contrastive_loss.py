"""ContrastiveLoss: pull similar pairs together, push dissimilar ones beyond a margin."""
from ..layer import Layer, LayerSetupError
from ..registry import layers

# Caffe adds this to the distance in the dissimilar-pair gradient, keeping it finite
# for identical feature vectors.
DIST_EPSILON = 1e-4


@layers.register("ContrastiveLoss")
class ContrastiveLossLayer(Layer):
    """loss = sum_n [y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2] / (2 N).

    bottom[0], bottom[1]: N x C features a and b (any trailing axes of size 1);
    bottom[2]: N pair labels y, similar when int(y) != 0; d_n = ||a_n - b_n||.
    `contrastive_loss_param.legacy_version` uses max(margin - d_n^2, 0) for dissimilar
    pairs instead. Both features get a gradient (of opposite sign), the labels none; the
    top's diff holds the loss weight, as in Caffe.
    """
    exact_num_bottom = 3
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        param = self.layer_param.contrastive_loss_param
        self.margin = param.margin
        self.legacy = param.legacy_version

    def reshape(self, bottom, top):
        a, b, y = bottom
        if not a.shape or a.shape[:2] != b.shape[:2] or a.count != b.count:
            raise LayerSetupError("ContrastiveLoss: the two feature blobs must both be N x C, "
                                  "got %s and %s" % (a.shape, b.shape))
        if any(d != 1 for d in a.shape[2:] + b.shape[2:]):
            raise LayerSetupError("ContrastiveLoss: feature blobs must be N x C (height and "
                                  "width 1), got %s and %s" % (a.shape, b.shape))
        if not y.shape or y.shape[0] != a.shape[0] or y.count != a.shape[0]:
            raise LayerSetupError("ContrastiveLoss: the label blob %s must hold one "
                                  "similarity label per pair (%d)" % (y.shape, a.shape[0]))
        self.num = a.shape[0]
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        a, b, y = bottom
        self.diff = a.data.reshape(self.num, -1) - b.data.reshape(self.num, -1)
        self.dist_sq = (self.diff * self.diff).sum(axis=1)
        self.similar = y.data.reshape(-1).astype(xp.int32) != 0
        if self.legacy:
            apart = xp.maximum(self.margin - self.dist_sq, 0)
        else:
            apart = xp.maximum(self.margin - xp.sqrt(self.dist_sq), 0)
            apart = apart * apart
        loss = xp.where(self.similar, self.dist_sq, apart).sum()
        top[0].data[...] = loss / (2.0 * self.num)

    def backward(self, top, propagate_down, bottom):
        """Similar pairs: +-(a - b) loss_weight / N. Dissimilar pairs inside the margin:
        -+(a - b) loss_weight / N (legacy), or -+(margin - d)/(d + 1e-4) times that."""
        xp = self.xp
        if self.legacy:
            inside = (self.margin - self.dist_sq) > 0
            dissimilar = -1.0 * inside
        else:
            dist = xp.sqrt(self.dist_sq)
            mdist = self.margin - dist
            dissimilar = -mdist / (dist + DIST_EPSILON) * (mdist > 0)
        coeff = xp.where(self.similar, 1.0, dissimilar).astype(xp.float32)
        for i, sign in enumerate((1.0, -1.0)):
            if propagate_down[i]:
                alpha = top[0].diff * (sign / self.num)
                grad = self.diff * (coeff * alpha)[:, None]
                bottom[i].diff[...] = grad.reshape(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2
