"""Detector: a TEST-phase Net that classifies windows of images (pycaffe's caffe.Detector),
the R-CNN recipe: each window, optionally widened by some context, is cropped, warped to
the net input and classified; windows can come from Selective Search.

R-CNN: Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies for accurate object
detection and semantic segmentation", https://arxiv.org/abs/1311.2524. Selective Search
proposals need https://github.com/sergeyk/selective_search_ijcv_with_python (and MATLAB).
"""
import math
import os

import numpy as np

from . import io
from .classifier import input_transformer
from .errors import NetkitError
from .layer import TEST
from .net import Net


def _round_half_away(x):
    """Round to the nearest integer, halves away from zero: the rounding of Python 2's
    round(), which the Detector's context cropping was written with."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


class Detector(Net):
    """Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None).

    `mean`, `input_scale`, `raw_scale` and `channel_swap` configure `self.transformer`
    (see `netkit.io.Transformer`) for the first net input, as for `Classifier`.
    `context_pad` is the width of the border of the (square) net input that shows context
    around the window, as in R-CNN feature extraction (16 there, for 227 x 227 inputs);
    context beyond the image is filled with the mean.
    """

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None, backend=None):
        Net.__init__(self, model_file, phase=TEST, weights=pretrained_file, backend=backend)
        self.transformer = input_transformer(self, "Detector", mean, input_scale, raw_scale,
                                             channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify windows of image files.

        `images_windows` is an iterable of (image filename, windows), each window
        (ymin, xmin, ymax, xmax) in pixels. Returns one dict per window, in order:
        {'window': the window, 'prediction': the first net output for it, 'filename':
        the image filename}.
        """
        images_windows = [(fname, list(windows)) for fname, windows in images_windows]
        window_inputs = []
        for image_fname, windows in images_windows:
            image = io.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, window))
        if not window_inputs:
            return []

        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + tuple(self.blobs[in_].data.shape[2:]), dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]

        detections = []
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)],
                                   "filename": image_fname})
        return detections

    def detect_selective_search(self, image_fnames):
        """Classify the Selective Search proposals (R-CNN's configuration) of image files;
        returns what `detect_windows` returns. Needs the selective_search_ijcv_with_python
        module on the Python path."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise NetkitError(
                "detect_selective_search needs the selective_search_ijcv_with_python module "
                "(https://github.com/sergeyk/selective_search_ijcv_with_python, which runs "
                "MATLAB) on the Python path; it is not installed") from None
        # Absolute paths, because the proposals are computed by MATLAB in another directory.
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The (H, W, K) pixels of `window` = (ymin, xmin, ymax, xmax) in image `im`.

        Without context padding this is im[ymin:ymax, xmin:xmax]. With it, the window (its
        extent counted inclusively, ymax - ymin + 1 rows) is widened about its centre so
        that, once warped to the crop_size x crop_size input, the window fills the middle
        and `context_pad` pixels of context surround it: the box grows by crop_size /
        (crop_size - 2 * context_pad). The part of the box inside the image is resized to
        its share of the input and placed at its position; the rest is the mean.
        """
        if not self.context_pad:
            crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
            if crop.size == 0:
                raise NetkitError("window %s is empty in the %dx%d image"
                                  % (list(window), im.shape[0], im.shape[1]))
            return crop

        crop_size = self.blobs[self.inputs[0]].data.shape[3]  # a square input
        scale = crop_size / (1. * crop_size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.
        half_w = (window[3] - window[1] + 1) / 2.
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        full_h = box[2] - box[0] + 1
        full_w = box[3] - box[1] + 1
        scale_h = crop_size / full_h
        scale_w = crop_size / full_w
        # How much of the input lies before the image's first row and column.
        pad_y = _round_half_away(max(0, -box[0]) * scale_h)
        pad_x = _round_half_away(max(0, -box[1]) * scale_w)

        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0., [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        crop_h = min(_round_half_away(clip_h * scale_h), crop_size - pad_y)
        crop_w = min(_round_half_away(clip_w * scale_w), crop_size - pad_x)
        context_crop = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        if context_crop.size == 0 or crop_h < 1 or crop_w < 1:
            raise NetkitError("window %s with its context lies outside the %dx%d image"
                              % (list(window), im_h, im_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = io.resize_image(
            context_crop, (crop_h, crop_w))
        return crop

    def configure_crop(self, context_pad):
        """Set `crop_dims` (the input's (H, W, K)) and the context padding. With context,
        `crop_mean` becomes the transformer's mean taken back to image space (image
        layout, channel order before the swap, divided by raw_scale), which fills context
        beyond the image; call again after changing the transformer's mean."""
        in_ = self.inputs[0]
        to_image = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[to_image]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.transpose(to_image).astype(np.float32)
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / np.float32(raw_scale)
        self.crop_mean = crop_mean
