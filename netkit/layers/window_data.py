"""WindowData: R-CNN's window file -> batches of warped image windows (Caffe's WindowDataLayer).

window_data_param.source is a window file, whitespace separated, one block per image:

    # image_index
    image_path            (relative to root_folder)
    channels height width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines; corners inclusive, 0-based)

Windows with overlap >= fg_threshold are foreground (their class must be positive);
those with overlap < bg_threshold are background (label 0); others are not used. Every
batch draws batch_size - int(batch_size * fg_fraction) background windows, then the
foreground ones, uniformly with replacement from the layer's own random stream, and a
mirror coin per window when transform_param.mirror is set.

Each window is cut out of its image (read in colour with OpenCV) and warped with linear
interpolation to crop_size x crop_size. With context_pad, or crop_mode "square" (the
window made square around its centre first), the window is enlarged so that context_pad
pixels of the warped result show its surroundings; the part that falls outside the image
stays 0 in the top. Values are (pixel - mean) * scale, the mean being a mean_file's
centre crop_size window or mean_value per channel. `scale` is window_data_param.scale
(as in Caffe) unless transform_param sets one. cache_images keeps every image's file
bytes in memory. A daemon thread keeps data_param.prefetch batches ready. Top 0 is
(N, 3, crop_size, crop_size) float32, top 1 the labels (N,).
"""
import collections
import math
import os

import numpy as np

from ..data import private_rng
from ..data.datum import load_mean_file
from ..data.image import opencv
from ..errors import NetkitError
from ..layer import LayerSetupError
from ..log import logger
from ..registry import layers
from .base_data import PrefetchingDataLayer



@layers.register("WindowData")
class WindowDataLayer(PrefetchingDataLayer):
    exact_num_top = 2
    legacy_param = "window_data_param"
    legacy_fields = ("mean_file", "crop_size", "mirror")

    def setup(self, bottom, top):
        p = self.layer_param.window_data_param
        t = self.transform_param()
        crop = t.crop_size
        if p.batch_size <= 0:
            raise LayerSetupError("window_data_param.batch_size must be positive, got %d"
                                  % p.batch_size)
        if crop <= 0:
            raise LayerSetupError("transform_param.crop_size must be positive: WindowData "
                                  "warps windows to crop_size x crop_size")
        if p.crop_mode not in ("warp", "square"):
            raise LayerSetupError("window_data_param.crop_mode must be \"warp\" or "
                                  "\"square\", got \"%s\"" % p.crop_mode)
        if 2 * p.context_pad >= crop:
            raise LayerSetupError("window_data_param.context_pad %d leaves nothing of a "
                                  "crop_size %d window" % (p.context_pad, crop))
        if t.HasField("mean_file") and len(t.mean_value):
            raise LayerSetupError("transform_param cannot set mean_file and mean_value "
                                  "at the same time")
        prefetch = self.layer_param.data_param.prefetch
        if prefetch < 1:
            raise LayerSetupError("data_param.prefetch must be at least 1, got %d" % prefetch)
        if not os.path.isfile(p.source):
            raise LayerSetupError("window_data_param.source %s does not exist"
                                  % (p.source or "''"))
        try:
            cv2 = opencv()
            images, windows = read_window_file(p.source, p.root_folder)
        except NetkitError as e:
            raise LayerSetupError(str(e)) from None
        fg, bg = [], []
        for w in windows:
            if w.overlap >= p.fg_threshold:
                fg.append(w)
            elif w.overlap < p.bg_threshold:
                bg.append(w._replace(label=0, overlap=0.0))
        bad = next((w for w in fg if w.label <= 0), None)
        if bad is not None:
            raise LayerSetupError("%s:%d: a foreground window (overlap %g >= fg_threshold) "
                                  "needs a positive class, got %d"
                                  % (p.source, bad.line, bad.overlap, bad.label))
        if not fg or not bg:
            raise LayerSetupError("%s has no %s windows (fg_threshold %g, bg_threshold %g)"
                                  % (p.source, "foreground" if not fg else "background",
                                     p.fg_threshold, p.bg_threshold))
        counts = {0: len(bg)}
        for w in fg:
            counts[w.label] = counts.get(w.label, 0) + 1
        for label in sorted(counts):
            logger.info("class %d has %d samples", label, counts[label])
        mean = self._mean(t, crop)
        scale = t.scale if t.HasField("scale") else p.scale
        if p.cache_images:
            images = [image._replace(data=_file_bytes(image, p.source)) for image in images]
        sampler = _WindowSampler(p, crop, t.mirror, mean, np.float32(scale), images, fg, bg,
                                 private_rng(), cv2)
        top[0].reshape((p.batch_size, 3, crop, crop))
        logger.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        top[1].reshape((p.batch_size,))

        self.start_prefetch(sampler.load, prefetch, p.source)

    def _mean(self, t, crop):
        """The mean subtracted from a (3, crop, crop) window: a mean_file's centre window
        (Caffe offsets both axes by (width - crop_size) / 2), mean_value, or 0."""
        if t.HasField("mean_file"):
            logger.info("Loading mean file from: %s", t.mean_file)
            try:
                mean = load_mean_file(t.mean_file)
            except (OSError, ValueError) as e:
                raise LayerSetupError("transform_param.mean_file: %s" % e) from None
            c, h, w = mean.shape
            off = (w - crop) // 2
            if c != 3 or off < 0 or off + crop > h:
                raise LayerSetupError("transform_param.mean_file %s is %dx%dx%d; WindowData "
                                      "needs 3 channels and a centre window of crop_size %d"
                                      % (t.mean_file, c, h, w, crop))
            return mean[:, off:off + crop, off:off + crop]
        if len(t.mean_value) not in (0, 1, 3):
            raise LayerSetupError("transform_param.mean_value: give 1 value or one per "
                                  "channel (3), not %d" % len(t.mean_value))
        values = np.zeros(3, np.float32) + np.array(t.mean_value or [0], np.float32)
        return np.broadcast_to(values.reshape(3, 1, 1), (3, crop, crop))



# One image block of a window file: path (root_folder included), the line naming it, and the
# file's bytes when cache_images keeps them.
_Image = collections.namedtuple("_Image", "path line data", defaults=(None,))
# One window line: image (its block's index), label, overlap, inclusive corners, line.
_Window = collections.namedtuple("_Window", "image label overlap x1 y1 x2 y2 line")


def read_window_file(path, root_folder=""):
    """A window file -> ([image], [window]), checked token by token; errors name the line."""
    with open(path) as f:
        tokens = [(token, number) for number, line in enumerate(f, 1) for token in line.split()]
    if not tokens:
        raise NetkitError("window file %s is empty" % path)
    pos = 0

    def take(kind, what):
        nonlocal pos
        if pos == len(tokens):
            raise NetkitError("%s ends where %s was expected" % (path, what))
        token, number = tokens[pos]
        pos += 1
        try:
            return kind(token), number
        except ValueError:
            raise NetkitError("%s:%d: expected %s, got '%s'"
                              % (path, number, what, token)) from None

    images, windows = [], []
    while pos < len(tokens):
        hashtag, number = take(str, "'#'")
        if hashtag != "#":
            raise NetkitError("%s:%d: expected '#' to start an image block, got '%s'"
                              % (path, number, hashtag))
        index, number = take(int, "an image index")
        if index != len(images):
            raise NetkitError("%s:%d: image index %d out of order (expected %d)"
                              % (path, number, index, len(images)))
        image_path, number = take(str, "an image path")
        channels = take(int, "the image's channels")[0]
        take(int, "the image's height")
        take(int, "the image's width")
        if channels != 3:
            raise NetkitError("%s:%d: image %s has %d channels; WindowData reads colour "
                              "images (3 channels)" % (path, number, image_path, channels))
        images.append(_Image(root_folder + image_path, number))
        for _ in range(take(int, "the number of windows")[0]):
            label, number = take(int, "a class index")
            overlap = float(take(np.float32, "an overlap")[0])  # compared in float32
            corners = [take(int, "a window corner")[0] for _ in range(4)]
            windows.append(_Window(index, label, overlap, *corners, number))
    logger.info("Number of images: %d", len(images))
    return images, windows


def _file_bytes(image, source):
    try:
        with open(image.path, "rb") as f:
            return f.read()
    except OSError as e:
        raise LayerSetupError("%s:%d: cannot read image %s: %s"
                              % (source, image.line, image.path, e.strerror or e)) from None


def _round(x):
    """C's round of a float32: halves away from zero."""
    x = float(x)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def warp_geometry(x1, y1, x2, y2, rows, cols, crop, context_pad, square, mirror):
    """Caffe's window geometry in float32: the clipped region (x1, y1, x2, y2) to cut out,
    the (width, height) to warp it to, and where it goes in the crop (pad_h, pad_w)."""
    f = np.float32
    size, pad_h, pad_w = [crop, crop], 0, 0
    if context_pad > 0 or square:
        context_scale = f(crop) / f(crop - 2 * context_pad)
        half_h, half_w = f(y2 - y1 + 1) / f(2), f(x2 - x1 + 1) / f(2)
        cx, cy = f(x1) + half_w, f(y1) + half_h
        if square:
            half_h = half_w = max(half_h, half_w)
        x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
        y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        scale_x, scale_y = f(crop) / f(unclipped_w), f(crop) / f(unclipped_h)
        size = [_round(f(x2 - x1 + 1) * scale_x), _round(f(y2 - y1 + 1) * scale_y)]
        pad_h = _round(f(py1) * scale_y)
        # A mirrored window is padded on the mirrored side.
        pad_w = _round(f(px2 if mirror else px1) * scale_x)
        size[1] = min(size[1], crop - pad_h)
        size[0] = min(size[0], crop - pad_w)
    return (x1, y1, x2, y2), tuple(size), pad_h, pad_w


class _WindowSampler:
    """Draws and warps the windows of each batch (on the prefetch thread)."""

    def __init__(self, param, crop, mirror, mean, scale, images, fg, bg, rng, cv2):
        self.source = param.source
        self.batch_size = param.batch_size
        self.context_pad = param.context_pad
        self.square = param.crop_mode == "square"
        self.num_fg = int(np.float32(param.batch_size) * np.float32(param.fg_fraction))
        self.crop, self.mirror, self.mean, self.scale = crop, mirror, mean, scale
        self.images, self.fg, self.bg = images, fg, bg
        self.rng, self.cv2 = rng, cv2

    def load(self):
        crop = self.crop
        data = np.zeros((self.batch_size, 3, crop, crop), np.float32)
        labels = np.zeros(self.batch_size, np.float32)
        counts = (self.batch_size - self.num_fg, self.num_fg)
        item = 0
        for windows, count in zip((self.bg, self.fg), counts):
            for _ in range(count):
                window = windows[self.rng.randint(len(windows))]
                flip = bool(self.mirror and self.rng.randint(2))
                patch, pad_h, pad_w = self.warp(window, flip)
                rows, cols = patch.shape[1:]
                out = data[item, :, pad_h:pad_h + rows, pad_w:pad_w + cols]
                out[...] = patch
                out -= self.mean[:, pad_h:pad_h + rows, pad_w:pad_w + cols]
                out *= self.scale
                labels[item] = window.label
                item += 1
        return data, labels

    def warp(self, window, flip):
        """The window's warped (and mirrored) pixels as uint8 (3, h, w), and its offset."""
        cv2 = self.cv2
        image = self.images[window.image]
        if image.data is not None:
            pixels = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)
        else:
            pixels = cv2.imread(image.path, cv2.IMREAD_COLOR)
        if pixels is None:
            raise ValueError("%s:%d: OpenCV could not read image %s"
                             % (self.source, image.line, image.path))
        rows, cols = pixels.shape[:2]
        (x1, y1, x2, y2), size, pad_h, pad_w = warp_geometry(
            window.x1, window.y1, window.x2, window.y2, rows, cols, self.crop,
            self.context_pad, self.square, flip)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or min(size) <= 0:
            raise ValueError("%s:%d: window (%d, %d, %d, %d) does not fit image %s (%dx%d)"
                             % (self.source, window.line, window.x1, window.y1, window.x2,
                                window.y2, image.path, cols, rows))
        patch = cv2.resize(pixels[y1:y2 + 1, x1:x2 + 1], size, interpolation=cv2.INTER_LINEAR)
        if flip:
            patch = patch[:, ::-1]
        return patch.transpose(2, 0, 1), pad_h, pad_w
