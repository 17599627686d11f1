"""HDF5Output: writes its two bottoms to an HDF5 file (Caffe's HDF5OutputLayer).

hdf5_output_param.file_name is created (truncated if it exists) at setup. Each forward
writes bottom 0 to the dataset "data" and bottom 1 to "label", float32, with Caffe's
4-axis shapes (N, C, H, W): missing axes are 1, so labels (N,) are stored as (N, 1, 1, 1).
Caffe writes the first batch and aborts on the second, because the datasets already
exist; netkit appends each later batch along the first axis instead, so the file after
one forward is the one Caffe writes, and after k forwards holds all k batches. Files are
flushed after every batch and closed by `close()` (or when the layer is collected).
HDF5Data reads them back. The layer has no tops and backward does nothing.
"""
import weakref

import h5py
import numpy as np

from ..layer import Layer, LayerSetupError
from ..log import logger
from ..registry import layers

_DATASETS = ("data", "label")


@layers.register("HDF5Output")
class HDF5OutputLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 0

    _file = None

    def setup(self, bottom, top):
        name = self.layer_param.hdf5_output_param.file_name
        if not name:
            raise LayerSetupError("hdf5_output_param.file_name is required")
        self.close()
        try:
            self._file = h5py.File(name, "w")
        except OSError as e:
            raise LayerSetupError("hdf5_output_param.file_name %s: cannot create the file: %s"
                                  % (name, e)) from None
        self._finalizer = weakref.finalize(self, self._file.close)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise LayerSetupError("HDF5Output needs data and label bottoms with the same "
                                  "number of rows, got shapes %s and %s"
                                  % (bottom[0].shape, bottom[1].shape))

    def forward(self, bottom, top):
        if self._file is None:
            raise RuntimeError("HDF5Output layer %r is closed" % self.name)
        logger.info("Saving HDF5 file %s", self._file.filename)
        for name, blob in zip(_DATASETS, bottom):
            rows = self.backend.asnumpy(blob.data).astype(np.float32, copy=False)
            rows = rows.reshape(rows.shape + (1,) * (4 - rows.ndim))
            self._append(name, rows)
        self._file.flush()
        logger.info("Successfully saved %d rows", bottom[0].shape[0])

    def _append(self, name, rows):
        dataset = self._file.get(name)
        if dataset is None:
            self._file.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:])
            return
        if dataset.shape[1:] != rows.shape[1:]:
            raise ValueError("HDF5Output layer %r: bottom '%s' rows are %s now but %s in the "
                             "batches already written to %s" % (
                                 self.name, name, rows.shape[1:], dataset.shape[1:],
                                 self._file.filename))
        start = dataset.shape[0]
        dataset.resize(start + len(rows), axis=0)
        dataset[start:] = rows

    def backward(self, top, propagate_down, bottom):
        """HDF5Output only records its bottoms; they get no gradient from it."""

    def close(self):
        """Close the HDF5 file."""
        if self._file is not None:
            self._finalizer()
            self._file = None
