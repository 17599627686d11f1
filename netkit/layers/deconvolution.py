"""Deconvolution: Caffe's transposed convolution, the Convolution layer run backwards.

Blobs: weight (channels, num_output / group, kernel_h, kernel_w), the shape of the weights of
the convolution that maps the top back onto the bottom, and with bias_term a bias
(num_output,). The top's spatial size is stride (H - 1) + dilation (kernel - 1) + 1 - 2 pad,
so that convolution, with the same kernel, pad, stride and dilation, maps it back to H.
Spatial axes as in Convolution: any number, with weights (channels, num_output / group,
*kernel) for other than 2.

As in Caffe's DeconvolutionLayer (reverse_dimensions): forward is that convolution's
backward-data pass (weights^T . bottom, then col2im) plus the bias, the bottom gradient is its
forward pass on the top diff, and the weight gradient is its weight gradient with the top diff
as input and the bottom as output gradient. The GEMMs are those of a private
ConvolutionLayer that holds the same weight blob, so both layers share one code path.
"""
from .. import netkit_pb2 as pb
from ..fillers import fill
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .convolution import ConvolutionLayer, check_bottoms, check_group, setup_geometry

NO_PARAMS = (False, False)


@layers.register("Deconvolution")
class DeconvolutionLayer(Layer):
    min_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        setup_geometry(self, bottom, top)
        p = self.layer_param.convolution_param
        self.num_output, self.group, self.bias_term = p.num_output, p.group, p.bias_term
        check_group(self.channels, self.num_output, self.group)
        weight_shape = (self.channels, self.num_output // self.group) + self.geom.kernel
        shapes = [weight_shape] + ([(self.num_output,)] if self.bias_term else [])
        if self.blobs and [b.shape for b in self.blobs] != shapes:
            raise LayerSetupError("Deconvolution expects parameter shapes %s, has %s"
                                  % (shapes, [b.shape for b in self.blobs]))
        # The convolution from the top back to the bottom: num_output channels in, the
        # bottom's channels out, no bias (the bias belongs to the top).
        inner = pb.LayerParameter()
        inner.CopyFrom(self.layer_param)
        del inner.blobs[:]
        inner.type = "Convolution"
        inner.convolution_param.num_output = self.channels
        inner.convolution_param.bias_term = False
        self.conv = ConvolutionLayer(inner, self.phase, self.backend)
        # Present weights are kept; otherwise the convolution fills them (weight_filler).
        self.conv.blobs = self.blobs[:1]
        self._shape_tops(bottom, top)
        self.conv.setup(top, bottom)
        if not self.blobs:
            self.blobs.append(self.conv.blobs[0])
            if self.bias_term:
                self.add_param_blob((self.num_output,), fill(p.bias_filler, (self.num_output,)))
        if not self.param_propagate_down:
            self.param_propagate_down = [True] * len(self.blobs)

    def _shape_tops(self, bottom, top):
        _, spatial = check_bottoms(self, bottom)
        size = tuple(s * (n - 1) + e - 2 * p for n, s, e, p in
                     zip(spatial, self.geom.stride, self.geom.extent, self.geom.pad))
        if min(size) < 1:
            raise LayerSetupError("Deconvolution pad %s leaves no output for a bottom of "
                                  "spatial shape %s" % (self.geom.pad, spatial))
        for t in top:
            t.reshape(bottom[0].shape[:self.channel_axis] + (self.num_output,) + size)

    def reshape(self, bottom, top):
        self._shape_tops(bottom, top)
        self.conv.reshape(top, bottom)

    def forward(self, bottom, top):
        # The Net may have swapped in a shared weight blob after setup.
        self.conv.blobs[0] = self.blobs[0]
        for index, (b, t) in enumerate(zip(bottom, top)):
            self.conv.gradients(index, None, b.data, t.data, NO_PARAMS)
            if self.bias_term:
                t.data += self.blobs[1].data.reshape((self.num_output,) +
                                                     (1,) * len(self.geom.kernel))

    def backward(self, top, propagate_down, bottom):
        prop = list(self.param_propagate_down) + [False] * len(self.blobs)
        self.conv.blobs[0] = self.blobs[0]
        for index, (b, t) in enumerate(zip(bottom, top)):
            if self.bias_term and prop[1]:
                self.blobs[1].diff += t.diff.reshape(self.conv.num, self.num_output,
                                                     -1).sum(axis=(0, 2))
            if propagate_down[index]:
                # Convolving the top diff leaves its columns for the weight gradient.
                self.conv.convolve(index, t.diff, b.diff)
            if prop[0]:
                self.conv.gradients(index, t.diff, b.data, None, (True, False))
