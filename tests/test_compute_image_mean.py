"""compute_image_mean: the mean of the decoded records, written as Caffe's mean.binaryproto
and read back by the Data layer's mean_file and by netkit.weights."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit.data.datum import array_to_datum, load_mean_file, write_lmdb
from netkit.errors import NetkitError
from netkit.layer import TEST
from netkit.net import Net
from netkit.tools.compute_image_mean import compute_image_mean
from netkit.weights import blob_proto_shape, blob_proto_to_array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images(n=13, shape=(3, 10, 12), seed=0):
    rs = np.random.RandomState(seed)
    return rs.randint(0, 256, size=(n,) + shape).astype(np.uint8)


def write_db(path, datums):
    write_lmdb(str(path), (("%08d" % i, d.SerializeToString()) for i, d in enumerate(datums)))
    return str(path)


def read_proto(path):
    proto = pb.BlobProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def numpy_mean(x):
    return x.astype(np.float64).mean(axis=0).astype(np.float32)


def test_mean_matches_numpy_and_is_written_as_caffe_does(tmp_path, caplog):
    x = images()
    db = write_db(tmp_path / "db", [array_to_datum(im, i % 3) for i, im in enumerate(x)])
    out = str(tmp_path / "mean.binaryproto")
    with caplog.at_level(logging.INFO, logger="netkit"):
        mean = compute_image_mean(db, out)
    want = numpy_mean(x)
    np.testing.assert_array_equal(mean, want)
    proto = read_proto(out)
    # Caffe writes the legacy 4-D fields, not `shape`.
    assert not proto.HasField("shape")
    assert (proto.num, proto.channels, proto.height, proto.width) == (1, 3, 10, 12)
    np.testing.assert_array_equal(np.array(proto.data, np.float32), want.ravel())
    assert "Number of channels: 3" in caplog.text
    for c in range(3):
        assert "mean_value channel [%d]: %g" % (c, x[:, c].astype(np.float64).mean()) \
            in caplog.text
    assert "Processed 13 files." in caplog.text


def test_mean_file_reads_back_through_weights_and_the_data_layer(tmp_path):
    x = images(n=6, shape=(3, 8, 9), seed=1)
    db = write_db(tmp_path / "db", [array_to_datum(im, i) for i, im in enumerate(x)])
    out = str(tmp_path / "mean.binaryproto")
    mean = compute_image_mean(db, out)
    proto = read_proto(out)
    assert blob_proto_shape(proto) == (1, 3, 8, 9)
    np.testing.assert_array_equal(blob_proto_to_array(proto)[0], mean)
    np.testing.assert_array_equal(load_mean_file(out), mean)
    net = Net("""
      layer { name: "data" type: "Data" top: "data" top: "label"
              data_param { source: "%s" batch_size: 6 backend: LMDB }
              transform_param { mean_file: "%s" scale: 0.5 } }
    """ % (db, out), TEST)
    try:
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, (x - mean) * np.float32(0.5),
                                   rtol=1e-6, atol=1e-5)
    finally:
        net.close()


def test_float_data_records(tmp_path):
    x = np.random.RandomState(2).standard_normal((5, 2, 3, 4)).astype(np.float32)
    db = write_db(tmp_path / "db", [array_to_datum(im) for im in x])
    np.testing.assert_allclose(compute_image_mean(db), x.astype(np.float64).mean(axis=0),
                               rtol=1e-6)


def test_encoded_records_are_decoded_with_their_own_channels(tmp_path, caplog):
    cv2 = pytest.importorskip("cv2")
    x = images(n=4, shape=(10, 12, 3), seed=3)
    grey = images(n=4, shape=(10, 12), seed=4)
    for name, batch, chw in (("colour", x, x.transpose(0, 3, 1, 2)), ("grey", grey, grey[:, None])):
        encoded = [pb.Datum(data=cv2.imencode(".png", im)[1].tobytes(), label=0, encoded=True)
                   for im in batch]
        with caplog.at_level(logging.INFO, logger="netkit"):
            mean = compute_image_mean(write_db(tmp_path / name, encoded))
        assert "Decoding Datum" in caplog.text
        np.testing.assert_array_equal(mean, numpy_mean(chw))


def test_mixed_sizes_empty_and_missing_databases_are_errors(tmp_path):
    mixed = write_db(tmp_path / "mixed", [array_to_datum(images(1)[0]),
                                          array_to_datum(images(1, (3, 10, 11))[0])])
    with pytest.raises(NetkitError, match=r"record 00000001 is 3x10x11 but the first record "
                                          r"is 3x10x12"):
        compute_image_mean(mixed)
    empty = write_db(tmp_path / "empty", [])
    with pytest.raises(NetkitError, match="has no records"):
        compute_image_mean(empty)
    with pytest.raises(NetkitError, match="does not exist"):
        compute_image_mean(str(tmp_path / "missing"))
    garbage = str(tmp_path / "garbage")
    write_lmdb(garbage, [("0", b"\xff\xff\xff")])
    with pytest.raises(NetkitError, match="record 0"):
        compute_image_mean(garbage)


def test_command_line(tmp_path):
    x = images(n=3)
    db = write_db(tmp_path / "db", [array_to_datum(im) for im in x])
    out = tmp_path / "mean.binaryproto"
    run = [sys.executable, "-m", "netkit.tools.cli", "compute_image_mean"]
    result = subprocess.run(run + [db, str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Write to %s" % out in result.stderr and "Number of channels: 3" in result.stderr
    np.testing.assert_array_equal(load_mean_file(str(out)), numpy_mean(x))
    result = subprocess.run(run + ["-backend", "leveldb", db], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("netkit: error: --backend leveldb")
