"""Accuracy: the fraction of positions whose label is among the top_k scores."""
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers
from .softmax import LabelIndexer, check_label_count, read_labels, split_shape


@layers.register("Accuracy")
class AccuracyLayer(Layer):
    """bottom[0]: scores with classes along `accuracy_param.axis`; bottom[1]: labels.

    Caffe's rule, ties included: a position counts as correct when at most top_k classes
    (the label's own class among them) score greater than or equal to the label's score,
    so a tie with another class counts against the label. Positions whose label equals
    `ignore_label` are skipped. top[0] is the accuracy (0 when nothing was counted); an
    optional top[1] holds the accuracy per class (0 for a class that never occurs).
    Accuracy has no gradient.
    """
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        param = self.layer_param.accuracy_param
        self.top_k = param.top_k
        self.has_ignore = param.HasField("ignore_label")
        self.ignore_label = param.ignore_label
        self.indexer = LabelIndexer(self.xp)

    def reshape(self, bottom, top):
        data_shape = bottom[0].shape
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            raise LayerSetupError("accuracy_param.top_k (%d) must not exceed the number of "
                                  "classes" % self.top_k)
        self.axis = canonical_axis(self.layer_param.accuracy_param.axis, len(data_shape),
                                   "accuracy_param.axis")
        self.outer, self.channels, self.inner = split_shape(data_shape, self.axis)
        check_label_count(self.type, data_shape, bottom[1].count, self.outer, self.inner,
                          self.axis)
        self.indexer.reshape(self.outer, self.channels, self.inner)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.channels,))

    def forward(self, bottom, top):
        xp = self.xp
        labels, valid = read_labels(xp, bottom[1], self.has_ignore, self.ignore_label)
        scores = bottom[0].data.reshape(self.outer, self.channels, self.inner)
        label_score = bottom[0].data.reshape(-1)[self.indexer.positions(labels)]
        at_least = (scores >= label_score.reshape(self.outer, 1, self.inner)).sum(axis=1)
        hit = at_least.reshape(-1) <= self.top_k
        if valid is None:
            count = max(1, self.outer * self.inner)
        else:
            hit &= valid
            count = xp.maximum(valid.sum(), 1)
        top[0].data[...] = hit.sum() / count
        if len(top) > 1:
            used = xp.ones_like(hit) if valid is None else valid
            per_class = xp.bincount(labels, weights=used.astype(xp.float32),
                                    minlength=self.channels)
            hits = xp.bincount(labels, weights=hit.astype(xp.float32),
                               minlength=self.channels)
            top[1].data[...] = hits / xp.maximum(per_class, 1)
