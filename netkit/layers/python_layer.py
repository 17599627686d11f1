"""Python: a layer class written by the user, as pycaffe's Python layer.

    layer {
      name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss"
      python_param { module: "my_layers" layer: "EuclideanLoss" param_str: "..." }
      loss_weight: 1
    }

`module` is imported by name, looked up on sys.path after the directory of the net's
prototxt and the current directory are put in front of it (what pycaffe users arrange
with PYTHONPATH); `layer` names a subclass of `netkit.Layer` in it. The user's class is
an ordinary netkit layer: it sees `self.param_str`, `self.phase`, `self.layer_param`,
computes through `self.xp` (so it runs on cpu and gpu alike), and its `self.blobs`
(appended in setup, set as a list, or made with pycaffe's `self.blobs.add_blob(*shape)`)
are learned like any layer's parameters. A pycaffe layer module runs unchanged: its
`import caffe` gets netkit where no real pycaffe is installed (or write `import netkit as
caffe`). `python_param.share_in_parallel` is accepted and has no effect.
"""
import importlib
import importlib.util
import os
import sys

from ..blob import Blob
from ..layer import TRAIN, Layer, LayerSetupError
from ..log import logger
from ..registry import layers


class ParamBlobs(list):
    """A Python layer's `self.blobs`: a list of Blobs plus pycaffe's `add_blob(*shape)`,
    which makes a zero-filled parameter blob on the layer's backend."""

    def __init__(self, backend, blobs=()):
        super().__init__(blobs)
        self.backend = backend

    def add_blob(self, *shape):
        blob = Blob(shape, self.backend)
        self.append(blob)
        return blob


def search_dirs():
    """Directories a Python layer's module is looked for in first: the net's prototxt
    directory (while a Net is being built from a file) and the current directory."""
    from ..net import building_source
    dirs = []
    source = building_source.get()
    if source and os.path.isfile(source):
        dirs.append(os.path.dirname(os.path.abspath(source)))
    dirs.append(os.getcwd())
    return dirs


def _put_on_path(dirs):
    known = {os.path.abspath(p or os.curdir) for p in sys.path}
    for d in reversed(dirs):
        if d not in known:
            sys.path.insert(0, d)


def _alias_pycaffe():
    """Let unmodified pycaffe layer modules `import caffe`: where no real pycaffe is
    installed, `caffe` (and caffe.io, caffe.proto.caffe_pb2 ...) name netkit's mirror."""
    from ..pycaffe import alias_caffe
    if alias_caffe():
        logger.info("Python layers: `import caffe` refers to netkit (no pycaffe is installed)")


def load_layer_class(python_param):
    """The class named by python_param.module and python_param.layer."""
    module_name, class_name = python_param.module, python_param.layer
    if not module_name:
        raise LayerSetupError("python_param.module must name the Python module that "
                              "defines the layer")
    if not class_name:
        raise LayerSetupError("python_param.layer must name the layer class in module '%s'"
                              % module_name)
    _put_on_path(search_dirs())
    importlib.invalidate_caches()
    _alias_pycaffe()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            path = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
            raise LayerSetupError("python_param.module '%s' not found on the Python path "
                                  "(%s)" % (module_name, path)) from None
        raise LayerSetupError("python_param.module '%s' cannot be imported: %s"
                              % (module_name, e)) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise LayerSetupError("python_param.layer '%s' not found in module '%s' (%s)"
                              % (class_name, module_name, getattr(module, "__file__", "")))
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise LayerSetupError("python_param.layer '%s.%s' is not a netkit.Layer subclass "
                              "(pycaffe layers: `import netkit as caffe` and subclass "
                              "caffe.Layer)" % (module_name, class_name))
    if issubclass(cls, PythonLayer):
        raise LayerSetupError("python_param.layer '%s.%s' must be the user's layer class, "
                              "not netkit's Python layer" % (module_name, class_name))
    return cls


@layers.register("Python")
class PythonLayer(Layer):
    """The registry entry for type "Python": constructing it builds the user's layer.

    The Net instantiates every layer as `cls(layer_param, phase, backend)`; here that
    call returns an instance of the class python_param names (constructed with the same
    arguments), so the Net drives the user's setup/reshape/forward/backward directly.
    """

    def __new__(cls, layer_param, phase=TRAIN, backend=None):
        user_class = load_layer_class(layer_param.python_param)
        layer = user_class(layer_param, phase, backend)
        layer.blobs = ParamBlobs(layer.backend, layer.blobs)
        return layer
