"""DetectionEvaluate (SSD): marks each detection a true or false positive against the
ground truth, the rows from which the solver's detection test computes mean average
precision (netkit.detection_map)."""
import numpy as np

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError
from ..registry import layers
from .bbox_util import intersection_sides

RESIZE = pb.ResizeParameter


@layers.register("DetectionEvaluate")
class DetectionEvaluateLayer(Layer):
    """bottoms: detections (1, 1, D, 7) from DetectionOutput, rows [image, label, score,
    xmin, ymin, xmax, ymax]; ground truth (1, 1, G, 8), rows [image, label, instance,
    xmin, ymin, xmax, ymax, difficult]. top (1, 1, K, 5):

    - one row [-1, label, num_positives, -1, -1] per class but background_label_id, the
      number of its ground truth boxes (difficult ones only with evaluate_difficult_gt);
    - then one row [image, label, score, tp, fp] per detection, images ascending, labels
      ascending. Where the image has ground truth of that label the detections come by
      descending score (equal scores keep their order) and each takes the ground truth it
      overlaps most: a true positive if that overlap reaches overlap_threshold and the box
      is not yet taken, else a false positive; a match to a difficult box gives tp = fp = 0
      (ignored) unless evaluate_difficult_gt. Elsewhere the detections are false
      positives, in input order.

    Rows with image -1 (padding) are skipped; ground truth stops at the first such row;
    DetectionOutput's placeholder rows (label -1) give nothing; K counts every detection row
    whose label is not -1 (unused rows stay zero), as in SSD.

    With name_size_file (lines "name height width") boxes are compared in pixels of the
    original images, SSD's way: clipped to the image, scaled by its size (after undoing
    resize_param's padding or scaling when given), a pixel added to widths and heights.
    Each image that has detections takes the next size of the file, cycling, as in SSD.
    The layer runs on the host (bottoms copied there, the top copied back) and has no
    backward.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.detection_evaluate_param
        if not param.HasField("num_classes"):
            raise LayerSetupError("detection_evaluate_param.num_classes must be given")
        if param.overlap_threshold <= 0:
            raise LayerSetupError("detection_evaluate_param.overlap_threshold must be "
                                  "positive, got %g" % param.overlap_threshold)
        self.sizes = []
        if param.HasField("name_size_file"):
            self.sizes = self._read_sizes(param.name_size_file)
            resize = param.resize_param
            if param.HasField("resize_param") and (resize.height <= 0 or resize.width <= 0):
                raise LayerSetupError("detection_evaluate_param.resize_param needs positive "
                                      "height and width to map boxes back to image sizes")
        self.count = 0

    @staticmethod
    def _read_sizes(path):
        """(height, width) per line "name height width" of a name size file."""
        try:
            with open(path) as f:
                tokens = f.read().split()
        except OSError as e:
            raise LayerSetupError("detection_evaluate_param.name_size_file %s cannot be read: "
                                  "%s" % (path, e.strerror)) from None
        sizes = []
        for k in range(0, len(tokens) - 2, 3):
            try:
                sizes.append((int(tokens[k + 1]), int(tokens[k + 2])))
            except ValueError:
                break
        return sizes

    def reshape(self, bottom, top):
        for blob, width, what in ((bottom[0], 7, "detections"), (bottom[1], 8, "ground truth")):
            if blob.num_axes != 4 or blob.shape[:2] != (1, 1) or blob.shape[3] != width:
                raise LayerSetupError("DetectionEvaluate: the %s bottom must have shape "
                                      "(1, 1, rows, %d), got %s" % (what, width, blob.shape))
        param = self.layer_param.detection_evaluate_param
        num_classes = param.num_classes
        num_pos_classes = num_classes - (param.background_label_id < num_classes)
        labels = self.backend.asnumpy(bottom[0].data)[0, 0, :, 1]
        top[0].reshape(1, 1, num_pos_classes + int(np.count_nonzero(labels != -1)), 5)

    def forward(self, bottom, top):
        param = self.layer_param.detection_evaluate_param
        detections = self.backend.asnumpy(bottom[0].data).reshape(-1, 7)
        gt = self._ground_truth(self.backend.asnumpy(bottom[1].data).reshape(-1, 8))
        rows = np.zeros(top[0].shape[2:], np.float32)
        n = 0
        for c in range(param.num_classes):
            if c == param.background_label_id:
                continue
            boxes = [g for g in gt if g[1] == c]
            positives = sum(1 for g in boxes if param.evaluate_difficult_gt or not g[3])
            rows[n] = [-1, c, positives, -1, -1]
            n += 1
        images = detections[:, 0].astype(np.int64)
        labels = detections[:, 1].astype(np.int64)
        valid = images != -1
        if (labels[valid] == param.background_label_id).any():
            raise NetkitError("DetectionEvaluate: a detection carries the background label %d"
                             % param.background_label_id)
        for image in np.unique(images[valid]):
            size = self.sizes[self.count] if self.sizes else None
            for label in np.unique(labels[valid & (images == image)]):
                if label == -1:
                    continue
                mine = np.flatnonzero(valid & (images == image) & (labels == label))
                status = self._evaluate(detections[mine], [g for g in gt if g[0] == image
                                                           and g[1] == label], size)
                rows[n:n + len(status)] = status
                n += len(status)
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        top[0].data[...] = self.backend.asarray(rows.reshape(top[0].shape))

    def _ground_truth(self, rows):
        """(image, label, box, difficult) per ground truth row up to the first image -1."""
        background = self.layer_param.detection_evaluate_param.background_label_id
        out = []
        for row in rows:
            if int(row[0]) == -1:
                break
            if int(row[1]) == background:
                raise NetkitError("DetectionEvaluate: a ground truth box carries the "
                                 "background label %d" % background)
            out.append((int(row[0]), int(row[1]), row[3:7], bool(row[7])))
        return out

    def _evaluate(self, detections, gt, size):
        """Rows [image, label, score, tp, fp] for one image's detections of one label."""
        param = self.layer_param.detection_evaluate_param
        out = np.zeros((len(detections), 5), np.float32)
        out[:, :2] = detections[:, :2]
        if not gt:
            out[:, 2] = detections[:, 2]
            out[:, 4] = 1
            return out
        detections = detections[np.argsort(-detections[:, 2], kind="stable")]
        out[:, 2] = detections[:, 2]
        det_boxes, det_sizes = detections[:, 3:7], _sizes(detections[:, 3:7], pixels=False)
        gt_boxes = np.array([g[2] for g in gt], np.float32)
        gt_sizes = _sizes(gt_boxes, pixels=False)
        difficult = [g[3] for g in gt]
        if size is not None:
            resize = param.resize_param if param.HasField("resize_param") else None
            det_boxes, det_sizes = original_boxes(det_boxes, size, resize)
            gt_boxes, gt_sizes = original_boxes(gt_boxes, size, resize)
        overlaps = jaccard(det_boxes, det_sizes, gt_boxes, gt_sizes, pixels=size is not None)
        taken = np.zeros(len(gt), bool)
        threshold = np.float32(param.overlap_threshold)
        for i, j in enumerate(np.argmax(overlaps, axis=1)):
            if overlaps[i, j] < threshold:
                out[i, 4] = 1
            elif param.evaluate_difficult_gt or not difficult[j]:
                out[i, 3 if not taken[j] else 4] = 1
                taken[j] = True
        return out


def _sizes(boxes, pixels):
    """SSD's BBoxSize: area, with a pixel added to width and height for pixel boxes; 0 for
    an invalid box."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    if pixels:
        width, height = width + 1, height + 1
    return np.where((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]),
                    np.float32(0), width * height).astype(np.float32)


def _clip(boxes, height=1, width=1):
    """SSD's ClipBBox into [0, width] x [0, height]; the size it stores is width * height."""
    upper = np.array([width, height, width, height], np.float32)
    boxes = np.maximum(np.minimum(boxes, upper), np.float32(0))
    return boxes, _sizes(boxes, pixels=False)


def _scale(boxes, height, width):
    """SSD's ScaleBBox: normalised boxes to pixels of a height x width image."""
    boxes = boxes * np.array([width, height, width, height], np.float32)
    return boxes, _sizes(boxes, pixels=width > 1 or height > 1)


def original_boxes(boxes, size, resize):
    """SSD's OutputBBox: normalised boxes (n, 4) of a resized image to pixel boxes of the
    original (height, width) `size`, and their sizes. `resize` (a ResizeParameter or None)
    says how the image was resized: FIT_LARGE_SIZE_AND_PAD boxes first leave the padding,
    FIT_SMALL_SIZE with height_scale/width_scale are scaled by those and clipped to the
    image; otherwise boxes are clipped to [0, 1] and scaled by the image size."""
    height, width = size
    boxes = boxes.astype(np.float32)
    if resize is not None and resize.resize_mode == RESIZE.FIT_LARGE_SIZE_AND_PAD:
        boxes = _project(_padded_region(resize, height, width), boxes)
    elif (resize is not None and resize.resize_mode == RESIZE.FIT_SMALL_SIZE
          and resize.height_scale and resize.width_scale):
        boxes, _ = _scale(boxes, resize.height_scale, resize.width_scale)
        return _clip(boxes, np.float32(height), np.float32(width))
    boxes, _ = _clip(boxes)
    return _scale(boxes, height, width)


def _padded_region(resize, height, width):
    """Where a height x width image sits, normalised, inside its FIT_LARGE_SIZE_AND_PAD
    resized and padded version."""
    f32 = np.float32
    resize_h, resize_w = f32(resize.height), f32(resize.width)
    aspect = f32(width) / f32(height)
    if aspect > resize_w / resize_h:
        pad = (resize_h - resize_w / aspect) / f32(2)
        return np.array([0, pad / resize_h, 1, f32(1) - pad / resize_h], np.float32)
    pad = (resize_w - resize_h * aspect) / f32(2)
    return np.array([pad / resize_w, 0, f32(1) - pad / resize_w, 1], np.float32)


def _project(src, boxes):
    """SSD's ProjectBBox: boxes in `src`'s own normalised frame, clipped; a box that does
    not overlap `src` is left as it is."""
    inside = ~((boxes[:, 0] >= src[2]) | (boxes[:, 2] <= src[0])
               | (boxes[:, 1] >= src[3]) | (boxes[:, 3] <= src[1]))
    extent = np.array([src[2] - src[0], src[3] - src[1]] * 2, np.float32)
    projected, _ = _clip((boxes - src[[0, 1, 0, 1]]) / extent)
    return np.where(inside[:, None], projected, boxes)


def jaccard(a, a_sizes, b, b_sizes, pixels):
    """SSD's JaccardOverlap (a, b) -> (len(a), len(b)) float32, with the sizes the boxes
    carry. Pixel boxes add a pixel to the intersection's sides, so boxes that do not meet
    still share the empty box's one pixel, as in SSD."""
    apart = ((b[None, :, 0] > a[:, None, 2]) | (b[None, :, 2] < a[:, None, 0])
             | (b[None, :, 1] > a[:, None, 3]) | (b[None, :, 3] < a[:, None, 1]))
    zero = np.float32(0)
    iwidth, iheight = intersection_sides(a, b)
    iwidth, iheight = np.where(apart, zero, iwidth), np.where(apart, zero, iheight)
    if pixels:
        iwidth, iheight = iwidth + 1, iheight + 1
    inter = iwidth * iheight
    union = a_sizes[:, None] + b_sizes[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=(iwidth > 0) & (iheight > 0))
