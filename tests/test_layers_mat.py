"""DeepLab's MatWrite/MatRead and netkit's MAT-file reader/writer, checked against
scipy.io (loadmat/savemat/whosmat), torch's conv2d and the fork's file naming."""
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from layertest import blobs, make_layer, tops
from netkit import netkit_pb2 as pb
from netkit.data.matfile import MatFileError, read_mat, read_variable, write_mat
from netkit.errors import NetkitError
from netkit.layer import TEST, LayerSetupError
from netkit.net import Net
from netkit.upgrade import upgrade_net

sio = pytest.importorskip("scipy.io")

RS = np.random.RandomState(5)
ARRAYS = {
    "single4d": RS.randn(2, 3, 4, 5).astype(np.float32),
    "double2d": RS.randn(3, 7),
    "bytes3d": RS.randint(0, 256, (4, 1, 3)).astype(np.uint8),
    "ints": np.array([[-3, 0, 70000]], np.int32),
    "scalar": np.array(2.5),
    "empty": np.zeros((0, 3), np.float32),
}


# -- MAT-file reader and writer ---------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_written_files_load_in_scipy_with_values_classes_and_sizes(tmp_path, compress):
    path = str(tmp_path / "out.mat")
    write_mat(path, dict(ARRAYS, flags=np.array([[True, False, True]]),
                         row=np.arange(4, dtype=np.float32)), compress=compress)
    loaded = sio.loadmat(path)
    for name, array in ARRAYS.items():
        expected = array.reshape(array.shape or (1, 1))
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
    np.testing.assert_array_equal(loaded["flags"], [[1, 0, 1]])
    np.testing.assert_array_equal(loaded["row"], [[0, 1, 2, 3]])
    classes = {name: cls for name, _, cls in sio.whosmat(path)}
    assert classes == {"single4d": "single", "double2d": "double", "bytes3d": "uint8",
                       "ints": "int32", "scalar": "double", "empty": "single",
                       "flags": "logical", "row": "single"}
    # Column-major: MATLAB's A(2,3,4,5) is the numpy array's [1, 2, 3, 4], as written.
    assert loaded["single4d"][1, 2, 3, 4] == ARRAYS["single4d"][1, 2, 3, 4]


@pytest.mark.parametrize("compress", [False, True])
def test_reader_reads_scipy_files_and_skips_non_numeric_variables(tmp_path, compress):
    path = str(tmp_path / "scipy.mat")
    sio.savemat(path, dict(ARRAYS, text="hello", record={"f": 1.0}, cell=np.array(
        [np.zeros(2), "x"], dtype=object), int16=np.array([[1, -2]], np.int16)),
        do_compression=compress)
    read = read_mat(path)
    assert list(read) == list(ARRAYS) + ["int16"]
    for name, array in dict(ARRAYS, int16=np.array([[1, -2]], np.int16)).items():
        expected = array.reshape(array.shape or (1, 1))
        assert read[name].dtype == expected.dtype, name
        assert read[name].shape == expected.shape, name
        np.testing.assert_array_equal(read[name], expected, err_msg=name)
    np.testing.assert_array_equal(read_variable(path, "single4d"), ARRAYS["single4d"])
    with pytest.raises(MatFileError, match=r"scipy.mat: variable 'text' is a char array"):
        read_variable(path, "text")
    with pytest.raises(MatFileError, match=r"scipy.mat: variable 'record' is a struct"):
        read_variable(path, "record")


def test_reader_round_trips_its_own_files_and_reads_compacted_storage(tmp_path):
    path = str(tmp_path / "own.mat")
    write_mat(path, {"a": ARRAYS["single4d"], "b": ARRAYS["bytes3d"]}, compress=True)
    np.testing.assert_array_equal(read_variable(path, "a"), ARRAYS["single4d"])
    # MATLAB stores a double array of small integers as bytes (miUINT8) under class
    # double: turn the uint8 variable's class byte (mxUINT8 = 9) into mxDOUBLE (6).
    write_mat(path, {"b": ARRAYS["bytes3d"]})
    data = bytearray(open(path, "rb").read())
    flags_at = 128 + 8 + 8  # header, miMATRIX tag, array-flags tag
    assert data[flags_at] == 9
    data[flags_at] = 6
    open(path, "wb").write(bytes(data))
    assert sio.loadmat(path, mat_dtype=True)["b"].dtype == np.float64
    b = read_variable(path, "b")
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b, ARRAYS["bytes3d"])


def test_reader_reads_big_endian_files(tmp_path):
    path = str(tmp_path / "big.mat")
    a = RS.randn(3, 2).astype(np.float32)
    with open(path, "wb") as f:
        sio.savemat(f, {"a": a})
    # scipy writes native order; rewrite the same file big-endian word by word.
    little = open(path, "rb").read()
    words = np.frombuffer(little, "<u4", offset=128)
    big = bytearray(little[:124] + b"\x01\x00MI" + words.astype(">u4").tobytes())
    # The name "a" is a small element's payload byte; the values are 4-byte floats, so a
    # 4-byte swap of every word swaps them too. Put the name byte back in its place.
    name_at = big.index(b"a".rjust(4, b"\0"), 128 + 8)
    big[name_at:name_at + 4] = b"a\0\0\0"
    open(path, "wb").write(bytes(big))
    np.testing.assert_array_equal(sio.loadmat(path)["a"], a)
    np.testing.assert_array_equal(read_variable(path, "a"), a)


def test_reader_errors_name_the_file(tmp_path):
    path = str(tmp_path / "cut.mat")
    write_mat(path, {"data": ARRAYS["single4d"]})
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[:-16])
    with pytest.raises(MatFileError, match=r"cut.mat: truncated MAT-file: the element at "
                                           r"byte 128 needs \d+ bytes, only \d+ remain"):
        read_variable(path, "data")
    write_mat(path, {"data": ARRAYS["single4d"]}, compress=True)
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[:128 + 8] + zlib.compress(b"x" * 500)[:20])
    with pytest.raises(MatFileError, match=r"cut.mat: truncated MAT-file"):
        read_variable(path, "data")
    open(path, "wb").write(whole[:100])
    with pytest.raises(MatFileError, match=r"cut.mat: truncated MAT-file: 100 bytes"):
        read_mat(path)
    open(path, "wb").write(b"\0" * 200)
    with pytest.raises(MatFileError, match=r"cut.mat: not a level-5 MAT-file"):
        read_mat(path)
    open(path, "wb").write(b"MATLAB 7.3 MAT-file".ljust(600, b" "))
    with pytest.raises(MatFileError, match=r"cut.mat: a MATLAB v7.3 \(HDF5\) MAT-file"):
        read_mat(path)
    write_mat(path, {"other": np.ones(2)})
    with pytest.raises(MatFileError, match=r"cut.mat: the MAT-file has no variable 'data' "
                                           r"\(it has 'other'\)"):
        read_variable(path, "data")
    with pytest.raises(MatFileError, match=r"nothere.mat: cannot read the MAT-file"):
        read_mat(str(tmp_path / "nothere.mat"))
    with pytest.raises(MatFileError, match=r"is not a MATLAB variable name"):
        write_mat(path, {"2bad": np.ones(2)})
    with pytest.raises(MatFileError, match=r"has dtype complex128"):
        write_mat(path, {"c": np.ones(2, complex)})
    np.testing.assert_array_equal(read_mat(path)["other"], [[1, 1]])  # left as it was


# -- MatWrite ---------------------------------------------------------------------------------
TEST_NET = """
name: "deeplab_test"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 4 } } }
layer { name: "fc8" type: "Convolution" bottom: "data" top: "fc8"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 }
                            bias_filler { type: "constant" value: 0.25 } } }
layer { name: "fc8_mat" type: "MatWrite" bottom: "fc8"
        include { phase: TEST } mat_write_param { %s } }
"""


def conv_reference(net, data, pad=1):
    weight, bias = (torch.from_numpy(net.backend.asnumpy(b.data)) for b in net.params["fc8"])
    return F.conv2d(torch.from_numpy(data), weight, bias, padding=pad).numpy()


@pytest.fixture
def ids(tmp_path):
    """An id list as DeepLab's test lists: image names, extension stripped by `strip: 4`."""
    source = tmp_path / "val_id.txt"
    source.write_text("2007_000033.jpg\n2007_000042.jpg extra words\n\n2007_000061.jpg\n")
    return str(source)


@pytest.mark.parametrize("period, written", [(1, [0, 1, 2]), (2, [0, 2])])
def test_mat_write_saves_each_forward_under_its_id(tmp_path, ids, backend, period, written):
    out = tmp_path / "features"
    out.mkdir()
    net = Net(TEST_NET % ('prefix: "%s/" source: "%s" strip: 4 period: %d'
                          % (out, ids, period)), TEST, backend=backend)
    names = ["2007_000033", "2007_000042", "2007_000061"]
    expected = {}
    for k in range(3):
        data = RS.randn(2, 3, 5, 4).astype(np.float32)
        net.forward(data=data)
        fc8 = net.backend.asnumpy(net.blobs["fc8"].data)
        np.testing.assert_allclose(fc8, conv_reference(net, data), rtol=1e-4, atol=1e-5)
        expected[names[k]] = fc8
    assert sorted(p.name for p in out.iterdir()) == [
        names[k] + "_blob_0.mat" for k in written]
    for k in written:
        path = str(out / (names[k] + "_blob_0.mat"))
        assert sio.whosmat(path) == [("data", (4, 5, 2, 2), "single")]
        loaded = sio.loadmat(path)["data"]
        # MATLAB size [W H C N]: data(w+1, h+1, c+1, n+1) is the blob's [n, c, h, w].
        np.testing.assert_array_equal(loaded, expected[names[k]].transpose(3, 2, 1, 0))
        assert loaded[3, 1, 0, 1] == expected[names[k]][1, 0, 1, 3]


def test_mat_write_without_source_names_files_by_iteration(tmp_path, backend):
    layer = make_layer('type: "MatWrite" mat_write_param { prefix: "%s/out_" }' % tmp_path,
                       backend, TEST)
    a, b = RS.randn(3, 4).astype(np.float32), RS.randn(2, 1, 3, 2).astype(np.float32)
    bottom = blobs(backend, a, b)
    layer.setup(bottom, [])
    layer.reshape(bottom, [])
    layer.forward(bottom, [])
    layer.forward(bottom, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out_iter_0_blob_0.mat", "out_iter_0_blob_1.mat",
        "out_iter_1_blob_0.mat", "out_iter_1_blob_1.mat"]
    # A (N, C) blob has height and width 1: MATLAB size [1 1 C N].
    loaded = sio.loadmat(str(tmp_path / "out_iter_1_blob_0.mat"))["data"]
    np.testing.assert_array_equal(loaded, a.reshape(3, 4, 1, 1).transpose(3, 2, 1, 0))
    loaded = sio.loadmat(str(tmp_path / "out_iter_0_blob_1.mat"))["data"]
    np.testing.assert_array_equal(loaded, b.transpose(3, 2, 1, 0))


def test_mat_write_stops_past_the_end_of_the_list(tmp_path, ids):
    net = Net(TEST_NET % ('prefix: "%s/" source: "%s" strip: 4' % (tmp_path, ids)), TEST)
    for _ in range(3):
        net.forward()
    with pytest.raises(NetkitError, match=r"forward 4 has no id: mat_write_param.source "
                                          r".*val_id.txt lists 3"):
        net.forward()


@pytest.mark.parametrize("params, match", [
    ('prefix: "%(tmp)s/" source: "%(tmp)s/missing.txt"',
     r"mat_write_param.source .*missing.txt: cannot read the id list"),
    ('prefix: "%(tmp)s/nodir/" source: "%(ids)s"',
     r"mat_write_param.prefix .*nodir/.*directory .*nodir does not exist"),
    ('prefix: "%(tmp)s/" source: "%(ids)s" strip: 20',
     r"val_id.txt:1: id '2007_000033.jpg' is not longer than mat_write_param.strip 20"),
    ('prefix: "%(tmp)s/" source: "%(ids)s" strip: -1', r"mat_write_param.strip must not be"),
    ('prefix: "%(tmp)s/" period: 0', r"mat_write_param.period must be positive"),
])
def test_mat_write_setup_errors(tmp_path, ids, params, match):
    layer = make_layer('type: "MatWrite" mat_write_param { %s }'
                       % (params % {"tmp": tmp_path, "ids": ids}), "cpu", TEST)
    with pytest.raises(LayerSetupError, match=match):
        layer.setup(tops("cpu", 1), [])


# -- MatRead ----------------------------------------------------------------------------------
@pytest.fixture
def mat_items(tmp_path, ids):
    """Three items (C=2, H=3, W=4) saved by scipy as MATLAB arrays of size [W H C], one
    per id of `ids`, under the prefix tmp_path/in/."""
    folder = tmp_path / "in"
    folder.mkdir()
    items = []
    for name in ("2007_000033", "2007_000042", "2007_000061"):
        item = RS.randn(2, 3, 4).astype(np.float32)
        sio.savemat(str(folder / (name + "_blob_0.mat")), {"data": item.transpose(2, 1, 0)})
        items.append(item)
    return str(folder) + "/", items


READ_NET = """
layer { name: "scores" type: "MatRead" top: "scores"
        mat_read_param { prefix: "%s" source: "%s" strip: 4 batch_size: 2 } }
layer { name: "conv" type: "Convolution" bottom: "scores" top: "conv"
        convolution_param { num_output: 1 kernel_size: 2
                            weight_filler { type: "gaussian" std: 1 } } }
"""


def test_mat_read_feeds_a_net_and_starts_over_at_the_end(mat_items, ids, backend):
    prefix, items = mat_items
    net = Net(READ_NET % (prefix, ids), TEST, backend=backend)
    assert net.blobs["scores"].shape == (2, 2, 3, 4)
    weight = torch.from_numpy(net.backend.asnumpy(net.params["conv"][0].data))
    bias = torch.from_numpy(net.backend.asnumpy(net.params["conv"][1].data))
    for order in ([0, 1], [2, 0], [1, 2]):
        net.forward()
        batch = np.stack([items[k] for k in order])
        np.testing.assert_array_equal(net.backend.asnumpy(net.blobs["scores"].data), batch)
        np.testing.assert_allclose(net.backend.asnumpy(net.blobs["conv"].data),
                                   F.conv2d(torch.from_numpy(batch), weight, bias).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_mat_read_reads_what_mat_write_wrote(tmp_path, backend):
    values = RS.randn(1, 3, 2, 5).astype(np.float32)
    writer = make_layer('type: "MatWrite" mat_write_param { prefix: "%s/" }' % tmp_path,
                        backend, TEST)
    bottom = blobs(backend, values)
    writer.setup(bottom, [])
    writer.reshape(bottom, [])
    writer.forward(bottom, [])
    reader = make_layer('type: "MatRead" mat_read_param { prefix: "%s/" }' % tmp_path,
                        backend, TEST)
    top = tops(backend, 1)
    reader.setup([], top)
    reader.reshape([], top)
    reader.forward([], top)
    np.testing.assert_array_equal(reader.backend.asnumpy(top[0].data), values)


def test_mat_read_errors_name_the_file(mat_items, ids, tmp_path):
    prefix, items = mat_items

    def reader(params):
        layer = make_layer('type: "MatRead" mat_read_param { %s }' % params, "cpu", TEST)
        top = tops("cpu", 1)
        layer.setup([], top)
        return layer, top

    first = prefix + "2007_000033_blob_0.mat"
    with pytest.raises(LayerSetupError, match=r"mat_read_param.source .*nolist.txt: cannot "
                                              r"read the id list"):
        reader('prefix: "%s" source: "%s"' % (prefix, tmp_path / "nolist.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(LayerSetupError, match=r"empty.txt lists no ids"):
        reader('prefix: "%s" source: "%s"' % (prefix, empty))
    with pytest.raises(LayerSetupError, match=r"val_id.txt:1: id '2007_000033.jpg' is not "
                                              r"longer than mat_read_param.strip 15"):
        reader('prefix: "%s" source: "%s" strip: 15' % (prefix, ids))
    with pytest.raises(LayerSetupError, match=r"batch_size must be positive"):
        reader('prefix: "%s" source: "%s" batch_size: 0' % (prefix, ids))
    with pytest.raises(LayerSetupError, match=r"in/2007_000033.jpg_blob_0.mat: cannot read"):
        reader('prefix: "%s" source: "%s"' % (prefix, ids))

    sio.savemat(first, {"scores": items[0]})
    with pytest.raises(LayerSetupError, match=r"2007_000033_blob_0.mat: the MAT-file has no "
                                              r"variable 'data' \(it has 'scores'\)"):
        reader('prefix: "%s" source: "%s" strip: 4' % (prefix, ids))
    sio.savemat(first, {"data": np.zeros((4, 3, 2, 2), np.float32)})
    with pytest.raises(LayerSetupError, match=r"2007_000033_blob_0.mat: variable 'data' of "
                                              r"size 4x3x2x2 holds more than one item"):
        reader('prefix: "%s" source: "%s" strip: 4' % (prefix, ids))

    sio.savemat(first, {"data": items[0].transpose(2, 1, 0)})
    whole = open(prefix + "2007_000042_blob_0.mat", "rb").read()
    open(prefix + "2007_000042_blob_0.mat", "wb").write(whole[:-8])
    layer, top = reader('prefix: "%s" source: "%s" strip: 4 batch_size: 2' % (prefix, ids))
    with pytest.raises(MatFileError, match=r"2007_000042_blob_0.mat: truncated MAT-file"):
        layer.forward([], top)
    sio.savemat(prefix + "2007_000042_blob_0.mat", {"data": np.zeros((4, 3, 1), np.float32)})
    layer, top = reader('prefix: "%s" source: "%s" strip: 4 batch_size: 2' % (prefix, ids))
    with pytest.raises(NetkitError, match=r"2007_000042_blob_0.mat: variable 'data' gives an "
                                          r"item of shape \(1, 3, 4\), but the first file "
                                          r"gave \(2, 3, 4\)"):
        layer.forward([], top)


# -- DeepLab v1 files -------------------------------------------------------------------------
DEEPLAB_V1_TEST = """
name: "deeplab_v1_test"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 6 input_dim: 5
layers { name: "fc8" type: CONVOLUTION bottom: "data" top: "fc8" blobs_lr: 10 blobs_lr: 20
         convolution_param { num_output: 4 kernel_size: 1
                             weight_filler { type: "gaussian" std: 1 } } }
layers { name: "fc8_mat" type: MAT_WRITE bottom: "fc8"
         mat_write_param { prefix: "%s/" source: "%s" strip: 4 period: 1 }
         include { phase: TEST } }
"""


def test_deeplab_v1_mat_write_upgrades_and_runs(tmp_path, ids):
    text = DEEPLAB_V1_TEST % (tmp_path, ids)
    upgraded = upgrade_net(text_format.Parse(text, pb.NetParameter()))
    assert [layer.type for layer in upgraded.layer] == ["Input", "Convolution", "MatWrite"]
    assert upgraded.layer[2].mat_write_param.strip == 4
    net = Net(text, TEST)
    data = RS.randn(1, 3, 6, 5).astype(np.float32)
    net.forward(data=data)
    fc8 = net.blobs["fc8"].data
    loaded = sio.loadmat(str(tmp_path / "2007_000033_blob_0.mat"))["data"]
    assert loaded.shape == (5, 6, 4, 1)
    np.testing.assert_allclose(loaded, conv_reference(net, data, 0).transpose(3, 2, 1, 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(loaded, fc8.transpose(3, 2, 1, 0))
