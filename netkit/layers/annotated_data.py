"""AnnotatedData: SSD's data layer, images with boxes from an LMDB of AnnotatedDatum records
(as `netkit convert_annoset` writes them).

Records are read as the Data layer reads Datums: in key order, wrapping at the end, after
`rand_skip`, data-parallel ranks taking every N-th record, batches made ahead by a prefetch
thread. Each image goes through SSD's pipeline, in SSD's order:

1. distort_param: random brightness, contrast, saturation and hue changes, then a random
   channel order; a fair coin picks contrast first or last;
2. expand_param: with probability `prob` the image is put at a random place on a canvas up
   to `max_expand_ratio` times larger, filled with mean_value (zoom out);
3. batch_sampler: each sampler draws `max_trials` boxes of random scale and aspect ratio and
   keeps those meeting its sample_constraint (at most `max_sample`); one box of all the
   samplers' is picked at random and the image cropped to it;
4. the transform: a mirror coin, resize_param (WARP, FIT_SMALL_SIZE or
   FIT_LARGE_SIZE_AND_PAD, the interpolation drawn from interp_mode), crop_size or
   crop_h/crop_w (random in TRAIN, centred in TEST), then (pixel - mean) * scale.

Boxes follow every step that moves pixels. After expanding, cropping and transforming, a box
is kept only if it meets emit_constraint (its centre inside the window, or more than
`emit_overlap` of it inside) and keeps some area; it is then clipped to the image. For
anno_type BBOX top 1 is (1, 1, G, 8), one row [item_id, group_label, instance_id, xmin, ymin,
xmax, ymax, difficult] per box of the batch, or one row of -1 when no box is left. Records
without an annotation type give their Datum labels (N,) instead, as in SSD.

As in SSD, the phase switches none of steps 1-3 off (SSD's test nets leave them out), and
all draws come from the layer's private random stream, so `random_seed` repeats a run.
Where SSD only handles encoded records (distortion, resizing) netkit treats raw records the
same way, and expanded or cropped images stay decoded instead of being re-encoded as JPEG.
"""

import lmdb
import numpy as np
from google.protobuf.message import DecodeError

from .. import netkit_pb2 as pb
from ..data import private_rng, shape_text
from ..data.datum import RecordReader, datum_to_array, first_record, load_mean_file
from ..data.image import opencv
from ..errors import NetkitError
from ..layer import TRAIN, LayerSetupError
from ..log import logger
from ..parallel import solver_count, solver_rank
from ..registry import layers
from .base_data import PrefetchingDataLayer
from .data import check_data_param
from .bbox_util import box_size, intersection_sides, jaccard_overlap

RESIZE = pb.ResizeParameter
_INTERPOLATION = {RESIZE.LINEAR: "INTER_LINEAR", RESIZE.AREA: "INTER_AREA",
                  RESIZE.NEAREST: "INTER_NEAREST", RESIZE.CUBIC: "INTER_CUBIC",
                  RESIZE.LANCZOS4: "INTER_LANCZOS4"}
_BORDER = {RESIZE.CONSTANT: "BORDER_CONSTANT", RESIZE.MIRRORED: "BORDER_REFLECT101",
           RESIZE.REPEAT_NEAREST: "BORDER_REPLICATE"}

# The annotation table of one image: a float32 row per box, in record order, with columns
# group_label, instance_id, xmin, ymin, xmax, ymax, difficult (the label row less item_id).
BOX = slice(2, 6)


def read_annotations(anno_datum):
    """The annotation table of an AnnotatedDatum (groups in order, their boxes in order)."""
    rows = [(group.group_label, anno.instance_id, anno.bbox.xmin, anno.bbox.ymin,
             anno.bbox.xmax, anno.bbox.ymax, anno.bbox.difficult)
            for group in anno_datum.annotation_group for anno in group.annotation]
    return np.array(rows, np.float32).reshape(-1, 7)


def _box(xmin, ymin, xmax, ymax):
    return np.array([xmin, ymin, xmax, ymax], np.float32)


def coverage(a, b):
    """SSD's BBoxCoverage of each box of `a` by each of `b`: the share of a's area that lies
    inside b, (len(a), len(b)); 0 where they do not overlap with some area."""
    iwidth, iheight = intersection_sides(a, b)
    inter = np.where((iwidth > 0) & (iheight > 0), iwidth * iheight, np.float32(0))
    area = np.broadcast_to(box_size(a)[:, None], inter.shape)
    return np.divide(inter, area, out=np.zeros_like(inter), where=inter > 0)


def meets_emit(boxes, window, emit):
    """SSD's MeetEmitConstraint: CENTER keeps boxes whose centre lies in `window` (edges
    included), MIN_OVERLAP those with more than `emit_overlap` of their area inside it."""
    if emit.emit_type == pb.EmitConstraint.CENTER:
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx >= window[0]) & (cx <= window[2]) & (cy >= window[1]) & (cy <= window[3])
    return coverage(boxes, window[None])[:, 0] > emit.emit_overlap


def project(table, window, emit):
    """SSD's TransformAnnotation step: the rows whose boxes meet `emit` (None: no
    constraint) and overlap `window`, a box in the old image's normalised coordinates, with
    the boxes re-expressed in the window's coordinates and clipped to it; boxes left
    without area are dropped."""
    boxes = table[:, BOX]
    keep = ~((boxes[:, 0] >= window[2]) | (boxes[:, 2] <= window[0])
             | (boxes[:, 1] >= window[3]) | (boxes[:, 3] <= window[1]))
    if emit is not None:
        keep &= meets_emit(boxes, window, emit)
    origin = np.tile(window[:2], 2)
    extent = np.tile(window[2:] - window[:2], 2)
    projected = np.clip((boxes - origin) / extent, np.float32(0), np.float32(1))
    keep &= box_size(projected) > 0
    out = table[keep]
    out[:, BOX] = projected[keep]
    return out


def resize_boxes(boxes, param, width, height):
    """SSD's UpdateBBoxByResizePolicy: boxes of a width x height image, normalised, moved
    to where resize_param puts them (FIT_LARGE_SIZE_AND_PAD shifts them past the padding)."""
    f = np.float32
    new_w, new_h = f(param.width), f(param.height)
    old_w, old_h = f(width), f(height)
    orig_aspect = old_w / old_h
    x0, y0 = boxes[:, 0] * old_w, boxes[:, 1] * old_h
    x1, y1 = boxes[:, 2] * old_w, boxes[:, 3] * old_h
    pad_x = pad_y = f(0)
    if param.resize_mode == RESIZE.FIT_SMALL_SIZE:
        if orig_aspect < new_w / new_h:
            new_h = new_w / orig_aspect
        else:
            new_w = orig_aspect * new_h
    elif param.resize_mode == RESIZE.FIT_LARGE_SIZE_AND_PAD:
        if orig_aspect > new_w / new_h:
            pad_y = (new_h - new_w / orig_aspect) / 2
        else:
            pad_x = (new_w - orig_aspect * new_h) / 2
    x0 = pad_x + np.maximum(f(0), x0 * (new_w - 2 * pad_x) / old_w)
    x1 = pad_x + np.minimum(new_w, x1 * (new_w - 2 * pad_x) / old_w)
    y0 = pad_y + np.maximum(f(0), y0 * (new_h - 2 * pad_y) / old_h)
    y1 = pad_y + np.minimum(new_h, y1 * (new_h - 2 * pad_y) / old_h)
    return np.stack([x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h], axis=1)


def resized_size(param, width, height):
    """SSD's InferNewSize: (width, height) of a width x height image after resize_param."""
    new_w, new_h = param.width, param.height
    if param.resize_mode == RESIZE.FIT_SMALL_SIZE:
        orig_aspect = np.float32(width) / np.float32(height)
        if orig_aspect < np.float32(new_w) / np.float32(new_h):
            new_h = int(np.float32(new_w) / orig_aspect)
        else:
            new_w = int(orig_aspect * np.float32(new_h))
    return new_w, new_h


# Sample constraints by kind: SSD's SatisfySampleConstraint accepts a sampled box as soon as
# one object passes the first kind the constraint sets, so only that kind decides.
_CONSTRAINTS = (("jaccard_overlap", jaccard_overlap),
                ("sample_coverage", coverage),
                ("object_coverage", lambda boxes, objects: coverage(objects, boxes).T))


def satisfies(boxes, objects, constraint):
    """Whether each sampled box meets `constraint` with some object (all do when the
    constraint sets nothing; none does when there are no objects)."""
    for kind, measure in _CONSTRAINTS:
        low, high = "min_" + kind, "max_" + kind
        if constraint.HasField(low) or constraint.HasField(high):
            value = measure(boxes, objects)
            ok = np.ones(value.shape, bool)
            if constraint.HasField(low):
                ok &= value >= getattr(constraint, low)
            if constraint.HasField(high):
                ok &= value <= getattr(constraint, high)
            return ok.any(axis=1)
    return np.ones(len(boxes), bool)


def sample_boxes(rng, batch_sampler, objects):
    """SSD's GenerateSamples: `max_trials` boxes of uniform scale and aspect ratio (the
    ratio bounded so the box fits the image) at uniform positions; the first `max_sample`
    of those meeting the sample_constraint with the `objects` boxes. All trials are drawn
    at once, where SSD stops drawing at `max_sample`: the boxes kept are alike."""
    s = batch_sampler.sampler
    f = np.float32
    u = rng.random_sample((batch_sampler.max_trials, 4)).astype(np.float32)
    scale = f(s.min_scale) + u[:, 0] * (f(s.max_scale) - f(s.min_scale))
    ratio = f(s.min_aspect_ratio) + u[:, 1] * (f(s.max_aspect_ratio) - f(s.min_aspect_ratio))
    ratio = np.minimum(np.maximum(ratio, scale * scale), 1 / (scale * scale))
    width = scale * np.sqrt(ratio)
    height = scale / np.sqrt(ratio)
    xmin = u[:, 2] * (1 - width)
    ymin = u[:, 3] * (1 - height)
    boxes = np.stack([xmin, ymin, xmin + width, ymin + height], axis=1)
    boxes = boxes[satisfies(boxes, objects, batch_sampler.sample_constraint)]
    if batch_sampler.HasField("max_sample"):
        boxes = boxes[:batch_sampler.max_sample]
    return boxes


def _hwc(image):
    """OpenCV drops the channel axis of one-channel images; put it back."""
    return image[:, :, np.newaxis] if image.ndim == 2 else image


def _saturate(image, alpha, beta):
    """OpenCV's convertTo to 8 bits: image * alpha + beta, rounded and saturated."""
    value = image.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(np.rint(value), 0, 255).astype(np.uint8)


class AnnotatedTransformer:
    """SSD's DataTransformer for annotated images: host HWC uint8 BGR images and their
    annotation tables in, CHW float32 images and tables out (steps 1-4 of the module
    docstring). `rng` is a numpy RandomState of the layer's own."""

    def __init__(self, param, batch_samplers, phase, rng, cv2):
        self.param = param
        self.samplers = list(batch_samplers)
        self.train = phase == TRAIN
        self.rng = rng
        self.cv2 = cv2
        self.emit = param.emit_constraint if param.HasField("emit_constraint") else None
        self.resize = param.resize_param if param.HasField("resize_param") else None
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.color = True if param.force_color else (False if param.force_gray else None)
        self.mean = None
        if param.HasField("mean_file"):
            logger.info("Loading mean file from: %s", param.mean_file)
            try:
                self.mean = load_mean_file(param.mean_file).transpose(1, 2, 0)
            except (OSError, ValueError) as e:
                raise LayerSetupError("transform_param.mean_file: %s" % e) from None
        self.mean_values = np.array(param.mean_value, np.float32)
        self.crop = ((param.crop_size, param.crop_size) if param.crop_size
                     else (param.crop_h, param.crop_w))
        self._check_param()

    def _check_param(self):
        """SSD's checks that need no image, as one-line setup errors."""
        p = self.param
        if p.force_color and p.force_gray:
            raise LayerSetupError("transform_param sets both force_color and force_gray")
        if p.HasField("mean_file") and len(p.mean_value):
            raise LayerSetupError("transform_param cannot set mean_file and mean_value at "
                                  "the same time")
        if p.HasField("noise_param"):
            raise LayerSetupError("transform_param.noise_param is not supported by "
                                  "AnnotatedData")
        if bool(self.crop[0]) != bool(self.crop[1]):
            raise LayerSetupError("transform_param.crop_h and crop_w must be set together")
        if self.resize is not None:
            if self.resize.height <= 0 or self.resize.width <= 0:
                raise LayerSetupError("transform_param.resize_param needs a positive height "
                                      "and width, got %dx%d"
                                      % (self.resize.height, self.resize.width))
        if p.HasField("expand_param"):
            if p.expand_param.max_expand_ratio <= 1:
                raise LayerSetupError("transform_param.expand_param.max_expand_ratio must be "
                                      "greater than 1, got %g" % p.expand_param.max_expand_ratio)
            if p.HasField("mean_file"):
                raise LayerSetupError("transform_param.expand_param fills the canvas with "
                                      "mean_value; it cannot be used with mean_file")
        if p.HasField("distort_param"):
            d = p.distort_param
            for kind in ("brightness", "hue"):
                if getattr(d, kind + "_prob") > 0 and getattr(d, kind + "_delta") < 0:
                    raise LayerSetupError("transform_param.distort_param.%s_delta must be "
                                          "non-negative" % kind)
            for kind in ("contrast", "saturation"):
                lower, upper = getattr(d, kind + "_lower"), getattr(d, kind + "_upper")
                if getattr(d, kind + "_prob") > 0 and not 0 <= lower <= upper:
                    raise LayerSetupError("transform_param.distort_param needs 0 <= %s_lower "
                                          "<= %s_upper, got %g and %g"
                                          % (kind, kind, lower, upper))
        for i, b in enumerate(self.samplers):
            s, field = b.sampler, "annotated_data_param.batch_sampler[%d].sampler" % i
            if not 0 < s.min_scale <= s.max_scale <= 1:
                raise LayerSetupError("%s needs 0 < min_scale <= max_scale <= 1, got %g and %g"
                                      % (field, s.min_scale, s.max_scale))
            if not 0 < s.min_aspect_ratio <= s.max_aspect_ratio < np.finfo(np.float32).max:
                raise LayerSetupError("%s needs 0 < min_aspect_ratio <= max_aspect_ratio, "
                                      "got %g and %g"
                                      % (field, s.min_aspect_ratio, s.max_aspect_ratio))
            kinds = [k for k, _ in _CONSTRAINTS
                     if b.sample_constraint.HasField("min_" + k)
                     or b.sample_constraint.HasField("max_" + k)]
            if len(kinds) > 1:
                logger.warning("annotated_data_param.batch_sampler[%d].sample_constraint "
                               "sets %s: as in SSD only %s decides", i, " and ".join(kinds),
                               kinds[0])

    def output_shape(self, shape):
        """SSD's InferBlobShape: (C, H, W) of the transformed image of an HWC `shape`,
        after checking that the parameters fit images of its channels and size."""
        height, width, channels = shape
        p = self.param
        if len(self.mean_values) not in (0, 1, channels):
            raise LayerSetupError("transform_param.mean_value: give 1 value or one per "
                                  "channel (%d), not %d" % (channels, len(self.mean_values)))
        if self.resize is not None and len(self.resize.pad_value) not in (0, 1, channels):
            raise LayerSetupError("transform_param.resize_param.pad_value: give 1 value or "
                                  "one per channel (%d), not %d"
                                  % (channels, len(self.resize.pad_value)))
        d = p.distort_param
        if channels != 3 and (d.saturation_prob > 0 or d.hue_prob > 0
                              or d.random_order_prob > 0):
            raise LayerSetupError("transform_param.distort_param changes saturation, hue or "
                                  "channel order, which needs 3-channel images, not %d"
                                  % channels)
        if self.resize is not None:
            width, height = resized_size(self.resize, width, height)
        if self.crop[0] and (height < self.crop[0] or width < self.crop[1]):
            raise LayerSetupError("transform_param crop %dx%d is larger than the %dx%d image"
                                  % (self.crop[0], self.crop[1], height, width))
        return (channels,) + (self.crop if self.crop[0] else (height, width))

    def __call__(self, image, table):
        """(CHW float32 image, annotation table) of one HWC uint8 image and its table."""
        if self.param.HasField("distort_param"):
            image = self.distort(image)
        if self.param.HasField("expand_param"):
            image, table = self.expand(image, table)
        if self.samplers:
            image, table = self.sample_crop(image, table)
        return self.transform(image, table)

    # -- 1. distortion -------------------------------------------------------------------
    def distort(self, image):
        """SSD's ApplyDistort: brightness, contrast, saturation, hue (contrast last on a
        coin's tails), then channel order, each with its own probability."""
        order = (self._brightness, self._contrast, self._saturation, self._hue)
        if self.rng.uniform(0, 1) <= 0.5:
            order = (self._brightness, self._saturation, self._hue, self._contrast)
        d = self.param.distort_param
        for step in order:
            image = step(image, d)
        if self.rng.uniform(0, 1) < d.random_order_prob:
            image = np.ascontiguousarray(image[:, :, self.rng.permutation(3)])
        return image

    def _draw(self, prob, low, high):
        """A value in [low, high) with probability `prob`, else None."""
        if self.rng.uniform(0, 1) < prob:
            return self.rng.uniform(low, high)
        return None

    def _brightness(self, image, d):
        delta = self._draw(d.brightness_prob, -d.brightness_delta, d.brightness_delta)
        return image if delta is None or delta == 0 else _saturate(image, 1, delta)

    def _contrast(self, image, d):
        alpha = self._draw(d.contrast_prob, d.contrast_lower, d.contrast_upper)
        return image if alpha is None or abs(alpha - 1) <= 1e-3 else _saturate(image, alpha, 0)

    def _saturation(self, image, d):
        alpha = self._draw(d.saturation_prob, d.saturation_lower, d.saturation_upper)
        return image if alpha is None else self._hsv(image, 1, alpha, 0)

    def _hue(self, image, d):
        delta = self._draw(d.hue_prob, -d.hue_delta, d.hue_delta)
        return image if delta is None or delta == 0 else self._hsv(image, 0, 1, delta)

    def _hsv(self, image, channel, alpha, beta):
        """`image` with one HSV channel (OpenCV's 8-bit HSV) put through _saturate."""
        cv2 = self.cv2
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[:, :, channel] = _saturate(hsv[:, :, channel], alpha, beta)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    # -- 2. expansion --------------------------------------------------------------------
    def expand(self, image, table):
        """SSD's ExpandImage: with probability `prob`, the image at a random whole-pixel
        place of a canvas `ratio` (uniform in [1, max_expand_ratio)) times its size."""
        e = self.param.expand_param
        if self.rng.uniform(0, 1) > e.prob or abs(e.max_expand_ratio - 1) < 1e-2:
            return image, table
        ratio = np.float32(self.rng.uniform(1, e.max_expand_ratio))
        height, width, channels = image.shape
        big_h, big_w = int(np.float32(height) * ratio), int(np.float32(width) * ratio)
        h_off = np.floor(np.float32(self.rng.uniform(0, big_h - height)))
        w_off = np.floor(np.float32(self.rng.uniform(0, big_w - width)))
        fill = np.zeros(channels, np.float32)
        if len(self.mean_values):
            fill[:] = self.mean_values
        canvas = np.empty((big_h, big_w, channels), np.uint8)
        canvas[...] = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
        top, left = int(h_off), int(w_off)
        canvas[top:top + height, left:left + width] = image
        window = _box(-w_off / width, -h_off / height, (big_w - w_off) / width,
                      (big_h - h_off) / height)
        return canvas, project(table, window, self.emit)

    # -- 3. batch sampling ---------------------------------------------------------------
    def sample_crop(self, image, table):
        """SSD's GenerateBatchSamples and CropImage: the image cut to one box picked at
        random among all samplers' boxes (unchanged when none was found)."""
        objects = table[:, BOX]
        found = [sample_boxes(self.rng, b, objects) for b in self.samplers
                 if b.use_original_image]
        boxes = np.concatenate(found) if found else np.zeros((0, 4), np.float32)
        if not len(boxes):
            return image, table
        window = np.clip(boxes[self.rng.randint(len(boxes))], np.float32(0), np.float32(1))
        height, width = image.shape[:2]
        x0, y0 = window[0] * np.float32(width), window[1] * np.float32(height)
        x1, y1 = window[2] * np.float32(width), window[3] * np.float32(height)
        left, top = int(x0), int(y0)
        crop = image[top:top + int(y1 - y0), left:left + int(x1 - x0)]
        return np.ascontiguousarray(crop), project(table, window, self.emit)

    # -- 4. the transform ----------------------------------------------------------------
    def resize_image(self, image):
        """SSD's ApplyResize, the interpolation drawn uniformly from interp_mode."""
        cv2, p = self.cv2, self.resize
        interp = cv2.INTER_LINEAR
        if len(p.interp_mode):
            mode = p.interp_mode[self.rng.randint(len(p.interp_mode))]
            interp = getattr(cv2, _INTERPOLATION[mode])
        height, width = image.shape[:2]
        if p.resize_mode != RESIZE.FIT_LARGE_SIZE_AND_PAD:
            new_w, new_h = resized_size(p, width, height)
            return _hwc(cv2.resize(image, (new_w, new_h), interpolation=interp))
        orig_aspect = np.float32(width) / np.float32(height)
        pad_value = list(p.pad_value) or [0.0]
        if len(pad_value) == 1:
            pad_value *= image.shape[2]
        border = getattr(cv2, _BORDER[p.pad_mode])
        if orig_aspect > np.float32(p.width) / np.float32(p.height):
            fit_h = int(np.floor(np.float32(p.width) / orig_aspect))
            resized = cv2.resize(image, (p.width, fit_h), interpolation=interp)
            pad = (p.height - fit_h) // 2
            padded = cv2.copyMakeBorder(resized, pad, p.height - fit_h - pad, 0, 0, border,
                                        value=pad_value)
        else:
            fit_w = int(np.floor(orig_aspect * np.float32(p.height)))
            resized = cv2.resize(image, (fit_w, p.height), interpolation=interp)
            pad = (p.width - fit_w) // 2
            padded = cv2.copyMakeBorder(resized, 0, 0, pad, p.width - fit_w - pad, border,
                                        value=pad_value)
        return _hwc(padded)

    def transform(self, image, table):
        """SSD's Transform(AnnotatedDatum): mirror coin, resize, crop, mean and scale of the
        image; the boxes moved by the resize, kept by emit_constraint in the crop window,
        projected into it and mirrored with the image."""
        height, width = image.shape[:2]
        flip = self.mirror and bool(self.rng.randint(2))
        if self.resize is not None:
            image = self.resize_image(image)
        img_h, img_w = image.shape[:2]
        out_h, out_w = (img_h, img_w)
        h_off = w_off = 0
        if self.crop[0]:
            out_h, out_w = self.crop
            if img_h < out_h or img_w < out_w:
                raise ValueError("transform_param crop %dx%d is larger than the %dx%d image"
                                 % (out_h, out_w, img_h, img_w))
            if self.train:
                h_off = self.rng.randint(img_h - out_h + 1)
                w_off = self.rng.randint(img_w - out_w + 1)
            else:
                h_off, w_off = (img_h - out_h) // 2, (img_w - out_w) // 2
        x = image[h_off:h_off + out_h, w_off:w_off + out_w].astype(np.float32)
        if flip:
            x = x[:, ::-1]
        # SSD takes the mean at the output position, so a mean image is not mirrored.
        if self.mean is not None:
            if self.mean.shape != image.shape:
                raise ValueError("transform_param.mean_file %s is %s but the image is %s"
                                 % (self.param.mean_file, shape_text(self.mean.shape),
                                    shape_text(image.shape)))
            x = x - self.mean[h_off:h_off + out_h, w_off:w_off + out_w]
        elif len(self.mean_values):
            x = x - self.mean_values
        if self.scale != 1:
            x = x * self.scale
        window = _box(np.float32(w_off) / img_w, np.float32(h_off) / img_h,
                      np.float32(w_off + out_w) / img_w, np.float32(h_off + out_h) / img_h)
        if self.resize is not None:
            table = table.copy()
            table[:, BOX] = resize_boxes(table[:, BOX], self.resize, width, height)
        table = project(table, window, self.emit)
        if flip:
            table[:, 2], table[:, 4] = 1 - table[:, 4], 1 - table[:, 2]
        if self.resize is not None:
            table = self.extrapolate(table, window, width, height)
        return np.ascontiguousarray(x.transpose(2, 0, 1)), table

    def extrapolate(self, table, window, width, height):
        """SSD's ExtrapolateBBox: with FIT_SMALL_SIZE and height_scale/width_scale, boxes
        scaled by the crop's size over those scales."""
        p = self.resize
        if not (p.height_scale > 0 and p.width_scale > 0
                and p.resize_mode == RESIZE.FIT_SMALL_SIZE):
            return table
        new_w, new_h = (np.float32(v) for v in resized_size(p, width, height))
        crop_h = new_h * (window[3] - window[1])
        crop_w = new_w * (window[2] - window[0])
        if crop_w < p.width_scale or crop_h < p.height_scale:
            raise ValueError("transform_param.resize_param.width_scale/height_scale %dx%d "
                             "exceed the %gx%g crop" % (p.width_scale, p.height_scale,
                                                        crop_w, crop_h))
        table = table.copy()
        table[:, [2, 4]] *= crop_w / np.float32(p.width_scale)
        table[:, [3, 5]] *= crop_h / np.float32(p.height_scale)
        return table


def record_image(anno_datum, color):
    """The HWC uint8 BGR image of an AnnotatedDatum (encoded or raw bytes)."""
    datum = anno_datum.datum
    if not datum.encoded and not datum.data and len(datum.float_data):
        raise ValueError("the record holds float_data; AnnotatedData reads 8-bit images")
    return np.ascontiguousarray(datum_to_array(datum, color).transpose(1, 2, 0))


@layers.register("AnnotatedData")
class AnnotatedDataLayer(PrefetchingDataLayer):
    min_top = 1
    max_top = 2
    legacy_param = "data_param"

    def setup(self, bottom, top):
        p = self.layer_param.data_param
        a = self.layer_param.annotated_data_param
        check_data_param(p)
        param = self.transform_param()
        self._fit_small = (param.HasField("resize_param")
                           and param.resize_param.resize_mode == RESIZE.FIT_SMALL_SIZE)
        if self._fit_small and p.batch_size != 1:
            raise LayerSetupError("transform_param.resize_param FIT_SMALL_SIZE gives images "
                                  "of different sizes and needs data_param.batch_size 1, "
                                  "not %d" % p.batch_size)
        try:
            cv2 = opencv()
        except NetkitError as e:
            raise LayerSetupError(str(e)) from None
        rng = private_rng()
        transformer = AnnotatedTransformer(param, a.batch_sampler, self.phase, rng, cv2)
        try:
            record = first_record(p.source)
            if record is None:
                raise ValueError("the database has no records")
            first = pb.AnnotatedDatum.FromString(record[1])
            image = record_image(first, transformer.color)
        except (ValueError, lmdb.Error, DecodeError) as e:
            raise LayerSetupError("data_param.source %s: %s" % (p.source, e)) from None
        chw = transformer.output_shape(image.shape)
        top[0].reshape((p.batch_size,) + chw)
        logger.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        # Boxes come out when the records or annotated_data_param name their type.
        self._boxes = first.HasField("type") or a.HasField("anno_type")
        self._need_type = self._boxes and not a.HasField("anno_type")
        if len(top) > 1:
            rows = len(read_annotations(first))
            top[1].reshape((1, 1, max(rows, 1), 8) if self._boxes else (p.batch_size,))
        skip = rng.randint(p.rand_skip) if p.rand_skip else 0
        # Data-parallel ranks share the TRAIN records as the Data layer's do.
        rank, count = (solver_rank(), solver_count()) if self.phase == TRAIN else (0, 1)
        self._transformer = transformer
        reader = RecordReader(p.source, skip + rank, count)
        self.start_prefetch(lambda: self._load(reader), p.prefetch, p.source,
                            close=reader.close)

    def _load(self, reader):
        """One batch from the next records: (images (N, C, H, W), labels)."""
        images, tables, labels = [], [], []
        shape = None
        for key, value in reader.take(self.layer_param.data_param.batch_size):
            try:
                anno_datum = pb.AnnotatedDatum.FromString(value)
                if self._need_type and not anno_datum.HasField("type"):
                    raise ValueError("it has no annotation type, unlike the first record")
                image = record_image(anno_datum, self._transformer.color)
                if shape is None:
                    shape = self._transformer.output_shape(image.shape)
                x, table = self._transformer(image, read_annotations(anno_datum))
                if x.shape != shape and not self._fit_small:
                    raise ValueError("it transforms to %s but the batch's images are %s; "
                                     "transform_param.resize_param makes them one size"
                                     % (shape_text(x.shape), shape_text(shape)))
            except (ValueError, DecodeError, self._transformer.cv2.error) as e:
                raise ValueError("record %s: %s" % (key.decode("utf-8", "replace"), e)) from e
            images.append(x)
            tables.append(table)
            labels.append(anno_datum.datum.label)
        if not self._boxes:
            return np.stack(images), np.array(labels, np.float32)
        rows = [np.concatenate([np.full((len(t), 1), i, np.float32), t], axis=1)
                for i, t in enumerate(tables) if len(t)]
        label = (np.concatenate(rows) if rows else np.full((1, 8), -1, np.float32))
        return np.stack(images), label.reshape(1, 1, -1, 8)
