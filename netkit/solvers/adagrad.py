"""AdaGrad, Caffe's algebra (AdaGradSolver::ComputeUpdateValue):

    history += diff^2
    diff     = local_rate * diff / (sqrt(history) + delta)

`delta` is added after the square root. Caffe refuses a nonzero momentum for AdaGrad.
"""
import numpy as np

from .. import kernels
from ..errors import NetkitError
from ..registry import solvers
from .solver import Solver


@solvers.register("AdaGrad")
class AdaGradSolver(Solver):
    type_name = "AdaGrad"

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise NetkitError("%s: momentum cannot be used with AdaGrad (got momentum: %s; "
                              "remove it or set it to 0)" % (self.source, self.param.momentum))

    def compute_update_value(self, i, prm, rate):
        xp = self.backend.xp
        local_rate = np.float32(rate * prm.lr_mult)
        history, update, diff = self.history[i], self.scratch(prm.blob), prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.adagrad(diff, history, self.param.delta, local_rate)
            return
        xp.multiply(diff, diff, out=update)
        history += update
        xp.sqrt(history, out=update)
        update += np.float32(self.param.delta)
        xp.divide(diff, update, out=diff)
        diff *= local_rate
