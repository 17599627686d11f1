"""ops.blas.add_product: out += a . b, through numpy's OpenBLAS (beta = 1) or in blocks."""
import numpy as np
import pytest

from netkit.ops import blas


def _views(rng, m, k, n):
    """(a, b) pairs in every storage order BLAS reads in place, plus strided slices."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    wide_a = rng.standard_normal((m, k + 3), dtype=np.float32)[:, 1:k + 1]
    yield a, b
    yield np.ascontiguousarray(a.T).T, b
    yield a, np.ascontiguousarray(b.T).T
    yield wide_a, b
    yield a[:, ::-1], b                                  # negative stride: blocks
    yield np.asfortranarray(a), b[::1, :]


@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 9, 4), (4, 9, 1), (300, 17, 5000)])
def test_add_product_matches_numpy(shape):
    rng = np.random.default_rng(0)
    for a, b in _views(rng, *shape):
        out = rng.standard_normal((shape[0], shape[2]), dtype=np.float32)
        expect = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
        blas.add_product(np, a, b, out)
        np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)


def test_blocks_cover_every_row(monkeypatch):
    """The fallback path (any array module without a ctypes BLAS) adds every block once."""
    monkeypatch.setattr(blas, "SGEMM", None)
    monkeypatch.setattr(blas, "BLOCK", 40)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((23, 6), dtype=np.float32)
    b = rng.standard_normal((6, 9), dtype=np.float32)
    out = np.ones((23, 9), np.float32)
    blas.add_product(np, a, b, out, scratch=lambda shape: np.empty(shape, np.float32))
    np.testing.assert_allclose(out, 1 + a @ b, rtol=1e-5, atol=1e-5)


def test_numpy_wheel_blas_is_found():
    """numpy's Linux wheels bundle OpenBLAS: the fast path must not silently go missing."""
    if not blas.glob.glob(blas.os.path.join(blas.os.path.dirname(np.__file__), "..",
                                            "numpy.libs", "*openblas*")):
        pytest.skip("this numpy ships no bundled OpenBLAS (not a PyPI wheel)")
    assert blas.SGEMM is not None
