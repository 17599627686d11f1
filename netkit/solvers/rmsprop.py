"""RMSProp, Caffe's algebra (RMSPropSolver::ComputeUpdateValue):

    history = rms_decay * history + (1 - rms_decay) * diff^2
    diff    = local_rate * diff / (sqrt(history) + delta)

`delta` is added after the square root. Caffe refuses a nonzero momentum and an rms_decay
outside [0, 1).
"""
import numpy as np

from .. import kernels
from ..errors import NetkitError
from ..registry import solvers
from .solver import Solver


@solvers.register("RMSProp")
class RMSPropSolver(Solver):
    type_name = "RMSProp"

    def _check_param(self):
        super()._check_param()
        p = self.param
        if p.momentum != 0:
            raise NetkitError("%s: momentum cannot be used with RMSProp (got momentum: %s; "
                              "remove it or set it to 0)" % (self.source, p.momentum))
        if not 0 <= p.rms_decay < 1:
            raise NetkitError("%s: rms_decay should lie in [0, 1) (got %s)"
                              % (self.source, p.rms_decay))

    def compute_update_value(self, i, prm, rate):
        xp = self.backend.xp
        local_rate = np.float32(rate * prm.lr_mult)
        rms_decay = np.float32(self.param.rms_decay)
        history, update, diff = self.history[i], self.scratch(prm.blob), prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.rmsprop(diff, history, rms_decay, self.param.delta, local_rate)
            return
        xp.multiply(diff, diff, out=update)
        update *= np.float32(1) - rms_decay
        history *= rms_decay
        history += update
        xp.sqrt(history, out=update)
        update += np.float32(self.param.delta)
        xp.divide(diff, update, out=diff)
        diff *= local_rate
