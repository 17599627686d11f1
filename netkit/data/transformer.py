"""DataTransformer: Caffe's crop, mirror, mean subtraction and scaling of input images.

It works on host numpy batches (N, C, H, W), uint8 or float32, one call per batch. For each
image, as in Caffe's DataTransformer::Transform(Datum):

1. crop offsets: random in [0, H - crop_size] (and W) in the TRAIN phase, centred
   ((H - crop_size) // 2) in TEST; each image is cropped within its own size, so a batch
   may hold images of several sizes that the crop makes one (as Caffe's Data and ImageData
   layers allow);
2. mirror: a fair coin per image, in *both* phases, when `mirror` is set;
3. value = (pixel - mean) * scale, where a mean_file is indexed at the cropped position of
   the full-size mean image and mean_value is one per channel (or one for all).

Mirroring flips the finished crop left to right, mean included.
"""
import copy

import numpy as np

from ..log import logger
from . import shape_text
from .datum import load_mean_file


# TransformationParameter fields that only a fork's transformer implements: the SSD fork's
# (AnnotatedData) and DeepLab's (ImageSegData).
_FORK_FIELDS = {"crop_h": "SSD", "crop_w": "SSD", "resize_param": "SSD", "noise_param": "SSD",
                "distort_param": "SSD", "expand_param": "SSD", "emit_constraint": "SSD",
                "crop_height": "DeepLab", "crop_width": "DeepLab", "scale_factors": "DeepLab"}


class TransformError(ValueError):
    """The transformation parameters do not fit the data (one sentence naming the field)."""


class DataTransformer:
    """Applies a TransformationParameter to host batches.

    `rng` is a numpy RandomState for crop offsets and mirror coins; give each data layer its
    own so that a prefetch thread never shares a random stream with anything else.
    """

    def __init__(self, param, phase, rng=None):
        from ..netkit_pb2 import TRAIN
        for field, _ in param.ListFields():  # the fields set: messages, scalars, lists
            if field.name in _FORK_FIELDS:
                raise TransformError("transform_param.%s (from the %s fork) is not supported "
                                     "by the Data layers' DataTransformer"
                                     % (field.name, _FORK_FIELDS[field.name]))
        self.param = param
        self.train = phase == TRAIN
        self.rng = rng if rng is not None else np.random.RandomState()
        self.crop = int(param.crop_size)
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        if param.force_color and param.force_gray:
            raise TransformError("transform_param sets both force_color and force_gray")
        self.color = True if param.force_color else (False if param.force_gray else None)
        if param.HasField("mean_file") and len(param.mean_value):
            raise TransformError("transform_param cannot set mean_file and mean_value "
                                 "at the same time")
        self.mean = None
        if param.HasField("mean_file"):
            logger.info("Loading mean file from: %s", param.mean_file)
            try:
                self.mean = load_mean_file(param.mean_file)
            except (OSError, ValueError) as e:
                raise TransformError("transform_param.mean_file: %s" % e) from None
        self.mean_values = np.array(param.mean_value, dtype=np.float32)

    def output_shape(self, chw):
        """(C, H, W) of one transformed image of input shape `chw`, after checking it fits."""
        c, h, w = chw
        if c <= 0:
            raise TransformError("input images have %d channels" % c)
        if self.crop and (h < self.crop or w < self.crop):
            raise TransformError("transform_param.crop_size %d is larger than the %dx%d input"
                                 % (self.crop, h, w))
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise TransformError("transform_param.mean_file %s has shape %s but the input "
                                 "images are %s" % (self.param.mean_file,
                                                    shape_text(self.mean.shape), shape_text(chw)))
        if len(self.mean_values) not in (0, 1, c):
            raise TransformError("transform_param.mean_value: give 1 value or one per "
                                 "channel (%d), not %d" % (c, len(self.mean_values)))
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def with_rng(self, rng):
        """A transformer with these parameters (mean included) drawing from `rng`."""
        other = copy.copy(self)
        other.rng = rng
        return other

    def draw(self, n, h, w):
        """The random draws for n images of h x w (one size for all, or one per image), in
        Caffe's order of need: mirror coins (None without `mirror`), then crop offsets
        (centred unless a TRAIN crop). Returns (flips, h_off, w_off).

        A TRAIN crop draws two fractions per image that place it within the image's own
        range, so the draws of a batch are the same whatever its images' sizes: a skipped
        batch (`skip`) needs none of its images read."""
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        flips, places = self._coins(n)
        h, w = np.broadcast_to(h, n), np.broadcast_to(w, n)
        if places is not None:
            h_off = (places[0] * (h - oh + 1)).astype(np.intp)
            w_off = (places[1] * (w - ow + 1)).astype(np.intp)
        else:
            h_off, w_off = (h - oh) // 2, (w - ow) // 2
        return flips, h_off, w_off

    def _coins(self, n):
        """The random numbers of n images: mirror coins and the TRAIN crops' fractions."""
        flips = self.rng.randint(2, size=n).astype(bool) if self.mirror else None
        places = self.rng.random_sample((2, n)) if self.crop and self.train else None
        return flips, places

    def skip(self, n):
        """Make the random draws of a batch of n images without transforming it, so the
        next batch gets what it would after that one."""
        self._coins(n)

    def __call__(self, batch):
        """Transform a host batch into a new float32 batch (N, C, h, w): an (N, C, H, W)
        array, or a list of (C, H, W) images of several sizes, which crop_size crops to one
        (each within its own size)."""
        if isinstance(batch, np.ndarray):
            n, c, h, w = batch.shape
            _, oh, ow = self.output_shape((c, h, w))
            flips, h_off, w_off = self.draw(n, h, w)
            out = _crop(batch, h_off, w_off, oh, ow).astype(np.float32)
        else:
            n = len(batch)
            shapes = [self.output_shape(image.shape) for image in batch]
            if any(shape != shapes[0] for shape in shapes):
                i = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
                raise TransformError("images of %s and %s do not transform to one shape "
                                     "(%s and %s)" % (shape_text(batch[0].shape),
                                                      shape_text(batch[i].shape),
                                                      shape_text(shapes[0]),
                                                      shape_text(shapes[i])))
            c, oh, ow = shapes[0]
            flips, h_off, w_off = self.draw(n, [image.shape[1] for image in batch],
                                            [image.shape[2] for image in batch])
            out = np.stack([image[:, y:y + oh, x:x + ow]
                            for image, y, x in zip(batch, h_off, w_off)]).astype(np.float32)
        if self.mean is not None:  # (one size: the mean's, which output_shape checked)
            out -= _crop(np.broadcast_to(self.mean, (n,) + self.mean.shape), h_off, w_off,
                         oh, ow)
        elif len(self.mean_values) == 1:
            out -= self.mean_values[0]
        elif len(self.mean_values):
            out -= self.mean_values.reshape(1, c, 1, 1)
        if flips is not None and flips.any():
            out[flips] = out[flips][..., ::-1]
        if self.scale != 1:
            out *= self.scale
        return out


def _crop(batch, h_off, w_off, oh, ow):
    """The (oh, ow) window at (h_off[i], w_off[i]) of each image i, as one gather."""
    n, _, h, w = batch.shape
    if (oh, ow) == (h, w):
        return batch
    if (h_off == h_off[0]).all() and (w_off == w_off[0]).all():
        return batch[:, :, h_off[0]:h_off[0] + oh, w_off[0]:w_off[0] + ow]
    windows = np.lib.stride_tricks.sliding_window_view(batch, (oh, ow), axis=(2, 3))
    return windows[np.arange(n), :, h_off, w_off]
