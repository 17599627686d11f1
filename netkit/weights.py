"""Weights I/O: Blob <-> BlobProto, Net <-> .caffemodel (binary NetParameter)."""
import numpy as np

from . import netkit_pb2 as pb
from .errors import NetkitError
from .protoio import read_binary, write_binary
from .upgrade import upgrade_net


def blob_proto_shape(proto):
    """The shape of a BlobProto: `shape.dim`, or the legacy num/channels/height/width."""
    if proto.HasField("shape"):
        return tuple(proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.data) or len(proto.double_data),)


def blob_proto_to_array(proto, diff=False):
    """A float32 numpy array from a BlobProto (float or double data)."""
    values = (proto.double_diff or proto.diff) if diff else (proto.double_data or proto.data)
    arr = np.array(values, dtype=np.float32)
    shape = blob_proto_shape(proto)
    if arr.size != int(np.prod(shape)):
        raise NetkitError("blob has %d values but shape %s" % (arr.size, shape))
    return arr.reshape(shape)


def array_to_blob_proto(arr, diff=None, proto=None):
    proto = pb.BlobProto() if proto is None else proto
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim:
        # As Caffe: a 0-axis blob has no shape field at all (OpenCV rejects an empty one).
        proto.shape.dim.extend(arr.shape)
    proto.data.extend(arr.ravel().tolist())
    if diff is not None:
        proto.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return proto


def shapes_match(proto, shape):
    """Caffe's ShapeEquals: new-style shapes exactly; legacy 4-D ones on trailing axes."""
    legacy_fields = ("num", "channels", "height", "width")
    if proto.HasField("shape") or not any(proto.HasField(f) for f in legacy_fields):
        return tuple(proto.shape.dim) == tuple(shape)
    legacy = (proto.num, proto.channels, proto.height, proto.width)
    if len(shape) > 4:
        return False
    return tuple(legacy[4 - len(shape):]) == tuple(shape) and all(
        d == 1 for d in legacy[:4 - len(shape)])


def net_to_proto(net, write_diff=False):
    """A NetParameter carrying each layer's parameters and blobs, as Caffe's ToProto."""
    be = net.backend
    param = pb.NetParameter()
    param.name = net.name
    for layer in net.layers:
        lp = param.layer.add()
        lp.CopyFrom(layer.layer_param)
        del lp.blobs[:]
        for blob in layer.blobs:
            array_to_blob_proto(be.asnumpy(blob.data),
                                be.asnumpy(blob.diff) if write_diff else None, lp.blobs.add())
    return param


def save_net(net, path, write_diff=False):
    write_binary(path, net_to_proto(net, write_diff))


def load_weights(path):
    """A NetParameter from a .caffemodel file."""
    return read_binary(path, pb.NetParameter())


def copy_trained_layers(net, weights):
    """Copy layer blobs from `weights` (path or NetParameter) into `net` by layer name."""
    source = weights if isinstance(weights, pb.NetParameter) else load_weights(weights)
    where = weights if isinstance(weights, str) else "<weights>"
    # V0/V1 files upgrade on read, as in Caffe; a file just loaded is upgraded in place.
    source = upgrade_net(source, where, copy=source is weights)
    layers = list(source.layer)
    by_name = {name: layer for name, layer in zip(net.layer_names, net.layers)}
    be = net.backend
    for src in layers:
        layer = by_name.get(src.name)
        if layer is None or not src.blobs:
            continue
        if len(src.blobs) != len(layer.blobs):
            raise NetkitError("%s: incompatible number of blobs for layer '%s' (source %d, "
                              "target %d)" % (where, src.name, len(src.blobs), len(layer.blobs)))
        for i, (proto, blob) in enumerate(zip(src.blobs, layer.blobs)):
            if not shapes_match(proto, blob.shape):
                raise NetkitError(
                    "%s: cannot copy param %d weights from layer '%s'; shape mismatch. Source "
                    "param shape is %s; target param shape is %s. To learn this layer's "
                    "parameters from scratch rather than copying from a saved net, rename "
                    "the layer." % (where, i, src.name, blob_proto_shape(proto), blob.shape))
            blob.data[...] = be.asarray(blob_proto_to_array(proto).reshape(blob.shape))
