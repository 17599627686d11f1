"""Stochastic gradient descent with momentum, Caffe's algebra:
history = lr * lr_mult * diff + momentum * history;  diff = history."""
import numpy as np

from .. import kernels
from ..registry import solvers
from .solver import Solver


@solvers.register("SGD")
class SGDSolver(Solver):
    type_name = "SGD"

    def compute_update_value(self, i, prm, rate):
        local_rate = np.float32(rate * prm.lr_mult)
        momentum = np.float32(self.param.momentum)
        history, diff = self.history[i], prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.sgd(diff, history, momentum, local_rate)
            return
        temp = self.scratch(prm.blob)
        self.backend.xp.multiply(diff, local_rate, out=temp)
        history *= momentum
        history += temp
        diff[...] = history
