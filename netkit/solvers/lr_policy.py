"""Learning-rate policies (SolverParameter.lr_policy), Caffe's GetLearningRate."""
import math

from ..errors import NetkitError


def learning_rate(param, it, current_step):
    """The rate at iteration `it`; `current_step` is the multistep position (already
    advanced by the caller)."""
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        return base
    # Caffe's CHECKs: a decaying policy's gamma is a factor or rate, never negative
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise NetkitError("lr_policy '%s' needs gamma >= 0 (got %g)" % (policy, param.gamma))
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise NetkitError("lr_policy '%s' needs a positive stepsize" % policy)
    if policy == "step":
        return base * math.pow(param.gamma, it // param.stepsize)
    if policy == "exp":
        return base * math.pow(param.gamma, it)
    if policy == "inv":
        return base * math.pow(1.0 + param.gamma * it, -param.power)
    if policy == "multistep":
        return base * math.pow(param.gamma, current_step)
    if policy == "poly":
        return base * math.pow(1.0 - float(it) / param.max_iter, param.power)
    if policy == "sigmoid":
        return base * (1.0 / (1.0 + math.exp(-param.gamma * (it - param.stepsize))))
    raise NetkitError("unknown lr_policy '%s' (known: fixed, step, exp, inv, multistep, "
                      "poly, sigmoid)" % policy)
