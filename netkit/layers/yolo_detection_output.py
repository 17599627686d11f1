"""YoloDetectionOutput (YOLOv2) and Yolov3DetectionOutput (YOLOv3) of eric612/MobileNet-YOLO:
decode the raw detection heads of a YOLO net into boxes, then class-agnostic greedy NMS, into
rows [image_id, label, score, xmin, ymin, xmax, ymax] of a (1, 1, K, 7) top.

Both follow the fork's forward exactly, including what may surprise: every image of the
batch and every bottom feed one list of candidates, so all rows carry image_id 0 and NMS
runs across images and classes; boxes are not clipped to [0, 1]. When nothing survives,
the top is one placeholder row [i, -1, -1, -1, -1, -1, -1] per image, as SSD's. Decoding
runs on the net's backend; thresholding and NMS (sequential, with a data-dependent number
of outputs) run on the host, and the rows are copied back. Large logits overflow exp to
inf silently, as in the fork's C++. There is no backward.
"""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..registry import layers


def _sigmoid(xp, x):
    return 1 / (1 + xp.exp(-x))


def yolo_nms(boxes, scores, nms_threshold):
    """The fork's ApplyNms on host arrays: boxes (P, 4) as centre x, y, width, height.

    Candidates are taken best score first (equal scores: lower index first); each kept box
    drops every later one whose IoU with it is at least `nms_threshold`. IoU is computed as
    the fork does, in float32, with the union from the boxes' widths and heights. Returns the
    kept indices in score order.
    """
    order = np.argsort(-scores, kind="stable")
    half = boxes[:, 2:] / np.float32(2)
    with np.errstate(all="ignore"):
        lows, highs = boxes[:, :2] - half, boxes[:, :2] + half
        areas = boxes[:, 2] * boxes[:, 3]
    threshold = np.float32(nms_threshold)
    kept = []
    while len(order):
        best, rest = order[0], order[1:]
        kept.append(best)
        sides = (np.minimum(highs[rest], highs[best]) - np.maximum(lows[rest], lows[best]))
        meet = (sides[:, 0] >= 0) & (sides[:, 1] >= 0)
        with np.errstate(all="ignore"):  # inf boxes give NaN: never >= threshold, kept
            inter = np.where(meet, sides[:, 0] * sides[:, 1], np.float32(0))
            iou = inter / (areas[rest] + areas[best] - inter)
        order = rest[~(iou >= threshold)]
    return np.array(kept, np.int64)


class _YoloOutput(Layer):
    """Shared tail of both layers: NMS over the candidates and the top rows."""
    exact_num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(1, 1, 1, 7)

    def _write(self, bottom, top, boxes, scores, labels):
        """Top rows from the candidates' centre-form boxes (P, 4), scores and labels."""
        keep = yolo_nms(boxes, scores, self.nms_threshold) if len(scores) else []
        if len(keep):
            rows = np.zeros((len(keep), 7), np.float32)
            rows[:, 1] = labels[keep] + 1
            rows[:, 2] = scores[keep]
            half = boxes[keep, 2:] / np.float32(2)
            rows[:, 3:5] = boxes[keep, :2] - half
            rows[:, 5:7] = boxes[keep, :2] + half
        else:
            num = bottom[0].shape[0]
            rows = np.full((num, 7), -1, np.float32)
            rows[:, 0] = np.arange(num)
        top[0].reshape(1, 1, len(rows), 7)
        top[0].data[...] = self.backend.asarray(rows.reshape(top[0].shape))

    def _grid(self, height, width):
        """Column and row index of each cell, (H*W,) each, on the device."""
        xp = self.xp
        cells = xp.arange(height * width, dtype=np.int32)
        return ((cells % width).astype(np.float32), (cells // width).astype(np.float32))


@layers.register("YoloDetectionOutput")
class YoloDetectionOutputLayer(_YoloOutput):
    """bottoms: one or two YOLOv2 heads (N, num_box * (5 + num_classes), S, S); channel
    n * (5 + num_classes) + k of a cell holds box n's k-th value: tx, ty, tw, th,
    objectness, then the class logits. top: (1, 1, K, 7), see the module docstring.

    Box n of cell (row j, column i) has centre ((i + sigmoid(tx)) / S, (j + sigmoid(ty)) / S)
    and size (exp(tw) * biases[2n] / S, exp(th) * biases[2n+1] / S); its label is the
    class of largest softmax probability (first of equals) and its score that probability
    times sigmoid(objectness); it is a candidate when the score is at least
    `confidence_threshold`. The fork assumes square grids; netkit says so when one is not.
    """
    min_bottom = 1
    max_bottom = 2

    def setup(self, bottom, top):
        param = self.layer_param.yolo_detection_output_param
        if not param.HasField("num_classes"):
            raise LayerSetupError("yolo_detection_output_param.num_classes must be given")
        if param.num_classes < 1:
            raise LayerSetupError("yolo_detection_output_param.num_classes must be positive")
        if param.coords != 4:
            raise LayerSetupError("yolo_detection_output_param.coords must be 4, as the "
                                  "fork's decoding reads 4 box values, got %d" % param.coords)
        if param.num_box < 1 or len(param.biases) < 2 * param.num_box:
            raise LayerSetupError("yolo_detection_output_param.biases must hold a (w, h) pair "
                                  "for each of num_box (%d) anchors, got %d values"
                                  % (param.num_box, len(param.biases)))
        self.num_classes = param.num_classes
        self.num_box = param.num_box
        self.confidence_threshold = np.float32(param.confidence_threshold)
        self.nms_threshold = param.nms_threshold
        anchors = np.array(param.biases[:2 * param.num_box], np.float32).reshape(-1, 2)
        self.anchors = self.backend.asarray(anchors)

    def reshape(self, bottom, top):
        channels = self.num_box * (5 + self.num_classes)
        for b in bottom:
            if b.num_axes != 4 or b.shape[1] != channels or b.shape[2] != b.shape[3]:
                raise LayerSetupError(
                    "YoloDetectionOutput: each bottom must be (N, num_box * (5 + num_classes)"
                    " = %d, S, S) with a square grid, got %s" % (channels, b.shape))
        super().reshape(bottom, top)

    def forward(self, bottom, top):
        with np.errstate(over="ignore", invalid="ignore"):
            found = [self._decode(b) for b in bottom]
        boxes, scores, labels = (np.concatenate(parts) for parts in zip(*found))
        self._write(bottom, top, boxes, scores, labels)

    def _decode(self, blob):
        """Candidates of one head in the fork's order (image, cell, anchor), on the host."""
        xp = self.xp
        num, _, side, _ = blob.shape
        head = blob.data.reshape(num, self.num_box, 5 + self.num_classes, side * side)
        col, row = self._grid(side, side)
        cx = (col + _sigmoid(xp, head[:, :, 0])) / np.float32(side)
        cy = (row + _sigmoid(xp, head[:, :, 1])) / np.float32(side)
        w = xp.exp(head[:, :, 2]) * self.anchors[:, 0:1] / np.float32(side)
        h = xp.exp(head[:, :, 3]) * self.anchors[:, 1:2] / np.float32(side)
        logits = head[:, :, 5:]
        e = xp.exp(logits - logits.max(axis=2, keepdims=True))
        prob = e / e.sum(axis=2, keepdims=True)
        labels = prob.argmax(axis=2)
        score = _sigmoid(xp, head[:, :, 4]) * prob.max(axis=2)
        boxes = xp.stack([cx, cy, w, h], axis=-1).transpose(0, 2, 1, 3).reshape(-1, 4)
        boxes = self.backend.asnumpy(boxes)
        score = self.backend.asnumpy(score.transpose(0, 2, 1)).ravel()
        labels = self.backend.asnumpy(labels.transpose(0, 2, 1)).ravel()
        keep = score >= self.confidence_threshold
        return boxes[keep], score[keep], labels[keep]


@layers.register("Yolov3DetectionOutput")
class Yolov3DetectionOutputLayer(_YoloOutput):
    """bottoms: mask_group_num YOLOv3 heads (N, num_box * (5 + num_classes), H, W); channel
    n * (5 + num_classes) + k of a cell holds box n's k-th value: tx, ty, tw, th,
    objectness, then the class logits. top: (1, 1, K, 7), see the module docstring.

    Bottom t uses the anchors mask[t * G + n] (G = len(mask) / mask_group_num) and the input
    size anchors_scale[t] * (W, H). Box n of cell (row y, column x) has centre
    ((x + sigmoid(tx)) / W, (y + sigmoid(ty)) / H) and size
    (exp(tw) * biases[2m] / (anchors_scale[t] * W), exp(th) * biases[2m+1] / (anchors_scale[t] * H))
    with m its anchor. Each class c with sigmoid(logit_c) * sigmoid(objectness) above
    `confidence_threshold` makes a candidate with that score (one box may give several).
    The fork's letterbox correction leaves these boxes unchanged (its network size is the
    grid times the stride) and is therefore not repeated. `gaussian_box` heads are refused:
    the fork's CPU and GPU code decode them differently, and the CPU code out of bounds.
    """
    min_bottom = 1

    def setup(self, bottom, top):
        param = self.layer_param.yolov3_detection_output_param
        name = "yolov3_detection_output_param"
        if not param.HasField("num_classes"):
            raise LayerSetupError("%s.num_classes must be given" % name)
        if param.num_classes < 1 or param.num_box < 1:
            raise LayerSetupError("%s.num_classes and num_box must be positive" % name)
        if param.gaussian_box:
            raise LayerSetupError("%s.gaussian_box is not supported: the fork's CPU and GPU "
                                  "code disagree on its decoding" % name)
        if param.mask_group_num != len(bottom):
            raise LayerSetupError("%s.mask_group_num (%d) must equal the number of bottoms "
                                  "(%d)" % (name, param.mask_group_num, len(bottom)))
        if len(param.anchors_scale) < len(bottom):
            raise LayerSetupError("%s.anchors_scale needs one stride per bottom (%d), got %d"
                                  % (name, len(bottom), len(param.anchors_scale)))
        group = len(param.mask) // param.mask_group_num
        if (param.mask_group_num - 1) * group + param.num_box > len(param.mask):
            raise LayerSetupError("%s.mask (%d values) needs num_box (%d) anchor indices for "
                                  "each of mask_group_num (%d) bottoms"
                                  % (name, len(param.mask), param.num_box,
                                     param.mask_group_num))
        if any(2 * m + 1 >= len(param.biases) for m in param.mask):
            raise LayerSetupError("%s.mask refers to an anchor beyond the %d (w, h) pairs in "
                                  "biases" % (name, len(param.biases) // 2))
        biases = np.array(param.biases, np.float32).reshape(-1, 2)
        self.anchors = [self.backend.asarray(biases[list(param.mask[t * group:
                                                                     t * group + param.num_box])])
                        for t in range(len(bottom))]
        self.num_classes = param.num_classes
        self.num_box = param.num_box
        self.strides = list(param.anchors_scale[:len(bottom)])
        self.confidence_threshold = np.float32(param.confidence_threshold)
        self.nms_threshold = param.nms_threshold

    def reshape(self, bottom, top):
        channels = self.num_box * (5 + self.num_classes)
        for b in bottom:
            if b.num_axes != 4 or b.shape[1] != channels or b.shape[0] != bottom[0].shape[0]:
                raise LayerSetupError(
                    "Yolov3DetectionOutput: each bottom must be (N, num_box * (5 + "
                    "num_classes) = %d, H, W) with the same N, got %s"
                    % (channels, [x.shape for x in bottom]))
        super().reshape(bottom, top)

    def forward(self, bottom, top):
        with np.errstate(over="ignore", invalid="ignore"):
            found = [self._decode(b, t) for t, b in enumerate(bottom)]
        boxes, scores, labels = (np.concatenate(parts) for parts in zip(*found))
        self._write(bottom, top, boxes, scores, labels)

    def _decode(self, blob, t):
        """Candidates of bottom t in the fork's order (image, cell, anchor, class), on the
        host."""
        xp = self.xp
        num, _, height, width = blob.shape
        head = blob.data.reshape(num, self.num_box, 5 + self.num_classes, height * width)
        col, row = self._grid(height, width)
        anchors = self.anchors[t]
        cx = (col + _sigmoid(xp, head[:, :, 0])) / np.float32(width)
        cy = (row + _sigmoid(xp, head[:, :, 1])) / np.float32(height)
        w = xp.exp(head[:, :, 2]) * anchors[:, 0:1] / np.float32(width * self.strides[t])
        h = xp.exp(head[:, :, 3]) * anchors[:, 1:2] / np.float32(height * self.strides[t])
        score = _sigmoid(xp, head[:, :, 5:]) * _sigmoid(xp, head[:, :, 4:5])
        boxes = self.backend.asnumpy(xp.stack([cx, cy, w, h], axis=-1).transpose(0, 2, 1, 3))
        score = self.backend.asnumpy(score.transpose(0, 3, 1, 2))
        image, cell, anchor, label = np.nonzero(score > self.confidence_threshold)
        return (boxes[image, cell, anchor], score[image, cell, anchor, label],
                label.astype(np.int64))
