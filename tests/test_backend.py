"""Backends: the fakegpu stand-in keeps CuPy's rules, and every backend computes the same.

fakegpu exists so that a layer which slips a host numpy array into a GPU pass fails in CI
instead of on a user's GPU. These tests hold it to that: device arrays refuse host arrays in
ufuncs, numpy functions, assignment, iteration and implicit conversion, and its `xp` module
offers nothing CuPy lacks. Where CuPy is installed, the names are checked against it.
"""
import sys
import types

import numpy as np
import pytest

from netkit import TRAIN, Net
from netkit import backend as backend_module
from netkit.backend import (Backend, BackendError, CPUBackend, FakeGPUBackend, get_backend,
                            set_mode_cpu, set_mode_gpu)
from netkit.fakegpu import CUPY_NAMES, DeviceArray, module as fxp


@pytest.fixture
def fake():
    return get_backend("fakegpu")


@pytest.fixture
def dev(fake):
    return fake.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))


HOST = np.ones((3, 4), np.float32)


# -- refusing host arrays ------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda d, h: d + h,
    lambda d, h: h + d,
    lambda d, h: d * h,
    lambda d, h: d @ h.T,
    lambda d, h: d == h,
    lambda d, h: np.add(d, h),
    lambda d, h: np.maximum(h, d),
    lambda d, h: np.add(d, d, out=h),
    lambda d, h: np.exp(d, out=h),
    lambda d, h: d.sum(axis=0, out=h[0]),
    lambda d, h: np.add.reduce(h, out=d[0]),
    lambda d, h: np.add.at(d, [0], h[0, :1]),
    lambda d, h: d * np.array(2.0, np.float32),  # a 0-d host array is still a host array
], ids=["add", "radd", "mul", "matmul", "equal", "np.add", "np.maximum", "out=host",
        "unary out=host", "method out=host", "reduce into device", "ufunc.at", "0-d host"])
def test_ufuncs_refuse_host_arrays(dev, op):
    with pytest.raises(TypeError, match="numpy.ndarray mixed with a device array"):
        op(dev, HOST.copy())


def test_in_place_ufuncs_refuse_host_arrays(dev):
    h = HOST.copy()
    with pytest.raises(TypeError):
        dev += h
    with pytest.raises(TypeError):
        h += dev
    np.testing.assert_array_equal(h, HOST)


@pytest.mark.parametrize("op", [
    lambda d, h: np.concatenate([d, h]),
    lambda d, h: np.stack((h, d)),
    lambda d, h: np.dot(d, h.T),
    lambda d, h: np.where(d > 0, d, h),
    lambda d, h: np.copyto(h, d),
    lambda d, h: np.copyto(d, h),
    lambda d, h: np.einsum("ij,ij->i", d, h),
    lambda d, h: d.clip(0, h),
], ids=["concatenate", "stack", "dot", "where", "copyto host", "copyto device", "einsum",
        "clip"])
def test_numpy_functions_refuse_host_arrays(dev, op):
    with pytest.raises(TypeError, match="mixed with a device array"):
        op(dev, HOST.copy())


@pytest.mark.parametrize("op", [
    lambda h, d: fxp.concatenate([d, h]),
    lambda h, d: fxp.matmul(d, h.T),
    lambda h, d: fxp.matmul(d, d.T, out=np.zeros((3, 3), np.float32)),
    lambda h, d: fxp.maximum(h, 0),
    lambda h, d: fxp.sum(h),
    lambda h, d: fxp.zeros_like(h),
    lambda h, d: fxp.ascontiguousarray(h),
    lambda h, d: fxp.asarray(h),
    lambda h, d: fxp.array(h),
    lambda h, d: fxp.lib.stride_tricks.as_strided(h, shape=(2,), strides=(4,)),
    lambda h, d: fxp.random.RandomState(0).shuffle(h),
], ids=["concatenate", "matmul", "matmul out=host", "maximum", "sum", "zeros_like",
        "ascontiguousarray", "asarray", "array", "as_strided", "shuffle"])
def test_xp_functions_refuse_host_arrays(dev, op):
    with pytest.raises(TypeError):
        op(HOST.copy(), dev)


def test_setitem_refuses_host_arrays_and_keeps_the_data(dev, fake):
    before = fake.asnumpy(dev)
    with pytest.raises(TypeError, match="host numpy.ndarray into a device array"):
        dev[...] = HOST
    with pytest.raises(TypeError):
        dev[0] = HOST[0]
    np.testing.assert_array_equal(fake.asnumpy(dev), before)
    # Scalars, device arrays and host scalars of numpy types are fine, as in CuPy.
    dev[0] = 5
    dev[1] = np.float32(6)
    dev[2] = fake.asarray(np.full(4, 7, np.float32))
    np.testing.assert_array_equal(fake.asnumpy(dev), [[5] * 4, [6] * 4, [7] * 4])


def test_host_boolean_masks_are_refused(dev, fake):
    with pytest.raises(TypeError, match="boolean mask"):
        dev[HOST > 0]
    mask = fake.asarray(np.array([True, False, True]))
    np.testing.assert_array_equal(fake.asnumpy(dev[mask]), [[0, 1, 2, 3], [8, 9, 10, 11]])


@pytest.mark.parametrize("op", [iter, list, lambda d: [x for x in d], sorted,
                                lambda d: d.tolist(), lambda d: d.__array__()],
                         ids=["iter", "list", "comprehension", "sorted", "tolist", "__array__"])
def test_no_implicit_host_copies(dev, op):
    with pytest.raises(TypeError):
        op(dev)


def test_results_stay_on_the_device(dev):
    for out in (dev + 1, np.exp(dev), dev.sum(), dev.max(axis=0), fxp.sum(dev),
                fxp.argmax(dev), dev[0], dev[1:, ::2], dev.T, dev.reshape(4, 3),
                dev.astype(np.float64), np.concatenate([dev, dev]), fxp.zeros((2,)),
                fxp.asarray([1.0, 2.0]), fxp.random.RandomState(0).rand(3)):
        assert isinstance(out, DeviceArray), type(out)
    # Reductions give 0-d device arrays, as CuPy does, not numpy scalars.
    assert fxp.sum(dev).shape == () and isinstance(dev.max(), DeviceArray)
    # Explicit scalar conversion is allowed, as in CuPy.
    assert float(dev.sum()) == 66.0 and int(dev[2, 3]) == 11


# -- the xp module -------------------------------------------------------------------------

def test_xp_exposes_only_cupy_names():
    exposed = {n for n in dir(fxp) if not n.startswith("_")}
    # asnumpy is cupy.asnumpy: set on the module although CUPY_NAMES does not list it.
    assert exposed - CUPY_NAMES <= {"asnumpy"}
    # (newaxis is the one name whose numpy value is None: see test_xp_has_newaxis.)
    assert {n for n in CUPY_NAMES if getattr(np, n, None) is not None} <= exposed
    assert fxp.ndarray is DeviceArray
    assert set(vars(fxp.lib)) == {"stride_tricks"}
    assert set(vars(fxp.random)) == {"RandomState"}


def test_xp_has_newaxis():
    assert fxp.newaxis is None


@pytest.mark.parametrize("name", ["errstate", "insert", "geomspace", "block", "nditer",
                                  "nanpercentile", "frombuffer", "isclose", "vectorize"])
def test_numpy_names_cupy_lacks_are_absent(name):
    assert hasattr(np, name)
    assert not hasattr(fxp, name)


def test_random_state_offers_only_common_draws():
    rs = fxp.random.RandomState(3)
    draws = rs.uniform(-1, 1, size=(5,))
    np.testing.assert_array_equal(fxp.asnumpy(draws),
                                  np.random.RandomState(3).uniform(-1, 1, size=(5,)))
    with pytest.raises(AttributeError, match="fakegpu random"):
        rs.multivariate_normal


# -- host <-> device copies ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["cpu", "fakegpu"])
def test_asarray_copies_host_data(name):
    be = get_backend(name)
    host = np.arange(6, dtype=np.float64)
    arr = be.asarray(host, dtype=np.float32)
    host[0] = 100
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(be.asnumpy(arr), np.arange(6, dtype=np.float32))
    assert isinstance(arr, be.xp.ndarray)


def test_fakegpu_asnumpy_copies_to_a_plain_host_array(fake, dev):
    host = fake.asnumpy(dev)
    assert type(host) is np.ndarray
    host[0, 0] = 100
    assert float(dev[0, 0]) == 0.0
    assert type(fxp.asnumpy(dev)) is np.ndarray
    np.testing.assert_array_equal(dev.get(), fake.asnumpy(dev))


def test_fakegpu_transfers_check_their_direction(fake, dev):
    with pytest.raises(TypeError, match="expects a host array"):
        fake.asarray(dev)
    with pytest.raises(TypeError, match="expects a device array"):
        fake.asnumpy(HOST)


def test_cpu_asnumpy_is_a_copy_too():
    cpu = get_backend("cpu")
    arr = cpu.asarray(np.zeros(3, np.float32))
    host = cpu.asnumpy(arr)
    host[0] = 1
    assert arr[0] == 0


# -- the same numbers on every backend ------------------------------------------------------

SMALL_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 9 dim: 9 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" }
                              bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def run_small_net(name):
    from netkit.rng import set_random_seed
    set_random_seed(11)
    net = Net(SMALL_NET, TRAIN, backend=name)
    be = net.backend
    rs = np.random.RandomState(5)
    net.blobs["data"].data[...] = be.asarray(rs.standard_normal((4, 2, 9, 9)).astype(np.float32))
    net.blobs["label"].data[...] = be.asarray(np.array([0, 4, 2, 2], np.float32))
    net.clear_param_diffs()
    loss = net.forward_backward()
    blobs = {n: (be.asnumpy(b.data), be.asnumpy(b.diff)) for n, b in net.blobs.items()}
    params = {n: [(be.asnumpy(b.data), be.asnumpy(b.diff)) for b in bs]
              for n, bs in net.params.items()}
    return loss, blobs, params


def test_cpu_and_fakegpu_agree_bit_for_bit():
    cpu, fake = run_small_net("cpu"), run_small_net("fakegpu")
    assert cpu[0] == fake[0] and np.isfinite(cpu[0]) and cpu[0] > 0
    assert cpu[1].keys() == fake[1].keys()
    for name in cpu[1]:
        for a, b in zip(cpu[1][name], fake[1][name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("conv", "ip"):
        for (wa, da), (wb, db) in zip(cpu[2][name], fake[2][name]):
            np.testing.assert_array_equal(wa, wb, err_msg=name)
            np.testing.assert_array_equal(da, db, err_msg=name)
            assert np.abs(da).max() > 0, name  # gradients really flowed


# -- choosing a backend --------------------------------------------------------------------

def test_get_backend_by_name_and_instance():
    assert isinstance(get_backend("cpu"), CPUBackend)
    assert isinstance(get_backend("fakegpu"), FakeGPUBackend)
    fake = get_backend("fakegpu", 2)
    assert fake.device_id == 2 and get_backend(fake) is fake
    with pytest.raises(ValueError, match="known: cpu, gpu, fakegpu"):
        get_backend("tpu")


def test_mode_functions_set_the_default(monkeypatch):
    monkeypatch.setitem(backend_module._default, "name", "cpu")
    set_mode_cpu()
    assert get_backend(None).name == "cpu"
    set_mode_gpu()
    assert backend_module._default["name"] == "gpu"
    set_mode_cpu()
    assert isinstance(get_backend(), Backend) and get_backend().name == "cpu"


def _cupy_device_count():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


@pytest.mark.skipif(_cupy_device_count() > 0, reason="a usable CUDA GPU is present")
def test_gpu_without_cupy_or_driver_says_why_in_one_line():
    with pytest.raises(BackendError) as info:
        get_backend("gpu")
    message = str(info.value)
    assert message.startswith("GPU requested but ") and "\n" not in message


def test_gpu_without_cupy_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(BackendError, match=r"CuPy is not installed \(pip install "
                                           r"'netkit\[gpu\]'\)"):
        get_backend("gpu")


def _fake_cupy(device_count):
    def count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count
    runtime = types.SimpleNamespace(getDeviceCount=count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


def test_gpu_driver_failure_keeps_the_first_line(monkeypatch):
    error = RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\n"
                         "  (traceback detail)")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error))
    with pytest.raises(BackendError) as info:
        get_backend("gpu")
    assert str(info.value) == ("GPU requested but CUDA is not usable: "
                               "cudaErrorNoDevice: no CUDA-capable device is detected")


def test_gpu_device_out_of_range(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(1))
    with pytest.raises(BackendError, match=r"GPU 3 requested but only 1 CUDA device\(s\) found"):
        get_backend("gpu", 3)


def test_every_cupy_name_exists_in_cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    exposed = {n for n in dir(fxp) if not n.startswith("_")}
    assert sorted(n for n in CUPY_NAMES | exposed if not hasattr(cupy, n)) == []
    assert hasattr(cupy.lib.stride_tricks, "as_strided")
    for draw in ("rand", "randn", "random_sample", "uniform", "normal", "randint",
                 "permutation", "shuffle", "seed", "choice"):
        assert hasattr(cupy.random.RandomState, draw), draw


# -- holes: what CuPy refuses but fakegpu lets through ---------------------------------------

@pytest.mark.parametrize("op", [
    lambda d: d + [1.0, 2.0, 3.0, 4.0],
    lambda d: fxp.maximum(d, [0.0, 1.0, 2.0, 3.0]),
    lambda d: d.dot(HOST.T),
], ids=["list operand", "xp ufunc list operand", "dot host"])
def test_known_holes(dev, op):
    with pytest.raises(TypeError):
        op(dev)
