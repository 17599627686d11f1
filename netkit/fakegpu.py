"""A stand-in for CuPy that runs on numpy but keeps CuPy's rules.

`DeviceArray` is an ndarray subclass that refuses to meet a plain host ndarray in any ufunc
or numpy function, as a CuPy array does, so a layer that silently falls back to the host
fails here in CI instead of on a user's GPU. `module` exposes only names that CuPy's
top-level namespace has, so code written against it also runs on CuPy.
"""
import types

import numpy as np

# Names from CuPy's top-level namespace that netkit code may use. A name missing here but
# present in CuPy may be added; one absent from CuPy must never be.
CUPY_NAMES = frozenset("""
ndarray dtype float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64
bool_ newaxis pi inf nan e
array asarray ascontiguousarray empty empty_like zeros zeros_like ones ones_like full
full_like arange linspace eye identity copy
reshape ravel transpose swapaxes moveaxis expand_dims squeeze broadcast_to concatenate stack
split array_split tile repeat flip pad take take_along_axis put_along_axis where nonzero
abs absolute sign sqrt square exp expm1 log log1p log2 log10 power tanh sinh cosh sin cos
maximum minimum fmax fmin clip floor ceil rint round around add subtract multiply divide
true_divide negative reciprocal
sum prod mean var std max min amax amin argmax argmin argsort sort cumsum dot tensordot
matmul einsum outer inner isnan isinf isfinite all any logical_and logical_or logical_not
equal not_equal greater greater_equal less less_equal unique count_nonzero allclose
bincount searchsorted result_type can_cast
random lib asnumpy
""".split())

# The ufuncs whose unbuffered in-place `.at` CuPy implements.
UFUNC_AT = {"add", "subtract", "maximum", "minimum"}

_HOST_OK = (int, float, bool, complex, np.generic, type(None), str, slice, type(Ellipsis))


class DeviceArray(np.ndarray):
    """numpy storage with CuPy's refusal to mix with host arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(ufunc.__name__, inputs + tuple(kwargs.get("out", ()) or ()))
        if any(isinstance(x, (list, tuple)) for x in inputs):
            raise TypeError("%s: unsupported type list/tuple mixed with a device array"
                            % ufunc.__name__)
        args = [_host_view(x) for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_host_view(x) for x in kwargs["out"])
        out = getattr(ufunc, method)(*args, **kwargs)
        return _device(out)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(func.__name__, _flatten(args) + _flatten(tuple(kwargs.values())))
        out = func(*_unwrap(args), **_unwrap(kwargs))
        return _device(out)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
            raise TypeError("cannot assign a host numpy.ndarray into a device array "
                            "(use backend.asarray first)")
        np.ndarray.__setitem__(self.view(np.ndarray), _unwrap(key), _host_view(value))

    def __getitem__(self, key):
        if isinstance(key, np.ndarray) and not isinstance(key, DeviceArray) and key.dtype == bool:
            raise TypeError("cannot index a device array with a host boolean mask")
        return _device(np.ndarray.__getitem__(self.view(np.ndarray), _unwrap(key)))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("implicit conversion of a device array to numpy is not allowed; "
                        "use backend.asnumpy() explicitly")

    def __iter__(self):
        raise TypeError("iterating a device array would copy it element by element to the host")

    def tolist(self):
        raise TypeError("tolist() would copy a device array to the host; use backend.asnumpy()")

    def dot(self, other, out=None):
        _refuse_host("dot", (other, out))
        return _device(np.dot(self.view(np.ndarray), _unwrap(other)))

    # CuPy keeps these results on the device (0-d or index arrays), numpy returns host ones.
    def argmax(self, *args, **kwargs):
        return _device(np.ndarray.argmax(self.view(np.ndarray), *args, **kwargs))

    def argmin(self, *args, **kwargs):
        return _device(np.ndarray.argmin(self.view(np.ndarray), *args, **kwargs))

    def nonzero(self):
        return _device(np.ndarray.nonzero(self.view(np.ndarray)))

    def get(self):
        return np.array(self.view(np.ndarray), copy=True)


def _flatten(items):
    flat = []
    for x in items:
        if isinstance(x, (list, tuple)):
            flat.extend(_flatten(x))
        else:
            flat.append(x)
    return tuple(flat)


def _refuse_host(name, operands):
    for x in operands:
        if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
            raise TypeError("%s: unsupported type numpy.ndarray mixed with a device array "
                            "(a host array inside a GPU pass)" % name)


def _host_view(x):
    return x.view(np.ndarray) if isinstance(x, DeviceArray) else x


def _unwrap(x):
    if isinstance(x, DeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _device(out):
    """Results computed on the device stay there; CuPy returns 0-d arrays, not scalars."""
    if isinstance(out, np.ndarray):
        return out.view(DeviceArray)
    if isinstance(out, np.generic):
        return np.asarray(out).view(DeviceArray)
    if isinstance(out, tuple):
        return tuple(_device(v) for v in out)
    if isinstance(out, list):
        return [_device(v) for v in out]
    return out


def _wrap_function(fn):
    is_ufunc = isinstance(fn, np.ufunc)

    def call(*args, **kwargs):
        if is_ufunc and any(isinstance(x, (list, tuple)) for x in args):
            raise TypeError("%s: unsupported type list/tuple (CuPy ufuncs take arrays and "
                            "scalars only)" % fn.__name__)
        _refuse_host(fn.__name__, _flatten(args) + _flatten(tuple(kwargs.values())))
        return _device(fn(*_unwrap(args), **_unwrap(kwargs)))
    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    if fn.__name__ in UFUNC_AT:
        def at(a, indices, b=None):
            _refuse_host(fn.__name__ + ".at", _flatten((a, indices, b)))
            fn.at(_host_view(a), _unwrap(indices), _unwrap(b))
        call.at = at
    return call


class _RandomState:
    """cupy.random.RandomState's common draws, producing device arrays."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(seed)

    def __getattr__(self, name):
        if name not in ("rand", "randn", "random_sample", "uniform", "normal", "randint",
                        "permutation", "shuffle", "seed", "choice"):
            raise AttributeError("fakegpu random has no %r" % name)
        return _wrap_function(getattr(self._rs, name))


def _asarray(a, dtype=None):
    if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
        # cupy.asarray copies host data to the device: allowed, but explicit in netkit code.
        raise TypeError("xp.asarray() got a host numpy array; use backend.asarray() "
                        "for host -> device copies")
    return _device(np.asarray(_unwrap(a), dtype=dtype))


def _array(a, dtype=None, copy=True):
    if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
        raise TypeError("xp.array() got a host numpy array; use backend.asarray() "
                        "for host -> device copies")
    return _device(np.array(_unwrap(a), dtype=dtype, copy=copy))


def _build_module():
    mod = types.ModuleType("netkit.fakegpu.module", "numpy behind CuPy's rules")
    for name in CUPY_NAMES:
        if name in ("random", "lib", "array", "asarray", "asnumpy") or not hasattr(np, name):
            continue
        obj = getattr(np, name)
        if callable(obj) and not isinstance(obj, type):
            obj = _wrap_function(obj)
        setattr(mod, name, obj)
    mod.ndarray = DeviceArray
    mod.array = _array
    mod.asarray = _asarray
    mod.ascontiguousarray = _wrap_function(np.ascontiguousarray)
    mod.random = types.SimpleNamespace(RandomState=_RandomState)
    mod.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        as_strided=_wrap_function(np.lib.stride_tricks.as_strided)))
    mod.asnumpy = lambda a: np.array(_unwrap(a), copy=True)
    return mod


module = _build_module()
