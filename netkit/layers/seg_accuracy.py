"""SegAccuracy (DeepLab, PSPNet): pixel accuracy, mean class accuracy and mean IoU of a
segmentation, from a confusion matrix of label against predicted class."""
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError
from ..registry import layers


def legacy_shape(shape, what):
    """(num, channels, height, width) of a blob of at most 4 axes, as Caffe's legacy
    accessors read it (missing axes count 1)."""
    if len(shape) > 4:
        raise LayerSetupError("SegAccuracy needs blobs of at most 4 axes; %s is %s"
                              % (what, "x".join(str(d) for d in shape)))
    return tuple(shape) + (1,) * (4 - len(shape))


@layers.register("SegAccuracy")
class SegAccuracyLayer(Layer):
    """bottom[0]: scores (N, C, H, W); bottom[1]: labels (N, 1, H, W).

    Each pixel's prediction is its highest-scoring class; among tied scores the highest
    class wins (the fork sorts (score, class) pairs). Pixels whose label is one of
    seg_accuracy_param.ignore_label are skipped; any other label outside [0, C) stops the
    pass with an error, as the fork does (one flag read back to the host per forward).
    Counted pixels add to a C x C confusion matrix, cleared before every forward unless
    `reset` is false, so that counts add up over forwards. top[0] (1 x 1 x 1 x 3) holds,
    whatever `metric` says, as the fork:

    - pixel accuracy: the diagonal over all counted pixels (0 when none);
    - mean class accuracy: each class's diagonal over its pixels, averaged over the
      classes that occur (0 when none);
    - mean IoU: diagonal / (row + column - diagonal), 1 where that is 0 / 0 or otherwise
      equal, averaged over all C classes.

    SegAccuracy has no gradient.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.seg_accuracy_param
        self.ignore_labels = sorted(set(param.ignore_label))
        self.reset = param.reset
        self.channels = legacy_shape(bottom[0].shape, "bottom[0]")[1]
        self.confusion = self.xp.zeros((self.channels, self.channels), self.xp.float64)

    def reshape(self, bottom, top):
        num, channels, height, width = legacy_shape(bottom[0].shape, "bottom[0]")
        label = legacy_shape(bottom[1].shape, "bottom[1]")
        if channels < 1:
            raise LayerSetupError("SegAccuracy needs at least one class (channel) in "
                                  "bottom[0]")
        if channels != self.channels:
            raise LayerSetupError("SegAccuracy's bottom[0] was set up with %d classes and "
                                  "now has %d" % (self.channels, channels))
        if label[0] != num or label[1] != 1 or label[2:] != (height, width):
            raise LayerSetupError("SegAccuracy needs labels of shape %dx1x%dx%d for scores "
                                  "of shape %dx%dx%dx%d, got %s"
                                  % (num, height, width, num, channels, height, width,
                                     "x".join(str(d) for d in bottom[1].shape)))
        top[0].reshape((1, 1, 1, 3))

    def forward(self, bottom, top):
        xp, c = self.xp, self.channels
        scores = bottom[0].data.reshape(bottom[0].shape[0], c, -1)
        predicted = (c - 1) - xp.argmax(scores[:, ::-1], axis=1).reshape(-1)
        labels = bottom[1].data.reshape(-1).astype(xp.int64)
        counted = xp.ones(labels.shape, bool)
        for ignore in self.ignore_labels:
            counted &= labels != ignore
        outside = counted & ((labels < 0) | (labels >= c))
        if self.backend.asnumpy(outside.any()):
            first = int(self.backend.asnumpy(xp.argmax(outside)))
            _, _, height, width = legacy_shape(bottom[0].shape, "bottom[0]")
            raise NetkitError("unexpected label %d at num %d, row %d, col %d (labels are "
                              "0..%d or a seg_accuracy_param ignore_label)"
                              % (int(self.backend.asnumpy(labels[first])),
                                 first // (height * width), first // width % height,
                                 first % width, c - 1))
        cells = xp.where(counted, labels * c + predicted, 0)
        counts = xp.bincount(cells, weights=counted.astype(xp.float64), minlength=c * c)
        if self.reset:
            self.confusion[...] = counts.reshape(c, c)
        else:
            self.confusion += counts.reshape(c, c)
        m = self.confusion
        diagonal = m.reshape(-1)[::c + 1]
        rows, columns = m.sum(axis=1), m.sum(axis=0)
        total = rows.sum()
        pixel = xp.where(total > 0, diagonal.sum() / xp.maximum(total, 1), 0)
        occurring = rows > 0
        recall = xp.where(occurring, diagonal / xp.maximum(rows, 1), 0)
        mean_recall = recall.sum() / xp.maximum(occurring.sum(), 1)
        union = rows + columns - diagonal
        iou = xp.where(union == diagonal, 1, diagonal / xp.maximum(union, 1))
        top[0].data[...] = xp.stack([pixel, mean_recall, iou.mean()]).reshape(1, 1, 1, 3)
