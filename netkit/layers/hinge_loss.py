"""HingeLoss: one-vs-all hinge loss on class scores (L1 or squared L2)."""
from .. import netkit_pb2 as pb
from ..blob import Blob
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .multinomial_logistic_loss import check_one_label_per_item
from .softmax import LabelIndexer, read_labels

L1 = pb.HingeLossParameter.L1
L2 = pb.HingeLossParameter.L2


@layers.register("HingeLoss")
class HingeLossLayer(Layer):
    """loss = sum_n sum_k max(0, 1 - t_nk x_nk)^p / N, t_nk = +1 for the label, -1 otherwise.

    bottom[0]: N items of dim = count / N scores; bottom[1]: N integer labels.
    `hinge_loss_param.norm` L1 (p = 1, the default) or L2 (p = 2). Labels get no gradient;
    the top's diff holds the loss weight, as in Caffe. The L1 gradient at a margin of
    exactly 0 is 0, as Caffe's sign().
    """
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        self.norm = self.layer_param.hinge_loss_param.norm
        if self.norm not in (L1, L2):
            raise LayerSetupError("hinge_loss_param.norm must be L1 or L2")
        self.indexer = LabelIndexer(self.xp)
        self.margin = Blob((), self.backend)

    def reshape(self, bottom, top):
        check_one_label_per_item(self.type, bottom[0], bottom[1])
        self.num = bottom[0].shape[0]
        self.indexer.reshape(self.num, bottom[0].count // self.num, 1)
        self.margin.reshape_like(bottom[0])
        top[0].reshape(())

    def forward(self, bottom, top):
        """margin = max(0, 1 + s x) with s = -1 at the label and +1 elsewhere."""
        xp = self.xp
        labels, _ = read_labels(xp, bottom[1], False, 0)
        self.positions = self.indexer.positions(labels)
        m = self.margin.data.reshape(-1)
        m[...] = bottom[0].data.reshape(-1)
        m[self.positions] *= -1
        m += 1
        xp.maximum(m, 0, out=m)
        loss = m.sum() if self.norm == L1 else xp.dot(m, m)
        top[0].data[...] = loss / self.num

    def backward(self, top, propagate_down, bottom):
        """L1: s sign(margin) * loss_weight / N; L2: 2 s margin * loss_weight / N."""
        if len(propagate_down) > 1 and propagate_down[1]:
            raise LayerSetupError("HingeLoss cannot backpropagate to its label input "
                                  "(bottom[1])")
        if not propagate_down[0]:
            return
        xp = self.xp
        diff = bottom[0].diff
        if self.norm == L1:
            xp.sign(self.margin.data, out=diff)
            scale = top[0].diff * (1.0 / self.num)
        else:
            diff[...] = self.margin.data
            scale = top[0].diff * (2.0 / self.num)
        flat = diff.reshape(-1)
        flat[self.positions] *= -1
        diff *= scale

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
