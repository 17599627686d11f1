"""SigmoidCrossEntropyLoss: the cross-entropy of targets in [0, 1] and sigmoid(scores)."""
from ..blob import Blob
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .loss_util import BATCH_SIZE, normalization_mode, normalizer
from .softmax import read_labels


@layers.register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(Layer):
    """loss = -sum [t log s(x) + (1 - t) log(1 - s(x))] / n, s the logistic sigmoid.

    Computed as Caffe does, stably for any x: x (t - [x >= 0]) - log(1 + exp(-|x|)) per
    element. bottom[0]: scores; bottom[1]: targets, the same count. Elements whose target
    truncates to `loss_param.ignore_label` are skipped. The normalizer n defaults to
    BATCH_SIZE (the first axis), unlike SoftmaxWithLoss; `normalize: true` means VALID.
    Targets get no gradient; the top's diff holds the loss weight, as in Caffe.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        loss_param = self.layer_param.loss_param
        self.has_ignore = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        self.normalization = normalization_mode(loss_param, default=BATCH_SIZE)
        self.sigmoid = Blob((), self.backend)

    def reshape(self, bottom, top):
        data, target = bottom
        if not data.shape or not target.shape or data.shape[0] != target.shape[0]:
            raise LayerSetupError("SigmoidCrossEntropyLoss: the data %s and target %s blobs "
                                  "must have the same first dimension" % (data.shape,
                                                                          target.shape))
        if data.count != target.count:
            raise LayerSetupError("SigmoidCrossEntropyLoss: the data %s and target %s blobs "
                                  "must have the same count" % (data.shape, target.shape))
        self.outer = data.shape[0]
        self.inner = data.count // self.outer
        self.sigmoid.reshape_like(data)
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        loss = x * (t - (x >= 0)) - xp.log1p(xp.exp(-xp.abs(x)))
        _, valid = read_labels(xp, bottom[1], self.has_ignore, self.ignore_label)
        if valid is not None:
            loss = loss.reshape(-1) * valid
        # sigmoid(x) = (1 + tanh(x / 2)) / 2 never overflows, as Caffe's Sigmoid layer.
        s = self.sigmoid.data
        xp.multiply(x, 0.5, out=s)
        xp.tanh(s, out=s)
        s *= 0.5
        s += 0.5
        self.valid = valid
        self.norm = normalizer(xp, self.normalization, self.outer, self.inner, valid)
        top[0].data[...] = -loss.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        """d loss / d x = (sigmoid(x) - t) * loss_weight / n, zero at ignored targets."""
        if len(propagate_down) > 1 and propagate_down[1]:
            raise LayerSetupError("SigmoidCrossEntropyLoss cannot backpropagate to its target "
                                  "input (bottom[1])")
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        self.xp.subtract(self.sigmoid.data, bottom[1].data.reshape(diff.shape), out=diff)
        if self.valid is not None:
            diff *= self.valid.reshape(diff.shape)
        diff *= top[0].diff / self.norm

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
