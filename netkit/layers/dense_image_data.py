"""Image and per-pixel label pairs named in a list file: caffe-segnet's DenseImageData and
HED's (s9xie/hed) ImageLabelmapData.

The source is a text file of "image label_image" lines (two paths without spaces), both
read from root_folder + path with OpenCV; the label image in grey. Lines are read in order
and wrap to the first after the last; with `shuffle` the list is shuffled at setup and at
every wrap from the layer's own random stream, and `rand_skip` starts at a random line
below it. Top 0 is the images (N, C, H, W) float32, top 1 the labels (N, 1, H, W); each
batch takes its images' size, so the images of one batch must share one.

The two forks differ in how the pair is resized, cropped, mirrored and labelled:

- DenseImageData (dense_image_data_param): new_height/new_width resize the image linearly
  and the label by nearest neighbour; `mirror` flips a fair coin per pair and
  crop_height/crop_width cut one random window from both, in every phase. transform_param
  then subtracts the mean and scales the image only (its mirror and crop_size would break
  the pairing, so the fork refuses them). Labels keep their pixel values (class indices).
- ImageLabelmapData (image_data_param): new_height/new_width resize both linearly. The
  label map becomes 1 where its grey value is at least 128 and 0 elsewhere (the fork
  divides the 8-bit map by 255 with OpenCV's rounding: HED's "consensus sampling").
  transform_param's mirror coin and crop_size window (random in every phase) apply to both;
  its mean and scale to the image only.
"""
import numpy as np

from .. import netkit_pb2 as pb
from ..data import private_rng, shape_text
from ..data.image import opencv
from ..data.transformer import DataTransformer, TransformError
from ..errors import NetkitError
from ..layer import LayerSetupError
from ..log import logger
from ..registry import layers
from .base_data import PrefetchingDataLayer


def list_lines(source):
    """[(line number, words)] of the non-blank lines of a list file; a NetkitError naming
    the file when it cannot be read."""
    try:
        with open(source) as f:
            text = f.read()
    except OSError as e:
        raise NetkitError("%s: cannot read the list file: %s"
                          % (source, e.strerror or e)) from None
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), 1)
            if line.split()]


def read_pairs(source):
    """SOURCE -> [(line number, image path, label path)]; a NetkitError naming the file and
    line for a line that is not two paths (blank lines are skipped)."""
    pairs = []
    for number, fields in list_lines(source):
        if len(fields) != 2:
            raise NetkitError("%s:%d: expected 'image label_image', got %r"
                              % (source, number, " ".join(fields)))
        pairs.append((number, fields[0], fields[1]))
    return pairs


class _PairData(PrefetchingDataLayer):
    """What both layers share: the list, its order, the prefetch thread, the batches.

    Subclasses set `param_name` and implement `check_transform` (the TransformationParameter
    for mean and scale), `label_interpolation`, `mirrors`, `output_size` and `pair` (one
    list line to a transformed (image, label) pair of float32 arrays, which may carry
    further per-image arrays after the two: batches stack each). `read_list` may read
    another list format into the same (line number, image path, label path) entries."""
    exact_num_top = 2
    param_name = None
    # Whether the label must have the image's size before both are resized (HED checks;
    # SegNet resizes each to new_height x new_width first).
    sizes_match_before_resize = True

    def setup(self, bottom, top):
        p = self.param = getattr(self.layer_param, self.param_name)
        name = self.param_name
        if (p.new_height > 0) != (p.new_width > 0):
            raise LayerSetupError("%s.new_height and new_width must be set together (got %d "
                                  "and %d)" % (name, p.new_height, p.new_width))
        if p.batch_size <= 0:
            raise LayerSetupError("%s.batch_size must be positive, got %d"
                                  % (name, p.batch_size))
        prefetch = self.layer_param.data_param.prefetch
        if prefetch < 1:
            raise LayerSetupError("data_param.prefetch must be at least 1, got %d" % prefetch)
        try:
            self.cv2 = opencv()
            logger.info("Opening file %s", p.source)
            self.lines = self.read_list(p.source)
        except NetkitError as e:
            raise LayerSetupError(str(e)) from None
        if not self.lines:
            raise LayerSetupError("%s.source %s lists no images" % (name, p.source))
        transform = self.check_transform()
        try:
            self.transformer = DataTransformer(transform, self.phase)
        except TransformError as e:
            raise LayerSetupError(str(e)) from None
        self.order_rng, self.rng = private_rng(), private_rng()
        if p.shuffle:
            logger.info("Shuffling data")
            self.order_rng.shuffle(self.lines)
        logger.info("A total of %d images.", len(self.lines))
        self.line = 0
        if p.rand_skip:
            if p.rand_skip > len(self.lines):
                raise LayerSetupError("%s.rand_skip %d exceeds the %d images listed in %s"
                                      % (name, p.rand_skip, len(self.lines), p.source))
            self.line = int(self.order_rng.randint(p.rand_skip))
            logger.info("Skipping first %d data points.", self.line)
        try:
            image, label = self.read(*self.lines[self.line])
            height, width = self.output_size(image.shape[1:])
        except ValueError as e:
            raise LayerSetupError(str(e)) from None
        top[0].reshape((p.batch_size, image.shape[0], height, width))
        top[1].reshape((p.batch_size, 1, height, width))
        logger.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        self.start_prefetch(self.load, prefetch, p.source)

    def read_list(self, source):
        """The list file's entries: (line number, image path, label path) per line."""
        return read_pairs(source)

    def read(self, number, image_path, label_path):
        """The pair of one list line as uint8 (C, H, W) and (1, H, W), resized when
        new_height and new_width are set; a ValueError naming the line when OpenCV cannot
        read a file or the two sizes differ."""
        p, cv2 = self.param, self.cv2
        image_file, label_file = p.root_folder + image_path, p.root_folder + label_path
        image = cv2.imread(image_file, cv2.IMREAD_COLOR if p.is_color else cv2.IMREAD_GRAYSCALE)
        label = cv2.imread(label_file, cv2.IMREAD_GRAYSCALE)
        for data, filename in ((image, image_file), (label, label_file)):
            if data is None:
                raise ValueError("%s:%d: OpenCV could not read image %s"
                                 % (p.source, number, filename))
        resize = p.new_height > 0
        if (self.sizes_match_before_resize or not resize) and label.shape != image.shape[:2]:
            raise ValueError("%s:%d: label image %s is %dx%d but image %s is %dx%d"
                             % (p.source, number, label_file, label.shape[0], label.shape[1],
                                image_file, image.shape[0], image.shape[1]))
        if resize:
            size = (p.new_width, p.new_height)
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, size, interpolation=self.label_interpolation())
        image = image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)
        return image, label[np.newaxis]

    def geometry(self, size, crop):
        """(mirror, h_off, w_off) for one pair of `size` (H, W): a mirror coin when
        mirroring, then a random window of `crop` (h, w) (or none, when crop is None),
        drawn in every phase as both forks do."""
        mirror = bool(self.rng.randint(2)) if self.mirrors() else False
        if crop is None:
            return mirror, 0, 0
        h_off = int(self.rng.randint(size[0] - crop[0] + 1))
        w_off = int(self.rng.randint(size[1] - crop[1] + 1))
        return mirror, h_off, w_off

    def load(self):
        """The next batch (images, labels, ...), reading batch_size lines from where the
        last batch ended and wrapping (and reshuffling) at the end of the list."""
        p = self.param
        items, first = [], None
        for _ in range(p.batch_size):
            number, image_path, label_path = self.lines[self.line]
            item = self.pair(number, image_path, label_path)
            image = item[0]
            if first is None:
                first = (number, image_path, image.shape)
            elif image.shape != first[2]:
                raise ValueError("%s:%d: image %s gives %s but the batch's first image %s "
                                 "gives %s; resize or crop them to one size"
                                 % (p.source, number, p.root_folder + image_path,
                                    shape_text(image.shape), p.root_folder + first[1],
                                    shape_text(first[2])))
            items.append(item)
            self.line += 1
            if self.line == len(self.lines):
                self.line = 0
                if p.shuffle:
                    self.order_rng.shuffle(self.lines)
        return tuple(np.stack(column) for column in zip(*items))

    def transform(self, number, image_path, image):
        """Mean and scale of transform_param applied to one uint8 image."""
        try:
            return self.transformer(image[np.newaxis])[0]
        except TransformError as e:
            raise ValueError("%s:%d: image %s: %s" % (self.param.source, number,
                                                       self.param.root_folder + image_path,
                                                       e)) from None

    def check_crop(self, number, image_path, size, crop):
        if crop is not None and (size[0] < crop[0] or size[1] < crop[1]):
            raise ValueError("%s:%d: image %s is %dx%d, smaller than the %dx%d crop"
                             % (self.param.source, number, self.param.root_folder + image_path,
                                size[0], size[1], crop[0], crop[1]))


@layers.register("DenseImageData")
class DenseImageDataLayer(_PairData):
    param_name = "dense_image_data_param"
    legacy_param = "dense_image_data_param"
    legacy_fields = ()
    sizes_match_before_resize = False

    def check_transform(self):
        p = self.param
        if (p.crop_height > 0) != (p.crop_width > 0):
            raise LayerSetupError("dense_image_data_param.crop_height and crop_width must be "
                                  "set together (got %d and %d)"
                                  % (p.crop_height, p.crop_width))
        transform = self.transform_param()
        if transform.mirror or transform.crop_size:
            raise LayerSetupError("DenseImageData cannot use transform_param.mirror or "
                                  "crop_size (the label would not follow); use "
                                  "dense_image_data_param.mirror, crop_height and crop_width")
        return transform

    def label_interpolation(self):
        return self.cv2.INTER_NEAREST

    def mirrors(self):
        return self.param.mirror

    def crop(self):
        p = self.param
        return (p.crop_height, p.crop_width) if p.crop_height > 0 else None

    def output_size(self, size):
        return self.crop() or size

    def pair(self, number, image_path, label_path):
        """Mirror and crop the uint8 pair, then the image's mean and scale."""
        image, label = self.read(number, image_path, label_path)
        crop = self.crop()
        mirror, h_off, w_off = self.geometry(image.shape[1:], crop)
        if mirror:
            image, label = image[:, :, ::-1], label[:, :, ::-1]
        if crop is not None:
            self.check_crop(number, image_path, image.shape[1:], crop)
            window = (slice(None), slice(h_off, h_off + crop[0]), slice(w_off, w_off + crop[1]))
            image, label = image[window], label[window]
        return (self.transform(number, image_path, np.ascontiguousarray(image)),
                label.astype(np.float32))


@layers.register("ImageLabelmapData")
class ImageLabelmapDataLayer(_PairData):
    param_name = "image_data_param"
    legacy_param = "image_data_param"

    def check_transform(self):
        transform = self.transform_param()
        self.crop_size = transform.crop_size
        self.mirror = transform.mirror
        geometry_free = pb.TransformationParameter()
        geometry_free.CopyFrom(transform)
        geometry_free.ClearField("crop_size")
        geometry_free.ClearField("mirror")
        return geometry_free

    def label_interpolation(self):
        return self.cv2.INTER_LINEAR

    def mirrors(self):
        return self.mirror

    def output_size(self, size):
        return (self.crop_size, self.crop_size) if self.crop_size else size

    def pair(self, number, image_path, label_path):
        """The image's mean and scale at full size, the label map thresholded, then the
        same crop and mirror for both (the mean file is indexed at the crop, as in Caffe)."""
        image, label = self.read(number, image_path, label_path)
        size = image.shape[1:]
        crop = (self.crop_size, self.crop_size) if self.crop_size else None
        self.check_crop(number, image_path, size, crop)
        mirror, h_off, w_off = self.geometry(size, crop)
        data = self.transform(number, image_path, image)
        edges = (label >= 128).astype(np.float32)
        if crop is not None:
            window = (slice(None), slice(h_off, h_off + crop[0]), slice(w_off, w_off + crop[1]))
            data, edges = data[window], edges[window]
        if mirror:
            data, edges = data[:, :, ::-1], edges[:, :, ::-1]
        return np.ascontiguousarray(data), np.ascontiguousarray(edges)
