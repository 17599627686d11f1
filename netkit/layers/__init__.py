"""Layer implementations, one module per Caffe layer type or small family.

Importing this package registers every layer in `netkit.registry.layers`.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module("%s.%s" % (__name__, _module.name))
