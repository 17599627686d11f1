"""Adam, Caffe's algebra (AdamSolver::ComputeUpdateValue), momentum = beta1,
momentum2 = beta2, delta = eps:

    m    = beta1 * m + (1 - beta1) * diff
    v    = beta2 * v + (1 - beta2) * diff^2
    diff = local_rate * correction * m / (sqrt(v) + delta)
    correction = sqrt(1 - beta2^t) / (1 - beta1^t),  t = iter + 1

The bias correction is folded into the rate (computed in double, rounded to float), so
`delta` is added to the uncorrected sqrt(v): Kingma & Ba's "eps hat" form. Caffe keeps 2N
history blobs: the N first moments m, then the N second moments v.
"""
import math

import numpy as np

from .. import kernels
from ..registry import solvers
from .solver import Solver


@solvers.register("Adam")
class AdamSolver(Solver):
    type_name = "Adam"
    history_sets = 2

    def correction(self):
        """sqrt(1 - beta2^t) / (1 - beta1^t) for t = iter + 1, as a float32."""
        t = self.iter + 1
        beta1, beta2 = self.param.momentum, self.param.momentum2
        return np.float32(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))

    def compute_update_value(self, i, prm, rate):
        xp = self.backend.xp
        local_rate = np.float32(rate * prm.lr_mult)
        beta1 = np.float32(self.param.momentum)
        beta2 = np.float32(self.param.momentum2)
        n = len(self.net.learnable_params)
        m, v, temp, diff = self.history[i], self.history[n + i], self.scratch(prm.blob), \
            prm.blob.diff
        if kernels.available(self.backend):
            kernels.solvers.adam(diff, m, v, beta1, beta2, self.param.delta,
                                 local_rate * self.correction())
            return
        xp.multiply(diff, np.float32(1) - beta1, out=temp)
        m *= beta1
        m += temp
        xp.multiply(diff, diff, out=temp)
        temp *= np.float32(1) - beta2
        v *= beta2
        v += temp
        xp.sqrt(v, out=temp)
        temp += np.float32(self.param.delta)
        xp.divide(m, temp, out=diff)
        diff *= local_rate * self.correction()
