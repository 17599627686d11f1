"""ConvolutionDepthwise and DepthwiseConvolution: the depthwise convolution types of two
MobileNet forks. The names mean the same idea under different rules, so each type follows the
fork that defines it, and the fork's model files load.

ConvolutionDepthwise (farmingyard/caffe-mobilenet) convolves every bottom channel with a
filter of its own: one bottom, one top with the bottom's channels, weights (channels, 1,
kernel_h, kernel_w) and bias (channels,). The fork ignores num_output and group, and so does
netkit: a prototxt that writes other values (eric612/MnasNet-caffe has num_output: 16
group: 16 on a 32-channel bottom) gets the fork's 32 channels.

DepthwiseConvolution (yonghenglh6/DepthwiseConvolution) is Caffe's Convolution under another
name: num_output and group are read as Convolution reads them (group defaults to 1) and the
weights are (num_output, channels / group, kernel_h, kernel_w). The fork's CUDA kernel assumes
group = num_output = channels, the files it was made for; its CPU path, followed here, is the
grouped convolution for any valid values.
"""
from ..registry import layers
from .convolution import ConvolutionLayer


@layers.register("ConvolutionDepthwise")
class ConvolutionDepthwiseLayer(ConvolutionLayer):
    """One filter per bottom channel, whatever num_output and group say."""
    exact_num_bottom = 1
    exact_num_top = 1

    def output_channels_and_group(self, param, channels):
        return channels, channels


@layers.register("DepthwiseConvolution")
class DepthwiseConvolutionLayer(ConvolutionLayer):
    """Convolution's rules under the yonghenglh6 fork's type name."""
