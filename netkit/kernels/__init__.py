"""Hand-written CUDA kernels for the `gpu` backend, each the twin of an xp implementation.

One module per family (im2col, pooling, lrn, softmax_loss, solvers). Each defines a
`Program`: CUDA C source as a Python string and the names of its `extern "C"` kernels.
Creating a Program registers it in PROGRAMS, which the NVRTC test walks, so a kernel cannot
escape the compile check. Sources are compiled by CuPy (RawModule) the first time a kernel
is launched on a real GPU; importing this package never imports CuPy or touches a device.

The xp code the layers and solvers already have (numpy on cpu, CuPy's array functions on
gpu, netkit.fakegpu in CI) is the reference: a layer calls a kernel only when
`available(self.backend)` says it runs on a real GPU, and the `-m gpu` tests compare each
kernel there with its twin on the cpu.

Conventions shared by every source: float32 data, `long long` (int64) indices and sizes so
that blobs past 2**31 elements work, one thread per output element in a grid-stride loop
(NK_KERNEL_LOOP), and no atomics: every output is written by exactly one thread.
"""
import importlib
import pkgutil

import numpy as np

# Compiler options on the device and in the NVRTC check (CuPy adds -arch for the device).
# No fused multiply-add contraction: each + and * rounds to float32 as numpy's do, so a
# kernel and its twin agree to the bit where they take the same steps in the same order.
OPTIONS = ("--fmad=false",)

THREADS = 256
# Blocks per launch at most; the grid-stride loop covers the rest.
MAX_BLOCKS = 65535

PRELUDE = r"""
#define NK_KERNEL_LOOP(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)
#define NK_FLT_MIN 1.175494350822287507969e-38f
#define NK_FLT_MAX 3.402823466385288598117e+38f
__device__ __forceinline__ long long nk_min(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long nk_max(long long a, long long b) { return a > b ? a : b; }
"""

PROGRAMS = {}


class Program:
    """A CUDA source with its kernels, compiled once per process on first launch."""

    def __init__(self, name, source, kernels):
        if name in PROGRAMS:
            raise ValueError("kernel program %r is defined twice" % name)
        self.name = name
        self.source = PRELUDE + source
        self.kernels = tuple(kernels)
        self._module = None
        PROGRAMS[name] = self

    def function(self, kernel):
        if kernel not in self.kernels:
            raise KeyError("program %r has no kernel %r (has: %s)"
                           % (self.name, kernel, ", ".join(self.kernels)))
        if self._module is None:
            import cupy
            self._module = cupy.RawModule(code=self.source, options=OPTIONS)
        return self._module.get_function(kernel)

    def launch(self, kernel, count, *args):
        """Run `kernel` over `count` output elements; args are device arrays and numpy
        scalars of exactly the kernel's C types (np.int64 for long long, np.float32)."""
        if count <= 0:
            return
        blocks = min(MAX_BLOCKS, (int(count) + THREADS - 1) // THREADS)
        self.function(kernel)((blocks,), (THREADS,), (np.int64(count),) + args)


def available(backend):
    """True when `backend` computes on a real CUDA device (CuPy): the kernels here apply.
    cpu and fakegpu run the xp twins instead."""
    return backend.name == "gpu"


def check_array(name, arr, shape=None, dtype=np.float32):
    """Raise unless `arr` is a C-contiguous array of `dtype` (and `shape` if given): the
    kernels index flat memory."""
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        raise ValueError("%s must be a C-contiguous %s array for the CUDA kernel, got %s%s"
                         % (name, np.dtype(dtype).name, arr.dtype,
                            "" if arr.flags.c_contiguous else " (not contiguous)"))
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError("%s must have shape %s for the CUDA kernel, got %s"
                         % (name, tuple(shape), tuple(arr.shape)))


def block_stride(name, arr):
    """Elements between consecutive blocks arr[b] of `arr`, whose blocks must each be
    C-contiguous float32 (the leading axis may stride over a larger buffer)."""
    if arr.shape[0] == 0:
        return np.int64(0)
    check_array(name + "[0]", arr[0])
    return np.int64(arr.strides[0] // arr.itemsize if arr.shape[0] > 1 else arr[0].size)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module("%s.%s" % (__name__, _module.name))
