"""Layer: the base class of every layer, pycaffe's interface and Caffe's vocabulary.

Lifecycle: `setup(bottom, top)` once, `reshape(bottom, top)` before every forward,
`forward(bottom, top)`, `backward(top, propagate_down, bottom)`. `bottom` and `top` are
lists of Blobs. Contract shared by every layer:

- `forward` writes top data; `backward` *assigns* bottom diffs (only where
  `propagate_down[i]`) and *accumulates* (+=) into `self.blobs[i].diff` (only where
  `self.param_propagate_down[i]`), so the solver's iter_size accumulation works.
- Array code uses `self.xp` only (numpy or CuPy); host data enters through
  `self.backend.asarray`.
- A loss layer's top diff holds its loss weight (set by the Net, as in Caffe), so
  `backward` scales its gradient by `top[0].diff`.
"""
import enum

from . import netkit_pb2 as pb
from .blob import Blob


class Phase(enum.IntEnum):
    """TRAIN (0) or TEST (1), the ints of caffe.proto's Phase, which print by name as
    pycaffe's enum does: str(caffe.TRAIN) == "TRAIN" (py-faster-rcnn's layers index their
    configuration with str(self.phase))."""
    TRAIN = pb.TRAIN
    TEST = pb.TEST

    def __str__(self):
        return self.name


TRAIN = Phase.TRAIN
TEST = Phase.TEST


class LayerSetupError(ValueError):
    """A layer's parameters or bottoms do not make sense; the Net adds the layer name."""


def canonical_axis(axis, num_axes, field):
    """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
    if not -num_axes <= axis < num_axes:
        raise LayerSetupError("%s %d is out of range for a blob with %d axes"
                              % (field, axis, num_axes))
    return axis % num_axes


def axis_or_legacy(param, legacy_field, num_axes, name):
    """The axis of a param with Caffe's deprecated non-negative alternative (Concat's
    concat_dim, Slice's slice_dim), which wins when given."""
    if param.HasField(legacy_field):
        legacy = getattr(param, legacy_field)
        if legacy >= num_axes:
            raise LayerSetupError("%s.%s %d is out of range for a blob with %d axes"
                                  % (name, legacy_field, legacy, num_axes))
        return legacy
    return canonical_axis(param.axis, num_axes, "%s.axis" % name)


class Layer:
    # Arity checks, as Caffe's ExactNumBottomBlobs() etc.; None means unchecked.
    exact_num_bottom = None
    min_bottom = None
    max_bottom = None
    exact_num_top = None
    min_top = None
    max_top = None
    # Loss layers get loss_weight 1 on their first top when the prototxt gives none.
    is_loss = False
    # Data layers have no bottoms and produce host batches.
    is_data = False

    def __init__(self, layer_param, phase=TRAIN, backend=None):
        from .backend import get_backend
        self.layer_param = layer_param
        self.phase = Phase(phase)
        self.backend = get_backend(backend or "cpu")
        self.blobs = []
        self.param_propagate_down = []
        self.param_str = layer_param.python_param.param_str

    @property
    def param_str_(self):
        """param_str under the name py-faster-rcnn's pycaffe gives it."""
        return self.param_str

    @property
    def xp(self):
        return self.backend.xp

    @property
    def name(self):
        return self.layer_param.name

    @property
    def type(self):
        return self.layer_param.type

    # -- lifecycle ---------------------------------------------------------------------
    def setup(self, bottom, top):
        """One-time setup: read parameters, create and fill `self.blobs`."""

    def reshape(self, bottom, top):
        """Shape the tops from the bottoms; called before every forward."""
        raise LayerSetupError("layer class %s does not implement reshape(bottom, top)"
                              % type(self).__name__)

    def forward(self, bottom, top):
        raise LayerSetupError("layer class %s does not implement forward(bottom, top)"
                              % type(self).__name__)

    def backward(self, top, propagate_down, bottom):
        """Default: a layer with no gradient (Caffe's NOT_IMPLEMENTED is an error only if reached)."""
        if any(propagate_down):
            raise LayerSetupError("layer type %s has no backward" % self.type)

    def allow_force_backward(self, bottom_index):
        """False for bottoms that are never differentiable (labels)."""
        return True

    # -- helpers -------------------------------------------------------------------------
    def add_param_blob(self, shape, host_values):
        """Append a parameter blob holding `host_values` (a numpy array) on this backend."""
        blob = Blob(shape, self.backend)
        self.backend.upload(blob.data, host_values.reshape(shape))
        self.blobs.append(blob)
        return blob

    def weight_and_bias(self, weight_shape, bias_shape, weight_filler, bias_filler):
        """Create the weight blob and, if `bias_shape`, the bias blob from their fillers; blobs
        already present (loaded or shared before setup) are kept if their shapes fit."""
        shapes = [tuple(weight_shape)] + ([tuple(bias_shape)] if bias_shape else [])
        if self.blobs:
            if [b.shape for b in self.blobs] != shapes:
                raise LayerSetupError("%s expects parameter shapes %s, has %s"
                                      % (self.type, shapes, [b.shape for b in self.blobs]))
        else:
            from .fillers import fill
            self.add_param_blob(weight_shape, fill(weight_filler, weight_shape))
            if bias_shape:
                self.add_param_blob(bias_shape, fill(bias_filler, bias_shape))
        if not self.param_propagate_down:
            self.param_propagate_down = [True] * len(self.blobs)

    def check_arity(self, bottom, top):
        def check(what, n, exact, lo, hi):
            if exact is not None and n != exact:
                raise LayerSetupError("%s layer takes exactly %d %s blob(s), got %d"
                                      % (self.type, exact, what, n))
            if lo is not None and n < lo:
                raise LayerSetupError("%s layer takes at least %d %s blob(s), got %d"
                                      % (self.type, lo, what, n))
            if hi is not None and n > hi:
                raise LayerSetupError("%s layer takes at most %d %s blob(s), got %d"
                                      % (self.type, hi, what, n))
        check("bottom", len(bottom), self.exact_num_bottom, self.min_bottom, self.max_bottom)
        check("top", len(top), self.exact_num_top, self.min_top, self.max_top)
