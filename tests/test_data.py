"""Data input: DataTransformer, Data (LMDB), HDF5Data, Input, DummyData, prefetching."""
import gc
import os

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from layertest import make_layer, tops
from netkit import netkit_pb2 as pb
from netkit.data.datum import (array_to_datum, datum_to_array, load_mean_file,
                               write_lmdb)
from netkit.data.prefetch import PrefetchError, Prefetcher
from netkit.data.transformer import DataTransformer, TransformError
from netkit.layer import TEST, TRAIN, LayerSetupError
from netkit.rng import host_rng, set_random_seed


# -- helpers -------------------------------------------------------------------------------
def transformer(text, phase=TRAIN, seed=0):
    param = text_format.Parse(text, pb.TransformationParameter())
    return DataTransformer(param, phase, np.random.RandomState(seed))


def write_mean(path, mean, legacy=False):
    proto = pb.BlobProto()
    if legacy:
        proto.num, proto.channels, proto.height, proto.width = (1,) + mean.shape
    else:
        proto.shape.dim.extend((1,) + mean.shape)
    proto.data.extend(mean.ravel().tolist())
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return str(path)


def write_db(path, datums):
    write_lmdb(str(path), (("%08d" % i, d.SerializeToString()) for i, d in enumerate(datums)))
    return str(path)


def raw_images(n, shape=(3, 6, 5), seed=3):
    return np.random.RandomState(seed).randint(0, 256, size=(n,) + shape).astype(np.uint8)


def windows(image, mean, crop, scale):
    """Every (crop - mean) * scale window of one image, unflipped and flipped (Caffe's order:
    mean indexed at the cropped position, then the finished crop mirrored)."""
    c, h, w = image.shape
    out = []
    for i in range(h - crop + 1):
        for j in range(w - crop + 1):
            win = (image[:, i:i + crop, j:j + crop].astype(np.float32)
                   - mean[:, i:i + crop, j:j + crop]) * np.float32(scale)
            out.append(((i, j, False), win))
            out.append(((i, j, True), win[:, :, ::-1]))
    return out


def data_layer(text, backend, closing, phase=TRAIN):
    layer = make_layer(text, backend, phase)
    closing(layer)
    return layer


def run(layer, top, n):
    """`n` forwards; host copies of every top after each."""
    be = layer.backend
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append([be.asnumpy(t.data).copy() for t in top])
    return out


# -- DataTransformer -----------------------------------------------------------------------
def test_transform_scale_and_mean_values():
    x = raw_images(4)
    out = transformer("scale: 0.5 mean_value: 10 mean_value: 20 mean_value: 30")(x)
    expected = (x.astype(np.float32) - np.array([10, 20, 30], np.float32)[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, expected)
    one = transformer("mean_value: 7")(x)
    np.testing.assert_array_equal(one, x.astype(np.float32) - 7)


def test_transform_float_input_and_identity():
    x = np.random.RandomState(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = transformer("")(x)
    np.testing.assert_array_equal(out, x)
    assert out is not x


@pytest.mark.parametrize("legacy", [False, True])
def test_transform_mean_file_centre_crop_in_test(tmp_path, legacy):
    x = raw_images(3, (2, 7, 6))
    mean = np.random.RandomState(1).uniform(0, 255, size=(2, 7, 6)).astype(np.float32)
    path = write_mean(tmp_path / "mean.binaryproto", mean, legacy)
    np.testing.assert_array_equal(load_mean_file(path), mean)
    t = transformer('crop_size: 3 scale: 0.25 mean_file: "%s"' % path, phase=TEST)
    out = t(x)
    h0, w0 = (7 - 3) // 2, (6 - 3) // 2
    expected = (x[:, :, h0:h0 + 3, w0:w0 + 3].astype(np.float32)
                - mean[:, h0:h0 + 3, w0:w0 + 3]) * np.float32(0.25)
    np.testing.assert_array_equal(out, expected)


def test_transform_train_random_crop_and_mirror_order(tmp_path):
    n, crop = 40, 3
    x = raw_images(n, (2, 5, 6))
    mean = np.random.RandomState(2).uniform(0, 255, size=(2, 5, 6)).astype(np.float32)
    path = write_mean(tmp_path / "mean.binaryproto", mean)
    t = transformer('crop_size: 3 mirror: true scale: 0.5 mean_file: "%s"' % path, TRAIN)
    out = t(x)
    assert out.shape == (n, 2, crop, crop)
    seen = set()
    for i in range(n):
        matches = [key for key, win in windows(x[i], mean, crop, 0.5)
                   if np.array_equal(win, out[i])]
        assert matches, "image %d is not a (crop - mean) * scale window, mirrored or not" % i
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(a, b) for a, b, _ in seen}) > 4


def test_transform_images_of_several_sizes_are_cropped_each_within_its_own():
    """A list of images of several sizes (a Data or ImageData batch): crop_size crops each
    within its own size, centred in TEST, as Caffe's per-image Transform does; without a
    crop, or with other channels, they make no batch."""
    images = [raw_images(1, (2, h, w), seed=h)[0] for h, w in [(5, 6), (7, 4), (4, 4)]]
    out = transformer("crop_size: 4 mean_value: 9 mean_value: 3 scale: 0.5", TEST)(images)
    mean = np.array([9, 3], np.float32)[:, None, None]
    expected = [(im[:, (im.shape[1] - 4) // 2:][:, :4, (im.shape[2] - 4) // 2:][:, :, :4]
                 .astype(np.float32) - mean) * np.float32(0.5) for im in images]
    np.testing.assert_array_equal(out, np.stack(expected))
    train = transformer("crop_size: 4 mirror: true", TRAIN)(images * 8)
    assert train.shape == (24, 2, 4, 4)
    with pytest.raises(TransformError, match="images of 2x5x6 and 2x7x4 do not transform to "
                                             "one shape"):
        transformer("")(images)
    with pytest.raises(TransformError, match="do not transform to one shape .2x3x3 and 1x3x3"):
        transformer("crop_size: 3", TEST)([images[0], raw_images(1, (1, 5, 5))[0]])
    with pytest.raises(TransformError, match="crop_size 5 is larger than the 7x4 input"):
        transformer("crop_size: 5")(images)


def test_transform_mirror_in_test_phase_flips_some_images():
    x = raw_images(32, (1, 4, 4))
    out = transformer("mirror: true", phase=TEST)(x)
    flipped = [np.array_equal(o, xi[:, :, ::-1].astype(np.float32)) for o, xi in zip(out, x)]
    kept = [np.array_equal(o, xi.astype(np.float32)) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_transform_errors(tmp_path):
    path = write_mean(tmp_path / "mean.binaryproto", np.zeros((3, 6, 5), np.float32))
    with pytest.raises(TransformError, match="mean_file and mean_value"):
        transformer('mean_file: "%s" mean_value: 1' % path)
    with pytest.raises(TransformError, match="crop_h .from the SSD fork. is not supported"):
        transformer("crop_h: 3")
    for text in ("crop_height: 3 crop_width: 3", "scale_factors: 0.5 scale_factors: 1"):
        with pytest.raises(TransformError, match="from the DeepLab fork. is not supported"):
            transformer(text)
    with pytest.raises(TransformError, match="force_color and force_gray"):
        transformer("force_color: true force_gray: true")
    with pytest.raises(TransformError, match="mean_file.*does not exist"):
        transformer('mean_file: "%s"' % (tmp_path / "nope.binaryproto"))
    with pytest.raises(TransformError, match="mean_value: give 1 value or one per channel"):
        transformer("mean_value: 1 mean_value: 2")(raw_images(1))
    with pytest.raises(TransformError, match="crop_size 7 is larger"):
        transformer("crop_size: 7")(raw_images(1))
    with pytest.raises(TransformError, match="has shape 3x6x5 but the input images are 1x6x5"):
        transformer('mean_file: "%s"' % path)(raw_images(1, (1, 6, 5)))


def test_datum_round_trip():
    x = raw_images(1)[0]
    np.testing.assert_array_equal(datum_to_array(array_to_datum(x, 3)), x)
    f = np.random.RandomState(0).standard_normal((2, 3, 4)).astype(np.float32)
    datum = array_to_datum(f, 1)
    assert not datum.data and len(datum.float_data) == 24
    np.testing.assert_array_equal(datum_to_array(datum), f)
    bad = pb.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(ValueError, match="holds 3 values but declares shape 1x2x2"):
        datum_to_array(bad)


# -- Data layer ----------------------------------------------------------------------------
DATA = '''name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "%s" batch_size: %d backend: LMDB }'''


def test_data_raw_records_wrap_around_and_labels(tmp_path, backend, closing):
    x = raw_images(10)
    source = write_db(tmp_path / "db", [array_to_datum(im, 100 + i) for i, im in enumerate(x)])
    layer = data_layer(DATA % (source, 4) + " transform_param { scale: 0.5 mean_value: 1 "
                       "mean_value: 2 mean_value: 3 }", backend, closing)
    top = tops(backend, 2)
    layer.setup([], top)
    layer.reshape([], top)
    assert top[0].shape == (4, 3, 6, 5) and top[1].shape == (4,)
    mean = np.array([1, 2, 3], np.float32)[:, None, None]
    for b, (data, label) in enumerate(run(layer, top, 4)):
        idx = [(4 * b + k) % 10 for k in range(4)]
        np.testing.assert_array_equal(data, (x[idx].astype(np.float32) - mean) * 0.5)
        np.testing.assert_array_equal(label, 100 + np.array(idx, np.float32))
        assert data.dtype == np.float32 and label.dtype == np.float32


def test_data_png_encoded_records(tmp_path, backend, closing):
    cv2 = pytest.importorskip("cv2")
    x = raw_images(3, (3, 5, 4))
    datums = []
    for i, im in enumerate(x):
        ok, buf = cv2.imencode(".png", im.transpose(1, 2, 0))
        datums.append(pb.Datum(data=buf.tobytes(), encoded=True, label=i))
    source = write_db(tmp_path / "db", datums)
    layer = data_layer(DATA % (source, 3), backend, closing)
    top = tops(backend, 2)
    layer.setup([], top)
    (data, label), = run(layer, top, 1)
    np.testing.assert_array_equal(data, x.astype(np.float32))
    np.testing.assert_array_equal(label, [0, 1, 2])

    gray = data_layer(DATA % (source, 3) + " transform_param { force_gray: true }",
                      backend, closing)
    top = tops(backend, 2)
    gray.setup([], top)
    assert top[0].shape == (3, 1, 5, 4)
    (data, _), = run(gray, top, 1)
    # ITU-R 601 luma of the BGR channels; the PNG decoder rounds its own way (within 1).
    luma = 0.114 * x[:, 0] + 0.587 * x[:, 1] + 0.299 * x[:, 2]
    np.testing.assert_allclose(data[:, 0], luma, atol=1.01)


def test_data_float_records_single_top_and_legacy_scale(tmp_path, backend, closing):
    x = np.random.RandomState(4).standard_normal((5, 2, 3, 3)).astype(np.float32)
    source = write_db(tmp_path / "db", [array_to_datum(im) for im in x])
    layer = data_layer('name: "d" type: "Data" top: "data" data_param { source: "%s" '
                       'batch_size: 5 scale: 2 }' % source, backend, closing)
    top = tops(backend, 1)
    layer.setup([], top)
    (data,), = run(layer, top, 1)
    np.testing.assert_array_equal(data, x * 2)


def test_data_crop_train_random_test_centre(tmp_path, backend, closing):
    x = raw_images(6, (1, 6, 6))
    source = write_db(tmp_path / "db", [array_to_datum(im) for im in x])
    text = DATA % (source, 6) + " transform_param { crop_size: 4 }"
    test_layer = data_layer(text, backend, closing, phase=TEST)
    top = tops(backend, 2)
    test_layer.setup([], top)
    assert top[0].shape == (6, 1, 4, 4)
    (data, _), = run(test_layer, top, 1)
    np.testing.assert_array_equal(data, x[:, :, 1:5, 1:5].astype(np.float32))

    train_layer = data_layer(text, backend, closing, phase=TRAIN)
    top = tops(backend, 2)
    train_layer.setup([], top)
    offsets = set()
    for data, _ in run(train_layer, top, 4):
        for im, out in zip(x, data):
            found = [(i, j) for i in range(3) for j in range(3)
                     if np.array_equal(out, im[:, i:i + 4, j:j + 4].astype(np.float32))]
            assert found
            offsets.update(found)
    assert len(offsets) > 1


def test_data_prefetch_is_deterministic_with_a_seed(tmp_path, backend, closing):
    x = raw_images(20, (2, 5, 5))
    source = write_db(tmp_path / "db", [array_to_datum(im, i) for i, im in enumerate(x)])
    text = ('type: "Data" top: "data" top: "label" transform_param { crop_size: 3 '
            'mirror: true } data_param { source: "%s" batch_size: 6 rand_skip: 15 '
            'prefetch: 2 }' % source)

    def batches(seed, disturb):
        set_random_seed(seed)
        layer = data_layer(text, backend, closing)
        top = tops(backend, 2)
        layer.setup([], top)
        out = []
        for _ in range(5):
            if disturb:
                host_rng().standard_normal(1000)  # the main thread's draws do not matter
            out += run(layer, top, 1)
        layer.close()
        return out

    first, second = batches(11, False), batches(11, True)
    for (d1, l1), (d2, l2) in zip(first, second):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    other = batches(12, False)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    start = int(first[0][1][0])
    assert 0 <= start < 15
    np.testing.assert_array_equal(first[0][1], (start + np.arange(6)) % 20)


def test_data_errors(tmp_path, backend, closing):
    missing = str(tmp_path / "no_such_lmdb")
    with pytest.raises(LayerSetupError) as info:
        data_layer(DATA % (missing, 4), backend, closing).setup([], tops(backend, 2))
    assert missing in str(info.value) and "\n" not in str(info.value)
    source = write_db(tmp_path / "db", [array_to_datum(raw_images(1)[0])])
    with pytest.raises(LayerSetupError, match="LEVELDB is not supported"):
        data_layer('type: "Data" top: "d" data_param { source: "%s" batch_size: 1 '
                   'backend: LEVELDB }' % source, backend, closing).setup([], tops(backend, 1))
    leveldb = tmp_path / "leveldb"
    leveldb.mkdir()
    (leveldb / "CURRENT").write_text("MANIFEST-000001\n")
    with pytest.raises(LayerSetupError, match="leveldb is not an LMDB .LevelDB is not supp"):
        data_layer('type: "Data" top: "d" data_param { source: "%s" batch_size: 1 }'
                   % leveldb, backend, closing).setup([], tops(backend, 1))
    garbage = str(tmp_path / "garbage")
    write_lmdb(garbage, [("0", b"\xff\xff\xff")])
    with pytest.raises(LayerSetupError, match="source .*garbage: Error parsing message"):
        data_layer(DATA % (garbage, 1), backend, closing).setup([], tops(backend, 2))
    with pytest.raises(LayerSetupError, match="batch_size must be positive"):
        data_layer(DATA % (source, 0), backend, closing).setup([], tops(backend, 2))
    with pytest.raises(LayerSetupError, match="crop_size 9 is larger"):
        data_layer(DATA % (source, 1) + " transform_param { crop_size: 9 }",
                   backend, closing).setup([], tops(backend, 2))


def test_data_thread_errors_name_the_source(tmp_path, backend, closing):
    good = [array_to_datum(im).SerializeToString() for im in raw_images(3)]
    source = str(tmp_path / "db")
    write_lmdb(source, [("0", good[0]), ("1", good[1]), ("2", b"\xff\xff\xff"), ("3", good[2])])
    layer = data_layer(DATA % (source, 2), backend, closing)
    top = tops(backend, 2)
    layer.setup([], top)
    layer.forward([], top)
    with pytest.raises(PrefetchError, match=source):
        layer.forward([], top)
    with pytest.raises(PrefetchError, match=source):
        layer.forward([], top)

    mixed = write_db(tmp_path / "mixed", [array_to_datum(raw_images(1)[0]),
                                          array_to_datum(raw_images(1, (3, 4, 4))[0])])
    layer = data_layer(DATA % (mixed, 2), backend, closing)
    layer.setup([], tops(backend, 2))
    with pytest.raises(PrefetchError, match="record 00000001 has shape .*; set "
                                            "transform_param.crop_size"):
        layer.forward([], tops(backend, 2))


def test_data_close_and_garbage_collection_stop_the_thread(tmp_path, backend):
    source = write_db(tmp_path / "db", [array_to_datum(im) for im in raw_images(4)])
    layer = make_layer(DATA % (source, 2), backend)
    layer.setup([], tops(backend, 2))
    thread = layer._prefetcher._thread
    assert thread.is_alive()
    layer.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        layer.forward([], tops(backend, 2))

    layer = make_layer(DATA % (source, 2), backend)
    layer.setup([], tops(backend, 2))
    thread = layer._prefetcher._thread
    del layer
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_prefetcher_order_and_stop():
    counter = iter(range(1000))
    p = Prefetcher(lambda: next(counter), 3, "counter")
    assert [p.get() for _ in range(10)] == list(range(10))
    p.stop()
    assert not p.running
    with pytest.raises(PrefetchError, match="counter: prefetching has stopped"):
        p.get()


# -- HDF5Data ------------------------------------------------------------------------------
def write_h5(path, data, label):
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = label


@pytest.fixture
def h5_files(tmp_path, monkeypatch):
    """Two files (5 and 3 rows) listed with relative paths; row r has label r and data
    r + [0..5] / 10."""
    monkeypatch.chdir(tmp_path)
    rows = np.arange(8)
    data = (rows[:, None] + np.arange(6) / 10.0).reshape(8, 2, 3)
    os.mkdir("h5")
    write_h5("h5/a.h5", data[:5], rows[:5].astype(np.int32))
    write_h5("h5/b.h5", data[5:], rows[5:].astype(np.int32))
    with open("list.txt", "w") as f:
        f.write("h5/a.h5\n h5/b.h5\n")
    return data.astype(np.float32), rows.astype(np.float32)


HDF5 = '''type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "list.txt" batch_size: %d %s }'''


def test_hdf5_batches_span_files_and_wrap(h5_files, backend):
    data, label = h5_files
    layer = make_layer(HDF5 % (3, ""), backend)
    top = tops(backend, 2)
    layer.setup([], top)
    assert top[0].shape == (3, 2, 3) and top[1].shape == (3,)
    for b, (d, l) in enumerate(run(layer, top, 5)):
        idx = [(3 * b + k) % 8 for k in range(3)]
        np.testing.assert_allclose(d, data[idx], rtol=1e-6)
        np.testing.assert_array_equal(l, label[idx])
        assert d.dtype == np.float32 and l.dtype == np.float32


def test_hdf5_shuffle_files_and_rows(h5_files, backend):
    data, label = h5_files
    layer = make_layer(HDF5 % (4, "shuffle: true"), backend)
    top = tops(backend, 2)
    layer.setup([], top)
    passes = []
    for _ in range(6):
        batches = run(layer, top, 2)          # 2 batches of 4 = one pass over the 8 rows
        d = np.concatenate([b[0] for b in batches])
        rows = np.concatenate([b[1] for b in batches]).astype(int)
        assert sorted(rows) == list(range(8))
        np.testing.assert_allclose(d, data[rows], rtol=1e-6)
        first_file = set(rows[:5]) if rows[0] < 5 else set(rows[:3])
        assert first_file in ({0, 1, 2, 3, 4}, {5, 6, 7})
        passes.append(tuple(rows))
    assert len(set(passes)) > 2
    assert {p[0] < 5 for p in passes} == {True, False}


def test_hdf5_errors(h5_files, backend):
    with pytest.raises(LayerSetupError, match="does not transform data"):
        make_layer(HDF5 % (3, "") + " transform_param { scale: 2 }", backend).setup(
            [], tops(backend, 2))
    with pytest.raises(LayerSetupError, match="nothing.txt does not exist"):
        make_layer((HDF5 % (3, "")).replace("list.txt", "nothing.txt"), backend).setup(
            [], tops(backend, 2))
    with open("bad_list.txt", "w") as f:
        f.write("h5/a.h5 h5/missing.h5\n")
    with pytest.raises(LayerSetupError, match="h5/missing.h5 .listed in bad_list.txt"):
        make_layer((HDF5 % (3, "")).replace("list.txt", "bad_list.txt"), backend).setup(
            [], tops(backend, 2))
    with pytest.raises(LayerSetupError, match="has no dataset 'weight'"):
        make_layer((HDF5 % (3, "")).replace('top: "label"', 'top: "weight"'), backend).setup(
            [], tops(backend, 2))


# -- Input and DummyData -------------------------------------------------------------------
def test_input_shapes(backend):
    top = tops(backend, 2)
    make_layer('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } }',
               backend).setup([], top)
    assert top[0].shape == (2, 3) and top[1].shape == (2, 3)
    top = tops(backend, 2)
    layer = make_layer('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } '
                       'shape { dim: 1 dim: 3 dim: 4 dim: 5 } }', backend)
    layer.setup([], top)
    assert top[0].shape == (2,) and top[1].shape == (1, 3, 4, 5)
    top[0].data[...] = backend.asarray(np.array([1, 2], np.float32))
    layer.reshape([], top)
    layer.forward([], top)
    np.testing.assert_array_equal(backend.asnumpy(top[0].data), [1, 2])
    with pytest.raises(LayerSetupError, match="once per top .3."):
        make_layer('type: "Input" input_param { shape { dim: 1 } shape { dim: 2 } }',
                   backend).setup([], tops(backend, 3))


def test_dummy_data_fills_and_refill_rule(backend):
    layer = make_layer('''type: "DummyData" top: "c" top: "g" top: "u" dummy_data_param {
        data_filler { type: "constant" value: 3 } data_filler { type: "gaussian" std: 2 }
        data_filler { type: "uniform" min: -1 max: 1 }
        shape { dim: 2 dim: 3 } shape { dim: 40 dim: 50 } shape { dim: 4 } }''', backend)
    top = tops(backend, 3)
    layer.setup([], top)
    assert [t.shape for t in top] == [(2, 3), (40, 50), (4,)]
    c, g, u = [backend.asnumpy(t.data) for t in top]
    np.testing.assert_array_equal(c, np.full((2, 3), 3, np.float32))
    assert not g.any() and not u.any()       # non-constant tops fill on forward only
    top[0].data[...] = backend.asarray(np.zeros((2, 3), np.float32))
    layer.reshape([], top)
    (c1, g1, u1), (c2, g2, u2) = run(layer, top, 2)
    assert not c1.any() and not c2.any()     # constant tops are never refilled
    assert abs(g1.std() - 2) < 0.2 and not np.array_equal(g1, g2)
    assert u1.min() >= -1 and u1.max() <= 1 and not np.array_equal(u1, u2)


def test_dummy_data_defaults_and_legacy_dims(backend):
    layer = make_layer('type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 '
                       'num: 3 channels: 4 height: 5 width: 1 }', backend)
    top = tops(backend, 2)
    layer.setup([], top)
    assert top[0].shape == (2, 4, 5, 1) and top[1].shape == (3, 4, 5, 1)
    assert not backend.asnumpy(top[1].data).any()
    layer = make_layer('type: "DummyData" top: "a" top: "b" dummy_data_param { '
                       'data_filler { type: "constant" value: -2 } shape { dim: 3 } }', backend)
    top = tops(backend, 2)
    layer.setup([], top)
    for t in top:
        np.testing.assert_array_equal(backend.asnumpy(t.data), [-2, -2, -2])


def test_dummy_data_errors(backend):
    with pytest.raises(LayerSetupError, match="both shape and the legacy"):
        make_layer('type: "DummyData" dummy_data_param { num: 1 channels: 1 height: 1 '
                   'width: 1 shape { dim: 1 } }', backend).setup([], tops(backend, 1))
    with pytest.raises(LayerSetupError, match="data_filler must be given 0, 1 or 3"):
        make_layer('type: "DummyData" dummy_data_param { shape { dim: 1 } '
                   'data_filler { } data_filler { } }', backend).setup([], tops(backend, 3))
    with pytest.raises(LayerSetupError, match="dummy_data_param.channels must be given once"):
        make_layer('type: "DummyData" dummy_data_param { num: 1 channels: 1 channels: 2 '
                   'height: 1 width: 1 }', backend).setup([], tops(backend, 3))
    with pytest.raises(LayerSetupError, match="type 'gauss' is unknown"):
        make_layer('type: "DummyData" dummy_data_param { shape { dim: 1 } '
                   'data_filler { type: "gauss" } }', backend).setup([], tops(backend, 1))
