"""Fork layers from real prototxts: CenterLoss (ydwen/caffe-face), DenseImageData
(caffe-segnet) and ImageLabelmapData (s9xie/hed), against numpy and OpenCV references
written here."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from layertest import (batches, blobs, check_gradient, forward_backward, make_layer, run_forward,
                       tops)
from netkit import netkit_pb2 as pb
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.solvers import SGDSolver

RS = np.random.RandomState(5)


# ----------------------------------------------------------------------------- CenterLoss
def center_loss_reference(x, labels, centers):
    """The fork's numbers, item by item: loss, features' diff (loss weight 1), centers' diff."""
    x = x.reshape(len(x), -1).astype(np.float64)
    loss, dx = 0.0, np.zeros_like(x)
    dc = np.zeros(centers.shape, np.float64)
    for i, y in enumerate(labels.astype(int)):
        d = x[i] - centers[y]
        loss += d @ d / 2 / len(x)
        dx[i] = d / len(x)
    for j in range(len(centers)):
        members = [i for i, y in enumerate(labels.astype(int)) if y == j]
        for i in members:
            dc[j] += centers[j] - x[i]
        dc[j] /= 1 + len(members)
    return loss, dx, dc


CENTER_LOSS = ('type: "CenterLoss" center_loss_param { num_output: 4 '
               'center_filler { type: "gaussian" std: 1 } }')


def test_center_loss_forward_and_diffs(backend):
    x = RS.standard_normal((6, 2, 3)).astype(np.float32)
    labels = np.array([0, 2, 2, 1, 0, 2], np.float32)  # class 3 absent: its diff stays 0
    layer = make_layer(CENTER_LOSS, backend)
    weight = 2.5
    (loss,), (dx, _), (dc,) = forward_backward(layer, backend, [x, labels], [weight],
                                               propagate=[True, False])
    centers = backend.asnumpy(layer.blobs[0].data)
    assert centers.shape == (4, 6)
    ref_loss, ref_dx, ref_dc = center_loss_reference(x, labels, centers)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(dx, weight * ref_dx.reshape(x.shape), rtol=1e-5, atol=1e-6)
    # The centers' diff is the fork's update rule: not scaled by the loss weight.
    np.testing.assert_allclose(dc, ref_dc, rtol=1e-5, atol=1e-6)
    assert not dc[3].any()


def test_center_loss_center_diff_accumulates(backend):
    x = RS.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([1, 1, 0, 1], np.float32)
    layer = make_layer(CENTER_LOSS, backend)
    bottom, top = blobs(backend, x, labels), tops(backend, 1)
    run_forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 1
    layer.backward(top, [False, False], bottom)
    _, _, ref_dc = center_loss_reference(x, labels, backend.asnumpy(layer.blobs[0].data))
    np.testing.assert_allclose(backend.asnumpy(layer.blobs[0].diff), 1 + ref_dc, rtol=1e-5)


def test_center_loss_axis(backend):
    x = RS.standard_normal((3, 2, 2)).astype(np.float32)
    layer = make_layer('type: "CenterLoss" center_loss_param { num_output: 2 axis: -2 '
                       'center_filler { type: "uniform" min: -1 max: 1 } }', backend)
    (loss,) = run_forward(layer, blobs(backend, x, [1, 0, 1]), tops(backend, 1))
    ref_loss, _, _ = center_loss_reference(x, np.array([1, 0, 1]),
                                           backend.asnumpy(layer.blobs[0].data))
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_center_loss_gradient(backend):
    x = RS.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 0], np.float32)
    layer = make_layer(CENTER_LOSS.replace("num_output: 4", "num_output: 3"), backend)
    check_gradient(layer, blobs(backend, x, labels), tops(backend, 1), check_bottom=[0],
                   check_params=False)


@pytest.mark.parametrize("text, bottoms, match", [
    ('center_loss_param { num_output: 0 }', [(2, 3), (2,)], "num_output"),
    ('center_loss_param { num_output: 2 axis: 3 }', [(2, 3), (2,)], "axis"),
    ('center_loss_param { num_output: 2 axis: 2 }', [(2, 3, 4), (2,)], "axis"),
    ('center_loss_param { num_output: 2 }', [(2, 3), (3,)], "one value per item"),
])
def test_center_loss_errors(backend, text, bottoms, match):
    layer = make_layer('type: "CenterLoss" ' + text, backend)
    with pytest.raises(LayerSetupError, match=match):
        run_forward(layer, blobs(backend, *[np.zeros(s) for s in bottoms]), tops(backend, 1))


def test_center_loss_refuses_label_backward(backend):
    layer = make_layer(CENTER_LOSS, backend)
    bottom, top = blobs(backend, np.ones((2, 3)), [0, 1]), tops(backend, 1)
    run_forward(layer, bottom, top)
    with pytest.raises(LayerSetupError, match="label"):
        layer.backward(top, [True, True], bottom)


CENTER_NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 3 } shape { dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "feat"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "center" type: "CenterLoss" bottom: "feat" bottom: "label" top: "loss"
        param { lr_mult: 1 decay_mult: 0 }
        center_loss_param { num_output: 2 center_filler { type: "constant" } } }
"""


def test_center_loss_net_trains(backend):
    param = text_format.Parse('base_lr: 0.1 lr_policy: "fixed" random_seed: 3 '
                              'snapshot_prefix: "unused"', pb.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(CENTER_NET, pb.NetParameter()))
    solver = SGDSolver(param, backend=backend)
    net = solver.net
    rs = np.random.RandomState(0)
    labels = np.arange(8) % 2
    data = (rs.standard_normal((8, 3)) * 0.3 + labels[:, None] * 2).astype(np.float32)
    net.blobs["data"].data[...] = backend.asarray(data)
    net.blobs["label"].data[...] = backend.asarray(labels.astype(np.float32))
    losses = []
    for _ in range(30):
        solver.step(1)
        losses.append(float(backend.asnumpy(net.blobs["loss"].data)))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.1 * losses[0]
    # The centers (filled with zeros) followed their classes' mean features.
    net.forward()
    features = backend.asnumpy(net.blobs["feat"].data)
    means = [features[labels == j].mean(axis=0) for j in range(2)]
    np.testing.assert_allclose(backend.asnumpy(net.layers[-1].blobs[0].data), means, atol=0.03)
    assert np.abs(means[0] - means[1]).max() > 0.1


# ------------------------------------------------- DenseImageData and ImageLabelmapData
cv2 = pytest.importorskip("cv2")

from netkit.data.prefetch import PrefetchError  # noqa: E402
from netkit.rng import set_random_seed  # noqa: E402

SIZE = (6, 8)  # (H, W) of every written image


@pytest.fixture
def pairs(tmp_path):
    """(root folder, list file, [(image HWC uint8, label HW uint8)]) of three pairs written
    as PNG: channel 0 of each image holds its label's values, so that crops and mirrors
    show whether image and label stayed aligned."""
    rs = np.random.RandomState(2)
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    written, lines = [], []
    for k in range(3):
        label = rs.randint(0, 256, SIZE).astype(np.uint8)
        image = rs.randint(0, 256, SIZE + (3,)).astype(np.uint8)
        image[:, :, 0] = label
        cv2.imwrite(str(root / "img" / ("%d.png" % k)), image)
        cv2.imwrite(str(root / "lab" / ("%d.png" % k)), label)
        written.append((image, label))
        lines.append("img/%d.png lab/%d.png" % (k, k))
    source = tmp_path / "list.txt"
    source.write_text("\n".join(lines) + "\n")
    return str(root) + "/", str(source), written


def data_layer(kind, text, root, source, backend, closing, transform="", phase=TRAIN):
    param = "dense_image_data_param" if kind == "DenseImageData" else "image_data_param"
    layer = make_layer('type: "%s" top: "data" top: "label" %s { source: "%s" '
                       'root_folder: "%s" %s } transform_param { %s }'
                       % (kind, param, source, root, text, transform), backend, phase)
    closing(layer)
    top = tops(backend, 2)
    layer.setup([], top)
    return layer, top


def find_window(crop, image):
    """(mirrored, h_off, w_off) of the window of `image` (HW) equal to `crop`, or None."""
    h, w = crop.shape
    for mirrored in (False, True):
        source = image[:, ::-1] if mirrored else image
        for y in range(image.shape[0] - h + 1):
            for x in range(image.shape[1] - w + 1):
                if np.array_equal(source[y:y + h, x:x + w], crop):
                    return mirrored, y, x
    return None


def test_dense_image_data_values_and_wrap(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("DenseImageData", "batch_size: 2", root, source, backend, closing,
                            "scale: 0.5 mean_value: 10 mean_value: 20 mean_value: 30")
    assert top[0].shape == (2, 3) + SIZE and top[1].shape == (2, 1) + SIZE
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    order = [0, 1, 2, 0]
    (d1, l1), (d2, l2) = batches(layer, top, 2)
    for k, (data, label) in zip(order, [(d1[0], l1[0]), (d1[1], l1[1]), (d2[0], l2[0]),
                                       (d2[1], l2[1])]):
        image, expected = written[k]
        np.testing.assert_allclose(data, (image.transpose(2, 0, 1) - mean) * 0.5)
        np.testing.assert_array_equal(label[0], expected)  # labels keep raw pixel values


def test_dense_image_data_crop_and_mirror_keep_pairs_aligned(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("DenseImageData", "batch_size: 3 mirror: true crop_height: 4 "
                            "crop_width: 5", root, source, backend, closing, phase=TEST)
    assert top[0].shape == (3, 3, 4, 5) and top[1].shape == (3, 1, 4, 5)
    seen = set()
    for data, label in batches(layer, top, 6):
        for k in range(3):
            np.testing.assert_array_equal(data[k, 0], label[k, 0])
            window = find_window(label[k, 0], written[k][1].astype(np.float32))
            assert window is not None
            mirrored, y, x = window
            image = written[k][0].transpose(2, 0, 1).astype(np.float32)
            if mirrored:
                image = image[:, :, ::-1]
            np.testing.assert_array_equal(data[k], image[:, y:y + 4, x:x + 5])
            seen.add(window)
    # Random windows and coins in the TEST phase too, as the fork draws them.
    assert {m for m, _, _ in seen} == {False, True}
    assert len({(y, x) for _, y, x in seen}) > 3


def test_dense_image_data_resize(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("DenseImageData", "batch_size: 1 new_height: 9 new_width: 5",
                            root, source, backend, closing)
    [(data, label)] = batches(layer, top, 1)
    image, expected = written[0]
    np.testing.assert_array_equal(
        data[0], cv2.resize(image, (5, 9), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1))
    np.testing.assert_array_equal(
        label[0, 0], cv2.resize(expected, (5, 9), interpolation=cv2.INTER_NEAREST))


def test_dense_image_data_shuffle_is_seeded(pairs, closing):
    root, source, written = pairs

    def stream(seed):
        set_random_seed(seed)
        layer, top = data_layer("DenseImageData", "batch_size: 1 shuffle: true mirror: true "
                                "crop_height: 3 crop_width: 3", root, source, "cpu", closing)
        return np.stack([np.concatenate([d.ravel(), lab.ravel()])
                         for d, lab in batches(layer, top, 9)])

    first = stream(4)
    np.testing.assert_array_equal(first, stream(4))
    assert any(not np.array_equal(first, stream(seed)) for seed in (5, 6))


def test_dense_image_data_shuffles_at_setup_and_every_wrap(pairs, closing):
    root, source, written = pairs
    index = {lab.tobytes(): k for k, (_, lab) in enumerate(written)}

    def orders(seed):
        set_random_seed(seed)
        layer, top = data_layer("DenseImageData", "batch_size: 3 shuffle: true", root,
                                source, "cpu", closing)
        return [tuple(index[lab[0].astype(np.uint8).tobytes()] for lab in labels)
                for _, labels in batches(layer, top, 6)]

    epochs = orders(1)
    assert all(sorted(epoch) == [0, 1, 2] for epoch in epochs)
    assert len(set(epochs)) > 1  # reshuffled at wraps
    assert len({orders(seed)[0] for seed in range(6)}) > 1  # shuffled at setup


def write_list(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, transform, match", [
    ("batch_size: 1 crop_height: 3", "", "crop_height and crop_width"),
    ("batch_size: 1 new_width: 3", "", "new_height and new_width"),
    ("batch_size: 0", "", "batch_size"),
    ("batch_size: 1", "mirror: true", "transform_param.mirror"),
    ("batch_size: 1", "crop_size: 2", "crop_size"),
    ("batch_size: 1 rand_skip: 4", "", "rand_skip 4 exceeds the 3 images"),
])
def test_dense_image_data_parameter_errors(pairs, text, transform, match, closing):
    root, source, _ = pairs
    with pytest.raises(LayerSetupError, match=match):
        data_layer("DenseImageData", text, root, source, "cpu", closing, transform)


def test_pair_list_errors_name_file_and_line(pairs, tmp_path, closing):
    root, _, _ = pairs
    bad = write_list(tmp_path, "img/0.png lab/0.png\n\nimg/1.png\n")
    with pytest.raises(LayerSetupError, match=r"bad.txt:3: expected 'image label_image'"):
        data_layer("DenseImageData", "batch_size: 1", root, bad, "cpu", closing)
    missing = write_list(tmp_path, "img/0.png lab/missing.png\n")
    with pytest.raises(LayerSetupError, match=r"bad.txt:1: OpenCV could not read image "
                       r".*lab/missing.png"):
        data_layer("ImageLabelmapData", "batch_size: 1", root, missing, "cpu", closing)
    later = write_list(tmp_path, "img/0.png lab/0.png\nimg/nope.png lab/1.png\n")
    layer, top = data_layer("DenseImageData", "batch_size: 2", root, later, "cpu", closing)
    with pytest.raises(PrefetchError, match=r"bad.txt:2: OpenCV could not read image "
                       r".*img/nope.png"):
        layer.forward([], top)


def test_pair_size_mismatch_names_line(pairs, tmp_path, closing):
    root, _, _ = pairs
    cv2.imwrite(root + "lab/small.png", np.zeros((5, 8), np.uint8))
    source = write_list(tmp_path, "img/0.png lab/small.png\n")
    for kind in ("DenseImageData", "ImageLabelmapData"):
        with pytest.raises(LayerSetupError, match=r"bad.txt:1: label image .*small.png is "
                           r"5x8 but image .*0.png is 6x8"):
            data_layer(kind, "batch_size: 1", root, source, "cpu", closing)
    # SegNet resizes each to new_height x new_width before comparing; HED refuses.
    layer, top = data_layer("DenseImageData", "batch_size: 1 new_height: 4 new_width: 4",
                            root, source, "cpu", closing)
    assert batches(layer, top, 1)[0][1].shape == (1, 1, 4, 4)
    with pytest.raises(LayerSetupError, match="small.png is 5x8"):
        data_layer("ImageLabelmapData", "batch_size: 1 new_height: 4 new_width: 4", root,
                   source, "cpu", closing)


def test_image_labelmap_data_thresholds_label(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("ImageLabelmapData", "batch_size: 3", root, source, backend,
                            closing, "mean_value: 104 mean_value: 116.5 mean_value: 122")
    [(data, label)] = batches(layer, top, 1)
    mean = np.array([104, 116.5, 122], np.float32)[:, None, None]
    for k, (image, gt) in enumerate(written):
        np.testing.assert_allclose(data[k], image.transpose(2, 0, 1) - mean)
        # OpenCV's rounding of gt / 255: 127 -> 0, 128 -> 1.
        np.testing.assert_array_equal(label[k, 0], np.floor(gt / 255.0 + 0.5))
        assert set(np.unique(label[k])) == {0.0, 1.0}


def test_image_labelmap_data_crop_and_mirror_keep_pairs_aligned(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("ImageLabelmapData", "batch_size: 3", root, source, backend,
                            closing, "crop_size: 4 mirror: true scale: 2", phase=TEST)
    assert top[0].shape == (3, 3, 4, 4) and top[1].shape == (3, 1, 4, 4)
    mirrors = set()
    for data, label in batches(layer, top, 6):
        for k in range(3):
            np.testing.assert_array_equal(label[k, 0], data[k, 0] / 2 >= 128)
            window = find_window(data[k, 0] / 2, written[k][1].astype(np.float32))
            assert window is not None
            mirrored, y, x = window
            image = written[k][0].transpose(2, 0, 1).astype(np.float32) * 2
            if mirrored:
                image = image[:, :, ::-1]
            np.testing.assert_array_equal(data[k], image[:, y:y + 4, x:x + 4])
            mirrors.add(mirrored)
    assert mirrors == {False, True}


def test_image_labelmap_data_resize(pairs, backend, closing):
    root, source, written = pairs
    layer, top = data_layer("ImageLabelmapData", "batch_size: 1 new_height: 7 new_width: 11",
                            root, source, backend, closing)
    [(data, label)] = batches(layer, top, 1)
    image, gt = written[0]
    np.testing.assert_array_equal(data[0], cv2.resize(image, (11, 7)).transpose(2, 0, 1))
    np.testing.assert_array_equal(label[0, 0], cv2.resize(gt, (11, 7)) >= 128)


def test_wild_prototxt_layers_parse():
    net = text_format.Parse("""
        layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                dense_image_data_param { source: "train.txt" batch_size: 4 shuffle: true
                                         mirror: true crop_height: 224 crop_width: 224 } }
        layer { name: "c" type: "CenterLoss" bottom: "fc5" bottom: "label" top: "closs"
                param { lr_mult: 1 decay_mult: 0 } loss_weight: 0.01
                center_loss_param { num_output: 10 center_filler { type: "xavier" } } }
        """, pb.NetParameter())
    dense, center = net.layer
    assert dense.dense_image_data_param.crop_width == 224
    assert center.center_loss_param.axis == 1
    assert pb.LayerParameter.DESCRIPTOR.fields_by_name["center_loss_param"].number == 1147
    assert pb.LayerParameter.DESCRIPTOR.fields_by_name["dense_image_data_param"].number == 1138
    assert [f.number for f in pb.DenseImageDataParameter.DESCRIPTOR.fields] == list(range(1, 13))
