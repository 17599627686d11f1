"""extract_features: a trained net's blobs, item by item, written as Caffe writes them
(Datum float_data, keys of ten digits) into new LMDBs."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit.data.datum import array_to_datum, reader_env, write_lmdb
from netkit.errors import NetkitError
from netkit.layer import TEST
from netkit.net import Net
from netkit.tools.extract_features import blob_datum_shape, extract_features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = 1 / 256.0

LAYERS = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 5
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
"""

DATA_NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: %r } data_param { source: "%s" batch_size: %d backend: LMDB } }
layer { name: "train_only" type: "Input" top: "data" include { phase: TRAIN }
  input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
""" + LAYERS

DEPLOY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
""" + LAYERS


@pytest.fixture
def setup(tmp_path):
    """Seven 1x4x4 images in an LMDB, the data net reading them 3 at a time, and trained
    weights for it."""
    images = np.random.RandomState(3).randint(0, 256, size=(7, 1, 4, 4)).astype(np.uint8)
    db = str(tmp_path / "images")
    write_lmdb(db, (("%08d" % i, array_to_datum(im, i).SerializeToString())
                    for i, im in enumerate(images)))
    net = tmp_path / "net.prototxt"
    net.write_text(DATA_NET % (SCALE, db, 3))
    weights = str(tmp_path / "tiny.caffemodel")
    Net(DEPLOY_NET, TEST).save(weights)
    return images, str(net), weights, tmp_path


def reference(weights, images):
    """conv (after the in-place ReLU) and ip of the deploy net for these images."""
    net = Net(DEPLOY_NET, TEST, weights=weights)
    out = net.forward(blobs=["conv"], data=images.astype(np.float32) * np.float32(SCALE))
    conv, ip = np.array(out["conv"]), np.array(out["ip"])
    w, b = (np.array(blob.data) for blob in net.params["ip"])
    np.testing.assert_allclose(ip, conv.reshape(len(conv), -1) @ w.T + b, rtol=1e-5,
                               atol=1e-6)
    return conv, ip


def read_db(path):
    with reader_env(path) as env, env.begin() as txn:
        return [(key.decode(), pb.Datum.FromString(value)) for key, value in txn.cursor()]


def test_features_of_each_item_are_written_as_caffe_does(setup, backend, caplog):
    images, net, weights, tmp = setup
    dbs = [str(tmp / "conv_features"), str(tmp / "ip_features")]
    with caplog.at_level(logging.INFO, logger="netkit"):
        counts = extract_features(weights, net, ["conv", "ip"], dbs, 3, backend=backend)
    assert counts == [9, 9]
    # The Data layer reads the records in key order, starting over after the last.
    conv, ip = reference(weights, images[[0, 1, 2, 3, 4, 5, 6, 0, 1]])
    for db, want, shape in ((dbs[0], conv, (2, 2, 2)), (dbs[1], ip, (5, 1, 1))):
        records = read_db(db)
        assert [key for key, _ in records] == ["%010d" % i for i in range(9)]
        for (_, datum), item in zip(records, want):
            assert (datum.channels, datum.height, datum.width) == shape
            assert not datum.data and not datum.HasField("label") \
                and not datum.HasField("encoded")
            np.testing.assert_allclose(np.array(datum.float_data, np.float32), item.ravel(),
                                       rtol=1e-5, atol=1e-6)
    for name in ("conv", "ip"):
        assert "Extracted features of 9 query images for feature blob %s" % name \
            in caplog.text
    assert "Successfully extracted the features!" in caplog.text
    assert sorted(os.listdir(tmp)) == ["conv_features", "images", "ip_features",
                                       "net.prototxt", "tiny.caffemodel"]


def test_one_blob_into_several_databases_and_commits_every_thousand(setup, caplog):
    images, _, weights, tmp = setup
    net = tmp / "big_batch.prototxt"
    net.write_text(DATA_NET % (SCALE, tmp / "images", 300))
    dbs = [str(tmp / "a"), str(tmp / "b")]
    with caplog.at_level(logging.INFO, logger="netkit"):
        assert extract_features(weights, str(net), ["ip", "ip"], dbs, 4) == [1200, 1200]
    lines = [r.getMessage() for r in caplog.records if "Extracted features" in r.getMessage()]
    assert lines == ["Extracted features of %d query images for feature blob ip" % n
                     for n in (1000, 1000, 1200, 1200)]
    a, b = read_db(dbs[0]), read_db(dbs[1])
    assert [k for k, _ in a] == [k for k, _ in b] == ["%010d" % i for i in range(1200)]
    assert a[1199][1] == b[1199][1]
    _, ip = reference(weights, images[[1199 % 7]])
    np.testing.assert_allclose(a[1199][1].float_data, ip[0], rtol=1e-5, atol=1e-6)


def test_zero_mini_batches_writes_empty_databases(setup):
    _, net, weights, tmp = setup
    assert extract_features(weights, net, ["ip"], [str(tmp / "none")], 0) == [0]
    assert read_db(str(tmp / "none")) == []


@pytest.mark.parametrize("shape,want", [
    ((4, 3, 5, 6), (4, 3, 5, 6)), ((4, 7), (4, 7, 1, 1)), ((4, 2, 3), (4, 2, 3, 1)),
    ((4,), (4, 1, 1, 1)), ((), (1, 1, 1, 1)), ((4, 2, 3, 5, 6), (4, 180, 1, 1))])
def test_datum_shape_is_the_blobs_legacy_shape(shape, want):
    assert blob_datum_shape(shape) == want


def test_errors_are_one_line_and_leave_no_database(setup):
    _, net, weights, tmp = setup
    before = sorted(os.listdir(tmp))
    cases = [
        (["conv", "ip"], ["x"], r"2 feature blob name\(s\) \(conv,ip\) but 1 database "
                                r"name\(s\) \(.*/x\): .*must be equal"),
        (["fc7"], ["x"], r"unknown feature blob name 'fc7' in the network .*net\.prototxt "
                         r"\(its blobs: data, label, conv, ip\)"),
        (["conv", "ip"], ["x", "x"], "database .*x is named twice"),
        (["ip"], ["images"], r"images already exists; remove it or choose another name"),
    ]
    for blobs, dbs, message in cases:
        with pytest.raises(NetkitError, match=message):
            extract_features(weights, net, blobs, [str(tmp / d) for d in dbs], 1)
    with pytest.raises(NetkitError, match="leveldb is not supported"):
        extract_features(weights, net, ["ip"], [str(tmp / "x")], 1, db_type="leveldb")
    with pytest.raises(NetkitError, match="unknown db type 'rocksdb'"):
        extract_features(weights, net, ["ip"], [str(tmp / "x")], 1, db_type="rocksdb")
    with pytest.raises(NetkitError, match="mini-batches must be 0 or more, got -1"):
        extract_features(weights, net, ["ip"], [str(tmp / "x")], -1)
    with pytest.raises(NetkitError, match="nothing.caffemodel"):
        extract_features(str(tmp / "nothing.caffemodel"), net, ["ip"], [str(tmp / "x")], 1)
    assert sorted(os.listdir(tmp)) == before


def test_a_failing_run_leaves_no_half_written_database(setup, monkeypatch):
    _, net, weights, tmp = setup
    before = sorted(os.listdir(tmp))
    calls = []
    real = Net.forward_layers

    def forward_then_fail(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(self, *args)

    monkeypatch.setattr(Net, "forward_layers", forward_then_fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        extract_features(weights, net, ["conv", "ip"], [str(tmp / "a"), str(tmp / "b")], 3)
    assert len(calls) == 2
    assert sorted(os.listdir(tmp)) == before


def netkit(*args):
    return subprocess.run([sys.executable, "-m", "netkit.tools.cli", "extract_features"]
                          + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def last_line(result):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_cli_takes_caffes_positional_arguments(setup):
    images, net, weights, tmp = setup
    result = netkit(weights, net, "ip,conv", "%s,%s" % (tmp / "ip", tmp / "conv"), "2",
                    "lmdb", "CPU")
    assert result.returncode == 0, result.stderr
    assert "Extracted features of 6 query images for feature blob conv" in result.stderr
    assert len(read_db(str(tmp / "conv"))) == len(read_db(str(tmp / "ip"))) == 6
    result = netkit(weights, net, "ip", str(tmp / "flags"), "1", "-backend", "lmdb")
    assert result.returncode == 0, result.stderr
    assert len(read_db(str(tmp / "flags"))) == 3

    out = str(tmp / "out")
    assert last_line(netkit(weights, net, "ip,conv", out, "1")) == (
        "netkit: error: 2 feature blob name(s) (ip,conv) but 1 database name(s) (%s): the "
        "numbers of blob names and database names must be equal" % out)
    assert last_line(netkit(weights, net, "ip", out, "1", "lmdb", "GPU", "x")) == \
        "netkit: error: DEVICE_ID must be a GPU number (0, 1 ...), got 'x'"
    assert last_line(netkit(weights, net, "ip", out, "1", "lmdb", "TPU")) == \
        "netkit: error: expected CPU or GPU after the database type, got 'TPU'"
    assert last_line(netkit(weights, net, "ip", out, "1", "lmdb", "--backend", "leveldb")) \
        == "netkit: error: the database type is given twice, as lmdb and --backend leveldb"
    assert last_line(netkit(weights, net, "ip", out, "1", "lmdb", "CPU", "0", "7")) == \
        "netkit: error: unexpected extra argument(s): 7"
    assert not os.path.exists(out)
