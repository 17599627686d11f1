"""Classifier: a TEST-phase Net that predicts class probabilities for images (pycaffe's
caffe.Classifier), by resizing, then ten-crop oversampling or a centre crop."""
import numpy as np

from . import io
from .errors import NetkitError
from .layer import TEST
from .net import Net


def input_transformer(net, kind, mean=None, input_scale=None, raw_scale=None,
                      channel_swap=None):
    """The io.Transformer that pycaffe's Classifier and Detector (`kind`, for messages) set
    up for a deploy net's first input: (H, W, K) images to (K, H, W), then the options."""
    if not net.inputs:
        raise NetkitError("%s: a %s needs a deploy net whose images come in through an Input "
                          "layer (or input: fields); this net has none (a train/val net "
                          "reads its own data)" % (net.source, kind))
    in_ = net.inputs[0]
    transformer = io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None).

    Images are (H, W, K) arrays as `netkit.io.load_image` gives them. `image_dims` is the
    (height, width) they are resized to before cropping (default: the net input's, so
    the crop is the whole image); `mean`, `input_scale`, `raw_scale` and `channel_swap`
    configure `self.transformer` (see `netkit.io.Transformer`) for the first net input.
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None, backend=None):
        Net.__init__(self, model_file, phase=TEST, weights=pretrained_file, backend=backend)
        self.transformer = input_transformer(self, "Classifier", mean, input_scale, raw_scale,
                                             channel_swap)
        in_ = self.inputs[0]
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(self.crop_dims if image_dims is None else image_dims)

    def predict(self, inputs, oversample=True):
        """(N, classes) probabilities of the first net output for N (H, W, K) images:
        averaged over the ten crops of `netkit.io.oversample` when `oversample`, else from
        the centre crop."""
        height, width = (int(d) for d in self.image_dims)
        images = np.zeros((len(inputs), height, width, inputs[0].shape[2]), dtype=np.float32)
        for ix, image in enumerate(inputs):
            images[ix] = io.resize_image(image, (height, width))
        if oversample:
            crops = io.oversample(images, self.crop_dims)
        else:
            center = np.array([height, width]) / 2.0
            top, left = (center - self.crop_dims / 2.0).astype(int)
            bottom, right = (center + self.crop_dims / 2.0).astype(int)
            crops = images[:, top:bottom, left:right, :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
