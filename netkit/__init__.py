"""netkit: Caffe-style deep learning in Python.

The public API mirrors pycaffe, so `import netkit as caffe` runs common pycaffe scripts:
Net, get_solver / SGDSolver, TRAIN / TEST, Layer (for Python layers), set_mode_cpu /
set_mode_gpu / set_device, Blob, io (Transformer, load_image ...), proto.caffe_pb2,
Classifier, and net_spec's NetSpec / layers / params / to_proto.
"""
from .backend import get_backend, set_device, set_mode_cpu, set_mode_gpu
from .blob import Blob
from .errors import NetkitError
from .layer import TEST, TRAIN, Layer
from .net import Net
from .rng import set_random_seed
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, Solver, get_solver)
from . import io, proto
from .classifier import Classifier
from .pycaffe import layer_type_list
# pycaffe's `caffe.layers` is net_spec's layer maker, which shares its name with the
# subpackage of layer implementations: load that subpackage first, because importing it
# later would rebind `netkit.layers` to it.
from . import layers as _layer_types  # noqa: F401  (registers every layer type)
from .net_spec import NetSpec, layers, params, to_proto

__version__ = "0.1.0"

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver",
           "Blob", "Classifier", "Layer", "Net", "NetSpec", "NetkitError", "SGDSolver", "Solver",
           "TEST", "TRAIN", "get_backend", "get_solver", "io", "layer_type_list", "layers",
           "params", "proto", "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed",
           "to_proto"]
