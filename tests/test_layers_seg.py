"""DeepLab v2 / PSPNet segmentation training: ImageSegData against a transcription of the
fork's TransformImgAndSeg (OpenCV's copyMakeBorder and resize, the fork's index loops),
SegAccuracy against a numpy confusion matrix, a DeepLab-style net trained on cpu and
fakegpu, and DeepLab v1's V1 layer types."""
import logging

import numpy as np
import pytest
from google.protobuf import text_format

import netkit
from layertest import batches, blobs, make_layer, run_forward, tops
from netkit import netkit_pb2 as pb
from netkit.data.prefetch import PrefetchError
from netkit.errors import NetkitError
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.net import Net
from netkit.rng import set_random_seed
from netkit.upgrade import upgrade_net

cv2 = pytest.importorskip("cv2")

# (H, W) of the written pairs: smaller than, equal to and larger than a 7 x 7 crop.
SIZES = [(6, 8), (9, 5), (7, 7)]
MEAN = (104.0, 117.0, 123.5)


@pytest.fixture
def pairs(tmp_path):
    """(root folder, list file, [(image HWC uint8, label HW uint8)]) of three PNG pairs of
    SIZES; labels are classes 0..2 and 255. Channel 0 of each image repeats its label so
    that crops and mirrors show whether image and label stayed aligned."""
    rs = np.random.RandomState(3)
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "seg").mkdir()
    written, lines = [], []
    for k, size in enumerate(SIZES):
        label = rs.choice(np.array([0, 1, 2, 255], np.uint8), size)
        image = rs.randint(0, 256, size + (3,)).astype(np.uint8)
        image[:, :, 0] = label
        assert cv2.imwrite(str(root / "img" / ("%d.png" % k)), image)
        assert cv2.imwrite(str(root / "seg" / ("%d.png" % k)), label)
        written.append((image, label))
        lines.append("img/%d.png seg/%d.png" % (k, k))
    source = tmp_path / "list.txt"
    source.write_text("\n".join(lines) + "\n")
    return str(root) + "/", str(source), written


def seg_data(root, source, backend, closing, params="", transform="", phase=TRAIN, ntop=3):
    layer = make_layer('type: "ImageSegData" image_data_param { source: "%s" root_folder: '
                       '"%s" %s } transform_param { %s }' % (source, root, params, transform),
                       backend, phase)
    closing(layer)
    top = tops(backend, ntop)
    layer.setup([], top)
    return layer, top


def fork_transform(image, label, crop=None, mean=(), scale=1.0, ignore=255, phase=TEST,
                   mirror=False, offsets=None, factor=None):
    """DeepLab's DataTransformer::TransformImgAndSeg for given random draws: image (H, W, C)
    uint8, label (H, W) uint8 -> data (C, h, w) and label (1, h, w), float32. `offsets`
    (h_off, w_off) stand for the TRAIN draws; TEST takes the centre."""
    img, seg = image, label
    height, width = img.shape[:2]
    if factor is not None and factor != 1:
        height = int(np.float32(height) * np.float32(factor))
        width = int(np.float32(width) * np.float32(factor))
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        seg = cv2.resize(seg, (width, height), interpolation=cv2.INTER_NEAREST)
    channels = image.shape[2]
    img = img.astype(np.float64).reshape(height, width, channels)
    means = list(mean) * channels if len(mean) == 1 else list(mean)
    if crop is not None:
        crop_h, crop_w = crop
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            fill = (means + [0.0] * 4)[:4] if means else (0.0,) * 4
            img = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=fill)
            seg = cv2.copyMakeBorder(seg, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                     value=ignore)
            img = img.reshape(seg.shape + (channels,))
        height, width = seg.shape
        if phase == TRAIN:
            h_off, w_off = offsets
        else:
            h_off, w_off = (height - crop_h) // 2, (width - crop_w) // 2
        img = img[h_off:h_off + crop_h, w_off:w_off + crop_w]
        seg = seg[h_off:h_off + crop_h, w_off:w_off + crop_w]
    h, w = seg.shape
    data = np.zeros((channels, h, w), np.float32)
    out_label = np.zeros((1, h, w), np.float32)
    for y in range(h):
        for x in range(w):
            to = w - 1 - x if mirror else x
            for c in range(channels):
                pixel = np.float32(img[y, x, c])
                if means:
                    pixel = pixel - np.float32(means[c])
                data[c, y, to] = pixel * np.float32(scale)
            out_label[0, y, to] = seg[y, x]
    return data, out_label


def find_draws(data, label, image, seg, crop, factors=(None,), **kw):
    """The (factor, mirror, h_off, w_off) whose fork transform gives (data, label), or None."""
    for factor in factors:
        h, w = image.shape[:2]
        if factor is not None:
            h, w = int(np.float32(h) * np.float32(factor)), int(np.float32(w) * np.float32(factor))
        for mirror in (False, True):
            for y in range(max(h, crop[0]) - crop[0] + 1):
                for x in range(max(w, crop[1]) - crop[1] + 1):
                    want = fork_transform(image, seg, crop, phase=TRAIN, mirror=mirror,
                                          offsets=(y, x), factor=factor, **kw)
                    if np.array_equal(want[1], label) and np.allclose(want[0], data):
                        return factor, mirror, y, x
    return None


# -- ImageSegData ----------------------------------------------------------------------------
def test_test_phase_pads_with_mean_and_ignore_then_centres(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 3 "
                          "ignore_label: 100", "crop_size: 7 scale: 0.5 mean_value: %g "
                          "mean_value: %g mean_value: %g" % MEAN, phase=TEST)
    assert [t.shape for t in top] == [(3, 3, 7, 7), (3, 1, 7, 7), (3, 1, 1, 2)]
    [(data, label, dim)] = batches(layer, top, 1)
    for k, (image, seg) in enumerate(written):
        want_data, want_label = fork_transform(image, seg, (7, 7), MEAN, 0.5, ignore=100)
        np.testing.assert_allclose(data[k], want_data, rtol=1e-6)
        np.testing.assert_array_equal(label[k], want_label)
        np.testing.assert_array_equal(dim[k, 0, 0], np.minimum(SIZES[k], 7))
    # The 6x8 image grew one row of mean (0 after subtraction) and of ignore_label.
    assert (data[0, :, 6, :] == 0).all() and (label[0, 0, 6] == 100).all()


def test_train_phase_crops_at_random_and_mirrors_pairs_together(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 3",
                          "crop_size: 5 mirror: true mean_value: 10", phase=TRAIN)
    seen = set()
    for data, label, dim in batches(layer, top, 5):
        for k, (image, seg) in enumerate(written):
            np.testing.assert_array_equal(data[k, 0] + 10, label[k, 0])  # still aligned
            draws = find_draws(data[k], label[k], image, seg, (5, 5), mean=(10,))
            assert draws is not None
            seen.add(draws)
            np.testing.assert_array_equal(dim[k, 0, 0], np.minimum(SIZES[k], 5))
    assert {mirror for _, mirror, _, _ in seen} == {False, True}
    assert len({(y, x) for _, _, y, x in seen}) > 4


def test_crop_height_and_width_and_no_mean_pads_with_zero(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 3",
                          "crop_height: 10 crop_width: 4", phase=TEST)
    [(data, label, dim)] = batches(layer, top, 1)
    assert data.shape == (3, 3, 10, 4)
    for k, (image, seg) in enumerate(written):
        want_data, want_label = fork_transform(image, seg, (10, 4))
        np.testing.assert_array_equal(data[k], want_data)
        np.testing.assert_array_equal(label[k], want_label)
        np.testing.assert_array_equal(dim[k, 0, 0], np.minimum(SIZES[k], (10, 4)))


def test_grey_images_pad_with_their_one_mean(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 3 "
                          "is_color: false", "crop_size: 7 mean_value: 50", phase=TEST)
    [(data, label, _)] = batches(layer, top, 1)
    assert data.shape == (3, 1, 7, 7)
    for k, (_, seg) in enumerate(written):
        grey = cv2.imread(root + "img/%d.png" % k, cv2.IMREAD_GRAYSCALE)[:, :, np.newaxis]
        want_data, want_label = fork_transform(grey, seg, (7, 7), (50,))
        np.testing.assert_array_equal(data[k], want_data)
        np.testing.assert_array_equal(label[k], want_label)


def test_scale_factors_resize_image_linearly_and_label_by_nearest(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 1",
                          "crop_size: 7 scale_factors: 1.5 mean_value: 0", phase=TEST)
    for k, (data, label, dim) in enumerate(batches(layer, top, 3)):
        image, seg = written[k]
        want_data, want_label = fork_transform(image, seg, (7, 7), (0,), factor=1.5)
        np.testing.assert_array_equal(data[0], want_data)
        np.testing.assert_array_equal(label[0], want_label)
        # data_dim is the size before scaling.
        np.testing.assert_array_equal(dim[0, 0, 0], np.minimum(SIZES[k], 7))
    # Several factors: one is drawn per image (the 6x8 image at 0.5 is padded).
    layer, top = seg_data(root, source, "cpu", closing, "label_type: PIXEL batch_size: 1",
                          "crop_size: 4 scale_factors: 0.5 scale_factors: 1 mirror: true",
                          phase=TRAIN)
    factors = set()
    for data, label, _ in batches(layer, top, 9)[::3]:
        image, seg = written[0]
        draws = find_draws(data[0], label[0], image, seg, (4, 4), factors=(0.5, 1))
        assert draws is not None
        factors.add(draws[0])
    assert factors == {0.5, 1}


def test_resize_reads_label_images_with_linear_interpolation(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 1 "
                          "new_height: 5 new_width: 6")
    [(data, label, dim)] = batches(layer, top, 1)
    image, seg = written[0]
    np.testing.assert_array_equal(data[0], cv2.resize(image, (6, 5)).transpose(2, 0, 1))
    np.testing.assert_array_equal(label[0, 0], cv2.resize(seg, (6, 5)))
    np.testing.assert_array_equal(dim.ravel(), [5, 6])


def test_without_crop_each_batch_takes_its_size(pairs, backend, closing):
    root, source, written = pairs
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 1",
                          "mean_value: 1 mean_value: 2 mean_value: 3", ntop=2)
    for k, (data, label) in enumerate(batches(layer, top, 3)):
        image, seg = written[k]
        want_data, want_label = fork_transform(image, seg, mean=(1, 2, 3))
        np.testing.assert_array_equal(data[0], want_data)
        np.testing.assert_array_equal(label[0], want_label)
    layer, top = seg_data(root, source, backend, closing, "label_type: PIXEL batch_size: 2")
    with pytest.raises(PrefetchError, match=r"list.txt:2: image .*img/1.png gives 3x9x5 but "
                       r"the batch's first image .*img/0.png gives 3x6x8"):
        layer.forward([], top)


def test_label_types_image_and_none(pairs, tmp_path, backend, closing, caplog):
    root, _, written = pairs
    listed = tmp_path / "labels.txt"
    listed.write_text("img/0.png 2\n\nimg/1.png 300 extra words\nimg/2.png seg/2.png\n")
    with caplog.at_level(logging.WARNING, logger="netkit"):
        layer, top = seg_data(root, str(listed), backend, closing,
                              "label_type: IMAGE batch_size: 1", "crop_size: 7",
                              phase=TEST)
    assert "labels.txt:4: label 'seg/2.png' is not an integer; it reads as 0" in caplog.text
    labels = [label for _, label, _ in batches(layer, top, 3)]
    # Outside the image, padding carries ignore_label; inside, the line's label (300
    # saturates to 255 in the fork's 8-bit label image).
    for label, value, (h, w) in zip(labels, (2, 255, 0), SIZES):
        inside = label[0, 0, :min(h, 7), :min(w, 7)]
        assert (inside == value).all()
    assert (labels[0][0, 0, 6] == 255).all()

    only_images = tmp_path / "images.txt"
    only_images.write_text("img/0.png\nimg/1.png seg/ignored.png\n")
    layer, top = seg_data(root, str(only_images), backend, closing,
                          "label_type: NONE ignore_label: 7 batch_size: 1")
    for (data, label, _), (image, _) in zip(batches(layer, top, 2), written):
        assert label.shape == (1, 1) + image.shape[:2] and (label == 7).all()
        np.testing.assert_array_equal(data[0], image.transpose(2, 0, 1))


def test_shuffle_is_seeded_and_visits_each_line_once_per_epoch(pairs, closing):
    root, source, written = pairs

    def stream(seed):
        set_random_seed(seed)
        layer, top = seg_data(root, source, "cpu", closing, "label_type: PIXEL shuffle: true "
                              "batch_size: 1", "crop_size: 5 mirror: true")
        return batches(layer, top, 9)

    first = stream(11)
    again = stream(11)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(first[4][0], stream(seed)[4][0]) for seed in (12, 13))

    def orders(seed):
        set_random_seed(seed)
        layer, top = seg_data(root, source, "cpu", closing, "label_type: PIXEL shuffle: true "
                              "batch_size: 3", phase=TEST, transform="crop_size: 5")
        # TEST crops are centred: the window's label identifies the image.
        return [tuple(_which(label[i, 0], written) for i in range(3))
                for _, label, _ in batches(layer, top, 4)]

    epochs = orders(5)
    assert all(sorted(epoch) == [0, 1, 2] for epoch in epochs)
    assert len(set(epochs)) > 1  # reshuffled at every wrap
    assert len({orders(seed)[0] for seed in range(6)}) > 1  # and at setup


def _which(label, written):
    """Index of the written pair whose centred 5 x 5 TEST crop gives `label`."""
    for k, (image, seg) in enumerate(written):
        if np.array_equal(fork_transform(image, seg, (5, 5))[1][0], label):
            return k
    raise AssertionError("label matches no written pair")


def test_two_tops_and_legacy_fields_warn(pairs, backend, closing, caplog):
    root, source, _ = pairs
    with caplog.at_level(logging.WARNING, logger="netkit"):
        layer, top = seg_data(root, source, backend, closing,
                              "label_type: PIXEL batch_size: 1 crop_size: 3 mirror: true",
                              ntop=2)
    assert "ignores image_data_param.crop_size, mirror" in caplog.text
    [(data, label)] = batches(layer, top, 1)
    assert data.shape == (1, 3, 6, 8) and label.shape == (1, 1, 6, 8)


@pytest.mark.parametrize("params, transform, match", [
    ("batch_size: 1 new_height: 4", "", "new_height and new_width"),
    ("batch_size: 0", "", "batch_size must be positive"),
    ("batch_size: 1", 'mean_file: "m.binaryproto"', "does not support transform_param.mean_file"),
    ("batch_size: 1", "crop_size: 3 crop_height: 3 crop_width: 3", "either crop_size or both"),
    ("batch_size: 1", "crop_height: 3", "either crop_size or both"),
    ("batch_size: 1", "crop_height: 3 crop_width: 0", "both be positive or both 0"),
    ("batch_size: 1", "scale_factors: 0.5 scale_factors: 0", "scale_factors must be positive"),
    ("batch_size: 1", "mean_value: 1 mean_value: 2", r"one per channel \(3\), not 2"),
    ("batch_size: 1 is_color: false", "mean_value: 1 mean_value: 2 mean_value: 3",
     r"one per channel \(1\), not 3"),
    ("batch_size: 1 rand_skip: 4", "", "rand_skip 4 exceeds the 3 images"),
])
def test_parameter_errors(pairs, closing, params, transform, match):
    root, source, _ = pairs
    with pytest.raises(LayerSetupError, match=match):
        seg_data(root, source, "cpu", closing, "label_type: PIXEL " + params, transform)


def test_list_errors_name_file_and_line(pairs, tmp_path, closing):
    root, _, _ = pairs
    bad = tmp_path / "bad.txt"
    bad.write_text("img/0.png seg/0.png\n\nimg/1.png\n")
    with pytest.raises(LayerSetupError, match=r"bad.txt:3: expected 'image label_image' "
                       r"\(image_data_param.label_type PIXEL\), got 'img/1.png'"):
        seg_data(root, str(bad), "cpu", closing, "label_type: PIXEL batch_size: 1")
    with pytest.raises(LayerSetupError, match=r"bad.txt:3: expected 'image label' "):
        seg_data(root, str(bad), "cpu", closing, "batch_size: 1")
    bad.write_text("img/0.png seg/missing.png\n")
    with pytest.raises(LayerSetupError, match=r"bad.txt:1: OpenCV could not read image "
                       r".*seg/missing.png"):
        seg_data(root, str(bad), "cpu", closing, "label_type: PIXEL batch_size: 1")
    bad.write_text("img/0.png seg/0.png\nimg/nope.png 1\n")
    layer, top = seg_data(root, str(bad), "cpu", closing, "batch_size: 2", "crop_size: 4")
    with pytest.raises(PrefetchError, match=r"bad.txt:2: OpenCV could not read image "
                       r".*img/nope.png"):
        layer.forward([], top)
    bad.write_text("img/0.png seg/1.png\n")
    with pytest.raises(LayerSetupError, match=r"bad.txt:1: label image .*seg/1.png is 9x5 "
                       r"but image .*img/0.png is 6x8"):
        seg_data(root, str(bad), "cpu", closing, "label_type: PIXEL batch_size: 1")
    with pytest.raises(LayerSetupError, match=r"nolist.txt: cannot read the list file"):
        seg_data(root, str(tmp_path / "nolist.txt"), "cpu", closing, "batch_size: 1")


# -- SegAccuracy -----------------------------------------------------------------------------
def seg_metrics(scores, labels, ignore):
    """Pixel accuracy, mean class accuracy and mean IoU, pixel by pixel as the fork counts:
    the prediction is the highest class among those with the top score."""
    n, c, h, w = scores.shape
    confusion = np.zeros((c, c))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                gt = int(labels[i, 0, y, x])
                if gt in ignore:
                    continue
                s = scores[i, :, y, x]
                predicted = max(k for k in range(c) if s[k] == s.max())
                confusion[gt, predicted] += 1
    total, diagonal = confusion.sum(), np.trace(confusion)
    pixel = diagonal / total if total else 0.0
    recalls = [confusion[k, k] / confusion[k].sum() for k in range(c) if confusion[k].sum()]
    ious = []
    for k in range(c):
        union = confusion[k].sum() + confusion[:, k].sum() - confusion[k, k]
        ious.append(1.0 if union == confusion[k, k] else confusion[k, k] / union)
    return np.array([pixel, np.mean(recalls) if recalls else 0.0, np.mean(ious)], np.float32)


def scores_and_labels(rs, shape=(2, 4, 3, 5), ignore=(255, 3)):
    """Scores on a coarse grid (many ties) and labels with some ignored pixels."""
    n, c, h, w = shape
    scores = np.round(rs.rand(*shape) * 2).astype(np.float32) / 2
    labels = rs.randint(0, c, (n, 1, h, w)).astype(np.float32)
    labels[rs.rand(n, 1, h, w) < 0.2] = ignore[0]
    labels[rs.rand(n, 1, h, w) < 0.1] = ignore[1]
    return scores, labels


def test_seg_accuracy_matches_a_confusion_matrix(backend):
    rs = np.random.RandomState(4)
    scores, labels = scores_and_labels(rs)
    layer = make_layer('type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 '
                       'ignore_label: 3 metric: PixelIOU }', backend)
    [out] = run_forward(layer, blobs(backend, scores, labels), tops(backend, 1))
    assert out.shape == (1, 1, 1, 3)
    want = seg_metrics(scores, labels, {255, 3})
    np.testing.assert_allclose(out.ravel(), want, rtol=1e-6)
    # Ties go to the highest class: all-equal scores predict class 3 (ignored here).
    flat = np.ones_like(scores)
    [out] = run_forward(layer, blobs(backend, flat, labels), tops(backend, 1))
    np.testing.assert_allclose(out.ravel(), seg_metrics(flat, labels, {255, 3}), rtol=1e-6)
    assert out.ravel()[0] == 0


def test_seg_accuracy_reset_false_adds_up_over_forwards(backend):
    rs = np.random.RandomState(5)
    first, second = scores_and_labels(rs), scores_and_labels(rs)
    both = tuple(np.concatenate(pair) for pair in zip(first, second))
    for reset, want in (("true", seg_metrics(*second, {255})),
                        ("false", seg_metrics(*both, {255}))):
        layer = make_layer('type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 '
                           'reset: %s }' % reset, backend)
        top = tops(backend, 1)
        run_forward(layer, blobs(backend, *first), top)
        bottom = blobs(backend, *second)
        layer.forward(bottom, top)
        np.testing.assert_allclose(backend.asnumpy(top[0].data).ravel(), want, rtol=1e-6)


def test_seg_accuracy_with_every_pixel_ignored(backend):
    labels = np.full((1, 1, 2, 2), 255, np.float32)
    layer = make_layer('type: "SegAccuracy" seg_accuracy_param { ignore_label: 255 }',
                       backend)
    [out] = run_forward(layer, blobs(backend, np.zeros((1, 3, 2, 2)), labels),
                        tops(backend, 1))
    np.testing.assert_array_equal(out.ravel(), [0, 0, 1])


def test_seg_accuracy_errors_and_no_backward(backend):
    rs = np.random.RandomState(6)
    scores, labels = scores_and_labels(rs, ignore=(255, 255))
    labels[1, 0, 2, 4] = 4  # a class the 4 scores do not have, and not ignored
    layer = make_layer('name: "acc" type: "SegAccuracy" seg_accuracy_param { '
                       'ignore_label: 255 }', backend)
    top, bottom = tops(backend, 1), blobs(backend, scores, labels)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    with pytest.raises(NetkitError, match=r"unexpected label 4 at num 1, row 2, col 4"):
        layer.forward(bottom, top)
    with pytest.raises(LayerSetupError, match="has no backward"):
        layer.backward(top, [True, False], bottom)
    layer.backward(top, [False, False], bottom)
    for shape in ((2, 1, 3, 4), (2, 2, 3, 5), (1, 1, 3, 5)):
        with pytest.raises(LayerSetupError, match="labels of shape 2x1x3x5"):
            layer.reshape(blobs(backend, scores, np.zeros(shape))[:2], top)


# -- a DeepLab-style net ---------------------------------------------------------------------
DEEPLAB_SOLVER = """
base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 display: 1
random_seed: 1234 snapshot_prefix: "%(root)s/unused"
net_param {
  name: "deeplab_tiny"
  layer { name: "data" type: "ImageSegData" top: "data" top: "label" top: "data_dim"
          image_data_param { source: "%(source)s" root_folder: "%(root)s" label_type: PIXEL
                             batch_size: 2 shuffle: true ignore_label: 255 }
          transform_param { mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.02
                            crop_size: 8 mirror: true scale_factors: 0.75
                            scale_factors: 1 } }
  layer { name: "fc8" type: "Convolution" bottom: "data" top: "fc8"
          param { lr_mult: 1 } param { lr_mult: 2 }
          convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2
                              weight_filler { type: "gaussian" std: 0.1 } } }
  layer { name: "fc8_interp" type: "Interp" bottom: "fc8" top: "fc8_interp"
          interp_param { height: 8 width: 8 } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8_interp" bottom: "label"
          top: "loss" loss_param { ignore_label: 255 } }
  layer { name: "accuracy" type: "SegAccuracy" bottom: "fc8_interp" bottom: "label"
          top: "accuracy" seg_accuracy_param { ignore_label: 255 } }
}
"""


def test_deeplab_style_net_trains_identically_on_cpu_and_fakegpu(pairs):
    root, source, _ = pairs
    param = text_format.Parse(DEEPLAB_SOLVER % {"root": root, "source": source},
                              pb.SolverParameter())
    weights, start = {}, None
    for name in ("cpu", "fakegpu"):
        solver = netkit.get_solver(param, backend=name)
        try:
            net = solver.net
            if start is None:
                start = [np.array(p.blob.data, copy=True) for p in net.learnable_params]
            solver.step(4)
            assert net.blobs["accuracy"].shape == (1, 1, 1, 3)
            assert np.isfinite(float(solver.backend.asnumpy(net.blobs["loss"].data)))
            assert net.blobs["data_dim"].shape == (2, 1, 1, 2)
            weights[name] = [solver.backend.asnumpy(p.blob.data)
                             for p in net.learnable_params]
        finally:
            solver.close()
    for cpu, fake in zip(weights["cpu"], weights["fakegpu"]):
        np.testing.assert_array_equal(cpu, fake)
    assert all(not np.array_equal(a, b) for a, b in zip(start, weights["cpu"]))


DEEPLAB_V1_NET = """
name: "deeplab_v1"
layers { name: "data" type: IMAGE_SEG_DATA top: "data" top: "label"
         image_data_param { source: "%(source)s" root_folder: "%(root)s" label_type: PIXEL
                            batch_size: 3 }
         transform_param { mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 9 } }
layers { name: "fc8" type: CONVOLUTION bottom: "data" top: "fc8" blobs_lr: 10 blobs_lr: 20
         weight_decay: 1 weight_decay: 0
         convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2
                             weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "label_shrink" type: INTERP bottom: "label" top: "label_shrink"
         interp_param { shrink_factor: 2 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc8" bottom: "label_shrink"
         loss_param { ignore_label: 255 } }
layers { name: "accuracy" type: SEG_ACCURACY bottom: "fc8" bottom: "label_shrink"
         top: "accuracy" seg_accuracy_param { ignore_label: 255 } }
"""


def test_deeplab_v1_layers_upgrade_and_run(pairs, closing):
    root, source, _ = pairs
    text = DEEPLAB_V1_NET % {"root": root, "source": source}
    upgraded = upgrade_net(text_format.Parse(text, pb.NetParameter()))
    assert [layer.type for layer in upgraded.layer] == [
        "ImageSegData", "Convolution", "Interp", "SoftmaxWithLoss", "SegAccuracy"]
    assert list(upgraded.layer[4].seg_accuracy_param.ignore_label) == [255]
    assert upgraded.layer[2].interp_param.shrink_factor == 2
    assert [p.lr_mult for p in upgraded.layer[1].param] == [10, 20]

    net = Net(text, TRAIN)
    closing(net)
    net.forward()
    label = net.blobs["label"].data
    assert label.shape == (3, 1, 9, 9)
    # Shrinking 9 -> 5 samples every other label pixel exactly.
    np.testing.assert_array_equal(net.blobs["label_shrink"].data, label[:, :, ::2, ::2])
    np.testing.assert_allclose(net.blobs["accuracy"].data.ravel(),
                               seg_metrics(net.blobs["fc8"].data,
                                           net.blobs["label_shrink"].data, {255}),
                               rtol=1e-6)

    mat = upgrade_net(text_format.Parse(
        'layers { name: "out" type: MAT_WRITE bottom: "fc8" mat_write_param { prefix: '
        '"features/" source: "list.txt" strip: 4 period: 2 } } '
        'layers { name: "in" type: MAT_READ top: "x" mat_read_param { prefix: "p/" } }',
        pb.NetParameter()))
    assert [layer.type for layer in mat.layer] == ["MatWrite", "MatRead"]
    assert mat.layer[0].mat_write_param.period == 2
    assert mat.layer[1].mat_read_param.batch_size == 1
