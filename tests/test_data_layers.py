"""ImageData (image files named in a list), MemoryData (arrays from the program) and
HDF5Output (bottoms written to an HDF5 file), against OpenCV, numpy and h5py."""
import logging
import sys

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from layertest import blobs, make_layer, tops
from netkit import netkit_pb2 as pb
from netkit.data.prefetch import PrefetchError
from netkit.errors import NetkitError
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.layers.memory_data import set_input_arrays
from netkit.net import Net
from netkit.rng import set_random_seed
from netkit.solvers import SGDSolver

cv2 = pytest.importorskip("cv2")

# (path under the root folder, label, scikit-image sample, (height, width)): JPEG and PNG,
# colour and grey, of four sizes.
FILES = [
    ("people/astronaut.jpg", 3, "astronaut", (40, 36)),
    ("coffee.png", 1, "coffee", (30, 45)),
    ("cats/chelsea.jpg", 4, "chelsea", (36, 48)),
    ("camera.png", 0, "camera", (32, 32)),
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(root folder with a trailing slash, list file) of FILES, written with OpenCV."""
    data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("photos")
    for path, _, sample, (h, w) in FILES:
        image = getattr(data, sample)()
        if image.ndim == 3:
            image = image[:, :, ::-1]  # scikit-image gives RGB; OpenCV writes BGR
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / path), cv2.resize(image, (w, h),
                                                        interpolation=cv2.INTER_AREA))
    listfile = root / "list.txt"
    listfile.write_text("".join("%s %d\n" % (path, label) for path, label, _, _ in FILES))
    return str(root) + "/", str(listfile)


def write_list(tmp_path, photos, lines, name="list.txt"):
    """A list file of (FILES index or a path, label) lines; returns its path."""
    path = tmp_path / name
    path.write_text("".join("%s %d\n" % (FILES[f][0] if isinstance(f, int) else f, label)
                            for f, label in lines))
    return str(path)


def image_data(text, source, root, backend, closing, phase=TEST):
    layer = make_layer('type: "ImageData" top: "data" top: "label" image_data_param { '
                       'source: "%s" root_folder: "%s" %s' % (source, root, text),
                       backend, phase)
    closing(layer)
    top = tops(backend, 2)
    layer.setup([], top)
    return layer, top


def run(layer, top, n):
    """`n` forwards; host copies of (data, labels) after each."""
    be = layer.backend
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append((be.asnumpy(top[0].data).copy(), be.asnumpy(top[1].data).copy()))
    return out


def opencv_image(root, path, height=0, width=0, color=True):
    """What Caffe's ReadImageToCVMat gives, written out here: imread, resize, as (C, H, W)."""
    image = cv2.imread(root + path, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if height and width:
        image = cv2.resize(image, (width, height))
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def caffe_transform(image, mean=0.0, scale=1.0, crop=0, flip=False):
    """Caffe's TEST-phase transform of one image: centre crop, (pixel - mean) * scale with
    the mean taken at the cropped position, then the left-right flip."""
    x = image.astype(np.float32)
    mean = np.broadcast_to(np.asarray(mean, np.float32), x.shape)
    if crop:
        h0, w0 = (x.shape[1] - crop) // 2, (x.shape[2] - crop) // 2
        x, mean = (a[:, h0:h0 + crop, w0:w0 + crop] for a in (x, mean))
    x = (x - mean) * np.float32(scale)
    return x[:, :, ::-1] if flip else x


def write_mean(path, mean):
    proto = pb.BlobProto()
    proto.shape.dim.extend((1,) + mean.shape)
    proto.data.extend(mean.ravel().tolist())
    path.write_bytes(proto.SerializeToString())
    return str(path)


# -- ImageData -----------------------------------------------------------------------------
MEAN_BGR = np.array([104, 117, 123], np.float32).reshape(3, 1, 1)
FLAG_SETS = {
    # name: (image_data_param and transform_param text, batch size, forwards, reader)
    "native-sizes-batch-1": ("batch_size: 1 }", 1, 5,
                             lambda root, path, _: caffe_transform(opencv_image(root, path))),
    "resize-mean-values-scale": (
        "batch_size: 3 new_height: 32 new_width: 40 } transform_param { scale: 0.5 "
        "mean_value: 104 mean_value: 117 mean_value: 123 }", 3, 3,
        lambda root, path, _: caffe_transform(opencv_image(root, path, 32, 40), MEAN_BGR, 0.5)),
    "gray-resize-crop-mean-file": (
        "batch_size: 2 is_color: false new_height: 24 new_width: 30 } transform_param { "
        "crop_size: 20 scale: 0.25 mean_file: \"MEAN\" }", 2, 3,
        lambda root, path, mean: caffe_transform(opencv_image(root, path, 24, 30, False),
                                                 mean, 0.25, 20)),
    "crop-mixed-sizes": (
        "batch_size: 4 } transform_param { crop_size: 28 mean_value: 100 }", 4, 2,
        lambda root, path, _: caffe_transform(opencv_image(root, path), 100, 1, 28)),
    "legacy-transform-fields": (
        "batch_size: 2 new_height: 24 new_width: 24 crop_size: 20 scale: 0.1 }", 2, 3,
        lambda root, path, _: caffe_transform(opencv_image(root, path, 24, 24), 0, 0.1, 20)),
}


@pytest.mark.parametrize("flags", list(FLAG_SETS))
def test_image_data_batches_are_what_opencv_and_numpy_give(photos, tmp_path, backend,
                                                            closing, flags):
    root, source = photos
    text, batch, forwards, reader = FLAG_SETS[flags]
    mean = np.random.RandomState(0).uniform(0, 255, (1, 24, 30)).astype(np.float32)
    text = text.replace("MEAN", write_mean(tmp_path / "mean.binaryproto", mean))
    layer, top = image_data(text, source, root, backend, closing)
    seen = run(layer, top, forwards)
    order = [FILES[i % len(FILES)] for i in range(batch * forwards)]  # wraps to the first
    for k, (data, labels) in enumerate(seen):
        entries = order[k * batch:(k + 1) * batch]
        expected = np.stack([reader(root, path, mean) for path, _, _, _ in entries])
        assert data.dtype == np.float32 and data.shape == expected.shape
        np.testing.assert_array_equal(data, expected)
        np.testing.assert_array_equal(labels, [label for _, label, _, _ in entries])


def test_image_data_train_crops_at_random_and_mirrors(photos, backend, closing):
    root, source = photos
    layer, top = image_data("batch_size: 4 new_height: 12 new_width: 10 } transform_param { "
                            "crop_size: 8 mirror: true scale: 0.5 }", source, root, backend,
                            closing, phase=TRAIN)
    assert top[0].shape == (4, 3, 8, 8)
    drawn = set()
    for data, _ in run(layer, top, 6):
        for (path, _, _, _), out in zip(FILES, data):
            image = opencv_image(root, path, 12, 10)
            found = [(i, j, flip) for i in range(5) for j in range(3) for flip in (0, 1)
                     if np.array_equal(out, caffe_transform(
                         image[:, i:i + 8, j:j + 8], 0, 0.5, 0, flip))]
            assert found, "not a crop of %s, mirrored or not" % path
            drawn.update(found)
    assert {flip for _, _, flip in drawn} == {0, 1}
    assert len({(i, j) for i, j, _ in drawn}) > 3


def test_image_data_shuffle_visits_every_image_once_per_epoch(photos, tmp_path, backend,
                                                              closing):
    root, _ = photos
    source = write_list(tmp_path, photos, [(label % 4, label) for label in range(7)])

    def stream(seed):
        set_random_seed(seed)
        layer, top = image_data("batch_size: 3 shuffle: true new_height: 16 new_width: 16 }",
                                source, root, backend, closing)
        seen = run(layer, top, 7)  # 21 images: three epochs of the 7 lines
        layer.close()
        return (np.concatenate([d for d, _ in seen]),
                np.concatenate([l for _, l in seen]).astype(int))

    data, labels = stream(4)
    epochs = labels.reshape(3, 7)
    for epoch in epochs:
        assert sorted(epoch) == list(range(7))
    assert len({tuple(e) for e in epochs} | {tuple(range(7))}) > 2  # shuffled, and reshuffled
    for image, label in zip(data, labels):
        expected = caffe_transform(opencv_image(root, FILES[label % 4][0], 16, 16))
        np.testing.assert_array_equal(image, expected)
    again, labels_again = stream(4)
    np.testing.assert_array_equal(labels_again, labels)
    np.testing.assert_array_equal(again, data)
    assert not np.array_equal(stream(5)[1], labels)


def test_image_data_rand_skip_starts_below_it(photos, tmp_path, backend, closing):
    root, _ = photos
    source = write_list(tmp_path, photos, [(label % 4, label) for label in range(7)])
    starts = set()
    for seed in range(6):
        set_random_seed(seed)
        layer, top = image_data("batch_size: 7 rand_skip: 5 new_height: 8 new_width: 8 }",
                                source, root, backend, closing)
        labels = run(layer, top, 1)[0][1].astype(int)
        layer.close()
        assert 0 <= labels[0] < 5
        np.testing.assert_array_equal(labels, (labels[0] + np.arange(7)) % 7)
        starts.add(labels[0])
    assert len(starts) > 1


def test_image_data_unreadable_image_is_a_one_line_error(photos, tmp_path, backend, closing):
    root, _ = photos
    (tmp_path / "broken.jpg").write_bytes(b"not an image\n" * 10)
    for bad in ("missing.jpg", str(tmp_path / "broken.jpg")):
        source = write_list(tmp_path, photos, [(0, 0), (1, 1), (bad, 2), (3, 3)])
        layer, top = image_data("batch_size: 2 new_height: 8 new_width: 8 }", source, root,
                                backend, closing)
        layer.forward([], top)
        with pytest.raises(PrefetchError) as info:
            layer.forward([], top)
        message = str(info.value)
        assert "%s:3: OpenCV could not read image %s" % (source, root + bad) in message
        assert "ImageData layer 'imagedata'" in message and "\n" not in message
    source = write_list(tmp_path, photos, [("missing.jpg", 0), (1, 1)])
    with pytest.raises(LayerSetupError, match="list.txt:1: OpenCV could not read image "):
        image_data("batch_size: 1 }", source, root, backend, closing)
    net = ('layer { name: "images" type: "ImageData" top: "d" top: "l" image_data_param { '
           'source: "%s" root_folder: "%s" } }' % (source, root))
    with pytest.raises(NetkitError, match="images.*list.txt:1: OpenCV could not read image"):
        Net(net, TEST, backend=backend)


def test_image_data_batch_of_mixed_sizes_needs_a_crop(photos, backend, closing):
    root, source = photos
    layer, top = image_data("batch_size: 2 }", source, root, backend, closing)
    with pytest.raises(PrefetchError, match="coffee.png is 3x30x45 but the batch's first "
                       "image .*astronaut.jpg is 3x40x36; set image_data_param.new_height"):
        layer.forward([], top)


@pytest.mark.parametrize("text,message", [
    ("new_height: 10 }", "new_height and new_width must be set together"),
    ("batch_size: 0 }", "batch_size must be positive"),
    ("rand_skip: 5 }", "rand_skip 5 exceeds the 4 images listed in"),
    ("} transform_param { crop_size: 37 }", "crop_size 37 is larger than the 40x36 input"),
    ("} data_param { prefetch: 0 }", "data_param.prefetch must be at least 1"),
])
def test_image_data_setup_errors(photos, backend, closing, text, message):
    root, source = photos
    with pytest.raises(LayerSetupError, match=message):
        image_data(text, source, root, backend, closing)


def test_image_data_missing_list_file_or_opencv(photos, tmp_path, backend, closing,
                                                monkeypatch):
    root, source = photos
    with pytest.raises(LayerSetupError, match="source .*nothing.txt does not exist"):
        image_data("}", str(tmp_path / "nothing.txt"), root, backend, closing)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(LayerSetupError, match="empty.txt lists no images"):
        image_data("}", str(tmp_path / "empty.txt"), root, backend, closing)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(LayerSetupError, match="needs OpenCV, which is not installed: pip "
                       "install opencv-python-headless"):
        image_data("}", source, root, backend, closing)


def test_image_data_resume_continues_exactly(photos, tmp_path, backend):
    """A run resumed from a snapshot reads, shuffles, crops and mirrors what a straight
    run does (the solver replays the data layers)."""
    root, _ = photos
    source = write_list(tmp_path, photos, [(label % 4, label % 3) for label in range(5)])
    net = text_format.Parse(
        'layer { name: "images" type: "ImageData" top: "data" top: "label" transform_param { '
        'crop_size: 10 mirror: true scale: 0.01 } image_data_param { source: "%s" '
        'root_folder: "%s" batch_size: 2 shuffle: true new_height: 12 new_width: 12 } } '
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
        '{ num_output: 3 weight_filler { type: "gaussian" std: 0.01 } } } '
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }'
        % (source, root), pb.NetParameter())

    def solver():
        param = pb.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9,
                                   random_seed=7, snapshot_prefix=str(tmp_path / "snap"))
        param.net_param.CopyFrom(net)
        return SGDSolver(param, backend=backend)

    def weights(s):
        out = [backend.asnumpy(p.blob.data).copy() for p in s.net.learnable_params]
        s.net.close()
        return out

    straight = solver()
    straight.step(6)
    half = solver()
    half.step(3)
    _, state = half.snapshot()
    weights(half)
    resumed = solver()
    resumed.restore(state)
    resumed.step(3)
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_array_equal(a, b)


# -- MemoryData ----------------------------------------------------------------------------
MEMORY = 'type: "MemoryData" top: "data" top: "label" memory_data_param { %s }'


def memory_data(backend, dims="batch_size: 2 channels: 3 height: 4 width: 5", extra="",
                phase=TEST):
    layer = make_layer(MEMORY % dims + extra, backend, phase)
    top = tops(backend, 2)
    layer.setup([], top)
    return layer, top


def test_memory_data_hands_out_batches_and_wraps(backend):
    layer, top = memory_data(backend)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (2,)
    data = np.random.RandomState(0).standard_normal((6, 3, 4, 5)).astype(np.float32)
    labels = np.arange(6, dtype=np.float32) * 10
    layer.reset(data, labels)
    seen = run(layer, top, 4)
    for k, (d, l) in enumerate(seen):
        rows = slice(2 * (k % 3), 2 * (k % 3) + 2)
        np.testing.assert_array_equal(d, data[rows])
        assert l.shape == (2, 1, 1, 1)  # Caffe's label shape after a forward
        np.testing.assert_array_equal(l.ravel(), labels[rows])
    data[2, 0, 0, 0] = 42  # a float32 array is kept, not copied, as in pycaffe
    assert run(layer, top, 1)[0][0][0, 0, 0, 0] == 42
    layer.reset(data, labels, 4)  # the first 4 rows only
    np.testing.assert_array_equal([l.ravel() for _, l in run(layer, top, 3)],
                                  [[0, 10], [20, 30], [0, 10]])


def test_set_input_arrays_feeds_a_net(backend, closing):
    net = Net('layer { name: "input" type: "MemoryData" top: "data" top: "label" '
              'memory_data_param { batch_size: 3 channels: 2 height: 1 width: 2 } } '
              'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }',
              TEST, backend=backend)
    closing(net)
    data = np.arange(24, dtype=np.float64).reshape(6, 2, 1, 2)
    set_input_arrays(net, data, np.arange(6).reshape(6, 1, 1, 1))
    for k in range(3):
        out = net.forward()
        np.testing.assert_array_equal(backend.asnumpy(out["flat"]),
                                      data[3 * (k % 2):3 * (k % 2) + 3].reshape(3, 4))
        np.testing.assert_array_equal(backend.asnumpy(out["label"]).ravel(),
                                      np.arange(3) + 3 * (k % 2))
    other = Net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }',
                TEST, backend=backend)
    with pytest.raises(NetkitError, match="needs a MemoryData layer first .* 'in' .Input."):
        set_input_arrays(other, data, np.arange(6))


@pytest.mark.parametrize("data_shape,labels_shape,n,message", [
    ((4, 3, 4, 6), (4,), None, r"data must be \(n, 3, 4, 5\) as memory_data_param says"),
    ((4, 60), (4,), None, r"data must be \(n, 3, 4, 5\)"),
    ((4, 3, 4, 5), (3,), None, "data and labels must have the same first dimension"),
    ((4, 3, 4, 5), (4, 2), None, r"labels must be \(n,\) or \(n, 1, 1, 1\)"),
    ((5, 3, 4, 5), (5,), None, r"rows \(5 of 5\) must be a positive multiple of batch_size 2"),
    ((4, 3, 4, 5), (4,), 6, r"rows \(6 of 4\)"),
    ((0, 3, 4, 5), (0,), None, r"rows \(0 of 0\)"),
])
def test_memory_data_rejects_wrong_shapes(backend, data_shape, labels_shape, n, message):
    layer, _ = memory_data(backend)
    with pytest.raises(NetkitError, match=message):
        layer.reset(np.zeros(data_shape), np.zeros(labels_shape), n)


def test_memory_data_needs_data_and_positive_dims(backend):
    layer, top = memory_data(backend)
    with pytest.raises(NetkitError, match="has no data: call set_input_arrays"):
        layer.forward([], top)
    with pytest.raises(LayerSetupError, match="must all be positive, got 2, 3, 0 and 5"):
        memory_data(backend, "batch_size: 2 channels: 3 width: 5")


def test_memory_data_transforms_added_images_not_reset_arrays(backend, tmp_path, caplog):
    mean = np.random.RandomState(1).uniform(0, 255, (3, 6, 7)).astype(np.float32)
    extra = (' transform_param { crop_size: 4 scale: 0.5 mean_file: "%s" }'
             % write_mean(tmp_path / "mean.binaryproto", mean))
    layer, top = memory_data(backend, "batch_size: 2 channels: 3 height: 4 width: 4", extra)
    images = np.random.RandomState(2).randint(0, 256, (4, 3, 6, 7)).astype(np.uint8)
    layer.add_images(images, [1, 2, 3, 4])
    with pytest.raises(NetkitError, match="cannot add images until the images added before"):
        layer.add_images(images, [1, 2, 3, 4])
    seen = run(layer, top, 2)
    expected = [caffe_transform(im, mean, 0.5, 4) for im in images]
    np.testing.assert_array_equal(np.concatenate([d for d, _ in seen]), expected)
    np.testing.assert_array_equal(np.concatenate([l for _, l in seen]).ravel(), [1, 2, 3, 4])
    layer.add_images(images[:2], [5, 6])  # everything was handed out: adding is allowed
    with pytest.raises(NetkitError, match="images of shape 3x5x4 transform to 3x4x4, but"):
        memory_data(backend, "batch_size: 2 channels: 3 height: 5 width: 4",
                    " transform_param { crop_size: 4 }")[0].add_images(
                        np.zeros((2, 3, 5, 4), np.uint8), [0, 0])
    arrays = np.ones((2, 3, 4, 4), np.float32)
    with caplog.at_level(logging.WARNING, logger="netkit"):
        layer.reset(arrays, [0, 0])
    assert "does not transform array data on reset()" in caplog.text
    np.testing.assert_array_equal(run(layer, top, 1)[0][0], arrays)


# -- HDF5Output ----------------------------------------------------------------------------
def hdf5_output(backend, path, shapes, batches, seed=0):
    """Forward `batches` random (data, label) pairs of `shapes` through an HDF5Output."""
    layer = make_layer('type: "HDF5Output" bottom: "data" bottom: "label" '
                       'hdf5_output_param { file_name: "%s" }' % path, backend)
    rs = np.random.RandomState(seed)
    sent = [[rs.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(batches)]
    bottom = blobs(backend, *sent[0])
    layer.setup(bottom, [])
    for pair in sent:
        for blob, array in zip(bottom, pair):
            blob.data[...] = backend.asarray(array)
        layer.reshape(bottom, [])
        layer.forward(bottom, [])
    return layer, bottom, sent


def test_hdf5_output_writes_caffes_datasets(backend, tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"an old file is truncated")
    layer, _, sent = hdf5_output(backend, path, [(3, 2, 4, 5), (3,)], 1)
    layer.close()
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["data", "label"]
        assert f["data"].dtype == np.float32 and f["label"].dtype == np.float32
        np.testing.assert_array_equal(f["data"][...], sent[0][0])
        np.testing.assert_array_equal(f["label"][...], sent[0][1].reshape(3, 1, 1, 1))


def test_hdf5_output_appends_every_batch_and_hdf5data_reads_it(backend, tmp_path):
    path = tmp_path / "out.h5"
    layer, bottom, sent = hdf5_output(backend, path, [(2, 6), (2, 1)], 3)
    with h5py.File(path, "r") as f:  # flushed after each batch: readable before close
        np.testing.assert_array_equal(f["data"][...],
                                      np.concatenate([d for d, _ in sent]).reshape(6, 6, 1, 1))
    for blob in bottom:
        blob.diff[...] = 7
    layer.backward([], [True, True], bottom)
    for blob in bottom:
        assert (backend.asnumpy(blob.diff) == 7).all()  # backward leaves the bottoms alone
    layer.close()
    (tmp_path / "list.txt").write_text(str(path) + "\n")
    reader = make_layer('type: "HDF5Data" top: "data" top: "label" hdf5_data_param { '
                        'source: "%s" batch_size: 6 }' % (tmp_path / "list.txt"), backend)
    top = tops(backend, 2)
    reader.setup([], top)
    reader.forward([], top)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data).reshape(6, 6),
                                  np.concatenate([d for d, _ in sent]))
    np.testing.assert_array_equal(backend.asnumpy(top[1].data).ravel(),
                                  np.concatenate([l for _, l in sent]).ravel())


def test_hdf5_output_errors(backend, tmp_path):
    with pytest.raises(LayerSetupError, match="file_name is required"):
        make_layer('type: "HDF5Output" bottom: "a" bottom: "b"', backend).setup(
            blobs(backend, np.zeros(2), np.zeros(2)), [])
    missing = tmp_path / "no_such_dir" / "out.h5"
    with pytest.raises(LayerSetupError, match="no_such_dir/out.h5: cannot create the file"):
        hdf5_output(backend, missing, [(2, 3), (2,)], 1)
    with pytest.raises(LayerSetupError, match=r"same number of rows, got shapes \(2, 3\) and "
                       r"\(3,\)"):
        hdf5_output(backend, tmp_path / "out.h5", [(2, 3), (3,)], 1)
    layer, bottom, _ = hdf5_output(backend, tmp_path / "shape.h5", [(2, 3), (2,)], 1)
    bottom[0].reshape((2, 4))
    with pytest.raises(ValueError, match=r"bottom 'data' rows are \(4, 1, 1\) now but "
                       r"\(3, 1, 1\)"):
        layer.forward(bottom, [])
    layer.close()
    with pytest.raises(RuntimeError, match="closed"):
        layer.forward(bottom, [])


# -- WindowData ----------------------------------------------------------------------------
# (image, class, overlap, x1, y1, x2, y2) on FILES[0] (40x36) and FILES[1] (30x45): with
# fg_threshold 0.5 and bg_threshold 0.3, three foreground windows (one at a corner, one
# reaching the right edge), two background ones (labels forced to 0), one unused.
WINDOWS = [(0, 1, 0.8, 3, 4, 20, 30), (0, 2, 0.6, 0, 0, 9, 9), (0, 5, 0.2, 10, 10, 35, 39),
           (0, 3, 0.4, 1, 1, 5, 5), (1, 2, 0.9, 20, 5, 44, 29), (1, 0, 0.1, 0, 0, 44, 29)]


def write_window_file(tmp_path, windows=WINDOWS, images=(0, 1)):
    lines = []
    for index, f in enumerate(images):
        h, w = FILES[f][3]
        mine = [win[1:] for win in windows if win[0] == index]
        lines += ["# %d" % index, FILES[f][0], "3 %d %d" % (h, w), str(len(mine))]
        lines += ["%d %g %d %d %d %d" % win for win in mine]
    path = tmp_path / "windows.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def window_data(text, source, root, backend, closing):
    layer = make_layer('type: "WindowData" top: "data" top: "label" window_data_param { '
                       'source: "%s" root_folder: "%s" fg_threshold: 0.5 bg_threshold: 0.3 %s'
                       % (source, root, text), backend, TRAIN)
    closing(layer)
    top = tops(backend, 2)
    layer.setup([], top)
    return layer, top


def test_window_geometry_worked_by_hand():
    from netkit.layers.window_data import warp_geometry
    # warp: the window itself, warped to the crop
    assert warp_geometry(3, 4, 20, 30, 40, 36, 12, 0, False, False) == \
        ((3, 4, 20, 30), (12, 12), 0, 0)
    # context_pad 2 of crop 10 enlarges by 10/6: (5..14) -> (2..18), inside the image
    assert warp_geometry(5, 5, 14, 14, 40, 36, 10, 2, False, False) == \
        ((2, 2, 18, 18), (10, 10), 0, 0)
    # at the corner: (0..9) -> (-3..13), clipped to (0..13), warped to 8 of 10 pixels at
    # round(3 * 10 / 17) = 2; mirrored, the padding moves to the (unclipped) right side
    assert warp_geometry(0, 0, 9, 9, 40, 36, 10, 2, False, False) == \
        ((0, 0, 13, 13), (8, 8), 2, 2)
    assert warp_geometry(0, 0, 9, 9, 40, 36, 10, 2, False, True) == \
        ((0, 0, 13, 13), (8, 8), 2, 0)
    # square: the 10x4 window becomes 11x11 around its centre (10, 12)
    assert warp_geometry(5, 10, 14, 13, 40, 36, 10, 0, True, False) == \
        ((5, 7, 15, 17), (10, 10), 0, 0)


@pytest.mark.parametrize("mode,pad,cache", [("warp", 0, False), ("warp", 2, True),
                                            ("square", 3, False)])
def test_window_data_batches_are_warped_windows(photos, tmp_path, backend, closing, mode,
                                                pad, cache):
    from netkit.layers.window_data import warp_geometry
    root, _ = photos
    crop, scale = 12, 0.5
    mean = np.random.RandomState(3).uniform(0, 255, (3, 16, 16)).astype(np.float32)
    layer, top = window_data(
        'batch_size: 8 fg_fraction: 0.25 context_pad: %d crop_mode: "%s" cache_images: %s '
        'scale: 0.5 } transform_param { crop_size: 12 mirror: true mean_file: "%s" }'
        % (pad, mode, str(cache).lower(), write_mean(tmp_path / "mean.binaryproto", mean)),
        write_window_file(tmp_path), root, backend, closing)
    assert top[0].shape == (8, 3, 12, 12) and top[1].shape == (8,)
    mean = mean[:, 2:14, 2:14]  # the centre crop_size window of the mean

    def expected(window, flip):
        image = cv2.imread(root + FILES[window[0]][0], cv2.IMREAD_COLOR)
        (x1, y1, x2, y2), size, ph, pw = warp_geometry(*window[3:], *image.shape[:2], crop,
                                                       pad, mode == "square", flip)
        patch = cv2.resize(image[y1:y2 + 1, x1:x2 + 1], size).transpose(2, 0, 1)
        patch = patch[:, :, ::-1] if flip else patch
        out = np.zeros((3, crop, crop), np.float32)
        h, w = patch.shape[1:]
        out[:, ph:ph + h, pw:pw + w] = (patch - mean[:, ph:ph + h, pw:pw + w]) * np.float32(scale)
        return out

    bg = [(w, f, expected(w, f)) for w in WINDOWS if w[2] < 0.3 for f in (False, True)]
    fg = [(w, f, expected(w, f)) for w in WINDOWS if w[2] >= 0.5 for f in (False, True)]
    drawn = set()
    for data, labels in run(layer, top, 4):
        np.testing.assert_array_equal(labels[:6], 0)
        for k, out in enumerate(data):
            candidates = bg if k < 6 else fg
            found = [(w, f) for w, f, e in candidates if np.array_equal(out, e)]
            assert found, "item %d is no warped %s window" % (k, "bg" if k < 6 else "fg")
            assert k < 6 or labels[k] == found[0][0][1]
            drawn.update(found)
    assert {f for _, f in drawn} == {False, True}
    assert len({w for w, _ in drawn}) >= 4


@pytest.mark.parametrize("windows,text,message", [
    ([(0, 0, 0.7, 1, 1, 5, 5), (0, 0, 0.1, 1, 1, 5, 5)], "",
     r"windows.txt:5: a foreground window .overlap 0.7 >= fg_threshold. needs a positive"),
    ([(0, 1, 0.7, 1, 1, 5, 5)], "", "windows.txt has no background windows"),
    (WINDOWS, "} transform_param { crop_size: 0 }", "crop_size must be positive"),
    (WINDOWS, 'crop_mode: "fit" }', 'crop_mode must be "warp" or "square", got "fit"'),
    (WINDOWS, "context_pad: 6 }", "context_pad 6 leaves nothing of a crop_size 12"),
])
def test_window_data_setup_errors(photos, tmp_path, backend, closing, windows, text, message):
    root, _ = photos
    text = text or "}"
    if "crop_size" not in text:
        text += " transform_param { crop_size: 12 }"
    with pytest.raises(LayerSetupError, match=message):
        window_data("batch_size: 4 " + text, write_window_file(tmp_path, windows), root,
                    backend, closing)


def test_window_file_format_errors_name_the_line(photos, tmp_path, backend, closing):
    root, _ = photos
    good = write_window_file(tmp_path)
    lines = open(good).read().split("\n")
    for bad_line, replacement, message in [
            (5, "1 0.8 3 x 20 30", "windows.txt:6: expected a window corner, got 'x'"),
            (0, "# 3", "windows.txt:1: image index 3 out of order .expected 0."),
            (0, "* 0", "windows.txt:1: expected '#' to start an image block, got '\\*'"),
            (2, "1 40 36", "windows.txt:2: image people/astronaut.jpg has 1 channels")]:
        edited = list(lines)
        edited[bad_line] = replacement
        (tmp_path / "windows.txt").write_text("\n".join(edited))
        with pytest.raises(LayerSetupError, match=message):
            window_data("batch_size: 4 } transform_param { crop_size: 12 }",
                        str(tmp_path / "windows.txt"), root, backend, closing)
    (tmp_path / "windows.txt").write_text("\n".join(lines[:7]))
    with pytest.raises(LayerSetupError, match="windows.txt ends where a class index was expected"):
        window_data("batch_size: 4 } transform_param { crop_size: 12 }",
                    str(tmp_path / "windows.txt"), root, backend, closing)


def test_window_data_missing_image_names_the_line(photos, tmp_path, backend, closing):
    root, _ = photos
    source = write_window_file(tmp_path)
    text = open(source).read().replace(FILES[1][0], "missing.png")
    (tmp_path / "windows.txt").write_text(text)
    with pytest.raises(LayerSetupError, match="windows.txt:10: cannot read image .*missing"):
        window_data("batch_size: 4 cache_images: true } transform_param { crop_size: 12 }",
                    source, root, backend, closing)
    layer, top = window_data("batch_size: 40 } transform_param { crop_size: 12 }", source,
                             root, backend, closing)
    with pytest.raises(PrefetchError, match="windows.txt:10: OpenCV could not read image "
                       ".*missing.png"):
        layer.forward([], top)
