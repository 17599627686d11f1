"""CenterLoss (ydwen/caffe-face): pulls each item's features towards a learned center of
its class.

Bottoms: features (N, ...) flattened from center_loss_param.axis into one K-vector per
item, and labels (N,) holding class indices in [0, num_output). One parameter blob, the
centers (num_output, K), filled by center_filler. With d_i = x_i - c_{y_i}:

    loss = sum_i ||d_i||^2 / (2 N)

The features get the true gradient, d_i * loss_weight / N. The centers do not: as in the
fork, their diff is the fork's own update rule, sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)
for each class j seen n_j times in the batch, unscaled by the loss weight; the solver then
applies it with the centers' lr_mult (the paper's alpha).
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers


@layers.register("CenterLoss")
class CenterLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        p = self.layer_param.center_loss_param
        if p.num_output <= 0:
            raise LayerSetupError("center_loss_param.num_output must be positive, got %d"
                                  % p.num_output)
        self.num_classes = p.num_output
        self.axis = canonical_axis(p.axis, len(bottom[0].shape), "center_loss_param.axis")
        self.dim = int(np.prod(bottom[0].shape[self.axis:]))
        shape = (self.num_classes, self.dim)
        if self.blobs:
            if self.blobs[0].shape != shape:
                raise LayerSetupError("CenterLoss expects centers of shape %s, has %s"
                                      % (shape, self.blobs[0].shape))
        else:
            self.add_param_blob(shape, fill(p.center_filler, shape))
        if not self.param_propagate_down:
            self.param_propagate_down = [True]
        self.distance = Blob((), self.backend)
        self.classes = self.backend.asarray(np.arange(self.num_classes, dtype=np.int32))

    def reshape(self, bottom, top):
        features, labels = bottom
        num = features.shape[0]
        if int(np.prod(features.shape[self.axis:])) != self.dim:
            raise LayerSetupError("CenterLoss: the features' dimension from "
                                  "center_loss_param.axis changed from %d to %s"
                                  % (self.dim, features.shape[self.axis:]))
        if num * self.dim != features.count:
            raise LayerSetupError("CenterLoss: center_loss_param.axis %d must leave one "
                                  "feature vector per item of bottom shape %s"
                                  % (self.axis, features.shape))
        if labels.count != num:
            raise LayerSetupError("CenterLoss: the labels must hold one value per item "
                                  "(%d), got shape %s" % (num, labels.shape))
        self.distance.reshape((num, self.dim))
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        labels = bottom[1].data.reshape(-1).astype(xp.int32)
        d = self.distance.data
        xp.subtract(bottom[0].data.reshape(d.shape), self.blobs[0].data[labels], out=d)
        flat = d.reshape(-1)
        top[0].data[...] = xp.dot(flat, flat) / (2 * d.shape[0])

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        d = self.distance.data
        if propagate_down[1]:
            raise LayerSetupError("CenterLoss cannot backpropagate to its label bottom")
        if self.param_propagate_down[0]:
            labels = bottom[1].data.reshape(-1).astype(xp.int32)
            members = (labels[:, None] == self.classes[None, :]).astype(xp.float32)
            counts = members.sum(axis=0)
            variation = -xp.dot(members.T, d)
            self.blobs[0].diff[...] += variation / (counts[:, None] + 1)
        if propagate_down[0]:
            scale = top[0].diff / d.shape[0]
            xp.multiply(d.reshape(bottom[0].shape), scale, out=bottom[0].diff)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
