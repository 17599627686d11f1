"""ImageData: batches of image files named in a list file (Caffe's ImageDataLayer).

image_data_param.source is a text file of "path label" lines, split at the last space as
Caffe does (convert_imageset reads the same format). Each path is read from root_folder +
path with OpenCV: in colour (3 channels, BGR) or, with `is_color: false`, grey; resized
with linear interpolation when new_height and new_width are set. transform_param then
crops, mirrors, subtracts the mean and scales, as for the Data layer.

Images are read in list order and the reading wraps to the first line after the last.
With `shuffle`, the list is shuffled at setup and again at every wrap, from the layer's
own random stream; `rand_skip` starts at a random line below it. A daemon thread keeps
data_param.prefetch batches ready (Caffe takes every prefetching layer's count from
data_param), drawing crops and mirrors from a random stream of its own, so a seeded run,
and a run resumed from a snapshot, read exactly the same batches. Images of one batch must
have one size unless transform_param.crop_size crops them all to one (batch_size 1 allows
any sizes: the top takes each batch's shape). Top 0 is the images (N, C, H, W) float32,
top 1 the labels (N,).
"""
import copy
import os

import numpy as np

from ..data import private_rng, shape_text
from ..data.image import opencv, read_image
from ..data.transformer import DataTransformer, TransformError
from ..errors import NetkitError
from ..layer import LayerSetupError
from ..log import logger
from ..registry import layers
from .base_data import PrefetchingDataLayer


@layers.register("ImageData")
class ImageDataLayer(PrefetchingDataLayer):
    exact_num_top = 2
    legacy_param = "image_data_param"

    def setup(self, bottom, top):
        from ..data.image import read_list

        p = self.layer_param.image_data_param
        if (p.new_height > 0) != (p.new_width > 0):
            raise LayerSetupError("image_data_param.new_height and new_width must be set "
                                  "together (got %d and %d)" % (p.new_height, p.new_width))
        if p.batch_size <= 0:
            raise LayerSetupError("image_data_param.batch_size must be positive, got %d"
                                  % p.batch_size)
        prefetch = self.layer_param.data_param.prefetch
        if prefetch < 1:
            raise LayerSetupError("data_param.prefetch must be at least 1, got %d" % prefetch)
        if not os.path.isfile(p.source):
            raise LayerSetupError("image_data_param.source %s does not exist"
                                  % (p.source or "''"))
        try:
            cv2 = opencv()
            logger.info("Opening file %s", p.source)
            lines = read_list(p.source)
        except NetkitError as e:
            raise LayerSetupError(str(e)) from None
        if not lines:
            raise LayerSetupError("image_data_param.source %s lists no images" % p.source)
        if p.rand_skip > len(lines):
            raise LayerSetupError("image_data_param.rand_skip %d exceeds the %d images "
                                  "listed in %s" % (p.rand_skip, len(lines), p.source))
        try:
            transformer = DataTransformer(self.transform_param(), self.phase, private_rng())
        except TransformError as e:
            raise LayerSetupError(str(e)) from None
        images = _ImageList.start(p, lines, transformer, private_rng(), cv2)
        logger.info("A total of %d images.", len(lines))
        try:
            chw = transformer.output_shape(images.first().shape)
        except (ValueError, TransformError) as e:
            raise LayerSetupError(str(e)) from None
        top[0].reshape((p.batch_size,) + chw)
        logger.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        top[1].reshape((p.batch_size,))

        # Kept as the stream's start: each stream reads from a copy of it.
        self._start = images
        self.start_stream(prefetch, p.source)

    def open_stream(self, position):
        """The list from its order and line at setup, moved `position` batches forward
        (see `_ImageList.skip`)."""
        images = self._start.copy()
        skipping = [position] if position else []

        def load():
            if skipping:
                images.skip(skipping.pop())
            return images.load()

        return load, None


class _ImageList:
    """The list's lines in reading order, read into transformed batches.

    `rng` orders the list (Caffe's prefetch_rng_): a shuffle at setup and at every wrap,
    and the rand_skip draw. After setup only the prefetch thread uses it.
    """

    def __init__(self, param, lines, line, transformer, rng, cv2):
        self.param = param
        self.lines = lines
        self.line = line
        self.transformer = transformer
        self.rng = rng
        self.cv2 = cv2

    @classmethod
    def start(cls, param, lines, transformer, rng, cv2):
        """The list as a layer starts reading it: shuffled with `shuffle`, from a random
        line below rand_skip."""
        if param.shuffle:
            logger.info("Shuffling data")
            rng.shuffle(lines)
        line = int(rng.randint(param.rand_skip)) if param.rand_skip else 0
        if line:
            logger.info("Skipping first %d data points.", line)
        return cls(param, lines, line, transformer, rng, cv2)

    def copy(self):
        """An independent list in the same state: order, line and both random streams."""
        return _ImageList(self.param, list(self.lines), self.line,
                          self.transformer.with_rng(copy.deepcopy(self.transformer.rng)),
                          copy.deepcopy(self.rng), self.cv2)

    def first(self):
        """The image the first batch starts with (setup shapes the tops after it)."""
        return self.read(*self.lines[self.line])

    def read(self, number, path, label):
        """The image of one list line as uint8 (C, H, W); a ValueError naming the line when
        OpenCV cannot read it (Caffe aborts there too)."""
        p = self.param
        filename = p.root_folder + path
        image = read_image(self.cv2, filename, p.new_height, p.new_width, p.is_color)
        if image is None:
            raise ValueError("%s:%d: OpenCV could not read image %s"
                             % (p.source, number, filename))
        return image

    def load(self):
        """The next batch (images, labels)."""
        entries = self.next_entries()
        images = [self.read(*entry) for entry in entries]
        labels = np.array([label for _, _, label in entries], dtype=np.float32)
        return self.transform(images, entries), labels

    def next_entries(self):
        """The next batch's list lines: batch_size lines from where the last batch ended,
        wrapping (and reshuffling) at the end of the list."""
        entries = []
        for _ in range(self.param.batch_size):
            entries.append(self.lines[self.line])
            self.line += 1
            if self.line == len(self.lines):
                self.line = 0
                if self.param.shuffle:
                    self.rng.shuffle(self.lines)
        return entries

    def skip(self, n):
        """Move `n` batches forward as `load` would, without making them: the lines advance
        (and reshuffle) and the transformer makes each batch's random draws, as `transform`
        does (they do not depend on the images' sizes, so no image is read)."""
        for _ in range(n):
            self.transformer.skip(len(self.next_entries()))

    def transform(self, images, entries):
        """One transformed float32 batch; images of several sizes only when cropped."""
        p, t = self.param, self.transformer
        try:
            if all(image.shape == images[0].shape for image in images):
                return t(np.stack(images))
            if t.crop:
                return t(images)  # each cropped within its own size
        except TransformError as e:
            raise ValueError("%s:%d: image %s: %s" % (p.source, entries[0][0],
                                                      p.root_folder + entries[0][1], e)) from None
        i = next(i for i, image in enumerate(images) if image.shape != images[0].shape)
        raise ValueError("%s:%d: image %s is %s but the batch's first image %s is %s; set "
                         "image_data_param.new_height and new_width, or "
                         "transform_param.crop_size" % (
                             p.source, entries[i][0], p.root_folder + entries[i][1],
                             shape_text(images[i].shape), p.root_folder + entries[0][1],
                             shape_text(images[0].shape)))
