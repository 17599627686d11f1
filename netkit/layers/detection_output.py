"""DetectionOutput (SSD): decode a detection head's box offsets against the priors, then
per-class non-maximum suppression, into one row per detection."""
import numpy as np

from ..layer import Layer, LayerSetupError
from ..log import logger
from ..registry import layers
from .bbox_util import CODE_TYPES, decode_boxes, nms_fast

FLT_MAX = float(np.finfo(np.float32).max)


@layers.register("DetectionOutput")
class DetectionOutputLayer(Layer):
    """bottoms: loc (N, P*L*4), conf (N, P*num_classes) (class scores, e.g. after a Softmax)
    and the priors (1, 2, P*4) from PriorBox; L is 1 with `share_location`, else
    num_classes. top: (1, 1, D, 7), one row [image_id, label, score, xmin, ymin, xmax, ymax]
    per detection, images in order, then labels ascending, then score descending.

    For each image and each class but `background_label_id`: boxes scoring above
    `confidence_threshold`, at most `nms_param.top_k` of them, go through greedy NMS
    (`nms_threshold`, adaptive `eta`); then, with `keep_top_k` > -1, only the best
    keep_top_k detections of the image survive. Equal scores keep prior order, then label
    order (SSD's keep_top_k sort leaves that open). A background_label_id outside the
    classes (-1) means none; SSD aborts on it with share_location. When no image has any
    detection the top is SSD's placeholder: one row [i, -1, -1, -1, -1, -1, -1] per image.

    Decoding runs on the net's backend. NMS is a greedy sequential loop whose every step
    depends on the last, with a data-dependent number of outputs: it runs on the host, on
    the decoded boxes and scores copied there once per forward (as SSD's GPU code does);
    the top is copied back to the device. `save_output_param` and `visualize` are parsed
    and ignored: netkit writes no result files and shows no images (the optional 4th
    bottom, the images for visualize, is accepted and unused). There is no backward.
    """
    min_bottom = 3
    max_bottom = 4
    exact_num_top = 1

    def setup(self, bottom, top):
        param = self.layer_param.detection_output_param
        if not param.HasField("num_classes"):
            raise LayerSetupError("detection_output_param.num_classes must be given")
        if param.num_classes < 1:
            raise LayerSetupError("detection_output_param.num_classes must be positive")
        if param.code_type not in CODE_TYPES:
            raise LayerSetupError("detection_output_param.code_type %d is unknown"
                                  % param.code_type)
        nms = param.nms_param
        if nms.nms_threshold < 0:
            raise LayerSetupError("detection_output_param.nms_param.nms_threshold must be "
                                  "non-negative, got %g" % nms.nms_threshold)
        if not 0 < nms.eta <= 1:
            raise LayerSetupError("detection_output_param.nms_param.eta must be in (0, 1], "
                                  "got %g" % nms.eta)
        self.num_classes = param.num_classes
        self.num_loc_classes = 1 if param.share_location else param.num_classes
        self.top_k = nms.top_k if nms.HasField("top_k") else -1
        self.confidence_threshold = (param.confidence_threshold
                                     if param.HasField("confidence_threshold") else -FLT_MAX)
        if param.save_output_param.output_directory:
            logger.warning("DetectionOutput %s: save_output_param is ignored, no result "
                           "files are written to %s", self.name,
                           param.save_output_param.output_directory)

    def reshape(self, bottom, top):
        loc, conf, prior = bottom[:3]
        if loc.shape[0] != conf.shape[0]:
            raise LayerSetupError("DetectionOutput: loc has %d images, conf has %d"
                                  % (loc.shape[0], conf.shape[0]))
        if prior.num_axes < 3 or prior.shape[:2] != (1, 2) or prior.shape[2] % 4:
            raise LayerSetupError("DetectionOutput: the prior bottom must have shape "
                                  "(1, 2, num_priors * 4), got %s" % (prior.shape,))
        self.num_priors = prior.shape[2] // 4
        if loc.count != loc.shape[0] * self.num_priors * self.num_loc_classes * 4:
            raise LayerSetupError("DetectionOutput: loc %s must hold num_priors (%d) * %d * 4 "
                                  "values per image" % (loc.shape, self.num_priors,
                                                        self.num_loc_classes))
        if conf.count != conf.shape[0] * self.num_priors * self.num_classes:
            raise LayerSetupError("DetectionOutput: conf %s must hold num_priors (%d) * "
                                  "num_classes (%d) values per image"
                                  % (conf.shape, self.num_priors, self.num_classes))
        top[0].reshape(1, 1, 1, 7)

    def forward(self, bottom, top):
        param = self.layer_param.detection_output_param
        loc, conf, prior = bottom[:3]
        num = loc.shape[0]
        priors = prior.data.reshape(2, self.num_priors, 4)
        offsets = loc.data.reshape(num, self.num_priors, self.num_loc_classes, 4)
        boxes = decode_boxes(self.xp, self.xp.swapaxes(offsets, 1, 2), priors[0], priors[1],
                             param.code_type, param.variance_encoded_in_target)
        boxes = self.backend.asnumpy(boxes)
        scores = self.backend.asnumpy(conf.data).reshape(num, self.num_priors,
                                                         self.num_classes)
        rows = np.concatenate([np.zeros((0, 7), np.float32)] +
                              [self._detect(i, boxes[i], scores[i].T) for i in range(num)])
        if not len(rows):
            rows = np.full((num, 7), -1, np.float32)
            rows[:, 0] = np.arange(num)
        top[0].reshape(1, 1, len(rows), 7)
        top[0].data[...] = self.backend.asarray(rows.reshape(top[0].shape))

    def _detect(self, image, boxes, scores):
        """Rows for one image from its decoded boxes (L, P, 4) and scores (C, P)."""
        param = self.layer_param.detection_output_param
        labels, kept = [], []
        for c in range(self.num_classes):
            if c == param.background_label_id:
                continue
            label_boxes = boxes[0 if param.share_location else c]
            indices = nms_fast(label_boxes, scores[c], self.confidence_threshold,
                               param.nms_param.nms_threshold, param.nms_param.eta, self.top_k)
            labels.append(np.full(len(indices), c))
            kept.append(indices)
        labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        if -1 < param.keep_top_k < len(kept):
            best = np.argsort(-scores[labels, kept], kind="stable")[:param.keep_top_k]
            best = best[np.argsort(labels[best], kind="stable")]
            labels, kept = labels[best], kept[best]
        rows = np.empty((len(kept), 7), np.float32)
        rows[:, 0] = image
        rows[:, 1] = labels
        rows[:, 2] = scores[labels, kept]
        rows[:, 3:] = boxes[0 if param.share_location else labels, kept]
        return rows
