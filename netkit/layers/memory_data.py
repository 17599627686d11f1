"""MemoryData: batches from arrays the program hands over (Caffe's MemoryDataLayer).

memory_data_param gives the batch shape (batch_size, channels, height, width). The
program gives the layer n rows of data and labels, n a multiple of batch_size, with
`set_input_arrays(net, data, labels)` (pycaffe's net.set_input_arrays), the layer's
`reset(data, labels)` or `add_images(images, labels)`; each forward then hands out the next
batch_size rows, wrapping to the first after the last.

As in Caffe, arrays given to `reset` are used as they are (transform_param does not apply
to them; a warning says so), and a float32 C-contiguous array is kept, not copied, so
later changes to it show in later batches. `add_images` runs transform_param over the
images first (Caffe's AddMatVector/AddDatumVector). Top 0 is the data (N, C, H, W); top 1
the labels, shaped (N,) at setup and (N, 1, 1, 1) from the first forward on, as Caffe
shapes them.
"""
import numpy as np

from ..data import private_rng, shape_text
from ..data.transformer import DataTransformer, TransformError
from ..errors import NetkitError
from ..layer import Layer, LayerSetupError
from ..log import logger
from ..registry import layers


@layers.register("MemoryData")
class MemoryDataLayer(Layer):
    exact_num_bottom = 0
    exact_num_top = 2
    is_data = True

    def setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        dims = (p.batch_size, p.channels, p.height, p.width)
        if min(dims) <= 0:
            raise LayerSetupError("memory_data_param.batch_size, channels, height and width "
                                  "must all be positive, got %d, %d, %d and %d" % dims)
        self.batch_size = p.batch_size
        self.chw = dims[1:]
        try:
            self._transformer = DataTransformer(self.layer_param.transform_param, self.phase,
                                                private_rng())
        except TransformError as e:
            raise LayerSetupError(str(e)) from None
        top[0].reshape(dims)
        top[1].reshape((p.batch_size,))
        self._data = self._labels = None
        self._n = self._pos = 0
        self._has_new_data = False

    def reset(self, data, labels, n=None):
        """Hand out the first `n` rows (default: all) of `data` (n, C, H, W) and `labels`
        (n,) from the next forward on, as they are: no transformation."""
        data, labels = self._check(data, labels, n)
        if self.layer_param.HasField("transform_param"):
            logger.warning("MemoryData layer '%s' does not transform array data on reset()",
                           self.name)
        self._data, self._labels = data, labels
        self._n, self._pos = len(data), 0

    def add_images(self, images, labels):
        """Transform `images` (n, C, H, W), uint8 BGR or float as in a Datum, with
        transform_param (crops and mirrors from the layer's random stream) and hand them
        out from the next forward on. The transformed size must be memory_data_param's; the
        images added before must all have been handed out (Caffe's rule)."""
        if self._has_new_data:
            raise NetkitError("MemoryData layer '%s': cannot add images until the images "
                              "added before have all been handed out" % self.name)
        images = np.asarray(images)
        if images.ndim != 4:
            raise NetkitError("MemoryData layer '%s': images must be (n, channels, height, "
                              "width), got shape %s" % (self.name, images.shape))
        try:
            shape = self._transformer.output_shape(images.shape[1:])
        except TransformError as e:
            raise NetkitError("MemoryData layer '%s': %s" % (self.name, e)) from None
        if shape != self.chw:
            raise NetkitError("MemoryData layer '%s': images of shape %s transform to %s, "
                              "but memory_data_param says %s" % (
                                  self.name, shape_text(images.shape[1:]), shape_text(shape),
                                  shape_text(self.chw)))
        data, labels = self._check(self._transformer(images), labels, None, name="images")
        self._data, self._labels = data, labels
        self._n, self._pos = len(data), 0
        self._has_new_data = True

    def _check(self, data, labels, n, name="data"):
        """(data, labels) as float32 arrays (n, C, H, W) and (n,), after pycaffe's checks."""
        where = "MemoryData layer '%s'" % self.name
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if data.ndim != 4 or data.shape[1:] != self.chw:
            raise NetkitError("%s: %s must be (n, %s) as memory_data_param says, got shape %s"
                              % (where, name, ", ".join(map(str, self.chw)), data.shape))
        if labels.ndim < 1 or labels.shape[1:] != (1,) * (labels.ndim - 1):
            raise NetkitError("%s: labels must be (n,) or (n, 1, 1, 1), got shape %s"
                              % (where, labels.shape))
        if len(labels) != len(data):
            raise NetkitError("%s: %s and labels must have the same first dimension, got "
                              "%d and %d" % (where, name, len(data), len(labels)))
        n = len(data) if n is None else n
        if not 0 < n <= len(data) or n % self.batch_size:
            raise NetkitError("%s: the number of rows (%d of %d) must be a positive multiple "
                              "of batch_size %d" % (where, n, len(data), self.batch_size))
        return data[:n], labels.reshape(-1)[:n]

    def reshape(self, bottom, top):
        """Tops keep the batch shape."""

    def forward(self, bottom, top):
        if self._data is None:
            raise NetkitError("MemoryData layer '%s' has no data: call set_input_arrays(net, "
                              "data, labels) or the layer's reset(data, labels) first"
                              % self.name)
        rows = slice(self._pos, self._pos + self.batch_size)
        top[0].reshape((self.batch_size,) + self.chw)
        top[0].data[...] = self.backend.asarray(self._data[rows])
        top[1].reshape((self.batch_size, 1, 1, 1))
        top[1].data[...] = self.backend.asarray(self._labels[rows].reshape(-1, 1, 1, 1))
        self._pos = (self._pos + self.batch_size) % self._n
        if self._pos == 0:
            self._has_new_data = False


def set_input_arrays(net, data, labels):
    """pycaffe's net.set_input_arrays: hand `data` (n, C, H, W) and `labels` (n,) to the
    net's first layer, which must be a MemoryData layer, as they are (no transformation)."""
    layer = net.layers[0] if net.layers else None
    if not isinstance(layer, MemoryDataLayer):
        raise NetkitError("set_input_arrays needs a MemoryData layer first in net '%s'%s"
                          % (net.name, "; its first layer is '%s' (%s)" % (
                              net.layer_names[0], layer.type) if layer else ""))
    layer.reset(data, labels)
