"""Nesterov's accelerated gradient, Caffe's algebra (NesterovSolver::ComputeUpdateValue):

    history' = momentum * history + local_rate * diff
    diff     = (1 + momentum) * history' - momentum * history

i.e. step back along the old momentum, then over-step along the new one. The history is
the same momentum buffer SGD keeps (lr folded in), so a .solverstate of either loads here.
"""
import numpy as np

from .. import kernels
from ..registry import solvers
from .solver import Solver


@solvers.register("Nesterov")
class NesterovSolver(Solver):
    type_name = "Nesterov"

    def compute_update_value(self, i, prm, rate):
        local_rate = np.float32(rate * prm.lr_mult)
        momentum = np.float32(self.param.momentum)
        history, previous, diff = self.history[i], self.scratch(prm.blob), prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.nesterov(diff, history, momentum, local_rate)
            return
        previous[...] = history
        history *= momentum
        diff *= local_rate
        history += diff
        previous *= -momentum
        diff[...] = history
        diff *= np.float32(1) + momentum
        diff += previous
