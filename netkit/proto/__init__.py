"""pycaffe's `caffe.proto` package: `caffe_pb2` is netkit's schema module, whose messages
and fields carry Caffe's names, so `caffe.proto.caffe_pb2.BlobProto()`,
`from netkit.proto import caffe_pb2` and `from netkit.proto.caffe_pb2 import NetParameter`
all work as they do with pycaffe."""
import sys

from .. import netkit_pb2 as caffe_pb2

# The submodule name, so that `import netkit.proto.caffe_pb2` finds the schema module.
sys.modules[__name__ + ".caffe_pb2"] = caffe_pb2

__all__ = ["caffe_pb2"]
