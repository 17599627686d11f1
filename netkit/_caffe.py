"""Names of pycaffe's compiled module `caffe._caffe` that scripts use directly.

Batch-norm folding and weight-dump scripts test `type(net.params[name]) is
caffe._caffe.BlobVec`: netkit's net.params values are lists, so BlobVec is list. The
multi-process queries are pycaffe's too (`python/train.py`): netkit runs one process per
GPU or MPI rank, and these report that process's place.
"""
import time
import warnings

from . import Blob, Layer, Net, get_solver, layer_type_list, set_device, set_mode_cpu
from . import set_mode_gpu, set_random_seed
from .parallel import solver_count, solver_rank

BlobVec = list


def has_nccl():
    """Whether CuPy's NCCL bindings and library load here (netkit's multi-GPU all-reduce
    uses them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CuPy warns when libnccl is missing
        try:
            from cupy.cuda import nccl
        except Exception:
            return False
    return bool(getattr(nccl, "available", False))


def set_multiprocess(multiprocess):
    """Accepted for pycaffe's scripts; netkit's data-parallel ranks are always separate
    processes, each reading its own share of the data."""


class Timer:
    """pycaffe's Timer: start(), stop(), and ms, the milliseconds between them."""

    def __init__(self):
        self._start = self._stop = None

    def start(self):
        self._start, self._stop = time.perf_counter(), None

    def stop(self):
        self._stop = time.perf_counter()

    @property
    def ms(self):
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return (end - self._start) * 1e3


__all__ = ["Blob", "BlobVec", "Layer", "Net", "Timer", "get_solver", "has_nccl",
           "layer_type_list", "set_device", "set_mode_cpu", "set_mode_gpu", "set_multiprocess",
           "set_random_seed", "solver_count", "solver_rank"]
