"""Backends: where a Net's arrays live and which array module (`xp`) computes on them.

A Backend is an object, never a process-global mode. Layers and solvers are written once
against `backend.xp`; host contact goes through `asarray` (host -> device) and `asnumpy`
(device -> host) and nowhere else.

- ``cpu``: numpy.
- ``gpu``: CuPy on one CUDA device.
- ``fakegpu``: numpy behind an array type that, like CuPy, refuses to mix with host arrays,
  and a module that exposes only names CuPy has. It keeps the GPU path honest without a GPU.
"""
import numpy as np


class BackendError(RuntimeError):
    """A backend cannot be used here (no CuPy, no driver, no such device)."""


def gpu_fallback_note(reason):
    """The warning for a solver file whose `solver_mode: GPU` cannot be honoured here."""
    return ("solver_mode is GPU, but no GPU can be used here (%s); training on the CPU "
            "(set solver_mode: CPU or pass --gpu -1 to silence this)" % reason)


class Backend:
    name = "cpu"
    device_id = None

    def __init__(self):
        self.xp = np

    def asarray(self, host, dtype=None):
        """Host array -> a new array on this backend."""
        return np.array(host, dtype=dtype, copy=True)

    def upload(self, dst, host):
        """Copy host array values into the existing array `dst` on this backend, with no
        temporary of dst's size (weights loading moves hundreds of MB this way)."""
        np.copyto(dst, host, casting="same_kind")

    def asnumpy(self, arr):
        """Array on this backend -> a new host numpy array (never an alias, on any backend)."""
        return np.array(arr, copy=True)

    def synchronize(self):
        pass

    @property
    def random(self):
        """The backend's RandomState (Dropout masks), seeded from netkit's random stream."""
        if getattr(self, "_rng", None) is None:
            from .rng import device_rng
            self._rng = device_rng(self)
        return self._rng

    def reseed(self, seed=None):
        """Restart the device stream: from `seed` if given, else from netkit's host stream
        at the next draw."""
        self._rng = None if seed is None else self.xp.random.RandomState(int(seed) & 0x7FFFFFFF)

    def __repr__(self):
        return "Backend(%s)" % self.name


class CPUBackend(Backend):
    name = "cpu"


class GPUBackend(Backend):
    """CuPy on one device. Construction fails with a one-line reason if that is impossible."""
    name = "gpu"

    def __init__(self, device_id=0):
        try:
            import cupy
        except ImportError:
            raise BackendError("GPU requested but CuPy is not installed "
                               "(pip install 'netkit[gpu]')") from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError without a driver
            raise BackendError("GPU requested but CUDA is not usable: %s" % _first_line(e)) from None
        if not 0 <= device_id < count:
            raise BackendError("GPU %d requested but only %d CUDA device(s) found" % (device_id, count))
        self.xp = cupy
        self.device_id = device_id
        self.device = cupy.cuda.Device(device_id)
        self.device.use()

    def asarray(self, host, dtype=None):
        return self.xp.array(host, dtype=dtype)

    def upload(self, dst, host):
        host = np.ascontiguousarray(host, dtype=dst.dtype).reshape(dst.shape)
        if dst.flags.c_contiguous:
            dst.set(host)
        else:
            dst[...] = self.xp.asarray(host)

    def asnumpy(self, arr):
        return self.xp.asnumpy(arr)

    def synchronize(self):
        self.device.synchronize()


def _first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class FakeGPUBackend(Backend):
    name = "fakegpu"

    def __init__(self, device_id=0):
        from . import fakegpu
        self.xp = fakegpu.module
        self.device_id = device_id

    def asarray(self, host, dtype=None):
        from . import fakegpu
        if isinstance(host, fakegpu.DeviceArray):
            raise TypeError("asarray() expects a host array, got a device array")
        return np.array(host, dtype=dtype, copy=True).view(fakegpu.DeviceArray)

    def upload(self, dst, host):
        from . import fakegpu
        if isinstance(host, fakegpu.DeviceArray):
            raise TypeError("upload() expects a host array, got a device array")
        np.copyto(dst.view(np.ndarray), host, casting="same_kind")

    def asnumpy(self, arr):
        from . import fakegpu
        if not isinstance(arr, fakegpu.DeviceArray):
            raise TypeError("asnumpy() expects a device array, got %s" % type(arr).__name__)
        return np.array(arr.view(np.ndarray), copy=True)


# pycaffe's process-wide mode: only the default for objects created without a backend.
_default = {"name": "cpu", "device_id": 0}


def set_mode_cpu():
    """Nets and solvers created afterwards without a backend run on the CPU (pycaffe)."""
    _default["name"] = "cpu"


def set_mode_gpu():
    """Nets and solvers created afterwards without a backend run on the GPU (pycaffe)."""
    _default["name"] = "gpu"


def set_device(device_id):
    _default["device_id"] = int(device_id)


def get_backend(name=None, device_id=None):
    """Backend by name: 'cpu', 'gpu' (CuPy) or 'fakegpu'; None means pycaffe's mode."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = _default["name"]
        device_id = _default["device_id"] if device_id is None else device_id
    device_id = 0 if device_id is None else device_id
    if name == "cpu":
        return CPUBackend()
    if name == "gpu":
        return GPUBackend(device_id)
    if name == "fakegpu":
        return FakeGPUBackend(device_id)
    raise ValueError("unknown backend %r (known: cpu, gpu, fakegpu)" % (name,))
