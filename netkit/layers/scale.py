"""Scale and Bias: multiply or add a second operand broadcast along some axes of bottom[0].

The operand is bottom[1] when there are two bottoms, else a learned parameter blob whose
shape is bottom[0].shape[axis : axis + num_axes] (num_axes -1: to the end). It lines up with
bottom[0] starting at `axis`, so bottom[0] is seen as (outer, operand count, inner); a
scalar operand (no axes) applies everywhere.

Scale with bias_term also adds a learned bias of the scale's shape after scaling, kept as
a second parameter blob, as Caffe's ScaleLayer keeps its inner BiasLayer's blob: after
BatchNorm this is the gamma/beta pair of ResNet's model files.
"""
import numpy as np

from .. import netkit_pb2 as pb
from ..fillers import fill
from ..layer import Layer, LayerSetupError, canonical_axis
from ..registry import layers


def param_shape(bottom, axis, num_axes, field):
    """Shape of a learned operand: bottom.shape[axis : axis + num_axes]."""
    axis = canonical_axis(axis, bottom.num_axes, field + ".axis")
    if num_axes < -1:
        raise LayerSetupError("%s.num_axes must be non-negative, or -1 to extend to the end "
                              "of bottom[0]; got %d" % (field, num_axes))
    if num_axes >= 0 and axis + num_axes > bottom.num_axes:
        raise LayerSetupError("%s: the operand's shape extends past bottom[0]'s shape %s when "
                              "applied from axis %d with num_axes %d"
                              % (field, bottom.shape, axis, num_axes))
    end = bottom.num_axes if num_axes == -1 else axis + num_axes
    return bottom.shape[axis:end]


def broadcast_dims(bottom, operand_shape, axis, field):
    """(outer, operand count, inner) of bottom for an operand applied from `axis`.

    A scalar operand uses axis 0, as Caffe does: any axis gives the same result.
    """
    n = len(operand_shape)
    axis = 0 if n == 0 else canonical_axis(axis, bottom.num_axes, field + ".axis")
    if bottom.shape[axis:axis + n] != tuple(operand_shape):
        raise LayerSetupError("%s: operand shape %s does not match bottom[0] shape %s from "
                              "axis %d" % (field, tuple(operand_shape), bottom.shape, axis))
    outer = int(np.prod(bottom.shape[:axis], dtype=np.int64))
    inner = int(np.prod(bottom.shape[axis + n:], dtype=np.int64))
    return outer, int(np.prod(operand_shape, dtype=np.int64)), inner


def _sum_to_operand(array, shape):
    """Sum a (outer, dim, inner) array over outer and inner, shaped like the operand (the
    contiguous axis first: numpy reduces that several times faster than both at once)."""
    return array.sum(axis=2).sum(axis=0).reshape(shape)


@layers.register("Bias")
class BiasLayer(Layer):
    """top = bottom[0] + bias, the bias being bottom[1] or a learned blob (bias_param.filler,
    default constant 0)."""
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_param
        if len(bottom) == 1:
            shape = param_shape(bottom[0], param.axis, param.num_axes, "bias_param")
            self.add_param_blob(shape, fill(param.filler, shape))
        self.param_propagate_down = [True] * len(self.blobs)

    def operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.dims = broadcast_dims(bottom[0], self.operand(bottom).shape,
                                   self.layer_param.bias_param.axis, "bias_param")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        bias = self.operand(bottom).data.reshape(1, -1, 1)
        self.xp.add(bottom[0].data.reshape(self.dims), bias, out=top[0].data.reshape(self.dims))

    def backward(self, top, propagate_down, bottom):
        """dx = dy; the bias gets dy summed over outer and inner axes (accumulated into a
        parameter, assigned to bottom[1])."""
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
        dy = top[0].diff.reshape(self.dims)
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = _sum_to_operand(dy, bottom[1].shape)
        elif self.param_propagate_down[0]:
            self.blobs[0].diff += _sum_to_operand(dy, self.blobs[0].shape)


@layers.register("Scale")
class ScaleLayer(Layer):
    """top = bottom[0] * scale (+ bias), the scale being bottom[1] or a learned blob
    (scale_param.filler, default constant 1); the bias, with bias_term, is a learned blob
    (scale_param.bias_filler, default constant 0) stored after the scale blob.

    In place, forward keeps a copy of the bottom: the scale's gradient needs it.
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.scale_param
        if len(bottom) == 1:
            shape = param_shape(bottom[0], param.axis, param.num_axes, "scale_param")
            filler = param.filler
            if not param.HasField("filler"):
                filler = pb.FillerParameter(type="constant", value=1.0)
            self.add_param_blob(shape, fill(filler, shape))
        self.bias_index = None
        if param.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else param.num_axes
            shape = param_shape(bottom[0], param.axis, num_axes, "scale_param")
            self.add_param_blob(shape, fill(param.bias_filler, shape))
            self.bias_index = len(self.blobs) - 1
        self.param_propagate_down = [True] * len(self.blobs)

    def operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.dims = broadcast_dims(bottom[0], self.operand(bottom).shape, axis, "scale_param")
        if self.bias_index is not None:
            bias_dims = broadcast_dims(bottom[0], self.blobs[self.bias_index].shape, axis,
                                       "scale_param (bias)")
            if bias_dims != self.dims:
                raise LayerSetupError("scale_param: the bias blob shape %s does not match the "
                                      "scale shape %s" % (self.blobs[self.bias_index].shape,
                                                          self.operand(bottom).shape))
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        self.saved_input = xp.copy(x) if top[0] is bottom[0] else None
        y = top[0].data.reshape(self.dims)
        xp.multiply(x.reshape(self.dims), self.operand(bottom).data.reshape(1, -1, 1), out=y)
        if self.bias_index is not None:
            y += self.blobs[self.bias_index].data.reshape(1, -1, 1)

    def backward(self, top, propagate_down, bottom):
        """bias gets sum(dy); scale gets sum(dy * x) over outer and inner axes (accumulated
        into parameters, assigned to bottom[1]); dx = dy * scale. The bottom diff is
        written last: in place it overwrites dy."""
        xp = self.xp
        dy = top[0].diff.reshape(self.dims)
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            bias = self.blobs[self.bias_index]
            bias.diff += _sum_to_operand(dy, bias.shape)
        scale = self.operand(bottom)
        learned = len(bottom) == 1
        if (propagate_down[1] if not learned else self.param_propagate_down[0]):
            x = bottom[0].data if self.saved_input is None else self.saved_input
            gradient = _sum_to_operand(dy * x.reshape(self.dims), scale.shape)
            if learned:
                scale.diff += gradient
            else:
                scale.diff[...] = gradient
        if propagate_down[0]:
            xp.multiply(dy, scale.data.reshape(1, -1, 1), out=bottom[0].diff.reshape(self.dims))
