"""netkit: Caffe-style deep learning in Python.

The public API mirrors pycaffe, so `import netkit as caffe` runs common pycaffe scripts:
Net, get_solver / SGDSolver, TRAIN / TEST, Layer (for Python layers), set_mode_cpu /
set_mode_gpu / set_device, Blob.
"""
from .backend import get_backend, set_device, set_mode_cpu, set_mode_gpu
from .blob import Blob
from .errors import NetkitError
from .layer import TEST, TRAIN, Layer
from .net import Net
from .rng import set_random_seed
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, Solver, get_solver)

__version__ = "0.1.0"

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver",
           "Blob", "Layer", "Net", "NetkitError", "SGDSolver", "Solver", "TEST", "TRAIN",
           "get_backend", "get_solver", "set_device", "set_mode_cpu", "set_mode_gpu",
           "set_random_seed"]
