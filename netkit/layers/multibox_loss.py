"""MultiBoxLoss (SSD): the training loss of a single-shot detector, box regression on the
priors matched to ground truth plus classification of matched and mined priors."""
from collections import namedtuple

import numpy as np

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError
from ..log import logger
from ..registry import layers
from .bbox_util import CODE_TYPES, decode_boxes
from .loss_util import normalization_mode
from .multibox_util import encode_boxes, ground_truth, match_image, mine_image

MBL = pb.MultiBoxLossParameter
LOSS = pb.LossParameter
FLT_MIN = np.float32(np.finfo(np.float32).tiny)

# The matched priors of a batch, in SSD's order (image, label, prior), as host arrays:
# where their offsets sit in the loc bottom (image, prior, slot = the loc class), the class
# they teach, their regression targets (M, 4), the variances that divide predictions
# (encode_variance_in_target) and, for bp_inside, which coordinates get no gradient.
Positives = namedtuple("Positives", "image prior slot label targets variances outside")


@layers.register("MultiBoxLoss")
class MultiBoxLossLayer(Layer):
    """bottoms: loc (N, P*L*4) box offsets, L = 1 with share_location else num_classes;
    conf (N, P*num_classes) class scores (before softmax); the priors (1, 2, P*4) from
    PriorBox; the ground truth (1, 1, G, 8), rows [item_id, label, instance_id, xmin, ymin,
    xmax, ymax, difficult] as AnnotatedData gives them. top: the scalar loss

        loc_weight * loc_loss / normalizer + conf_loss / normalizer,

    each term only if its bottom propagates down (propagate_down in the prototxt, by
    default true, true, false, false), as in SSD.

    Each image's priors (or, without use_prior_for_matching, its decoded predictions) are
    matched to its ground truth (see multibox_util.match_image), then mining_type picks
    the negatives (MAX_NEGATIVE, HARD_EXAMPLE; legacy do_neg_mining must agree) or, with
    NONE, every prior of the batch is classified. loc_loss sums SMOOTH_L1 (SSD's sigma-1
    form) or L2 (half the squared error) of each matched prior's offsets against its
    encoded ground truth (code_type, variances). conf_loss sums SOFTMAX cross-entropy
    (probabilities clamped at FLT_MIN) or LOGISTIC (sigmoid cross-entropy per class) over
    the matched priors, with their ground truth class (background_label_id + 1 with
    map_object_to_agnostic), and the negatives, with the background class. The normalizer
    (loss_param.normalization, or the legacy normalize flag; VALID by default) is N * P for
    FULL, the number of matched priors for VALID, N for BATCH_SIZE, 1 for NONE, at least 1.
    A batch with no match has no localisation term (and, with MAX_NEGATIVE, no negatives:
    loss 0, gradients 0).

    bp_inside gives no gradient (and no loss) to the offsets whose prior (or decoded
    prediction, without use_prior_for_matching) coordinate lies outside [0, 1]. SSD's
    behaviour is kept where it is unusual: with encode_variance_in_target both prediction
    and target are divided by the variance but the gradient is passed on undivided;
    nms_param without top_k lets mining select nothing. Where SSD leaves a choice open or
    stops, netkit decides: equal losses in mining keep the lower prior first (SSD's
    std::sort leaves ties open); with map_object_to_agnostic mining ranks priors by the
    agnostic class too (SSD aborts on labels above 1 there). LOGISTIC targets are one-hot:
    a matched prior's class, a negative's background, and, without mining, all zeros for
    unmatched priors. SSD intends this; its code first fills the targets with the
    background id (the same only for background 0) and, without mining, indexes images by
    P instead of P * num_classes (the same only for one image).

    Matching and mining are greedy, data-dependent loops: they run on the host on copies of
    the priors and ground truth (and of the offsets when predictions are matched or NMS'd);
    the losses and gradients run on the net's backend. Backward reaches loc and conf only.
    """
    exact_num_bottom = 4
    exact_num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        param = self.layer_param.multibox_loss_param
        if not param.HasField("num_classes"):
            raise LayerSetupError("multibox_loss_param.num_classes must be given")
        if param.num_classes < 1:
            raise LayerSetupError("multibox_loss_param.num_classes must be positive")
        if param.code_type not in CODE_TYPES:
            raise LayerSetupError("multibox_loss_param.code_type %d is unknown" % param.code_type)
        self.mining = param.mining_type != MBL.NONE
        if param.HasField("do_neg_mining") and param.do_neg_mining != self.mining:
            raise LayerSetupError("multibox_loss_param.do_neg_mining (deprecated) contradicts "
                                  "mining_type %s" % MBL.MiningType.Name(param.mining_type))
        if self.mining and not param.share_location:
            raise LayerSetupError("multibox_loss_param.mining_type %s needs share_location "
                                  "true" % MBL.MiningType.Name(param.mining_type))
        if ((param.conf_loss_type == MBL.SOFTMAX or self.mining)
                and param.background_label_id >= param.num_classes):
            raise LayerSetupError("multibox_loss_param.background_label_id %d must be below "
                                  "num_classes %d" % (param.background_label_id,
                                                      param.num_classes))
        if param.map_object_to_agnostic and param.num_classes != 2:
            raise LayerSetupError("multibox_loss_param.map_object_to_agnostic needs "
                                  "num_classes 2 (background and object), got %d"
                                  % param.num_classes)
        if param.mining_type == MBL.HARD_EXAMPLE and param.sample_size <= 0:
            raise LayerSetupError("multibox_loss_param.sample_size must be positive for "
                                  "HARD_EXAMPLE mining, got %d" % param.sample_size)
        if (self.mining and param.HasField("nms_param")
                and not param.nms_param.HasField("top_k")):
            logger.warning("MultiBoxLoss %s: nms_param.top_k is unset, so, as in SSD, mining "
                           "selects no example", self.name)
        self.propagate = list(self.layer_param.propagate_down) or [True, True, False, False]
        if any(self.propagate[2:]):
            raise LayerSetupError("MultiBoxLoss cannot backpropagate to the priors or the "
                                  "ground truth: give propagate_down false for bottoms 2 and 3")
        self.num_classes = param.num_classes
        self.num_loc_classes = 1 if param.share_location else param.num_classes
        self.normalization = normalization_mode(self.layer_param.loss_param)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2

    def reshape(self, bottom, top):
        loc, conf, prior, gt = bottom
        if loc.shape[0] != conf.shape[0]:
            raise LayerSetupError("MultiBoxLoss: loc has %d images, conf has %d"
                                  % (loc.shape[0], conf.shape[0]))
        if prior.num_axes < 3 or prior.shape[:2] != (1, 2) or prior.shape[2] % 4:
            raise LayerSetupError("MultiBoxLoss: the prior bottom must have shape "
                                  "(1, 2, num_priors * 4), got %s" % (prior.shape,))
        self.num_priors = prior.shape[2] // 4
        num = loc.shape[0]
        if loc.count != num * self.num_priors * self.num_loc_classes * 4:
            raise LayerSetupError("MultiBoxLoss: loc %s must hold num_priors (%d) * %d * 4 "
                                  "values per image" % (loc.shape, self.num_priors,
                                                        self.num_loc_classes))
        if conf.count != num * self.num_priors * self.num_classes:
            raise LayerSetupError("MultiBoxLoss: conf %s must hold num_priors (%d) * "
                                  "num_classes (%d) values per image"
                                  % (conf.shape, self.num_priors, self.num_classes))
        if not gt.num_axes or gt.shape[-1] != 8:
            raise LayerSetupError("MultiBoxLoss: the ground truth bottom must have 8 values "
                                  "per box, (1, 1, G, 8), got %s" % (gt.shape,))
        top[0].reshape(())

    # -- forward -------------------------------------------------------------------------
    def forward(self, bottom, top):
        param = self.layer_param.multibox_loss_param
        be = self.backend
        num, num_priors = bottom[0].shape[0], self.num_priors
        priors, variances = be.asnumpy(bottom[2].data).reshape(2, num_priors, 4)
        gts = ground_truth(be.asnumpy(bottom[3].data), param.background_label_id,
                           param.use_difficult_gt)
        self._check_labels(gts)
        uses_nms = (param.mining_type != MBL.NONE and param.HasField("nms_param")
                    and param.nms_param.nms_threshold > 0 and not param.use_prior_for_nms)
        offsets = None
        if not param.use_prior_for_matching or uses_nms:
            offsets = be.asnumpy(bottom[0].data).reshape(
                num, num_priors, self.num_loc_classes, 4).transpose(0, 2, 1, 3)
        matches = [match_image(gts[i], priors, variances,
                               offsets[i] if offsets is not None else None, param,
                               self.num_loc_classes) if i in gts else {}
                   for i in range(num)]
        positives = self._positives(matches, gts, priors, variances, offsets)
        negatives = [np.zeros(0, np.int64)] * num
        if self.mining:
            negatives = self._mine(bottom, matches, positives, priors, variances, offsets)
            if param.mining_type == MBL.HARD_EXAMPLE:  # mining unmatched some priors
                positives = self._positives(matches, gts, priors, variances, offsets)
        num_matches = len(positives.image)
        self.normalizer = np.float32(max(1, {
            LOSS.FULL: num * num_priors, LOSS.VALID: num_matches,
            LOSS.BATCH_SIZE: num}.get(self.normalization, 1)))

        loc_loss = self._loc_forward(bottom[0], positives)
        conf_loss = self._conf_forward(bottom[1], positives, negatives)
        loss = self.xp.zeros((), self.xp.float32)
        if self.propagate[0] and loc_loss is not None:
            loss = loss + np.float32(param.loc_weight) * loc_loss / self.normalizer
        if self.propagate[1] and conf_loss is not None:
            loss = loss + conf_loss / self.normalizer
        top[0].data[...] = loss

    def _check_labels(self, gts):
        param = self.layer_param.multibox_loss_param
        if param.map_object_to_agnostic:
            return
        for gt in gts.values():
            bad = gt.labels[(gt.labels < 0) | (gt.labels >= self.num_classes)]
            if len(bad):
                raise NetkitError("MultiBoxLoss: ground truth label %d is outside the %d "
                                 "classes" % (bad[0], self.num_classes))

    def _positives(self, matches, gts, priors, variances, offsets):
        """The matched priors of the batch and their encoded targets (host arrays)."""
        param = self.layer_param.multibox_loss_param
        columns = ([], [], [], [], [])
        for i, image_matches in enumerate(matches):
            for key in sorted(image_matches):
                indices = image_matches[key][0]
                prior = np.flatnonzero(indices > -1)
                gt = indices[prior]
                for column, values in zip(columns, (
                        np.full(len(prior), i), prior, np.full(len(prior), max(key, 0)),
                        gts[i].labels[gt], gts[i].boxes[gt])):
                    column.append(values)
        image, prior, slot, label = (np.concatenate(c + [np.zeros(0)]).astype(np.int64)
                                     for c in columns[:4])
        boxes = np.concatenate(columns[4] + [np.zeros((0, 4), np.float32)])
        if param.map_object_to_agnostic:
            label[:] = param.background_label_id + 1
        targets = encode_boxes(priors[prior], variances[prior], boxes, param.code_type,
                               param.encode_variance_in_target)
        outside = None
        if param.bp_inside:
            box = priors[prior]
            if not param.use_prior_for_matching:
                box = decode_boxes(np, offsets[image, slot, prior], priors[prior],
                                   variances[prior], param.code_type,
                                   param.encode_variance_in_target)
            outside = (box < 0) | (box > 1)
        if param.encode_variance_in_target:
            targets = targets / variances[prior]
        return Positives(image, prior, slot, label, targets, variances[prior], outside)

    def _residual(self, loc, positives):
        """prediction - target (M, 4) on the device, zero where bp_inside cuts the gradient."""
        param = self.layer_param.multibox_loss_param
        be = self.backend
        num = loc.shape[0]
        index = tuple(be.asarray(a) for a in (positives.image, positives.prior, positives.slot))
        pred = loc.data.reshape(num, self.num_priors, self.num_loc_classes, 4)[index]
        if param.encode_variance_in_target:
            pred = pred / be.asarray(positives.variances)
        residual = pred - be.asarray(positives.targets)
        if positives.outside is not None:
            residual = self.xp.where(be.asarray(positives.outside), 0, residual)
        return index, residual.astype(self.xp.float32)

    def _loc_terms(self, residual):
        """Per-coordinate loss and its derivative: SSD's SmoothL1 (sigma 1) or half the
        squared error."""
        xp = self.xp
        if self.layer_param.multibox_loss_param.loc_loss_type == MBL.SMOOTH_L1:
            magnitude = xp.abs(residual)
            small = magnitude < 1
            return (xp.where(small, 0.5 * residual * residual, magnitude - 0.5),
                    xp.where(small, residual, xp.sign(residual)))
        return 0.5 * residual * residual, residual

    def _loc_forward(self, loc, positives):
        if not len(positives.image):
            self.loc_index = None
            return None
        self.loc_index, residual = self._residual(loc, positives)
        loss, self.loc_grad = self._loc_terms(residual)
        return loss.sum()

    def _conf_terms(self, scores, labels, target_pairs=None):
        """Per-row confidence loss (K,) and its derivative (K, C) for scores (K, C).

        SOFTMAX: -log of the softmax probability of `labels` (clamped at FLT_MIN).
        LOGISTIC: sigmoid cross-entropy against one-hot `labels`, or, when `target_pairs`
        (rows, classes) is given, against targets that are one exactly there.
        """
        xp, be = self.xp, self.backend
        classes = xp.arange(self.num_classes)
        if self.layer_param.multibox_loss_param.conf_loss_type == MBL.SOFTMAX:
            shifted = scores - scores.max(axis=1, keepdims=True)
            prob = xp.exp(shifted)
            prob /= prob.sum(axis=1, keepdims=True)
            onehot = (classes[None, :] == labels[:, None]).astype(xp.float32)
            picked = (prob * onehot).sum(axis=1)
            return -xp.log(xp.maximum(picked, FLT_MIN)), prob - onehot
        if target_pairs is None:
            target = (classes[None, :] == labels[:, None]).astype(xp.float32)
        else:
            target = xp.zeros(scores.shape, xp.float32)
            rows, cols = target_pairs
            if len(rows):
                target[be.asarray(rows), be.asarray(cols)] = 1
        positive = (scores >= 0).astype(xp.float32)
        loss = -(scores * (target - positive)
                 - xp.log(1 + xp.exp(scores - 2 * scores * positive))).sum(axis=1)
        return loss, 1 / (1 + xp.exp(-scores)) - target

    def _conf_forward(self, conf, positives, negatives):
        """Confidence loss over the matched and mined priors (all priors without mining)."""
        param = self.layer_param.multibox_loss_param
        be = self.backend
        num = conf.shape[0]
        scores = conf.data.reshape(num * self.num_priors, self.num_classes)
        flat = positives.image * self.num_priors + positives.prior
        if self.mining:
            rows, labels = [], []
            for i in range(num):
                mine = positives.image == i
                rows += [flat[mine], i * self.num_priors + negatives[i]]
                labels += [positives.label[mine],
                           np.full(len(negatives[i]), param.background_label_id)]
            rows = np.concatenate(rows).astype(np.int64)
            if not len(rows):
                self.conf_rows = None
                return None
            self.conf_rows = be.asarray(rows)
            loss, self.conf_grad = self._conf_terms(
                scores[self.conf_rows], be.asarray(np.concatenate(labels).astype(np.int64)))
            return loss.sum()
        self.conf_rows = slice(None)
        loss, self.conf_grad = self._conf_terms(scores, self._prior_labels(num, positives),
                                                (flat, positives.label))
        return loss.sum()

    def _prior_labels(self, num, positives):
        """Every prior's class on the device: its match's label, else the background."""
        labels = np.full(num * self.num_priors,
                         self.layer_param.multibox_loss_param.background_label_id, np.int64)
        labels[positives.image * self.num_priors + positives.prior] = positives.label
        return self.backend.asarray(labels)

    def _mine(self, bottom, matches, positives, priors, variances, offsets):
        """Negatives per image (and, for HARD_EXAMPLE, fewer matches), from each prior's
        confidence loss (plus localisation loss for HARD_EXAMPLE), copied to the host;
        `positives` are the matches before mining."""
        param = self.layer_param.multibox_loss_param
        be = self.backend
        num, num_priors = bottom[0].shape[0], self.num_priors
        flat = positives.image * num_priors + positives.prior
        scores = bottom[1].data.reshape(num * num_priors, self.num_classes)
        conf_loss, _ = self._conf_terms(scores, self._prior_labels(num, positives))
        loss = be.asnumpy(conf_loss).astype(np.float32)
        if param.mining_type == MBL.HARD_EXAMPLE and len(flat):
            _, residual = self._residual(bottom[0], positives)
            loc_loss = be.asnumpy(self._loc_terms(residual)[0].sum(axis=1))
            loss[flat] += loc_loss.astype(np.float32)
        loss = loss.reshape(num, num_priors)

        def nms_boxes(image):
            """The boxes hard-example NMS compares for one image: the priors, or its
            decoded predictions (mining implies share_location: one set of offsets)."""
            if param.use_prior_for_nms:
                return lambda label: priors
            return lambda label: decode_boxes(np, offsets[image, 0], priors, variances,
                                              param.code_type, param.encode_variance_in_target)
        return [mine_image(loss[i], matches[i], param, nms_boxes(i)) for i in range(num)]

    # -- backward ------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if propagate_down[2] or propagate_down[3]:
            raise LayerSetupError("MultiBoxLoss cannot backpropagate to the priors or the "
                                  "ground truth: give propagate_down false for bottoms 2 and 3")
        scale = top[0].diff / self.normalizer
        if propagate_down[0]:
            loc = bottom[0]
            loc.diff[...] = 0
            if self.loc_index is not None:
                weight = np.float32(self.layer_param.multibox_loss_param.loc_weight)
                loc.diff.reshape(loc.shape[0], self.num_priors, self.num_loc_classes, 4)[
                    self.loc_index] = self.loc_grad * weight * scale
        if propagate_down[1]:
            conf = bottom[1]
            conf.diff[...] = 0
            if self.conf_rows is not None:
                conf.diff.reshape(-1, self.num_classes)[self.conf_rows] = self.conf_grad * scale
