"""Input and DummyData: tops with a given shape, set by the user or filled by a filler."""
from .. import netkit_pb2 as pb
from ..fillers import fill, fillers as filler_types
from ..layer import Layer, LayerSetupError
from ..registry import layers


def _reshape(blob, shape, field):
    try:
        blob.reshape(tuple(shape))
    except ValueError as e:
        raise LayerSetupError("%s: %s" % (field, e)) from None


@layers.register("Input")
class InputLayer(Layer):
    """Tops shaped by input_param.shape (one for all tops, or one per top); the user or the
    net writes their data, so forward does nothing."""
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise LayerSetupError("input_param.shape must be given once, once per top (%d) "
                                  "or not at all; got %d" % (len(top), len(shapes)))
        for i, blob in enumerate(top):
            if shapes:
                _reshape(blob, shapes[0 if len(shapes) == 1 else i].dim, "input_param.shape")

    def reshape(self, bottom, top):
        """Tops keep the shape they were given."""

    def forward(self, bottom, top):
        """The tops' data is set from outside."""


@layers.register("DummyData")
class DummyDataLayer(Layer):
    """Tops filled by dummy_data_param.data_filler (none: constant 0; one for all tops, or
    one per top), shaped by `shape` or the legacy num/channels/height/width.

    Caffe's refill rule: tops with a constant filler are filled once at setup; tops with any
    other filler are filled afresh on every forward (and not at setup).
    """
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        if len(p.data_filler) not in (0, 1, n):
            raise LayerSetupError("dummy_data_param.data_filler must be given 0, 1 or %d "
                                  "(one per top) times; got %d" % (n, len(p.data_filler)))
        legacy = {f: getattr(p, f) for f in ("num", "channels", "height", "width")}
        if any(len(v) for v in legacy.values()):
            if len(p.shape):
                raise LayerSetupError("dummy_data_param sets both shape and the legacy "
                                      "num/channels/height/width")
            for field, values in legacy.items():
                if len(values) not in (1, n):
                    raise LayerSetupError("dummy_data_param.%s must be given once or once per "
                                          "top (%d); got %d" % (field, n, len(values)))
            shapes = [[v[0 if len(v) == 1 else i] for v in legacy.values()] for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise LayerSetupError("dummy_data_param.shape must be given once or once per "
                                      "top (%d); got %d" % (n, len(p.shape)))
            shapes = [p.shape[0 if len(p.shape) == 1 else i].dim for i in range(n)]
        if len(p.data_filler) == 0:
            fillers = [pb.FillerParameter(type="constant", value=0)] * n
        elif len(p.data_filler) == 1:
            fillers = [p.data_filler[0]] * n
        else:
            fillers = list(p.data_filler)
        for f in fillers:
            if f.type not in filler_types:
                raise LayerSetupError("dummy_data_param.data_filler type %r is unknown "
                                      "(known: %s)" % (f.type, ", ".join(filler_types.names())))
        self._fillers = fillers
        self._refill = [f.type != "constant" for f in fillers]
        for blob, shape, filler, refill in zip(top, shapes, fillers, self._refill):
            _reshape(blob, shape, "dummy_data_param shape")
            if not refill:
                self._fill(blob, filler)

    def _fill(self, blob, filler):
        blob.data[...] = self.backend.asarray(fill(filler, blob.shape), dtype=blob.dtype)

    def reshape(self, bottom, top):
        """Tops keep the shape set at setup."""

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self._fillers, self._refill):
            if refill:
                self._fill(blob, filler)
