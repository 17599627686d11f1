"""Scratch arrays that a layer keeps from one iteration to the next.

Allocating and zeroing big arrays on every pass costs as much as the arithmetic on LeNet-sized
nets, so layers ask a Workspace for their im2col columns, padded images and masks instead.
An array is made once per name and reused while its trailing shape stays the same; a smaller
leading dimension (the last, partial chunk of a batch) gets a prefix view of the same memory,
so a pattern written once at allocation (zero borders, a row of ones) survives.
"""


class Workspace:
    def __init__(self, xp):
        self.xp = xp
        self._arrays = {}

    def get(self, name, shape, dtype="float32", init=None):
        """An array of `shape`; new arrays are filled with `init` (left uninitialised if None).

        The content of a reused array is whatever the caller left in it.
        """
        shape = tuple(int(d) for d in shape)
        held = self._arrays.get(name)
        if (held is None or held.shape[1:] != shape[1:] or held.shape[0] < shape[0]
                or held.dtype != self.xp.dtype(dtype)):
            if init is None:
                held = self.xp.empty(shape, dtype=dtype)
            else:
                held = self.xp.full(shape, init, dtype=dtype)
            self._arrays[name] = held
        return held[:shape[0]] if held.shape[0] != shape[0] else held

    def clear(self):
        self._arrays.clear()
