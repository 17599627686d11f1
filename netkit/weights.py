"""Weights I/O: Blob <-> BlobProto, Net <-> .caffemodel (binary NetParameter) and
.caffemodel.h5 (Caffe's HDF5 layout: group "data", then one group per layer name holding
datasets "0", "1", ... for its blobs; group "diff" alike when diffs are written)."""
import mmap
import os

import numpy as np
from google.protobuf.message import DecodeError

from . import netkit_pb2 as pb
from . import wire
from .errors import NetkitError
from .log import logger
from .protoio import read_binary, replaced_atomically, write_atomic
from .upgrade import upgrade_net


def blob_proto_shape(proto, size=None):
    """The shape of a BlobProto: `shape.dim`, or the legacy num/channels/height/width, or
    1-D of its value count (`size` where the values were read apart from the message)."""
    if proto.HasField("shape"):
        return tuple(proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.data) or len(proto.double_data) if size is None else size,)


def blob_proto_to_array(proto, diff=False):
    """A float32 numpy array from a BlobProto (float or double data)."""
    _, arrays = wire.decode_blob(proto.SerializeToString())
    arr = wire.blob_values(arrays, diff)
    shape = blob_proto_shape(proto, arr.size)
    if arr.size != int(np.prod(shape)):
        raise NetkitError("blob has %d values but shape %s" % (arr.size, shape))
    return arr.reshape(shape)


def array_to_blob_proto(arr, diff=None, proto=None):
    """A BlobProto holding float32 `arr` (and `diff`); appended to `proto` if given."""
    proto = pb.BlobProto() if proto is None else proto
    proto.MergeFromString(wire.encode_blob(arr, diff).tobytes())
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


def layer_protos(net):
    """Each layer's LayerParameter as written into weights files: its blobs left out."""
    for layer in net.layers:
        lp = pb.LayerParameter()
        lp.CopyFrom(layer.layer_param)
        del lp.blobs[:]
        yield layer, lp


def net_to_proto(net, write_diff=False):
    """A NetParameter carrying each layer's parameters and blobs, as Caffe's ToProto."""
    param = pb.NetParameter()
    param.ParseFromString(encode_net(net, write_diff).tobytes())
    return param


def encode_net(net, write_diff=False):
    """The serialized NetParameter of net_to_proto as wire.Chunks: the blob values stay in
    (host copies of) their arrays."""
    be = net.backend
    head = pb.NetParameter()
    head.name = net.name
    out = wire.Chunks([head.SerializeToString()])
    for layer, lp in layer_protos(net):
        blobs = [wire.encode_blob(be.asnumpy(b.data), be.asnumpy(b.diff) if write_diff else None)
                 for b in layer.blobs]
        body = wire.encode_layer(lp, blobs)
        out.append(wire.length_head(100, body.size))
        out += body
    return out


def save_net(net, path, write_diff=False):
    write_atomic(path, encode_net(net, write_diff))


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
    with replaced_atomically(path) as tmp:
        with h5py.File(tmp, "w") as f:
            fill(f)


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


def hdf5_layer_names(path):
    """The layer names a .caffemodel.h5 holds blobs for."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return {name for name, group in f["data"].items() if len(group)} if "data" in f else set()
    except OSError as e:
        raise NetkitError("%s: cannot read as HDF5: %s" % (path, e)) from None


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
        ignored, copied = [], 0
        for name, group in f["data"].items():
            layer = by_name.get(name)
            if layer is None:
                ignored.append(name)
                continue
            copied += bool(len(group))
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
                net.backend.upload(blob.data, arr)
    report_copy(net, path, ignored, copied)


def read_caffemodel(path):
    """A binary .caffemodel read for copying: (NetParameter upgraded to the current form with
    every blob's values left out, [(layer name, [float32 array per blob])]). The values are
    views of the memory-mapped file: nothing is copied until they land in a net."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise NetkitError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    return decode_weights(buf, path)


def decode_weights(buf, where):
    try:
        param, values = wire.decode_net(buf)
    except (wire.WireError, DecodeError) as e:
        raise NetkitError("%s: not a valid binary NetParameter: %s" % (where, e)) from None
    param = upgrade_net(param, where, copy=False)
    return param, [(name, [wire.blob_values(a) for a in arrays]) for name, arrays in values]


def load_weights(path):
    """A NetParameter from a .caffemodel file, blob values included."""
    return read_binary(path, pb.NetParameter())


class Weights:
    """One weights source (a .caffemodel, a .caffemodel.h5 or a NetParameter), opened once:
    which layers it has values for, and copying them into a net by layer name."""

    def __init__(self, source):
        self.where = source if isinstance(source, str) else "<weights>"
        self.hdf5 = isinstance(source, str) and is_hdf5(source)
        if self.hdf5:
            self.names = hdf5_layer_names(source)
        else:
            if isinstance(source, str):
                self.param, self.values = read_caffemodel(source)
            else:
                self.param, self.values = decode_weights(source.SerializeToString(), self.where)
            self.names = {name for name, arrays in self.values if arrays}

    def copy_to(self, net):
        if self.hdf5:
            return copy_trained_layers_hdf5(net, self.where)
        by_layer = dict(self.values)
        by_name = dict(zip(net.layer_names, net.layers))
        be = net.backend
        ignored, copied = [], 0
        for lp in self.param.layer:
            name, arrays = lp.name, by_layer.get(lp.name)
            layer = by_name.get(name)
            if layer is None:
                ignored.append(name)
            if layer is None or not arrays:
                continue
            copied += 1
            if len(arrays) != len(layer.blobs):
                raise NetkitError("%s: incompatible number of blobs for layer '%s' (source %d, "
                                  "target %d)" % (self.where, name, len(arrays), len(layer.blobs)))
            for i, (proto, values, blob) in enumerate(zip(lp.blobs, arrays, layer.blobs)):
                shape = blob_proto_shape(proto, values.size)
                if not shapes_match(proto, blob.shape) or values.size != blob.count:
                    raise NetkitError(
                        "%s: cannot copy param %d weights from layer '%s'; shape mismatch. "
                        "Source param shape is %s; target param shape is %s. To learn this "
                        "layer's parameters from scratch rather than copying from a saved net, "
                        "rename the layer." % (self.where, i, name, shape, blob.shape))
                be.upload(blob.data, values.reshape(blob.shape))
        report_copy(net, self.where, ignored, copied)


def report_copy(net, where, ignored, copied):
    """Log each source layer the net has no namesake for, as Caffe does ("Ignoring source
    layer"), and warn when nothing at all was copied into a net that has weights: renamed
    layers or the wrong file would otherwise look like a successful fine-tune."""
    for name in ignored:
        logger.info("Ignoring source layer %s", name)
    if not copied and any(layer.blobs for layer in net.layers):
        logger.warning("%s: no layer of net '%s' matches a layer with weights in this file; "
                       "nothing was copied (weights go to layers of the same name)",
                       where, net.name)


def copy_trained_layers(net, weights):
    """Copy layer blobs from `weights` (path or NetParameter) into `net` by layer name;
    an HDF5 path (.h5 or the HDF5 signature) goes to copy_trained_layers_hdf5."""
    Weights(weights).copy_to(net)
