"""pycaffe's `caffe.proto` package: `caffe_pb2` is netkit's schema module, whose messages and
fields carry Caffe's names, so `caffe.proto.caffe_pb2.BlobProto()` works after
`import netkit as caffe`."""
from . import netkit_pb2 as caffe_pb2

__all__ = ["caffe_pb2"]
