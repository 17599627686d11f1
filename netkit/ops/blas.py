"""out += a . b in one GEMM, as Caffe accumulates weight gradients (caffe_cpu_gemm, beta 1).

numpy's matmul cannot add into its output: `out += a @ b` writes a product the size of out
and reads it back, three passes over memory where BLAS needs one read-modify-write. For a
fully connected layer's (num_output, K) weight diff that is most of the backward pass. On
the host, numpy's own OpenBLAS is called with beta = 1 through ctypes when numpy ships
one (its Linux and Windows wheels do); any other array module or BLAS adds blocks of the
product through a small scratch buffer instead.
"""
import ctypes
import glob
import os

import numpy as np

# Elements of the scratch product added into `out` at a time (4 MiB of float32).
BLOCK = 1 << 20

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _find_sgemm():
    """numpy's bundled ILP64 cblas_sgemm (numpy.libs/libscipy_openblas64_*), or None."""
    root = os.path.dirname(np.__file__)
    for lib_path in sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*")) +
                           glob.glob(os.path.join(root, ".libs", "*openblas*"))):
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError:
            continue
        for symbol in ("scipy_cblas_sgemm64_", "cblas_sgemm64_"):
            sgemm = getattr(lib, symbol, None)
            if sgemm is not None:
                i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
                sgemm.argtypes = [i64, i64, i64, i64, i64, i64, f32, ptr, i64, ptr, i64,
                                  f32, ptr, i64]
                sgemm.restype = None
                return sgemm
    return None


SGEMM = _find_sgemm()


def _operand(m):
    """(transpose flag, leading dimension) of a 2-D float32 view BLAS can read in place."""
    if m.dtype != np.float32 or m.ndim != 2:
        return None
    s0, s1 = (s // m.itemsize for s in m.strides)
    rows, cols = m.shape
    if s1 == 1 and (s0 >= max(1, cols) or rows == 1):
        return NO_TRANS, max(s0, cols, 1)
    if s0 == 1 and (s1 >= max(1, rows) or cols == 1):
        return TRANS, max(s1, rows, 1)
    return None


def add_product(xp, a, b, out, scratch=None):
    """out += a . b for 2-D a (M, K), b (K, N), out (M, N). `scratch(shape)` supplies the
    block buffer when the product cannot go through BLAS directly (defaults to fresh
    arrays)."""
    if xp is np and SGEMM is not None:
        ta, tb, tc = _operand(a), _operand(b), _operand(out)
        if ta and tb and tc and tc[0] == NO_TRANS and out.flags.writeable:
            m, k = a.shape
            SGEMM(ROW_MAJOR, ta[0], tb[0], m, b.shape[1], k, 1.0, a.ctypes.data, ta[1],
                  b.ctypes.data, tb[1], 1.0, out.ctypes.data, tc[1])
            return
    rows = max(1, BLOCK // max(1, b.shape[1]))
    shape = (min(rows, a.shape[0]), b.shape[1])
    buffer = scratch(shape) if scratch else xp.empty(shape, dtype=out.dtype)
    for start in range(0, a.shape[0], rows):
        stop = min(start + rows, a.shape[0])
        block = buffer[:stop - start]
        xp.matmul(a[start:stop], b, out=block)
        out[start:stop] += block
