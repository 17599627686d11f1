"""Blob: a named N-d array with its gradient, as in Caffe (data + diff on one backend)."""
import numpy as np

from .backend import get_backend


class Blob:
    """`data` and `diff` arrays of one shape on one backend.

    `reshape` keeps the arrays when the shape is unchanged and reallocates otherwise;
    `share_data`/`share_diff` alias another blob's arrays (in-place layers, shared params).
    """

    def __init__(self, shape=(), backend=None, dtype=np.float32):
        self.backend = get_backend(backend or "cpu")
        self.dtype = dtype
        self._shape = None
        self.data = None
        self.diff = None
        self.reshape(shape)

    @property
    def xp(self):
        return self.backend.xp

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def num_axes(self):
        return len(self._shape)

    # pycaffe's legacy 4-D accessors (Caffe's LegacyShape: missing axes count as 1).
    def _legacy(self, index):
        if len(self._shape) > 4:
            raise ValueError("num/channels/height/width need a blob of at most 4 axes, "
                             "got %s" % (self._shape,))
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError("negative blob dimension in shape %s" % (shape,))
        if shape == self._shape:
            return
        self._shape = shape
        self.data = self.xp.zeros(shape, dtype=self.dtype)
        self.diff = self.xp.zeros(shape, dtype=self.dtype)

    def reshape_like(self, other):
        self.reshape(other.shape)

    def share_data(self, other):
        """Alias `other`'s data (and take its shape; our diff is resized to match)."""
        self._shape = other.shape
        self.data = other.data
        if self.diff is None or self.diff.shape != other.shape:
            self.diff = self.xp.zeros(other.shape, dtype=self.dtype)

    def share_diff(self, other):
        """Alias `other`'s diff (and take its shape; our data is resized to match)."""
        self._shape = other.shape
        self.diff = other.diff
        if self.data is None or self.data.shape != other.shape:
            self.data = self.xp.zeros(other.shape, dtype=self.dtype)

    def update(self):
        """data -= diff (the learning rate is already folded into diff by the solver)."""
        self.data -= self.diff

    def shape_string(self):
        return " ".join(str(d) for d in self._shape) + " (%d)" % self.count

    def __repr__(self):
        return "Blob(%s)" % (self._shape,)
