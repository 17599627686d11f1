"""DeepLab's MatWrite and MatRead: blobs to and from MATLAB .mat files, one file per
forward (MatWrite) or per batch item (MatRead), named after an id list.

Both layers name their files `prefix + id + "_blob_" + i + ".mat"`, where the ids are the
first whitespace-separated word of each line of `source`, less its last `strip`
characters (DeepLab's test lists name images like "2007_000033"; `strip: 4` turns
"2007_000033.jpg" into "2007_000033"); without `source` the id is "iter_" + the counter.
Relative names are relative to the current directory. Blank lines of `source` are
skipped (the fork aborts on them).

The file holds one variable, "data", of class single: the blob's (N, C, H, W) values as
a MATLAB array of size [W H C N], so that its memory is the blob's (MATLAB is
column-major). A blob of fewer axes is padded to four with trailing 1s, as Caffe's
num/channels/height/width read it.
"""
import numpy as np

from ..data.matfile import read_variable, write_mat
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError
from ..log import logger
from ..protoio import check_output_file
from ..registry import layers


def _read_ids(param, field):
    """The ids listed in `param.source`, each less its last `param.strip` characters."""
    if param.strip < 0:
        raise LayerSetupError("%s.strip must not be negative, got %d" % (field, param.strip))
    try:
        with open(param.source, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        raise LayerSetupError("%s.source %s: cannot read the id list: %s"
                              % (field, param.source, e.strerror or e)) from None
    ids = []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if len(words[0]) <= param.strip:
            raise LayerSetupError("%s:%d: id %r is not longer than %s.strip %d"
                                  % (param.source, number, words[0], field, param.strip))
        ids.append(words[0][:len(words[0]) - param.strip])
    return ids


def _reverse_axes(values):
    """Host values of at most 4 axes, padded to 4 with trailing 1s, with the axes reversed:
    a (N, C, H, W) blob as the [W H C N] MATLAB array with the same memory order, and back."""
    return values.reshape(values.shape + (1,) * (4 - values.ndim)).T


@layers.register("MatWrite")
class MatWriteLayer(Layer):
    """Writes each bottom to its own .mat file at every `period`-th forward.

    Forward k (counting from 0) writes when k % period == 0, under the k-th id of the
    list (not the (k / period)-th: the fork indexes the list by forward count), and fails
    once k passes the end of the list. A file holds the whole batch (N is MATLAB's
    fourth dimension); DeepLab's test nets run one image per batch. Files are replaced
    atomically. The layer has no tops and backward does nothing.
    """
    min_bottom = 1
    exact_num_top = 0

    def setup(self, bottom, top):
        p = self.layer_param.mat_write_param
        if p.period <= 0:
            raise LayerSetupError("mat_write_param.period must be positive, got %d" % p.period)
        self._ids = _read_ids(p, "mat_write_param") if p.HasField("source") else None
        if self._ids is not None:
            logger.info("MatWrite will save a maximum of %d files.", len(self._ids))
        self._iter = 0
        first = self._path(0, 0) if self._ids else p.prefix + "iter_0_blob_0.mat"
        try:
            check_output_file(first)
        except NetkitError as e:
            raise LayerSetupError("mat_write_param.prefix %r: %s" % (p.prefix, e)) from None

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom):
            if len(blob.shape) > 4:
                raise LayerSetupError("MatWrite writes blobs of at most 4 axes (N, C, H, W); "
                                      "bottom %d has shape %s" % (i, blob.shape))

    def _path(self, iteration, i):
        name = self._ids[iteration] if self._ids is not None else "iter_%d" % iteration
        return "%s%s_blob_%d.mat" % (self.layer_param.mat_write_param.prefix, name, i)

    def forward(self, bottom, top):
        p = self.layer_param.mat_write_param
        if self._iter % p.period == 0:
            if self._ids is not None and self._iter >= len(self._ids):
                raise NetkitError("MatWrite layer %r: forward %d has no id: "
                                  "mat_write_param.source %s lists %d; the test ran for "
                                  "more iterations than the list has images"
                                  % (self.name, self._iter + 1, p.source, len(self._ids)))
            for i, blob in enumerate(bottom):
                values = self.backend.asnumpy(blob.data).astype(np.float32, copy=False)
                write_mat(self._path(self._iter, i), {"data": _reverse_axes(values)})
        self._iter += 1

    def backward(self, top, propagate_down, bottom):
        """MatWrite only records its bottoms; they get no gradient from it."""


@layers.register("MatRead")
class MatReadLayer(Layer):
    """Reads batches of `batch_size` .mat files (variable "data", one item each) into its
    top, one id per batch item, starting over at the end of the list.

    The top's shape is (batch_size, C, H, W) from the first file; every later file must
    match it. A MATLAB array of size [W H C] (or [W H C 1]) becomes one (C, H, W) item, so
    MatRead reads what MatWrite writes with batch size 1. The fork accepts only class
    single; netkit also reads double and integer arrays, as float32.
    """
    exact_num_bottom = 0
    exact_num_top = 1
    is_data = True

    def setup(self, bottom, top):
        p = self.layer_param.mat_read_param
        if p.batch_size <= 0:
            raise LayerSetupError("mat_read_param.batch_size must be positive, got %d"
                                  % p.batch_size)
        self._ids = None
        if p.HasField("source"):
            self._ids = _read_ids(p, "mat_read_param")
            logger.info("MatRead will load from a set of %d files.", len(self._ids))
            if not self._ids:
                raise LayerSetupError("mat_read_param.source %s lists no ids" % p.source)
        self._iter = 0
        try:
            item = self._read(0)
        except NetkitError as e:
            raise LayerSetupError(str(e)) from None
        self._item_shape = item.shape
        top[0].reshape((p.batch_size,) + item.shape)

    def reshape(self, bottom, top):
        """The top keeps the shape the first file gave it."""

    def _path(self, iteration):
        name = self._ids[iteration] if self._ids is not None else "iter_%d" % iteration
        return "%s%s_blob_0.mat" % (self.layer_param.mat_read_param.prefix, name)

    def _read(self, iteration):
        """The (C, H, W) float32 item stored in the file of `iteration`."""
        path = self._path(iteration)
        array = read_variable(path, "data")
        if array.ndim > 4 or (array.ndim == 4 and array.shape[3] != 1):
            raise NetkitError("%s: variable 'data' of size %s holds more than one item; "
                              "MatRead reads [W H C] arrays (or [W H C 1])"
                              % (path, "x".join(map(str, array.shape))))
        return _reverse_axes(array.astype(np.float32))[0]

    def forward(self, bottom, top):
        batch = np.empty(top[0].shape, np.float32)
        for n in range(len(batch)):
            if self._ids is not None and self._iter >= len(self._ids):
                self._iter = 0
            item = self._read(self._iter)
            if item.shape != self._item_shape:
                raise NetkitError("%s: variable 'data' gives an item of shape %s, but the "
                                  "first file gave %s" % (self._path(self._iter), item.shape,
                                                          self._item_shape))
            batch[n] = item
            self._iter += 1
        self.backend.upload(top[0].data, batch)

    def backward(self, top, propagate_down, bottom):
        """MatRead is a data layer: nothing below it takes a gradient."""
