"""Solvers: Caffe's training loop (solver.py) and one module per update rule."""
import os

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..registry import solvers
from .sgd import SGDSolver
from .solver import Solver, read_solver_param

# Legacy `solver_type` enum values -> type names.
_LEGACY_TYPES = {pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
                 pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
                 pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam"}


def solver_type(param):
    """The update rule named by `type`, or by the legacy `solver_type` enum."""
    if param.HasField("solver_type") and not param.HasField("type"):
        return _LEGACY_TYPES[param.solver_type]
    return param.type


def get_solver(solver, backend=None, weights=None):
    """The Solver subclass the file asks for, constructed (pycaffe's get_solver)."""
    if isinstance(solver, pb.SolverParameter):
        param, source = solver, "<SolverParameter>"
    else:
        source = os.fspath(solver)
        param = read_solver_param(source)
    name = solver_type(param)
    if name not in solvers:
        raise NetkitError("%s: unknown solver type '%s' (known types: %s)"
                          % (source, name, ", ".join(solvers.names())))
    return solvers.get(name)(param, backend=backend, weights=weights, source=source)


__all__ = ["Solver", "SGDSolver", "get_solver", "read_solver_param", "solver_type"]
