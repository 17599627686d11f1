"""AdaDelta, Caffe's algebra (AdaDeltaSolver::ComputeUpdateValue), `momentum` as the decay:

    history[i]     = momentum * history[i] + (1 - momentum) * diff^2        (gradients)
    diff           = diff * sqrt((history[N+i] + delta) / (history[i] + delta))
    history[N+i]   = momentum * history[N+i] + (1 - momentum) * diff^2     (updates)
    diff           = local_rate * diff

The learning rate multiplies the step only at the end, after the update history has seen
the unscaled step; Zeiler's paper has no learning rate (Caffe's examples use base_lr 1).
Caffe keeps 2N history blobs: the N gradient averages, then the N update averages.
"""
import numpy as np

from .. import kernels
from ..registry import solvers
from .solver import Solver


@solvers.register("AdaDelta")
class AdaDeltaSolver(Solver):
    type_name = "AdaDelta"
    history_sets = 2

    def compute_update_value(self, i, prm, rate):
        xp = self.backend.xp
        local_rate = np.float32(rate * prm.lr_mult)
        momentum = np.float32(self.param.momentum)
        delta = np.float32(self.param.delta)
        n = len(self.net.learnable_params)
        grads, steps = self.history[i], self.history[n + i]
        update, temp, diff = self.scratch(prm.blob), self.scratch(prm.blob, 1), prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.adadelta(diff, grads, steps, momentum, delta, local_rate)
            return
        xp.multiply(diff, diff, out=update)
        update *= np.float32(1) - momentum
        grads *= momentum
        grads += update
        xp.add(steps, delta, out=update)
        xp.add(grads, delta, out=temp)
        update /= temp
        xp.sqrt(update, out=update)
        diff *= update
        xp.multiply(diff, diff, out=update)
        update *= np.float32(1) - momentum
        steps *= momentum
        steps += update
        diff *= local_rate
