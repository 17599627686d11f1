"""Datum records and the LMDB databases that hold them, as Caffe writes and reads them.

A Datum is one image: `data` holds the raw pixels as bytes (uint8, channels-height-width,
BGR for colour images), or `float_data` holds float pixels, or `data` holds a compressed
image file when `encoded` is set (decoded with OpenCV, as Caffe does). Keys are byte
strings read in sorted order.
"""
import contextlib
import os
import shutil
import tempfile
import threading

import lmdb
import numpy as np

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..log import logger
from ..protoio import check_output_directory, remove_stale_staging, staging_prefix
from . import shape_text


def _cv2():
    """OpenCV, imported only when an encoded Datum or image file needs it."""
    try:
        import cv2
    except ImportError:
        raise ImportError("decoding encoded Datum images needs OpenCV: "
                          "pip install opencv-python-headless") from None
    return cv2


def decode_image(buf, color=None):
    """Compressed image bytes -> uint8 array (C, H, W), BGR channel order.

    color=None keeps the file's own channels (Caffe's DecodeDatumToCVMatNative),
    True forces 3 colour channels (force_color), False forces 1 grey channel (force_gray).
    """
    cv2 = _cv2()
    flag = cv2.IMREAD_UNCHANGED if color is None else (
        cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flag)
    if img is None:
        raise ValueError("could not decode an encoded Datum image (%d bytes)" % len(buf))
    if img.dtype != np.uint8:
        raise ValueError("encoded Datum image has %s pixels; only 8-bit images are supported"
                         % img.dtype)
    if img.ndim == 2:
        return img[np.newaxis]
    return img.transpose(2, 0, 1)


def datum_shape(datum):
    """(C, H, W) that a raw (not encoded) Datum declares."""
    return (datum.channels, datum.height, datum.width)


def datum_to_array(datum, color=None):
    """Datum -> (C, H, W) array: uint8 for byte pixels or encoded images, float32 for float_data.

    `color` only applies to encoded Datums (see `decode_image`).
    """
    if datum.encoded:
        return decode_image(datum.data, color)
    shape = datum_shape(datum)
    if datum.data:
        pixels = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        pixels = np.array(datum.float_data, dtype=np.float32)
    if pixels.size != shape[0] * shape[1] * shape[2]:
        raise ValueError("Datum holds %d values but declares shape %s"
                         % (pixels.size, shape_text(shape)))
    return pixels.reshape(shape)


def array_to_datum(array, label=0):
    """(C, H, W) array -> Datum: uint8 arrays as `data` bytes, other dtypes as `float_data`."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError("a Datum holds a (channels, height, width) array, got shape %s"
                         % (array.shape,))
    datum = pb.Datum(channels=array.shape[0], height=array.shape[1], width=array.shape[2],
                     label=int(label))
    if array.dtype == np.uint8:
        datum.data = np.ascontiguousarray(array).tobytes()
    else:
        datum.float_data.extend(array.astype(np.float32).ravel().tolist())
    return datum


def load_mean_file(path):
    """A mean .binaryproto (BlobProto) -> float32 (C, H, W) array.

    The shape comes from `shape.dim` or, in older files, num/channels/height/width; the
    leading num axis must be 1.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError("mean file %s does not exist" % path)
    proto = pb.BlobProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.HasField("shape"):
        dims = list(proto.shape.dim)
    else:
        dims = [proto.num, proto.channels, proto.height, proto.width]
    values = proto.data if len(proto.data) else proto.double_data
    mean = np.array(values, dtype=np.float32)
    if len(dims) < 3 or int(np.prod(dims[:-3], dtype=np.int64)) != 1:
        raise ValueError("mean file %s has blob shape %s; expected (1, C, H, W)"
                         % (path, tuple(dims)))
    chw = tuple(int(d) for d in dims[-3:])
    if mean.size != chw[0] * chw[1] * chw[2]:
        raise ValueError("mean file %s holds %d values but declares shape %s"
                         % (path, mean.size, tuple(dims)))
    return mean.reshape(chw)


def create_lmdb(path, map_size=None):
    """A writable lmdb Environment on the Caffe-style database directory `path`.

    Readers use `reader_env` instead, because an LMDB may be open only once per process.
    """
    return lmdb.open(path, map_size=map_size or (1 << 30), subdir=True, readonly=False,
                     meminit=False, map_async=True)


# An LMDB may be opened only once per process, so readers (the train and test nets' Data
# layers, say) share one read-only Environment per database, counted by its users.
_readers = {}
_readers_lock = threading.Lock()


@contextlib.contextmanager
def reader_env(path):
    """The shared read-only Environment of the LMDB at `path`, for the `with` block."""
    env = acquire_reader(path)
    try:
        yield env
    finally:
        release_reader(path)


def acquire_reader(path):
    """Open (or share) a read-only Environment on `path`; pair with `release_reader`.

    No lock file is used, so databases on read-only media work.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("LMDB %s does not exist" % path)
    key = os.path.realpath(path)
    with _readers_lock:
        if key not in _readers:
            try:
                env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                subdir=os.path.isdir(path), max_readers=256)
            except lmdb.Error as e:
                if "already open" not in str(e):
                    raise
                # python-lmdb allows one Environment per database and process.
                raise NetkitError("LMDB %s is open in this process already (a script's "
                                  "lmdb.open); close it (env.close()) before a net reads "
                                  "it" % path) from None
            _readers[key] = [env, 0]
        _readers[key][1] += 1
        return _readers[key][0]


def release_reader(path):
    key = os.path.realpath(path)
    with _readers_lock:
        entry = _readers[key]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _readers[key]


def write_lmdb(path, items, map_size=None, commit_every=1000, on_commit=None):
    """Write (key, value) byte pairs, keys in ascending order, into a new LMDB at `path`.

    Records are committed `commit_every` at a time, as Caffe's conversion tools do, and
    `on_commit(count)` is called after each commit with the number written so far. When
    the database outgrows its map size, the map size doubles and the transaction is redone,
    so `map_size` is only where it starts. String keys are stored as UTF-8. Returns the
    number of records written.
    """
    env = create_lmdb(path, map_size)
    count = 0
    try:
        batch = []
        for key, value in items:
            batch.append((key.encode("utf-8", "surrogateescape") if isinstance(key, str)
                          else key, value))
            if len(batch) == commit_every:
                count += commit_records(env, batch)
                batch = []
                if on_commit is not None:
                    on_commit(count)
        if batch:
            count += commit_records(env, batch)
            if on_commit is not None:
                on_commit(count)
        env.sync(True)
    finally:
        env.close()
    return count


def commit_records(env, batch):
    """Put `batch` in one transaction; on MapFullError double the map size and redo it."""
    while True:
        try:
            with env.begin(write=True) as txn:
                cursor = txn.cursor()
                for key, value in batch:
                    # Appending is fast but needs keys above the last; others go in by search.
                    if not cursor.put(key, value, append=True):
                        txn.put(key, value)
            return len(batch)
        except lmdb.MapFullError:
            size = env.info()["map_size"] * 2
            logger.info("LMDB %s is full; growing its map size to %d MiB",
                        env.path(), size >> 20)
            env.set_mapsize(size)


@contextlib.contextmanager
def staged_directory(path, replace=False):
    """A fresh temporary directory beside `path`, renamed to `path` when the block succeeds
    and removed when it fails, so `path` never holds half a database. `path` must not exist
    when the block ends (FileExistsError), unless `replace`: then the old one is removed
    only once the new one is complete."""
    path = os.path.abspath(path)
    parent = check_output_directory(path)
    remove_stale_staging(parent)
    tmp = tempfile.mkdtemp(prefix=staging_prefix(path), suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the database is not
        if os.path.lexists(path):
            if not replace:
                raise FileExistsError("%s already exists" % path)
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def lmdb_count(path):
    """Number of records in the LMDB at `path`, or None if there is no readable database."""
    try:
        with reader_env(path) as env:
            return env.stat()["entries"]
    except (FileNotFoundError, lmdb.Error):
        return None


def first_record(path):
    """(key, value) of the first record of the LMDB at `path`, or None if it is empty."""
    with reader_env(path) as env, env.begin() as txn:
        cursor = txn.cursor()
        return (cursor.key(), cursor.value()) if cursor.first() else None


class LMDBCursor:
    """Reads an LMDB's records in key order, starting over at the first after the last.

    It holds one long read transaction, which LMDB ties to one thread: create it in the
    thread that reads (the prefetch thread).
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)  # released by this name whatever the cwd is then
        env = acquire_reader(self.path)
        self.size = env.stat()["entries"]
        if self.size == 0:
            release_reader(self.path)
            raise ValueError("LMDB %s has no records" % path)
        self._txn = env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._cursor.first()

    def skip(self, n):
        """Move `n` records forward, wrapping around."""
        for _ in range(n % self.size):
            self._advance()

    def value(self):
        """The current record's value."""
        return self._cursor.value()

    def take(self, n, stride=1):
        """The next `n` (key, value) records, wrapping around at the end; `stride` > 1
        keeps one record of every `stride`, starting with the current one."""
        out = []
        cursor = self._cursor
        for _ in range(n):
            out.append((cursor.key(), cursor.value()))
            for _ in range(stride):
                self._advance()
        return out

    def _advance(self):
        if not self._cursor.next():
            logger.info("Restarting data prefetching from start.")
            self._cursor.first()

    def close(self):
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            release_reader(self.path)


class RecordReader:
    """An LMDB's (key, value) records from `skip` on, every `stride`-th (a data-parallel
    rank's share), wrapping at the end. The LMDB is opened on the first read, in the
    reading thread."""

    def __init__(self, path, skip=0, stride=1):
        self.path = path
        self.skip = skip
        self.stride = stride
        self._cursor = None

    def cursor(self):
        """The cursor, opened (and moved past `skip` records) on first use."""
        if self._cursor is None:
            self._cursor = LMDBCursor(self.path)
            self._cursor.skip(self.skip)
        return self._cursor

    def take(self, n):
        return self.cursor().take(n, self.stride)

    def close(self):
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class DatumBatchReader(RecordReader):
    """Reads batches of Datum records from an LMDB: images (N, C, H, W) and labels (N,).

    Raw byte Datums of one shape become one uint8 array through a single np.frombuffer;
    float_data and encoded Datums are converted one record at a time.
    """

    def __init__(self, path, batch_size, color=None, skip=0, stride=1):
        super().__init__(path, skip, stride)
        self.batch_size = batch_size
        self.color = color

    def read(self, mixed_sizes=False):
        """The next batch: (images, labels). Images are one (N, C, H, W) array, or with
        `mixed_sizes`, when the records' shapes differ, a list of (C, H, W) arrays (for a
        transformer that crops them to one size, as Caffe does); without it, records of
        several shapes in one batch are an error."""
        records = self.take(self.batch_size)
        datums = [pb.Datum.FromString(value) for _, value in records]
        labels = np.array([d.label for d in datums], dtype=np.float32)
        kinds = {(d.encoded, d.channels, d.height, d.width) for d in datums}
        if len(kinds) == 1:
            encoded, c, h, w = kinds.pop()
            pixels = [] if encoded else [d.data for d in datums]
            if pixels and all(len(p) == c * h * w for p in pixels):
                batch = np.frombuffer(b"".join(pixels), dtype=np.uint8)
                return batch.reshape(len(datums), c, h, w), labels
        images = []
        for (key, _), datum in zip(records, datums):
            try:
                image = datum_to_array(datum, self.color)
            except ValueError as e:
                raise ValueError("record %s: %s" % (key.decode("ascii", "replace"), e)) from None
            if images and image.shape != images[0].shape and not mixed_sizes:
                raise ValueError("record %s has shape %s but the batch's first record has %s"
                                 "; set transform_param.crop_size to crop records of "
                                 "several sizes to one" % (key.decode("ascii", "replace"),
                                                           image.shape, images[0].shape))
            images.append(image)
        if any(image.shape != images[0].shape for image in images):
            return images, labels
        return np.stack(images), labels

    def skip_batches(self, n):
        """Move `n` batches forward without reading their records. Runs in the reading
        thread, as `read` does."""
        self.cursor().skip(n * self.batch_size * self.stride)
