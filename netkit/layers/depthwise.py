"""DepthwiseConvolution and ConvolutionDepthwise: the depthwise convolution types of the
MobileNet forks, which are Caffe's Convolution with one group per bottom channel.

Both read the ordinary convolution_param, so the weights are (num_output, 1, kernel_h,
kernel_w) as a grouped Convolution's. group may be left out; given, it must equal the
bottom's channels. num_output defaults to the bottom's channels (the ConvolutionDepthwise
fork ignores it); a multiple of them is a channel multiplier.
"""
from ..layer import LayerSetupError
from ..registry import layers
from .convolution import ConvolutionLayer


@layers.register("DepthwiseConvolution", "ConvolutionDepthwise")
class DepthwiseConvolutionLayer(ConvolutionLayer):
    def output_channels_and_group(self, param, channels):
        if param.HasField("group") and param.group != channels:
            raise LayerSetupError("%s convolves each channel alone: convolution_param group "
                                  "must equal the bottom's %d channels, got %d"
                                  % (self.type, channels, param.group))
        return param.num_output or channels, channels
