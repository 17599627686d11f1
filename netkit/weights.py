"""Weights I/O: Blob <-> BlobProto, Net <-> .caffemodel (binary NetParameter) and
.caffemodel.h5 (Caffe's HDF5 layout: group "data", then one group per layer name holding
datasets "0", "1", ... for its blobs; group "diff" alike when diffs are written)."""
import os
import tempfile

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


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path):
    """Caffe picks its HDF5 reader by the ".h5" extension; netkit also knows the file by
    its HDF5 signature, so a renamed .caffemodel.h5 still loads."""
    if path.endswith(".h5"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def write_hdf5_atomic(path, fill):
    """Create an HDF5 file by calling `fill(h5py.File)` on a temporary file in the same
    directory, then rename it over `path`: a crash mid-write leaves the old file intact."""
    import h5py
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_hdf5_string(group, name, text):
    """A scalar null-terminated string dataset, as HDF5's H5LTmake_dataset_string (and so
    Caffe's hdf5_save_string) writes it: C readers find the terminator they expect."""
    import h5py
    data = text.encode("utf-8") + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(data))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    dataset = h5py.h5d.create(group.id, name.encode("utf-8"), string_type,
                              h5py.h5s.create(h5py.h5s.SCALAR))
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(data, dtype="S%d" % len(data)))


def owned_blobs(net):
    """(layer name, index, blob, owned) for every layer blob; `owned` is False where the
    blob is shared from an earlier layer's param, which Caffe's ToHDF5 writes only once."""
    owners = {id(p.blob) for p in net.learnable_params}
    seen = set()
    for name, layer in zip(net.layer_names, net.layers):
        for i, blob in enumerate(layer.blobs):
            owned = id(blob) in owners and id(blob) not in seen
            seen.add(id(blob))
            yield name, i, blob, owned


def save_net_hdf5(net, path, write_diff=False):
    """Write the weights as Caffe's .caffemodel.h5 (Net::ToHDF5), atomically."""
    be = net.backend

    def fill(f):
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for name in net.layer_names:
            data.create_group(name)
            if diff is not None:
                diff.create_group(name)
        for name, i, blob, owned in owned_blobs(net):
            if owned:
                data[name].create_dataset(str(i), data=be.asnumpy(blob.data).astype(np.float32))
            if diff is not None:  # diffs are written for shared blobs too, as in Caffe
                diff[name].create_dataset(str(i), data=be.asnumpy(blob.diff).astype(np.float32))

    write_hdf5_atomic(path, fill)


def copy_trained_layers_hdf5(net, path):
    """Caffe's CopyTrainedLayersFromHDF5: layers by name from group "data"; a blob may
    be missing only where the target shares it from another layer."""
    import h5py
    shared = {(name, i) for name, i, _, owned in owned_blobs(net) if not owned}
    by_name = dict(zip(net.layer_names, net.layers))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NetkitError("%s: cannot read as HDF5: %s" % (path, e)) from None
    with f:
        if "data" not in f:
            raise NetkitError("%s: HDF5 weights file has no 'data' group" % path)
        for name, group in f["data"].items():
            layer = by_name.get(name)
            if layer is None:
                continue
            if len(group) > len(layer.blobs):
                raise NetkitError("%s: incompatible number of blobs for layer '%s' (source "
                                  "%d, target %d)" % (path, name, len(group), len(layer.blobs)))
            for i, blob in enumerate(layer.blobs):
                if str(i) not in group:
                    if (name, i) in shared:
                        continue
                    raise NetkitError("%s: incompatible number of blobs for layer '%s' "
                                      "(no dataset '%d')" % (path, name, i))
                arr = np.asarray(group[str(i)], dtype=np.float32)
                if arr.shape != tuple(blob.shape):
                    raise NetkitError(
                        "%s: cannot copy param %d weights from layer '%s'; shape mismatch. "
                        "Source param shape is %s; target param shape is %s."
                        % (path, i, name, arr.shape, tuple(blob.shape)))
                blob.data[...] = net.backend.asarray(arr)


def load_weights(path):
    """A NetParameter from a .caffemodel file."""
    return read_binary(path, pb.NetParameter())


def copy_trained_layers(net, weights):
    """Copy layer blobs from `weights` (path or NetParameter) into `net` by layer name;
    an HDF5 path (.h5 or the HDF5 signature) goes to copy_trained_layers_hdf5."""
    if isinstance(weights, str) and is_hdf5(weights):
        return copy_trained_layers_hdf5(net, weights)
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
