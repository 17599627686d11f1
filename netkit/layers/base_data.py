"""What Caffe's prefetching data layers share (its BasePrefetchingDataLayer): a thread that
keeps batches ready on the host, forward copying the next one to the backend, and the
transform fields old nets kept in the layer's own parameter message."""
import weakref

from .. import netkit_pb2 as pb
from ..data.prefetch import Prefetcher
from ..layer import Layer


class PrefetchingDataLayer(Layer):
    """Subclasses build a `load()` returning (images, labels) in setup and pass it to
    `start_prefetch`; top 0 gets the images, top 1 (if any) the labels."""
    exact_num_bottom = 0
    is_data = True
    # The layer's own *_param message and the transform fields it may still carry from
    # before TransformationParameter; they apply where transform_param does not set them.
    legacy_param = None
    legacy_fields = ("scale", "mean_file", "crop_size", "mirror")

    _prefetcher = None

    def transform_param(self):
        """transform_param, completed from the legacy fields of `legacy_param`."""
        param = pb.TransformationParameter()
        param.CopyFrom(self.layer_param.transform_param)
        legacy = getattr(self.layer_param, self.legacy_param)
        for field in self.legacy_fields:
            if legacy.HasField(field) and not param.HasField(field):
                setattr(param, field, getattr(legacy, field))
        return param

    def start_prefetch(self, load, count, source, close=None):
        """Run `load` on a prefetch thread holding `count` batches (replacing any earlier
        one); `close` runs on that thread when it stops."""
        self.close()
        self._prefetcher = Prefetcher(load, count, "%s layer %r reading %s"
                                      % (self.type, self.name, source), close=close)
        self._finalizer = weakref.finalize(self, self._prefetcher.stop)

    def reshape(self, bottom, top):
        """Tops take each batch's shape in forward."""

    def forward(self, bottom, top):
        if self._prefetcher is None:
            raise RuntimeError("%s layer %r is closed" % (self.type, self.name))
        images, labels = self._prefetcher.get()
        top[0].reshape(images.shape)
        top[0].data[...] = self.backend.asarray(images)
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].data[...] = self.backend.asarray(labels)

    def close(self):
        """Stop the prefetch thread (and release what it held)."""
        if self._prefetcher is not None:
            self._finalizer()
            self._prefetcher = None
