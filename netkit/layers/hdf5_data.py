"""HDF5Data: batches of rows from HDF5 files listed in a text file (Caffe's HDF5DataLayer).

hdf5_data_param.source lists .h5 paths, whitespace separated (relative paths are relative
to the current directory). Each top reads the dataset named like the top; all datasets of
a file have the same number of rows. Rows are read in order, file after file, and a batch
may span files; after the last file reading starts over. With `shuffle`, the file order is
shuffled at every pass and the rows of a file every time it is read, from the layer's own
random stream. Data comes out as float32; HDF5Data has no transform_param.

Data-parallel rank r of N keeps rows r, r+N, r+2N, ... of that stream in the TRAIN phase
(Caffe's HDF5DataLayer::Skip counts rows across files and passes).
"""
import os

import h5py
import numpy as np

from ..data import private_rng
from ..layer import TRAIN, Layer, LayerSetupError
from ..log import logger
from ..parallel import solver_count, solver_rank
from ..registry import layers
from ..weights import HDF5_SIGNATURE


@layers.register("HDF5Data")
class HDF5DataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def setup(self, bottom, top):
        if self.layer_param.HasField("transform_param"):
            raise LayerSetupError("HDF5Data does not transform data; remove transform_param")
        p = self.layer_param.hdf5_data_param
        if not os.path.isfile(p.source):
            raise LayerSetupError("hdf5_data_param.source %s does not exist"
                                  % (p.source or "''"))
        if p.batch_size <= 0:
            raise LayerSetupError("hdf5_data_param.batch_size must be positive, got %d"
                                  % p.batch_size)
        logger.info("Loading list of HDF5 filenames from: %s", p.source)
        with open(p.source, "rb") as f:
            text = f.read()
        if text.startswith(HDF5_SIGNATURE):
            raise LayerSetupError("hdf5_data_param.source %s is an HDF5 file; source names a "
                                  "text file listing the .h5 files, one per line"
                                  % p.source)
        self._files = text.decode("utf-8", "replace").split()
        logger.info("Number of HDF5 files: %d", len(self._files))
        if not self._files:
            raise LayerSetupError("hdf5_data_param.source %s lists no HDF5 files" % p.source)
        self._names = list(self.layer_param.top)
        if len(self._names) != len(top):
            raise LayerSetupError("HDF5Data needs its tops named after the datasets to read")
        row_shapes = self._check_file(self._files[0])
        for path in self._files[1:]:
            shapes = self._check_file(path)
            if shapes != row_shapes:
                raise LayerSetupError("HDF5 file %s has rows of shapes %s, but %s has %s"
                                      % (path, shapes, self._files[0], row_shapes))
        self._batch_size = p.batch_size
        self._shuffle = p.shuffle
        self._rng = private_rng()
        self._order = np.arange(len(self._files))
        if self._shuffle:
            self._rng.shuffle(self._order)
        self._file = 0
        self._rank, self._count = ((solver_rank(), solver_count()) if self.phase == TRAIN
                                   else (0, 1))
        self._offset = 0  # rows passed so far, counted across files and passes
        self._load()
        for blob, row_shape in zip(top, row_shapes):
            blob.reshape((self._batch_size,) + row_shape)

    def _check_file(self, path):
        """Shapes of one row of each top's dataset in `path`, after checking they exist."""
        if not os.path.isfile(path):
            raise LayerSetupError("HDF5 file %s (listed in %s) does not exist"
                                  % (path, self.layer_param.hdf5_data_param.source))
        with h5py.File(path, "r") as f:
            shapes = []
            for name in self._names:
                if not isinstance(f.get(name), h5py.Dataset):
                    raise LayerSetupError("HDF5 file %s has no dataset %r (HDF5Data reads a "
                                          "dataset per top name)" % (path, name))
                shapes.append(f[name].shape)
        if any(len(s) < 1 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise LayerSetupError("HDF5 file %s: datasets %s need the same number of rows, "
                                  "got shapes %s" % (path, ", ".join(self._names), shapes))
        if shapes[0][0] == 0:
            raise LayerSetupError("HDF5 file %s has no rows" % path)
        return tuple(s[1:] for s in shapes)

    def _load(self, read=True):
        """Order the current file's rows and, with `read`, read its datasets (else only
        its row count: forward reads them when it needs them)."""
        if read:
            self._load_data()
            n = len(self._data[0])
        else:
            self._data = None
            with h5py.File(self._path(), "r") as f:
                n = f[self._names[0]].shape[0]
        self._rows = self._permutation(n)
        self._position = 0

    def _path(self):
        return self._files[self._order[self._file]]

    def _load_data(self):
        """Read the current file's datasets into host float32 arrays."""
        with h5py.File(self._path(), "r") as f:
            self._data = [np.asarray(f[name][...], dtype=np.float32) for name in self._names]

    def _permutation(self, n):
        return self._rng.permutation(n) if self._shuffle else np.arange(n)

    def _next_file(self, read=True):
        self._file += 1
        if self._file == len(self._files):
            self._file = 0
            if self._shuffle:
                self._rng.shuffle(self._order)
        if len(self._files) > 1:
            self._load(read)
        else:
            self._rows = self._permutation(len(self._rows))
            self._position = 0

    def _next_rows(self, read=True):
        """The next batch's rows, as (filled, rows of the current file) pieces; the reading
        moves on to the next file after a piece has been used (`read` as in `_load`)."""
        filled = 0
        stride = self._count
        while filled < self._batch_size:
            # Rows from the current position whose stream offset is this rank's, mod N.
            start = self._position + (self._rank - self._offset) % stride
            mine = max(0, -(-(len(self._rows) - start) // stride))
            take = min(self._batch_size - filled, mine)
            yield filled, self._rows[start:start + take * stride:stride]
            filled += take
            passed = (start + (take - 1) * stride + 1 if take else len(self._rows)) \
                - self._position
            self._position += passed
            self._offset += passed
            if self._position == len(self._rows):
                self._next_file(read)

    def reshape(self, bottom, top):
        """Tops keep the batch shape set at setup."""

    def forward(self, bottom, top):
        batches = [np.empty(blob.shape, dtype=np.float32) for blob in top]
        for filled, rows in self._next_rows():
            if self._data is None:  # the file skip_batches stopped in
                self._load_data()
            for batch, data in zip(batches, self._data):
                batch[filled:filled + len(rows)] = data[rows]
        for blob, batch in zip(top, batches):
            blob.data[...] = self.backend.asarray(batch)

    def skip_batches(self, n):
        """Move `n` batches forward without gathering them: the rows, file order and
        shuffles move on as forward's would, and files passed over are not read."""
        for _ in range(n):
            for _ in self._next_rows(read=False):
                pass
