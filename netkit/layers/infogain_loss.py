"""InfogainLoss: softmax, then a log loss weighted by an information-gain matrix H."""
from ..blob import Blob
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers
from .loss_util import normalization_mode, normalizer
from .multinomial_logistic_loss import LOG_THRESHOLD
from .softmax import check_label_count, check_label_range, read_labels, softmax, split_shape


@layers.register("InfogainLoss")
class InfogainLossLayer(Layer):
    """loss = -sum_positions sum_l H[label, l] log(max(p_l, 1e-20)) / n.

    p is the softmax of bottom[0] over `infogain_loss_param.axis` (default 1), giving
    outer * inner distributions of L classes; bottom[1] holds one integer label per
    (outer, inner) position. H (L x L) comes from bottom[2] when given, else from the
    BlobProto file `infogain_loss_param.source`. With H = identity this is
    SoftmaxWithLoss (but clamped at 1e-20, not FLT_MIN). `loss_param` sets ignore_label
    and the normalizer n (VALID by default; the deprecated `normalize` is refused, as in
    Caffe). An optional top[1] shares the probabilities. Only bottom[0] gets a gradient,
    also under force_backward (Caffe would abort on the H bottom); the top's diff holds
    the loss weight, as in Caffe.
    """
    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2
    is_loss = True

    def setup(self, bottom, top):
        loss_param = self.layer_param.loss_param
        if loss_param.HasField("normalize"):
            raise LayerSetupError("InfogainLoss: loss_param.normalize is deprecated; use "
                                  "loss_param.normalization")
        self.normalization = normalization_mode(loss_param)
        self.has_ignore = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        self.prob = Blob((), self.backend)
        self.infogain = None
        if len(bottom) < 3:
            self.infogain = self._read_source()

    def _read_source(self):
        from .. import netkit_pb2 as pb
        from ..errors import NetkitError
        from ..protoio import read_binary
        from ..weights import blob_proto_to_array
        param = self.layer_param.infogain_loss_param
        if not param.HasField("source"):
            raise LayerSetupError("InfogainLoss needs the H matrix: set "
                                  "infogain_loss_param.source or give a third bottom")
        try:
            host = blob_proto_to_array(read_binary(param.source, pb.BlobProto()))
        except NetkitError as e:
            raise LayerSetupError("infogain_loss_param.source: %s" % e) from None
        return self.backend.asarray(host.reshape(-1))

    def reshape(self, bottom, top):
        data_shape = bottom[0].shape
        if not data_shape or not bottom[1].shape or data_shape[0] != bottom[1].shape[0]:
            raise LayerSetupError("InfogainLoss: the data %s and label %s blobs must have "
                                  "the same first dimension" % (data_shape, bottom[1].shape))
        self.axis = canonical_axis(self.layer_param.infogain_loss_param.axis,
                                   len(data_shape), "infogain_loss_param.axis")
        self.outer, self.num_labels, self.inner = split_shape(data_shape, self.axis)
        check_label_count(self.type, data_shape, bottom[1].count, self.outer, self.inner,
                          self.axis)
        h_count = bottom[2].count if len(bottom) > 2 else int(self.infogain.size)
        if h_count != self.num_labels ** 2:
            raise LayerSetupError("InfogainLoss: H must be %d x %d (the number of classes on "
                                  "infogain_loss_param.axis squared), got %d values"
                                  % (self.num_labels, self.num_labels, h_count))
        self.prob.reshape_like(bottom[0])
        top[0].reshape(())
        if len(top) > 1:
            top[1].share_data(self.prob)

    def _h(self, bottom):
        h = bottom[2].data if len(bottom) > 2 else self.infogain
        return h.reshape(self.num_labels, self.num_labels)

    def _rows(self, bottom, labels):
        """H[label] for every position, laid out as the (outer, L, inner) prob blob."""
        check_label_range(self.xp, labels, self.num_labels)
        rows = self._h(bottom)[labels].reshape(self.outer, self.inner, self.num_labels)
        return rows.transpose(0, 2, 1)

    def forward(self, bottom, top):
        xp = self.xp
        prob = softmax(xp, bottom[0].data, self.axis, self.prob.data)
        labels, valid = read_labels(xp, bottom[1], self.has_ignore, self.ignore_label)
        log_prob = xp.log(xp.maximum(prob, LOG_THRESHOLD)).reshape(self.outer, -1, self.inner)
        weighted = (self._rows(bottom, labels) * log_prob).sum(axis=1).reshape(-1)
        if valid is not None:
            weighted *= valid
        self.labels, self.valid = labels, valid
        self.norm = normalizer(xp, self.normalization, self.outer, self.inner, valid)
        top[0].data[...] = -weighted.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        """d loss / d x_l = (p_l sum_k H[label, k] - H[label, l]) * loss_weight / n,
        zero at ignored positions."""
        if len(propagate_down) > 1 and propagate_down[1]:
            raise LayerSetupError("InfogainLoss cannot backpropagate to its label input "
                                  "(bottom[1])")
        if len(propagate_down) > 2 and propagate_down[2]:
            raise LayerSetupError("InfogainLoss cannot backpropagate to its infogain input "
                                  "(bottom[2])")
        if not propagate_down[0]:
            return
        rows = self._rows(bottom, self.labels)
        shape = (self.outer, self.num_labels, self.inner)
        prob = self.prob.data.reshape(shape)
        grad = prob * rows.sum(axis=1, keepdims=True) - rows
        scale = top[0].diff / self.norm
        if self.valid is not None:
            scale = self.valid.reshape(self.outer, 1, self.inner) * scale
        self.xp.multiply(grad, scale, out=bottom[0].diff.reshape(shape))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
