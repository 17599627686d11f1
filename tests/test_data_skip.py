"""skip_batches: a data layer moved n batches forward gives, from then on, exactly the
batches that n forwards would have left it to give, without making the skipped ones
(what a run resumed from a snapshot relies on)."""
import numpy as np
import pytest

from layertest import batches, make_layer, tops
from test_data_layers import write_mean
from netkit.data import datum as datum_module
from netkit.data.datum import DatumBatchReader, array_to_datum, write_lmdb
from netkit.data.transformer import DataTransformer
from netkit.layer import TEST, TRAIN
from netkit.layers import image_data as image_data_module
from netkit.parallel import solver_position
from netkit.rng import set_random_seed

cv2 = pytest.importorskip("cv2")


# -- helpers -------------------------------------------------------------------------------
def images(shapes, seed=5):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, size=shape).astype(np.uint8) for shape in shapes]


def write_db(path, arrays, encoded=False):
    """An LMDB of Datums labelled 0, 1, ...: raw, or PNG-encoded (lossless) with `encoded`."""
    def datum(i, array):
        if not encoded:
            return array_to_datum(array, i)
        d = array_to_datum(array[:, :1, :1], i)  # label; data replaced by the PNG below
        ok, png = cv2.imencode(".png", array.transpose(1, 2, 0))
        assert ok
        d.data, d.encoded = png.tobytes(), True
        return d
    write_lmdb(str(path), (("%08d" % i, datum(i, a).SerializeToString())
                           for i, a in enumerate(arrays)))
    return str(path)


def layer_from(text, backend, closing, phase=TRAIN, rank=(0, 1)):
    """A set-up layer (seeded alike every time) and its tops; `rank` = (rank, count)."""
    set_random_seed(29)
    layer = make_layer(text, backend, phase)
    closing(layer)
    top = tops(backend, 2)
    with solver_position(*rank):
        layer.setup([], top)
    return layer, top


def assert_skip_equals_forward(text, backend, closing, skips, after=4, **kwargs):
    """For each n in `skips`: skip_batches(n) then `after` batches equal, bit for bit, the
    `after` batches that follow n forwards. Returns the batches of the forwarded layers."""
    seen = []
    for n in skips:
        straight, top = layer_from(text, backend, closing, **kwargs)
        expected = batches(straight, top, n + after)[n:]
        skipped, top = layer_from(text, backend, closing, **kwargs)
        skipped.skip_batches(n)
        got = batches(skipped, top, after)
        for (d1, l1), (d2, l2) in zip(expected, got):
            np.testing.assert_array_equal(l1, l2)
            np.testing.assert_array_equal(d1, d2)
        seen += expected
    return seen


def count_calls(monkeypatch, owner, name):
    """Replace owner.name with a wrapper counting its calls; returns the count list."""
    calls = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, counting)
    return calls


# -- Data ----------------------------------------------------------------------------------
DATA = ('type: "Data" top: "data" top: "label" transform_param { %s } '
        'data_param { source: "%s" batch_size: 3 prefetch: 2 %s }')


@pytest.mark.parametrize("params, rank", [
    ("", (0, 1)),
    ("rand_skip: 6", (0, 1)),
    ("", (1, 2)),
    ("rand_skip: 5", (1, 2)),
])
def test_data_raw_skip_equals_forward(tmp_path, backend, closing, params, rank):
    """Raw records, random crops, mirror and a mean file in TRAIN, past several wrap-arounds
    of 7 records (not a multiple of the batch), with rand_skip and as rank 1 of 2."""
    source = write_db(tmp_path / "db", images([(3, 7, 6)] * 7))
    mean = write_mean(tmp_path / "mean.binaryproto",
                      np.random.RandomState(1).uniform(0, 255, (3, 7, 6)).astype(np.float32))
    text = DATA % ('crop_size: 4 mirror: true mean_file: "%s" scale: 0.5' % mean, source, params)
    seen = assert_skip_equals_forward(text, backend, closing, [0, 1, 2, 5, 9], rank=rank)
    labels = np.concatenate([l for _, l in seen])
    assert len(set(labels)) > 3  # the records move on


def test_data_encoded_skip_uses_each_batchs_image_size(tmp_path, backend, closing):
    """PNG records whose size changes from batch to batch: each batch's crop offsets are
    drawn within its own size, and a skip decodes none of them."""
    shapes = [(3, 9, 8)] * 2 + [(3, 5, 12)] * 2 + [(3, 6, 6)] * 2
    source = write_db(tmp_path / "db", images(shapes), encoded=True)
    text = ('type: "Data" top: "data" top: "label" transform_param { crop_size: 5 '
            'mirror: true mean_value: 100 } data_param { source: "%s" batch_size: 2 '
            'prefetch: 1 }' % source)
    assert_skip_equals_forward(text, backend, closing, [1, 2, 4, 7])


def test_data_test_phase_mirror_skip_equals_forward(tmp_path, backend, closing):
    source = write_db(tmp_path / "db", images([(1, 5, 5)] * 5))
    text = DATA % ("crop_size: 3 mirror: true", source, "")
    assert_skip_equals_forward(text, backend, closing, [3, 8], phase=TEST)


def test_data_skip_then_more_forwards_and_skips(tmp_path, backend, closing):
    """Skips and forwards in any order add up: 2 forwards, skip 3, 1 forward, skip 4 leaves
    the layer where 10 forwards do."""
    source = write_db(tmp_path / "db", images([(3, 7, 6)] * 7))
    text = DATA % ("crop_size: 4 mirror: true", source, "")
    straight, top = layer_from(text, backend, closing)
    expected = batches(straight, top, 13)[10:]
    mixed, top = layer_from(text, backend, closing)
    batches(mixed, top, 2)
    mixed.skip_batches(3)
    batches(mixed, top, 1)
    mixed.skip_batches(4)
    for (d1, l1), (d2, l2) in zip(expected, batches(mixed, top, 3)):
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(d1, d2)


def test_data_skip_transforms_no_skipped_batch(tmp_path, backend, closing, monkeypatch):
    """Skipping 40 batches runs the transformer's pixel path only for batches it hands out
    or prefetches, not for the skipped ones."""
    calls = count_calls(monkeypatch, DataTransformer, "__call__")
    source = write_db(tmp_path / "db", images([(3, 7, 6)] * 7))
    layer, top = layer_from(DATA % ("crop_size: 4 mirror: true", source, ""), backend, closing)
    batches(layer, top, 1)
    layer.skip_batches(40)
    batches(layer, top, 1)
    layer.close()
    assert len(calls) <= 2 * (1 + 2 + 1)  # each stream: the one handed out, 2 ready, 1 loading


def test_reader_skip_reads_no_record(tmp_path, monkeypatch):
    """Skipping batches decodes nothing and reads no record: the random draws of a skipped
    batch do not depend on its images' sizes."""
    source = write_db(tmp_path / "enc", images([(3, 2, 5), (3, 4, 4)] * 3), encoded=True)
    calls = count_calls(monkeypatch, datum_module, "decode_image")
    values = count_calls(monkeypatch, datum_module.LMDBCursor, "value")
    reader = DatumBatchReader(source, 3, stride=2, skip=1)
    try:
        # stride 2 from record 1: the odd records; every batch spans all 6
        reader.skip_batches(3)
        reader.skip_batches(5)
        assert not calls and not values
        _, labels = reader.read()
        np.testing.assert_array_equal(labels, [1, 3, 5])
    finally:
        reader.close()


def test_data_mixed_sizes_skip_equals_forward(tmp_path, backend, closing):
    """Raw records of several sizes within one batch, each cropped at random within its own
    size (as Caffe allows with a crop_size); a skip gives what forwards would have."""
    shapes = [(3, 9, 8), (3, 5, 12), (3, 6, 6), (3, 7, 5), (3, 5, 5)]
    source = write_db(tmp_path / "db", images(shapes))
    text = DATA % ("crop_size: 5 mirror: true mean_value: 100 scale: 0.5", source, "")
    seen = assert_skip_equals_forward(text, backend, closing, [1, 2, 4, 7])
    windows = {}
    for i, image in enumerate(images(shapes)):
        c, h, w = image.shape
        windows[i] = [(image[:, y:y + 5, x:x + 5].astype(np.float32) - 100) * 0.5
                      for y in range(h - 4) for x in range(w - 4)]
    offsets = set()
    for data, labels in seen:
        for image, label in zip(data, labels):
            matches = [k for k, win in enumerate(windows[int(label)])
                       if np.array_equal(image, win) or np.array_equal(image, win[:, :, ::-1])]
            assert matches, int(label)
            offsets.add((int(label), matches[0]))
    assert len(offsets) > 8  # crops move within each image


# -- ImageData -----------------------------------------------------------------------------
SIZES = [(9, 7), (6, 10), (9, 7), (8, 8), (6, 10), (7, 9), (9, 7)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(root folder with a trailing slash, list file) of PNG files of SIZES, labelled."""
    root = tmp_path_factory.mktemp("photos")
    names = []
    for i, array in enumerate(images([(h, w, 3) for h, w in SIZES], seed=8)):
        names.append("img%d.png" % i)
        assert cv2.imwrite(str(root / names[-1]), array)
    listfile = root / "list.txt"
    listfile.write_text("".join("%s %d\n" % (name, i) for i, name in enumerate(names)))
    return str(root) + "/", str(listfile)


def image_data(photos, params, transform):
    root, source = photos
    return ('type: "ImageData" top: "data" top: "label" transform_param { %s } '
            'image_data_param { source: "%s" root_folder: "%s" %s } data_param { prefetch: 1 }'
            % (transform, source, root, params))


@pytest.mark.parametrize("params, transform", [
    # resized: sizes known without reading a file; shuffles at every wrap
    ("batch_size: 3 new_height: 8 new_width: 9 shuffle: true rand_skip: 4",
     "crop_size: 5 mirror: true mean_value: 10"),
    # images of several sizes in one batch, each cropped at random within its own size
    ("batch_size: 2 shuffle: true", "crop_size: 5 mirror: true"),
    # no crop: mirror coins only (one image per batch, so any sizes)
    ("batch_size: 1 rand_skip: 3", "mirror: true scale: 0.25"),
])
def test_image_data_skip_equals_forward(photos, backend, closing, params, transform):
    seen = assert_skip_equals_forward(image_data(photos, params, transform), backend, closing,
                                      [1, 3, 8], after=5)
    assert len({int(l[0]) for _, l in seen}) > 3


def test_image_data_test_phase_skip_equals_forward(photos, backend, closing):
    assert_skip_equals_forward(image_data(photos, "batch_size: 2 shuffle: true",
                                          "crop_size: 6 mirror: true"),
                               backend, closing, [2, 5], phase=TEST)


@pytest.mark.parametrize("params, transform", [
    ("batch_size: 3 new_height: 8 new_width: 9 shuffle: true", "crop_size: 5 mirror: true"),
    ("batch_size: 1 shuffle: true", "mirror: true"),
    # random crops of images of several sizes: the draws do not depend on the sizes
    ("batch_size: 2", "crop_size: 5"),
])
def test_image_data_skip_reads_no_skipped_image(photos, backend, closing, monkeypatch,
                                                params, transform):
    layer, top = layer_from(image_data(photos, params, transform), backend, closing)
    batch = layer.layer_param.image_data_param.batch_size
    read = count_calls(monkeypatch, image_data_module, "read_image")
    transformed = count_calls(monkeypatch, DataTransformer, "__call__")
    layer.skip_batches(20)
    batches(layer, top, 1)
    layer.close()
    # beyond the skipped batches' sizes: at most the first stream's batches in flight (one
    # handed out to the queue, one loading) and the new stream's (one out, one ready, one
    # loading)
    assert len(read) <= 5 * batch
    assert len(transformed) <= 5 * batch


# -- HDF5Data ------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("rank", [(0, 1), (1, 2)])
def test_hdf5_data_skip_equals_forward(tmp_path, backend, closing, monkeypatch, shuffle, rank):
    """Rows across three files of 5, 3 and 4 rows, shuffled or not, whole or rank 1 of 2;
    a skip reads no file's datasets (only row counts): forward reads the one it is in."""
    import h5py
    paths = []
    for i, rows in enumerate((5, 3, 4)):
        paths.append(str(tmp_path / ("part%d.h5" % i)))
        with h5py.File(paths[-1], "w") as f:
            f["data"] = np.random.RandomState(i).randn(rows, 2, 3).astype(np.float32)
            f["label"] = np.arange(rows, dtype=np.float32) + 10 * i
    source = tmp_path / "list.txt"
    source.write_text("\n".join(paths) + "\n")
    text = ('type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "%s" '
            'batch_size: 3 shuffle: %s }' % (source, str(shuffle).lower()))
    seen = assert_skip_equals_forward(text, backend, closing, [1, 3, 7], rank=rank)
    assert len({int(v) for _, l in seen for v in l}) > 4
    layer, top = layer_from(text, backend, closing, rank=rank)
    read = count_calls(monkeypatch, type(layer), "_load_data")
    layer.skip_batches(40)
    assert not read
    batches(layer, top, 1)
    assert 1 <= len(read) <= 2  # a batch may span two files


# -- the fallback, and the solver ----------------------------------------------------------
def test_window_data_skip_drops_prefetched_batches(tmp_path, backend, closing):
    """Layers without a cheap skip (WindowData) load the skipped batches and drop them."""
    h, w = SIZES[0]
    image = tmp_path / "w.png"
    assert cv2.imwrite(str(image), images([(h, w, 3)])[0])
    windows = tmp_path / "windows.txt"
    windows.write_text("# 0\n%s\n3 %d %d\n3\n1 0.9 0 0 5 5\n2 0.7 1 2 6 6\n0 0.1 0 0 6 8\n"
                       % (image, h, w))
    text = ('type: "WindowData" top: "data" top: "label" transform_param { crop_size: 4 '
            'mirror: true } window_data_param { source: "%s" batch_size: 4 fg_threshold: 0.5 '
            'bg_threshold: 0.3 }' % windows)
    assert_skip_equals_forward(text, backend, closing, [2, 5])


def test_solver_restore_skips_data_without_transforming(tmp_path, monkeypatch):
    """A solver restored at iteration 30 moves its Data layer by skip_batches: training on
    continues with what 30 more forwards would give, and no skipped batch is transformed."""
    from google.protobuf import text_format
    from netkit import netkit_pb2 as pb
    from netkit.solvers import SGDSolver

    source = write_db(tmp_path / "db", images([(1, 6, 6)] * 11))
    net = ('layer { name: "data" type: "Data" top: "data" top: "label" transform_param { '
           'crop_size: 4 mirror: true scale: 0.01 } data_param { source: "%s" batch_size: 3 '
           'prefetch: 1 } } '
           'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
           '{ num_output: 11 weight_filler { type: "gaussian" std: 0.1 } } } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" '
           'top: "loss" }' % source)

    def solver():
        set_random_seed(3)
        param = text_format.Parse('base_lr: 0.1 lr_policy: "fixed" max_iter: 100 '
                                  'snapshot_prefix: "%s" random_seed: 3' % (tmp_path / "s"),
                                  pb.SolverParameter())
        param.net_param.CopyFrom(text_format.Parse(net, pb.NetParameter()))
        return SGDSolver(param)

    straight = solver()
    straight.step(30)
    _, state = straight.snapshot()
    straight.step(4)
    calls = count_calls(monkeypatch, DataTransformer, "__call__")
    resumed = solver()
    resumed.restore(state)
    # Setup's stream and the restarted one each run at most prefetch (1) + 2 batches ahead
    # (one blocked on the full queue, one in flight while stopping): far fewer than 30.
    assert len(calls) <= 2 * (1 + 2)
    resumed.step(4)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
    for s in (straight, resumed):
        s.net.close()
