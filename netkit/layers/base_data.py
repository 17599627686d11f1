"""What Caffe's prefetching data layers share (its BasePrefetchingDataLayer): a thread that
keeps batches ready on the host, forward copying the next one to the backend, and the
transform fields old nets kept in the layer's own parameter message."""
import weakref

from .. import netkit_pb2 as pb
from ..data.prefetch import Prefetcher
from ..layer import Layer


class PrefetchingDataLayer(Layer):
    """Subclasses build a `load()` returning (images, labels) in setup and pass it to
    `start_prefetch`; top 0 gets the images, top 1 (if any) the labels.

    A subclass whose stream can be moved forward cheaply implements `open_stream` and calls
    `start_stream` instead: then `skip_batches` (a resumed run skipping what the snapshotted
    run consumed) restarts the stream further on without loading the skipped batches.
    """
    exact_num_bottom = 0
    is_data = True
    # The layer's own *_param message and the transform fields it may still carry from
    # before TransformationParameter; they apply where transform_param does not set them.
    legacy_param = None
    legacy_fields = ("scale", "mean_file", "crop_size", "mirror")

    _prefetcher = None
    _position = 0  # batches handed out by forward or skipped since the stream started

    def open_stream(self, position):
        """(load, close) for the stream from its start at setup, moved `position` batches
        forward: `load` makes the batches after those, on the prefetch thread, which also
        runs `close` at the end. Subclasses that can skip cheaply implement it."""
        raise NotImplementedError

    def start_stream(self, count, source):
        """Start prefetching `count` batches of `open_stream(0)` read from `source`."""
        self._stream = (count, source)
        self._position = 0
        load, close = self.open_stream(0)
        self.start_prefetch(load, count, source, close=close)

    def skip_batches(self, n):
        """Move the stream `n` batches forward without producing them: the next forward
        gives what the forward after `n` more would have. Layers without `open_stream` load
        and drop the batches (cheaper than forward only by the copy to the backend)."""
        if n <= 0:
            return
        if type(self).open_stream is PrefetchingDataLayer.open_stream:
            for _ in range(n):
                self._next_batch()
            return
        self.close()
        self._position += n
        load, close = self.open_stream(self._position)
        count, source = self._stream
        self.start_prefetch(load, count, source, close=close)

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

    def _next_batch(self):
        if self._prefetcher is None:
            raise RuntimeError("%s layer %r is closed" % (self.type, self.name))
        batch = self._prefetcher.get()
        self._position += 1
        return batch

    def forward(self, bottom, top):
        images, labels = self._next_batch()
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
