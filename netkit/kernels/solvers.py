"""Fused solver updates, one kernel per rule: the twins of compute_update_value in
netkit/solvers/{sgd,nesterov,adagrad,rmsprop,adadelta,adam}.py.

Each thread updates one parameter element in place: the history blob(s) and the diff,
which becomes the step that Blob.update subtracts. The arithmetic is the twin's, step by
step and in its order (with no fused multiply-add, see netkit.kernels.OPTIONS), so a kernel
reproduces its twin's float32 rounding. Scalars are float32, computed on the host as the
twins compute them.
"""
import numpy as np

from . import Program, check_array

SOURCE = r"""
extern "C" __global__ void nk_sgd_update(
    const long long count, float* __restrict__ diff, float* __restrict__ history,
    const float momentum, const float local_rate) {
  NK_KERNEL_LOOP(i, count) {
    const float h = history[i] * momentum + local_rate * diff[i];
    history[i] = h;
    diff[i] = h;
  }
}

extern "C" __global__ void nk_nesterov_update(
    const long long count, float* __restrict__ diff, float* __restrict__ history,
    const float momentum, const float local_rate) {
  NK_KERNEL_LOOP(i, count) {
    const float previous = history[i];
    const float h = previous * momentum + diff[i] * local_rate;
    history[i] = h;
    diff[i] = h * (1.0f + momentum) + previous * -momentum;
  }
}

extern "C" __global__ void nk_adagrad_update(
    const long long count, float* __restrict__ diff, float* __restrict__ history,
    const float delta, const float local_rate) {
  NK_KERNEL_LOOP(i, count) {
    const float d = diff[i];
    const float h = history[i] + d * d;
    history[i] = h;
    diff[i] = d / (sqrtf(h) + delta) * local_rate;
  }
}

extern "C" __global__ void nk_rmsprop_update(
    const long long count, float* __restrict__ diff, float* __restrict__ history,
    const float rms_decay, const float delta, const float local_rate) {
  NK_KERNEL_LOOP(i, count) {
    const float d = diff[i];
    const float h = history[i] * rms_decay + d * d * (1.0f - rms_decay);
    history[i] = h;
    diff[i] = d / (sqrtf(h) + delta) * local_rate;
  }
}

extern "C" __global__ void nk_adadelta_update(
    const long long count, float* __restrict__ diff, float* __restrict__ grads,
    float* __restrict__ steps, const float momentum, const float delta,
    const float local_rate) {
  NK_KERNEL_LOOP(i, count) {
    const float g = grads[i] * momentum + diff[i] * diff[i] * (1.0f - momentum);
    grads[i] = g;
    const float d = diff[i] * sqrtf((steps[i] + delta) / (g + delta));
    steps[i] = steps[i] * momentum + d * d * (1.0f - momentum);
    diff[i] = d * local_rate;
  }
}

extern "C" __global__ void nk_adam_update(
    const long long count, float* __restrict__ diff, float* __restrict__ m,
    float* __restrict__ v, const float beta1, const float beta2, const float delta,
    const float rate) {
  NK_KERNEL_LOOP(i, count) {
    const float d = diff[i];
    const float mi = m[i] * beta1 + d * (1.0f - beta1);
    const float vi = v[i] * beta2 + d * d * (1.0f - beta2);
    m[i] = mi;
    v[i] = vi;
    diff[i] = mi / (sqrtf(vi) + delta) * rate;
  }
}
"""

PROGRAM = Program("solvers", SOURCE, ("nk_sgd_update", "nk_nesterov_update",
                                      "nk_adagrad_update", "nk_rmsprop_update",
                                      "nk_adadelta_update", "nk_adam_update"))


def _update(kernel, diff, histories, scalars):
    check_array("parameter diff", diff)
    for history in histories:
        check_array("solver history", history, diff.shape)
    PROGRAM.launch(kernel, diff.size, diff, *histories, *(np.float32(s) for s in scalars))


def sgd(diff, history, momentum, local_rate):
    """history = momentum * history + local_rate * diff; diff = history."""
    _update("nk_sgd_update", diff, (history,), (momentum, local_rate))


def nesterov(diff, history, momentum, local_rate):
    """history' = momentum * history + local_rate * diff;
    diff = (1 + momentum) * history' - momentum * history."""
    _update("nk_nesterov_update", diff, (history,), (momentum, local_rate))


def adagrad(diff, history, delta, local_rate):
    """history += diff^2; diff = diff / (sqrt(history) + delta) * local_rate."""
    _update("nk_adagrad_update", diff, (history,), (delta, local_rate))


def rmsprop(diff, history, rms_decay, delta, local_rate):
    """history = rms_decay * history + (1 - rms_decay) * diff^2;
    diff = diff / (sqrt(history) + delta) * local_rate."""
    _update("nk_rmsprop_update", diff, (history,), (rms_decay, delta, local_rate))


def adadelta(diff, grads, steps, momentum, delta, local_rate):
    """AdaDelta with decay `momentum`: gradient and step averages, then the lr."""
    _update("nk_adadelta_update", diff, (grads, steps), (momentum, delta, local_rate))


def adam(diff, m, v, beta1, beta2, delta, rate):
    """Adam with the bias correction folded into `rate` (local_rate * correction)."""
    _update("nk_adam_update", diff, (m, v), (beta1, beta2, delta, rate))
