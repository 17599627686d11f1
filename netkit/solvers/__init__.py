"""Solvers: Caffe's training loop (solver.py) and one module per update rule."""
import os

from .. import netkit_pb2 as pb
from ..errors import NetkitError
from ..registry import solvers
from ..upgrade import SOLVER_TYPES, solver_needs_upgrade
from .adadelta import AdaDeltaSolver
from .adagrad import AdaGradSolver
from .adam import AdamSolver
from .nesterov import NesterovSolver
from .rmsprop import RMSPropSolver
from .sgd import SGDSolver
from .solver import Solver, read_solver_param


def solver_type(param):
    """The update rule named by `type`, or by the legacy `solver_type` enum."""
    if solver_needs_upgrade(param) and not param.HasField("type"):
        return SOLVER_TYPES[param.solver_type]
    return param.type


def get_solver(solver, backend=None, weights=None, source=None):
    """The Solver subclass the file (or SolverParameter) asks for, constructed (pycaffe's
    get_solver). `source` names a SolverParameter's file in messages."""
    if isinstance(solver, pb.SolverParameter):
        param, source = solver, source or "<SolverParameter>"
    else:
        source = os.fspath(solver)
        param = read_solver_param(source)
    name = solver_type(param)
    if name not in solvers:
        raise NetkitError("%s: unknown solver type '%s' (known types: %s)"
                          % (source, name, ", ".join(solvers.names())))
    return solvers.get(name)(param, backend=backend, weights=weights, source=source)


__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver",
           "SGDSolver", "Solver", "get_solver", "read_solver_param", "solver_type"]
