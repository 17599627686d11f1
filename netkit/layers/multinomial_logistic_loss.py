"""MultinomialLogisticLoss: the negative log of given class probabilities."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers
from .softmax import LabelIndexer, read_labels

# Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log, so a zero
# probability for the true class costs -log(1e-20) = 46.0517 instead of infinity.
LOG_THRESHOLD = np.float32(1e-20)


def check_one_label_per_item(layer_type, data, label):
    """Caffe's LossLayer shape rule plus one label per item (label C, H, W all 1)."""
    if not data.shape or not label.shape or data.shape[0] != label.shape[0]:
        raise LayerSetupError("%s: the data %s and label %s blobs must have the same first "
                              "dimension" % (layer_type, data.shape, label.shape))
    if label.count != data.shape[0]:
        raise LayerSetupError("%s: the label blob %s must hold one label per item (%d)"
                              % (layer_type, label.shape, data.shape[0]))


@layers.register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(Layer):
    """loss = -sum_n log(max(p[n, label_n], 1e-20)) / N.

    bottom[0]: probabilities, N items of dim = count / N values (e.g. a Softmax output);
    bottom[1]: N integer labels (truncated as Caffe's static_cast<int>). Labels get no
    gradient; the top's diff holds the loss weight, as in Caffe.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        self.indexer = LabelIndexer(self.xp)

    def reshape(self, bottom, top):
        check_one_label_per_item(self.type, bottom[0], bottom[1])
        self.num = bottom[0].shape[0]
        self.indexer.reshape(self.num, bottom[0].count // self.num, 1)
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        labels, _ = read_labels(xp, bottom[1], False, 0)
        self.positions = self.indexer.positions(labels)
        self.prob = xp.maximum(bottom[0].data.reshape(-1)[self.positions], LOG_THRESHOLD)
        top[0].data[...] = -xp.log(self.prob).sum() / self.num

    def backward(self, top, propagate_down, bottom):
        """d loss / d p[n, label_n] = -loss_weight / (N max(p, 1e-20)); zero elsewhere."""
        if len(propagate_down) > 1 and propagate_down[1]:
            raise LayerSetupError("MultinomialLogisticLoss cannot backpropagate to its label "
                                  "input (bottom[1])")
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = 0
        diff.reshape(-1)[self.positions] = top[0].diff * (-1.0 / self.num) / self.prob

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
