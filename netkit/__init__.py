"""netkit: Caffe-style deep learning in Python.

The public API mirrors pycaffe, so `import netkit as caffe` runs common pycaffe scripts:
Net, get_solver / SGDSolver, TRAIN / TEST, Layer (for Python layers), set_mode_cpu /
set_mode_gpu / set_device, Blob, io (Transformer, load_image ...), proto.caffe_pb2,
Classifier, Detector, Timer, init_log, and net_spec's NetSpec / layers / params / to_proto;
`netkit.coord_map` and `netkit.draw` are pycaffe's coord_map and draw.
"""
from .backend import get_backend, set_device, set_mode_cpu, set_mode_gpu
from .blob import Blob
from .errors import NetkitError
from .layer import TEST, TRAIN, Layer
from .log import init_log
from .net import Net
from .rng import set_random_seed
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, Solver, get_solver)
from . import io, proto
from .classifier import Classifier
from .detector import Detector
from .pycaffe import layer_type_list
# pycaffe's `caffe.layers` is net_spec's layer maker, which shares its name with the
# subpackage of layer implementations: load that subpackage first, because importing it
# later would rebind `netkit.layers` to it.
from . import layers as _layer_types  # noqa: F401  (registers every layer type)
from .net_spec import NetSpec, layers, params, to_proto

# pycaffe's compiled-module names, made from the names above.
from . import _caffe  # noqa: E402
from ._caffe import Timer, has_nccl, set_multiprocess, solver_count, solver_rank  # noqa: E402

__version__ = "0.1.0"

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "Classifier", "Detector",
           "Layer", "Net", "NetSpec", "NetkitError", "NesterovSolver", "RMSPropSolver",
           "SGDSolver", "Solver", "TEST", "TRAIN", "Timer", "get_backend", "get_solver",
           "has_nccl", "init_log", "io", "layer_type_list", "layers", "params", "proto",
           "set_device", "set_mode_cpu", "set_mode_gpu", "set_multiprocess", "set_random_seed",
           "solver_count", "solver_rank", "to_proto"]
