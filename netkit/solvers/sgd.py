"""Stochastic gradient descent with momentum, Caffe's algebra:
history = lr * lr_mult * diff + momentum * history;  diff = history."""
import numpy as np

from ..registry import solvers
from .solver import Solver


@solvers.register("SGD")
class SGDSolver(Solver):
    type_name = "SGD"

    def compute_update_value(self, i, prm, rate):
        local_rate = np.float32(rate * prm.lr_mult)
        momentum = np.float32(self.param.momentum)
        history, diff = self.history[i], prm.blob.diff
        history *= momentum
        history += local_rate * diff
        diff[...] = history
