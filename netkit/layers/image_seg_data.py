"""ImageSegData: images and their segmentation labels named in a list file, cropped and
padded together (DeepLab v2's and PSPNet's data layer, DeepLab v1's IMAGE_SEG_DATA).

image_data_param.source holds one image per line: its first word is the image path and,
unless label_type is NONE, its second word the label. With label_type PIXEL that is the
path of a label image, read in grey, whose pixel values are class indices; with IMAGE (the
default) one integer, read as C's atoi, for every pixel; with NONE there is no label and
every pixel gets ignore_label. Further words are ignored and blank lines skipped. Files
are read from root_folder + path with OpenCV; new_height and new_width resize the image
and the label image alike with linear interpolation (the fork's ReadImageToCVMat, which
blends label values along edges). Lines are read in order, wrapping after the last; with
`shuffle` the list is shuffled at setup and at every wrap, and `rand_skip` starts at a
random line below it.

Each pair goes through the fork's DataTransformer::TransformImgAndSeg, drawing from the
layer's own random stream in the fork's order:

1. a mirror coin, when transform_param.mirror;
2. one of transform_param.scale_factors, when given: the image is resized by it with
   linear interpolation and the label with nearest neighbour, to int(size * factor);
3. where the crop (crop_size, or crop_height and crop_width) is larger than the image,
   the image is padded at the bottom and right with the mean values (0 without
   mean_value) and the label with ignore_label;
4. the crop window: random in TRAIN, centred in TEST;
5. (pixel - mean_value) * scale for the image, while labels keep their values; the
   mirror coin flips both.

Top 0 is the images (N, C, h, w), top 1 the labels (N, 1, h, w), the optional top 2
("data_dim", N x 1 x 1 x 2) each image's height and width before padding and cropping
(after new_height/new_width, before scale_factors), at most the crop's, so a test net
can cut its prediction back to the image. Without a crop each batch takes its images'
size, which they must share. Like the fork, the layer reads transform_param only
(mean_file is refused), never the transformation fields of image_data_param.
"""
import re

import numpy as np

from .. import netkit_pb2 as pb
from ..data.image import read_image
from ..errors import NetkitError
from ..layer import TRAIN, LayerSetupError
from ..log import logger
from ..registry import layers
from .base_data import PrefetchingDataLayer
from .dense_image_data import _PairData, list_lines

LABEL_TYPE = pb.ImageDataParameter
_ATOI = re.compile(r"[+-]?\d+")
# transform_param fields the pair transform applies itself; the rest (mean, scale) goes
# to a DataTransformer.
_GEOMETRY_FIELDS = ("crop_size", "crop_height", "crop_width", "mirror", "scale_factors")


@layers.register("ImageSegData")
class ImageSegDataLayer(_PairData):
    exact_num_top = None
    min_top = 2
    max_top = 3
    param_name = "image_data_param"
    legacy_param = "image_data_param"
    legacy_fields = ()
    # The fork resizes both to new_height x new_width before comparing their sizes.
    sizes_match_before_resize = False

    def setup(self, bottom, top):
        p = self.layer_param.image_data_param
        ignored = [f for f in PrefetchingDataLayer.legacy_fields if p.HasField(f)]
        if ignored:
            logger.warning("ImageSegData layer %r ignores image_data_param.%s, as the fork "
                           "does; set them in transform_param", self.name,
                           ", ".join(ignored))
        super().setup(bottom, top)
        if len(top) > 2:
            top[2].reshape((p.batch_size, 1, 1, 2))

    def read_list(self, source):
        """(line number, image path, label) per non-blank line: the label image's path
        (PIXEL), the integer label (IMAGE) or None (NONE)."""
        label_type = self.param.label_type
        entries, odd = [], []
        for number, words in list_lines(source):
            if label_type == LABEL_TYPE.NONE:
                entries.append((number, words[0], None))
                continue
            if len(words) < 2:
                expected = "label_image" if label_type == LABEL_TYPE.PIXEL else "label"
                raise NetkitError("%s:%d: expected 'image %s' (image_data_param.label_type "
                                  "%s), got %r" % (source, number, expected,
                                                   LABEL_TYPE.LabelType.Name(label_type),
                                                   " ".join(words)))
            if label_type == LABEL_TYPE.PIXEL:
                entries.append((number, words[0], words[1]))
                continue
            match = _ATOI.match(words[1])
            label = int(match.group()) if match else 0
            if match is None or match.end() != len(words[1]):
                odd.append((number, words[1], label))
            entries.append((number, words[0], label))
        if odd:
            number, word, label = odd[0]
            logger.warning("%s:%d: label '%s' is not an integer; it reads as %d, as in the "
                           "fork (%d such line%s; label images need label_type: PIXEL)",
                           source, number, word, label, len(odd), "" if len(odd) == 1 else "s")
        return entries

    def check_transform(self):
        t = self.transform_param()
        if t.HasField("mean_file"):
            raise LayerSetupError("ImageSegData does not support transform_param.mean_file; "
                                  "give mean_value")
        if t.HasField("crop_height") or t.HasField("crop_width"):
            if t.HasField("crop_size") or not (t.HasField("crop_height")
                                               and t.HasField("crop_width")):
                raise LayerSetupError("transform_param: give either crop_size or both "
                                      "crop_height and crop_width")
            crop = (t.crop_height, t.crop_width)
        else:
            crop = (t.crop_size, t.crop_size)
        if (crop[0] > 0) != (crop[1] > 0):
            raise LayerSetupError("transform_param.crop_height and crop_width must both be "
                                  "positive or both 0 (got %d and %d)" % crop)
        if any(f <= 0 for f in t.scale_factors):
            raise LayerSetupError("transform_param.scale_factors must be positive, got %s"
                                  % ", ".join("%g" % f for f in t.scale_factors))
        self.crop = crop if crop[0] > 0 else None
        self.mirror = t.mirror
        self.scale_factors = [np.float32(f) for f in t.scale_factors]
        self.mean_values = np.array(t.mean_value, np.float32)
        channels = 3 if self.param.is_color else 1
        if len(self.mean_values) not in (0, 1, channels):
            raise LayerSetupError("transform_param.mean_value: give 1 value or one per "
                                  "channel (%d), not %d" % (channels, len(self.mean_values)))
        # The label image is 8-bit: padding with ignore_label saturates it to 0..255.
        self.label_fill = min(max(self.param.ignore_label, 0), 255)
        for field in _GEOMETRY_FIELDS:
            t.ClearField(field)
        return t

    def label_interpolation(self):
        return self.cv2.INTER_LINEAR

    def output_size(self, size):
        return self.crop or size

    def read(self, number, image_path, label):
        """The image of one list line as uint8 (C, H, W) and its label as uint8
        (1, H, W): the label image (PIXEL), or the integer (IMAGE) or ignore_label (NONE)
        saturated to 8 bits, in every pixel."""
        p = self.param
        if p.label_type == LABEL_TYPE.PIXEL:
            return super().read(number, image_path, label)
        filename = p.root_folder + image_path
        image = read_image(self.cv2, filename, p.new_height, p.new_width, p.is_color)
        if image is None:
            raise ValueError("%s:%d: OpenCV could not read image %s"
                             % (p.source, number, filename))
        value = p.ignore_label if label is None else label
        return image, np.full((1,) + image.shape[1:], min(max(value, 0), 255), np.uint8)

    def pair(self, number, image_path, label_path):
        """(image, label, data_dim) of one list line: TransformImgAndSeg's random scale,
        padding, crop, mean, scale and mirror."""
        image, label = self.read(number, image_path, label_path)
        height, width = image.shape[1:]
        mirror = bool(self.rng.randint(2)) if self.mirror else False
        if self.scale_factors:
            factor = self.scale_factors[self.rng.randint(len(self.scale_factors))]
            if factor != 1:
                size = (int(np.float32(width) * factor), int(np.float32(height) * factor))
                if min(size) < 1:
                    raise ValueError("%s:%d: scale factor %g leaves image %s with no pixels"
                                     % (self.param.source, number, factor,
                                        self.param.root_folder + image_path))
                image = _resize(self.cv2, image, size, self.cv2.INTER_LINEAR)
                label = _resize(self.cv2, label, size, self.cv2.INTER_NEAREST)
        if self.crop is not None:
            image, label = self.pad(image, label)
            image, label = self.cut(image, label)
        data = self.transform(number, image_path, image)
        label = label.astype(np.float32)
        if mirror:
            data, label = data[:, :, ::-1], label[:, :, ::-1]
        dim = np.array([min(data.shape[1], height), min(data.shape[2], width)], np.float32)
        return np.ascontiguousarray(data), np.ascontiguousarray(label), dim.reshape(1, 1, 2)

    def pad(self, image, label):
        """Image and label grown at the bottom and right to at least the crop: the image
        with the mean values (as float32), the label with ignore_label."""
        (c, h, w), (crop_h, crop_w) = image.shape, self.crop
        if h >= crop_h and w >= crop_w:
            return image, label
        size = (max(h, crop_h), max(w, crop_w))
        means = self.mean_values
        fill = means if len(means) == c else np.full(c, means[0] if len(means) else 0,
                                                      np.float32)
        padded = np.empty((c,) + size, np.float32)
        padded[...] = fill[:, np.newaxis, np.newaxis]
        padded[:, :h, :w] = image
        padded_label = np.full((1,) + size, self.label_fill, np.uint8)
        padded_label[:, :h, :w] = label
        return padded, padded_label

    def cut(self, image, label):
        """The crop window of both: at random offsets (height first) in TRAIN, centred in
        TEST."""
        (h, w), (crop_h, crop_w) = image.shape[1:], self.crop
        if self.phase == TRAIN:
            h_off = int(self.rng.randint(h - crop_h + 1))
            w_off = int(self.rng.randint(w - crop_w + 1))
        else:
            h_off, w_off = (h - crop_h) // 2, (w - crop_w) // 2
        window = (slice(None), slice(h_off, h_off + crop_h), slice(w_off, w_off + crop_w))
        return image[window], label[window]

    def forward(self, bottom, top):
        for blob, array in zip(top, self._next_batch()):
            blob.reshape(array.shape)
            blob.data[...] = self.backend.asarray(array)


def _resize(cv2, chw, size, interpolation):
    """A (C, H, W) array resized to `size` (width, height) by OpenCV."""
    hwc = cv2.resize(np.ascontiguousarray(chw.transpose(1, 2, 0)), size,
                     interpolation=interpolation)
    return hwc.reshape(size[1], size[0], -1).transpose(2, 0, 1)
