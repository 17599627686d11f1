"""Dropout: zero a random fraction of the input while training."""
from ..layer import TRAIN, LayerSetupError
from ..registry import layers
from .neuron import NeuronLayer


@layers.register("Dropout")
class DropoutLayer(NeuronLayer):
    """TRAIN: y = x * mask * scale with mask ~ Bernoulli(1 - dropout_ratio), fresh each pass.

    With scale_train (the default) scale = 1 / (1 - dropout_ratio) and TEST is the
    identity, so expected activations match between phases; without it TRAIN keeps the
    surviving values unscaled and TEST multiplies by (1 - dropout_ratio). The mask comes
    from the backend's RandomState, so a seed gives the same masks on every backend.
    May run in place.
    """

    def setup(self, bottom, top):
        param = self.layer_param.dropout_param
        self.ratio = param.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise LayerSetupError("dropout_param.dropout_ratio must be in [0, 1), got %g"
                                  % self.ratio)
        self.scale_train = param.scale_train  # Intel Caffe's field; BVLC always scales
        if self.phase == TRAIN:
            self.scale = 1.0 / (1.0 - self.ratio) if self.scale_train else 1.0
        else:
            self.scale = 1.0 if self.scale_train else 1.0 - self.ratio
        self.mask = None

    def forward(self, bottom, top):
        xp = self.xp
        if self.phase == TRAIN:
            keep = self.backend.random.random_sample(bottom[0].shape) > self.ratio
            # The scale is folded into the mask: one multiply forward, one backward.
            self.mask = keep * xp.float32(self.scale)
            xp.multiply(bottom[0].data, self.mask, out=top[0].data)
        elif self.scale != 1.0:
            xp.multiply(bottom[0].data, self.scale, out=top[0].data)
        elif top[0] is not bottom[0]:
            top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        if self.phase == TRAIN:
            xp.multiply(top[0].diff, self.mask, out=bottom[0].diff)
        elif self.scale != 1.0:
            xp.multiply(top[0].diff, self.scale, out=bottom[0].diff)
        elif top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
