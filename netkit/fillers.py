"""Weight fillers (FillerParameter): constant, uniform, gaussian, positive_unitball, xavier,
msra, bilinear. Values are drawn on the host from netkit's random stream and returned as
float32 numpy arrays, so a seed gives the same weights on every backend."""
import contextlib
import contextvars

import numpy as np

from . import netkit_pb2 as pb
from .registry import Registry
from .rng import host_rng

fillers = Registry("filler")


def _fans(shape):
    """Caffe's fan_in = count / shape[0], fan_out = count / shape[1]."""
    count = int(np.prod(shape))
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(param, shape):
    fan_in, fan_out = _fans(shape)
    if param.variance_norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == pb.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


@fillers.register("constant")
def constant(param, shape):
    return np.full(shape, param.value, dtype=np.float32)


@fillers.register("uniform")
def uniform(param, shape):
    return host_rng().uniform(param.min, param.max, size=shape).astype(np.float32)


@fillers.register("gaussian")
def gaussian(param, shape):
    data = host_rng().normal(param.mean, param.std, size=shape).astype(np.float32)
    if param.sparse >= 0:
        # Keep each weight with probability sparse / num_outputs (Caffe's sparse Gaussian).
        if len(shape) < 1:
            raise ValueError("sparse gaussian filler needs a blob with at least one axis")
        p = param.sparse / float(shape[0])
        data *= (host_rng().uniform(size=shape) < p)
    return data


@fillers.register("positive_unitball")
def positive_unitball(param, shape):
    data = host_rng().uniform(0, 1, size=shape).astype(np.float32)
    rows = data.reshape(shape[0], -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return data


@fillers.register("xavier")
def xavier(param, shape):
    scale = np.sqrt(3.0 / _variance_n(param, shape))
    return host_rng().uniform(-scale, scale, size=shape).astype(np.float32)


@fillers.register("msra")
def msra(param, shape):
    std = np.sqrt(2.0 / _variance_n(param, shape))
    return host_rng().normal(0.0, std, size=shape).astype(np.float32)


@fillers.register("bilinear")
def bilinear(param, shape):
    """Upsampling kernel for Deconvolution: separable triangle of half-width ceil(k/2)."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError("bilinear filler needs a 4-D blob with square kernels, got %s" % (shape,))
    f = np.ceil(shape[3] / 2.0)
    c = (shape[3] - 1) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(shape[3]) / f - c)
    kernel = np.outer(ramp, ramp).astype(np.float32)
    return np.broadcast_to(kernel, shape).copy()


_skip = contextvars.ContextVar("netkit_skip_fill", default=False)


@contextlib.contextmanager
def skipped(skip=True):
    """Within, fill() gives zeros without drawing: for a layer whose blobs loaded weights
    are about to overwrite (the random stream is left untouched)."""
    token = _skip.set(skip)
    try:
        yield
    finally:
        _skip.reset(token)


def fill(param, shape):
    """Host float32 array of `shape` filled as FillerParameter `param` says."""
    filler = fillers.get(param.type)
    if _skip.get():
        return np.zeros(shape, np.float32)
    return filler(param, tuple(shape))
