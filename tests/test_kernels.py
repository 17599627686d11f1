"""CUDA kernels (netkit.kernels) against their xp twins, checked three ways.

1. NVRTC, every run: each Program in the registry compiles, warning-free, through the NVRTC
   library of the nvidia-cuda-nvrtc wheel, which needs neither a GPU nor a driver, and its
   PTX has an entry for every kernel it declares (and it declares every __global__).
2. Emulated, every run where a C++ compiler exists: the same CUDA source, compiled by g++
   under a few defines that make a launch one sequential grid-stride loop, runs behind
   Program.function, so the layers and solvers dispatch to the kernels (a backend named
   "gpu" over numpy) and are compared with the twins on the cpu. The emulator also checks
   each launch's arguments against the kernel's C parameter types. It proves the
   arithmetic, the indexing and the wiring; not the GPU's concurrency, its libm, or CuPy.
3. Real GPU (`pytest -m gpu`): the same comparisons with the kernels on the device.

Tests that are not marked gpu never create a GPU backend nor compile for a device; see
test_cpu_and_fakegpu_never_launch_kernels and test_importing_netkit_does_not_import_cupy.
"""
import collections
import ctypes
import os
import pkgutil
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import netkit.kernels as kernels
from netkit import get_solver
from netkit import netkit_pb2 as pb
from netkit.backend import CPUBackend, get_backend
from netkit.kernels import Program
from netkit.kernels import im2col as im2col_kernels
from netkit.ops.im2col import ConvGeometry, col2im_cf, im2col_cf
from netkit.rng import set_random_seed

from layertest import assert_close, blobs, make_layer, tops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What CuPy adds when it compiles a RawModule, for an architecture every CUDA 12 NVRTC has.
NVRTC_OPTIONS = kernels.OPTIONS + ("-arch=compute_75", "--device-as-default-execution-space")
GLOBAL = re.compile(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', re.S)


# -- 1. NVRTC --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or no libnvrtc (pip install nvidia-cuda-nvrtc-cu12)
        pytest.skip("NVRTC cannot be loaded: %s" % (str(e).splitlines() or [repr(e)])[0])
    return nvrtc


def compile_ptx(nvrtc, source, name):
    """PTX for `source`; raises AssertionError with NVRTC's log on any error or warning."""
    program = nvrtc.createProgram(source, name + ".cu", (), ())
    try:
        nvrtc.compileProgram(program, NVRTC_OPTIONS)
    except nvrtc.NVRTCError:
        raise AssertionError("%s does not compile:\n%s"
                             % (name, nvrtc.getProgramLog(program))) from None
    log = nvrtc.getProgramLog(program).strip()
    assert "warning" not in log, "%s compiles with warnings:\n%s" % (name, log)
    return nvrtc.getPTX(program).decode()


def test_registry_holds_every_kernel_module():
    modules = {m.name for m in pkgutil.iter_modules(kernels.__path__)}
    assert modules == {"im2col", "pooling", "lrn", "softmax_loss", "solvers"}
    for name in modules:
        module = sys.modules["netkit.kernels." + name]
        assert kernels.PROGRAMS[module.PROGRAM.name] is module.PROGRAM, name
    assert len(kernels.PROGRAMS) == len(modules)


@pytest.mark.parametrize("name", sorted(kernels.PROGRAMS))
def test_every_kernel_declares_what_it_defines(name):
    program = kernels.PROGRAMS[name]
    defined = [match.group(1) for match in GLOBAL.finditer(program.source)]
    assert program.source.count("__global__") == len(defined)
    assert sorted(defined) == sorted(program.kernels)


@pytest.mark.parametrize("name", sorted(kernels.PROGRAMS))
def test_every_kernel_compiles_with_nvrtc(nvrtc, name):
    program = kernels.PROGRAMS[name]
    ptx = compile_ptx(nvrtc, program.source, name)
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))
    assert entries == set(program.kernels)


@pytest.mark.parametrize("mistake", [
    lambda s: s.replace(";", "", 1),                        # syntax
    lambda s: s.replace("count", "cnt", 1),                 # undeclared name
    lambda s: s.replace("float sum = 0.0f;", "float sum = 0.0f; int unused = 0;", 1),
], ids=["syntax", "undeclared", "warning"])
def test_nvrtc_check_fails_on_a_broken_kernel(nvrtc, mistake):
    source = mistake(kernels.PROGRAMS["pooling"].source)
    with pytest.raises(AssertionError, match="does not compile|with warnings"):
        compile_ptx(nvrtc, source, "broken")


# -- where kernels run ---------------------------------------------------------------------

def test_available_only_on_a_real_gpu_backend():
    assert not kernels.available(get_backend("cpu"))
    assert not kernels.available(get_backend("fakegpu"))
    assert kernels.available(EmulatedGPU())


def test_importing_netkit_does_not_import_cupy():
    code = ("import sys, netkit, netkit.kernels, netkit.layers, netkit.solvers; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_and_fakegpu_never_launch_kernels(backend, monkeypatch):
    def refuse(self, kernel):
        raise AssertionError("kernel %s launched on a %s backend" % (kernel, backend.name))
    monkeypatch.setattr(Program, "function", refuse)
    run_small_net(backend, solver_type="Adam")


def test_kernel_arguments_are_checked():
    a = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.check_array("x", a.transpose(0, 1, 3, 2))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.check_array("x", a.astype(np.float64))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        kernels.check_array("x", a, (2, 3))
    with pytest.raises(ValueError, match="do not match"):
        im2col_kernels.im2col(a, np.zeros((2, 3, 3, 3, 3, 3), np.float32),
                              ConvGeometry((3, 3)))
    # A view whose blocks are contiguous but strided apart is fine; its stride is passed.
    buffer = np.zeros((2, 3 * 4 + 1, 5), np.float32)
    assert kernels.block_stride("col", buffer[:, :12]) == 13 * 5
    with pytest.raises(ValueError, match="not contiguous"):
        kernels.block_stride("col", buffer[:, :, :4])


# -- 2. the emulator ---------------------------------------------------------------------

SHIM = r"""
#include <math.h>
#include <string.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct nk_dim3 { unsigned int x; };
static const nk_dim3 threadIdx = {0}, blockIdx = {0}, blockDim = {1}, gridDim = {1};
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
"""

C_TYPES = {"long long": (np.int64, ctypes.c_longlong), "int": (np.int32, ctypes.c_int),
           "float": (np.float32, ctypes.c_float)}


def parameter_types(source):
    """{kernel: [C type of each parameter, '*' suffixed for pointers]} from the source."""
    kinds = {}
    for match in GLOBAL.finditer(source):
        kinds[match.group(1)] = [
            " ".join(w for w in re.sub(r"\*", " * ", p).split()[:-1]
                     if w not in ("const", "__restrict__")).replace(" *", "*")
            for p in match.group(2).split(",")]
    return kinds


class HostKernel:
    """One kernel of the g++ build: called as CuPy calls a RawKernel, checking each
    argument against the C parameter type (a mismatch on a GPU would read garbage)."""

    def __init__(self, function, name, types):
        self.function, self.name, self.types = function, name, types

    def __call__(self, grid, block, args):
        assert len(args) == len(self.types), (self.name, len(args), self.types)
        converted = []
        for arg, ctype in zip(args, self.types):
            if ctype.endswith("*"):
                dtype = C_TYPES[ctype[:-1]][0]
                assert isinstance(arg, np.ndarray) and arg.dtype == dtype, \
                    "%s: %s given for a %s parameter" % (self.name, type(arg).__name__, ctype)
                converted.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                dtype, c_type = C_TYPES[ctype]
                assert type(arg) is dtype, \
                    "%s: %r given for a %s parameter" % (self.name, arg, ctype)
                converted.append(c_type(arg))
        self.function(*converted)


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """{program name: ctypes library} of every Program compiled for the host."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels on the host")
    out, libraries = tmp_path_factory.mktemp("kernels"), {}
    for name, program in kernels.PROGRAMS.items():
        source, library = out / (name + ".cpp"), out / (name + ".so")
        source.write_text(SHIM + program.source)
        subprocess.run([compiler, "-x", "c++", "-std=c++14", "-O2", "-ffp-contract=off",
                        "-fPIC", "-shared", "-Werror", "-o", str(library), str(source)],
                       check=True, capture_output=True)
        libraries[name] = ctypes.CDLL(str(library))
    return libraries


def emulate(monkeypatch, libraries):
    """Make Program.function hand out the host build's kernels."""
    def function(self, kernel):
        assert kernel in self.kernels, kernel
        types = parameter_types(self.source)[kernel]
        return HostKernel(getattr(libraries[self.name], kernel), kernel, types)
    monkeypatch.setattr(Program, "function", function)


class EmulatedGPU(CPUBackend):
    """numpy arrays, but named "gpu": layers and solvers take their kernel path."""
    name = "gpu"


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request, monkeypatch):
    """The backend the kernels run on, with a Counter of kernel launches."""
    launches = collections.Counter()
    launch = Program.launch

    def counted(self, kernel, count, *args):
        launches[kernel] += 1
        return launch(self, kernel, count, *args)
    if request.param == "emulated":
        emulate(monkeypatch, request.getfixturevalue("host_build"))
        be = EmulatedGPU()
    else:
        be = get_backend("gpu")
    monkeypatch.setattr(Program, "launch", counted)
    be.launches = launches
    return be


def test_emulator_checks_argument_types(host_build, monkeypatch):
    emulate(monkeypatch, host_build)
    x = np.zeros((1, 1, 2, 2), np.float32)
    lrn = kernels.PROGRAMS["lrn"]
    lrn.launch("nk_lrn_scale", 4, x, np.int64(1), np.int64(4), np.int64(1), np.float32(1),
               np.float32(1), x)
    with pytest.raises(AssertionError, match="1 given for a long long parameter"):
        lrn.launch("nk_lrn_scale", 4, x, 1, np.int64(4), np.int64(1), np.float32(1),
                   np.float32(1), x)
    with pytest.raises(AssertionError, match="given for a float parameter"):
        lrn.launch("nk_lrn_scale", 4, x, np.int64(1), np.int64(4), np.int64(1), 1.0,
                   np.float32(1), x)
    with pytest.raises(AssertionError, match="ndarray given for a int. parameter"):
        kernels.PROGRAMS["pooling"].launch(
            "nk_max_pool_backward", 4, x, x, *[np.int64(1)] * 10, x)


# -- kernels against their twins -----------------------------------------------------------

GEOMETRIES = [ConvGeometry((3, 3)), ConvGeometry((3, 3), (1, 1)),
              ConvGeometry((3, 2), (1, 0), (2, 1)), ConvGeometry((2, 2), (0, 0), (2, 2)),
              ConvGeometry((3, 3), (2, 1), (1, 2), (2, 1)), ConvGeometry((1, 1), (0, 0), (3, 3)),
              ConvGeometry((2, 3), (1, 2), (3, 2), (1, 2))]


@pytest.mark.parametrize("geom", GEOMETRIES, ids=str)
def test_im2col_and_col2im_equal_their_twins(device, geom):
    rs = np.random.RandomState(3)
    x = rs.standard_normal((4, 3, 7, 8)).astype(np.float32)
    oh, ow = geom.output_shape(7, 8)
    shape = (4, 3) + geom.kernel + (oh, ow)
    padded = np.zeros((4, 3) + geom.padded_shape(7, 8), np.float32)
    col = np.empty(shape, np.float32)
    im2col_cf(np, x, col, geom, padded)
    # The kernel writes into blocks strided apart, as under the convolution's bias row.
    rows = 3 * geom.kernel[0] * geom.kernel[1]
    buffer = device.asarray(np.full((4, rows + 1, oh * ow), 7.0, np.float32))
    device_col = buffer[:, :rows].reshape(shape)
    im2col_kernels.im2col(device.asarray(x), device_col, geom)
    np.testing.assert_array_equal(device.asnumpy(device_col), col)
    np.testing.assert_array_equal(device.asnumpy(buffer[:, rows]), 7.0)

    dcol = rs.standard_normal(shape).astype(np.float32)
    dx = np.empty_like(x)
    col2im_cf(np, dcol, dx, geom, padded)
    device_dx = device.asarray(np.full_like(x, np.nan))
    buffer[:, :rows] = device.asarray(dcol.reshape(4, rows, -1))
    im2col_kernels.col2im(device_col, device_dx, geom)
    np.testing.assert_array_equal(device.asnumpy(device_dx), dx)
    assert device.launches == {"nk_im2col": 1, "nk_col2im": 1}


POOLS = [dict(kernel_size=3, stride=2), dict(kernel_size=2, stride=2),
         dict(kernel_size=3, stride=1, pad=1), dict(kernel_size=3, stride=2, pad=1),
         dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=0),
         dict(kernel_size=2, stride=3), dict(kernel_size=3, stride=2, round_mode=1),
         dict(kernel_size=4, stride=1, pad=2)]


def pooling_param(**fields):
    return 'type: "Pooling" pooling_param { pool: MAX %s }' % " ".join(
        "%s: %s" % item for item in fields.items())


def run_layer(be, text, bottom_arrays, top_diffs, ntop=1, propagate=None):
    """Forward and backward of the layer `text` on `be`; top_diffs are functions of the
    top's shape. Returns host copies: (tops' data, bottoms' diffs, params' diffs)."""
    layer = make_layer(text, be)
    bottom = blobs(be, *bottom_arrays)
    top = tops(be, ntop)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    for t, diff in zip(top, top_diffs):
        t.diff[...] = be.asarray(diff(t.shape))
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward(top, propagate or [True] * len(bottom), bottom)
    return ([be.asnumpy(t.data) for t in top], [be.asnumpy(b.diff) for b in bottom],
            [be.asnumpy(p.diff) for p in layer.blobs])


def ties(rs, shape):
    """Few distinct values, so windows hold ties that the first maximum must win."""
    return rs.randint(-3, 3, size=shape).astype(np.float32)


@pytest.mark.parametrize("fields", POOLS, ids=lambda f: ",".join("%s=%s" % i for i in f.items()))
def test_max_pooling_equals_its_twin(device, fields):
    rs = np.random.RandomState(5)
    x = ties(rs, (2, 3, 9, 8))
    x[0, 0, :3, :3] = np.nan  # a NaN wins its windows and sticks, as numpy's maximum does
    diff = lambda shape: rs.standard_normal(shape).astype(np.float32)
    state = rs.get_state()
    expected = run_layer(get_backend("cpu"), pooling_param(**fields), [x], [diff], ntop=2)
    rs.set_state(state)
    got = run_layer(device, pooling_param(**fields), [x], [diff], ntop=2)
    for a, b in zip(got[0] + got[1], expected[0] + expected[1]):
        np.testing.assert_array_equal(a, b)
    assert device.launches == {"nk_max_pool_forward": 1, "nk_max_pool_backward": 1}


def lrn_param(size, region="ACROSS_CHANNELS"):
    return ('type: "LRN" lrn_param { local_size: %d alpha: 0.7 beta: 0.75 k: 1.5 '
            'norm_region: %s }' % (size, region))


@pytest.mark.parametrize("size,channels", [(1, 3), (3, 1), (5, 7), (5, 3), (3, 6)])
def test_lrn_equals_its_twin(device, size, channels):
    rs = np.random.RandomState(channels)
    x = rs.standard_normal((2, channels, 4, 5)).astype(np.float32) * 2
    dy = rs.standard_normal(x.shape).astype(np.float32)
    expected = run_layer(get_backend("cpu"), lrn_param(size), [x], [lambda s: dy])
    got = run_layer(device, lrn_param(size), [x], [lambda s: dy])
    np.testing.assert_allclose(got[0][0], expected[0][0], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got[1][0], expected[1][0], rtol=1e-5, atol=1e-6)
    assert device.launches == {"nk_lrn_scale": 1, "nk_lrn_output": 1, "nk_lrn_backward": 1}


def test_lrn_forward_in_place(device):
    """A deploy net may give LRN its bottom as top: the scale is taken before the output."""
    x = np.random.RandomState(1).standard_normal((2, 6, 3, 3)).astype(np.float32)
    results = []
    for be in (get_backend("cpu"), device):
        layer = make_layer(lrn_param(5), be)
        blob = blobs(be, x)
        layer.setup(blob, blob)
        layer.reshape(blob, blob)
        layer.forward(blob, blob)
        results.append(be.asnumpy(blob[0].data))
    np.testing.assert_allclose(results[1], results[0], rtol=2e-6, atol=1e-7)
    assert not np.allclose(results[0], x)


def test_lrn_within_channel_stays_xp_code(device):
    x = np.random.RandomState(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    expected = run_layer(get_backend("cpu"), lrn_param(3, "WITHIN_CHANNEL"), [x],
                         [lambda s: np.ones(s, np.float32)])
    got = run_layer(device, lrn_param(3, "WITHIN_CHANNEL"), [x],
                    [lambda s: np.ones(s, np.float32)])
    np.testing.assert_allclose(got[0][0], expected[0][0], rtol=1e-5)
    assert not device.launches


LOSSES = [("", (6, 5), None), ("loss_param { ignore_label: 2 }", (6, 5), None),
          ("loss_param { ignore_label: 1 normalization: FULL }", (6, 5), None),
          ("loss_param { ignore_label: 0 normalization: BATCH_SIZE }", (3, 4, 2, 3), None),
          ("loss_param { ignore_label: 3 normalization: NONE }", (3, 4, 2, 3), None),
          ("loss_param { ignore_label: 0 }", (2, 3), [0, 0]),  # every label ignored
          ("softmax_param { axis: 2 } loss_param { normalize: false }", (2, 3, 4, 2), None),
          ("loss_weight: 2.5", (4, 3, 5), None)]


@pytest.mark.parametrize("extra,shape,labels", LOSSES, ids=lambda v: str(v))
def test_softmax_with_loss_equals_its_twin(device, extra, shape, labels):
    text = 'type: "SoftmaxWithLoss" ' + extra
    param = text_format.Parse(text, pb.LayerParameter())
    axis = param.softmax_param.axis
    rs = np.random.RandomState(len(shape))
    x = (rs.standard_normal(shape) * 3).astype(np.float32)
    label_shape = shape[:axis] + shape[axis + 1:]
    y = rs.randint(0, shape[axis], size=label_shape).astype(np.float32) \
        if labels is None else np.array(labels, np.float32)
    if labels is None:
        # The first position's true class gets a probability below FLT_MIN, clamped.
        y.reshape(-1)[0] = (param.loss_param.ignore_label + 1) % shape[axis]
        np.moveaxis(x, axis, -1)[(0,) * (x.ndim - 1) + (int(y.reshape(-1)[0]),)] = -200.0
    weight = param.loss_weight[0] if param.loss_weight else 1.0
    diff = lambda s: np.full(s, weight, np.float32)
    expected = run_layer(get_backend("cpu"), text, [x, y], [diff], propagate=[True, False])
    got = run_layer(device, text, [x, y], [diff], propagate=[True, False])
    np.testing.assert_allclose(got[0][0], expected[0][0], rtol=1e-5)
    np.testing.assert_allclose(got[1][0], expected[1][0], rtol=1e-5, atol=1e-7)
    assert device.launches == {"nk_softmax_loss_forward": 1, "nk_softmax_loss_backward": 1}


def test_softmax_with_loss_flags_a_label_out_of_range(device):
    """The layer refuses the label with one clear error before any launch; the kernel
    itself still flags one (NaN loss) should it ever be handed one."""
    from netkit import kernels
    from netkit.errors import NetkitError
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(NetkitError, match=r"label 3 \(at position 1"):
        run_layer(device, 'type: "SoftmaxWithLoss"', [x, np.array([1, 3], np.float32)],
                  [lambda s: np.ones(s, np.float32)], propagate=[True, False])
    prob = device.asarray(np.full((2, 3, 1), 1 / 3, np.float32))
    loss = device.xp.zeros(2, dtype=np.float32)
    counts = device.xp.zeros(2, dtype=np.float32)
    kernels.softmax_loss.softmax_loss_forward(prob, device.asarray(np.array([1, 3], np.float32)),
                                              False, 0, loss, counts)
    loss = device.asnumpy(loss)
    assert np.isclose(loss[0], np.log(3)) and np.isnan(loss[1])


CONVOLUTIONS = ["num_output: 4 kernel_size: 3",
                "num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 3",
                "num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 0 stride_h: 1 stride_w: 2 "
                "dilation: 2",
                "num_output: 3 kernel_size: 2 stride: 2 bias_term: false",
                "num_output: 16 kernel_size: 1"]


@pytest.mark.parametrize("layer_type", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("fields", CONVOLUTIONS)
def test_convolution_layers_equal_their_twins(device, layer_type, fields):
    text = ('type: "%s" convolution_param { %s weight_filler { type: "gaussian" std: 0.5 } '
            'bias_filler { type: "gaussian" std: 0.5 } }' % (layer_type, fields))
    rs = np.random.RandomState(1)
    x = rs.standard_normal((3, 6, 7, 6)).astype(np.float32)
    dy = {}
    diff = lambda s: dy.setdefault(s, rs.standard_normal(s).astype(np.float32))
    results = []
    for be in (get_backend("cpu"), device):
        set_random_seed(4)  # the same weights on both
        results.append(run_layer(be, text, [x], [diff]))
    expected, got = results
    for a, b in zip(got[0] + got[1] + got[2], expected[0] + expected[1] + expected[2]):
        assert_close(a, b)
    if fields.endswith("kernel_size: 1"):  # pointwise: the image is its own columns
        assert device.launches["nk_im2col"] == device.launches["nk_col2im"] == 0
    else:
        assert device.launches["nk_im2col"] >= 1 and device.launches["nk_col2im"] >= 1


SOLVERS = ["type: 'SGD' momentum: 0.9", "type: 'Nesterov' momentum: 0.95",
           "type: 'AdaGrad' delta: 1e-3", "type: 'RMSProp' rms_decay: 0.95 delta: 1e-4",
           "type: 'AdaDelta' momentum: 0.9 delta: 1e-5",
           "type: 'Adam' momentum: 0.9 momentum2: 0.995 delta: 1e-6"]


REGRESSION_NET = """
layer { name: "data" type: "Input" top: "data" top: "targets"
        input_param { shape { dim: 4 dim: 20 } shape { dim: 4 dim: 30 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 30 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }
"""


def make_regression_solver(be, text):
    """A solver of the given type on a 20 -> 30 InnerProduct: 630 parameters, enough for
    any change in the order of float32 operations to show in some element."""
    param = text_format.Parse(text + " base_lr: 0.03 lr_policy: 'fixed' weight_decay: 0.01 "
                              "snapshot_prefix: 'unused'", pb.SolverParameter())
    text_format.Parse(REGRESSION_NET, param.net_param)
    return get_solver(param, backend=be)


@pytest.mark.parametrize("text", SOLVERS, ids=lambda t: t.split("'")[1])
def test_solver_updates_equal_their_twins(device, text):
    """The same diff and history in, the same step and history out, to the bit."""
    rs = np.random.RandomState(2)
    solvers = [make_regression_solver(be, text) for be in (get_backend("cpu"), device)]
    for step in range(3):
        states = [rs.standard_normal(h.shape).astype(np.float32) ** 2
                  for h in solvers[0].history]
        diffs = [rs.standard_normal(p.blob.shape).astype(np.float32)
                 for p in solvers[0].net.learnable_params]
        for solver in solvers:
            be = solver.backend
            solver.iter = step
            for h, state in zip(solver.history, states):
                h[...] = be.asarray(state)
            for i, (prm, diff) in enumerate(zip(solver.net.learnable_params, diffs)):
                prm.blob.diff[...] = be.asarray(diff)
                solver.compute_update_value(i, prm, 0.03)
        (cpu, dev) = solvers
        for a, b in zip(cpu.history, dev.history):
            np.testing.assert_array_equal(dev.backend.asnumpy(b), a)
        for a, b in zip(cpu.net.learnable_params, dev.net.learnable_params):
            np.testing.assert_array_equal(dev.backend.asnumpy(b.blob.diff), a.blob.diff)
    assert sum(device.launches.values()) == 3 * 2


def test_training_on_the_kernels_follows_the_twins(device):
    """A few iterations of a net using every layer kernel, then the same on the cpu."""
    cpu_net, cpu_loss = run_small_net(get_backend("cpu"), solver_type="Nesterov")
    dev_net, dev_loss = run_small_net(device, solver_type="Nesterov")
    np.testing.assert_allclose(dev_loss, cpu_loss, rtol=1e-4)
    for name, params in cpu_net.params.items():
        for a, b in zip(params, dev_net.params[name]):
            np.testing.assert_allclose(device.asnumpy(b.data), a.data, rtol=1e-4, atol=1e-5)
    assert {"nk_im2col", "nk_col2im", "nk_max_pool_forward", "nk_max_pool_backward",
            "nk_lrn_scale", "nk_lrn_output", "nk_lrn_backward", "nk_softmax_loss_forward",
            "nk_softmax_loss_backward", "nk_nesterov_update"} <= set(device.launches)


SMALL_NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 10 dim: 10 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm" lrn_param { local_size: 3 } }
layer { name: "conv2" type: "Convolution" bottom: "norm" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 2 dilation: 2 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        loss_param { ignore_label: 4 } }
"""


def run_small_net(be, solver_type, iterations=3):
    """Train SMALL_NET for a few iterations on `be`; returns the net and the last loss."""
    set_random_seed(21)
    param = text_format.Parse("type: '%s' base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed' "
                              "snapshot_prefix: 'unused'" % solver_type, pb.SolverParameter())
    text_format.Parse(SMALL_NET, param.net_param)
    solver = get_solver(param, backend=be)
    rs = np.random.RandomState(8)
    net = solver.net
    net.blobs["data"].data[...] = be.asarray(rs.standard_normal((4, 3, 10, 10))
                                             .astype(np.float32))
    net.blobs["label"].data[...] = be.asarray(np.array([0, 4, 2, 1], np.float32))
    solver.step(iterations)
    return net, float(net.blobs["loss"].data)
