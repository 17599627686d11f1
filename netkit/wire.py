"""Protobuf wire format for the parts of a .caffemodel that are big: blob values.

A zoo .caffemodel is a NetParameter whose bulk is packed floats inside BlobProtos. Parsing it
with protobuf builds every value as a Python-visible repeated field and stops at protobuf's
2 GB message limit; here the file is scanned field by field instead, each layer's small
fields are parsed by protobuf, and each blob's packed floats become a numpy view of the file
bytes (no per-value work). Writing mirrors it: protobuf serializes the small fields and the
blob values are appended as raw bytes, in the order protobuf itself would write them.
"""
import numpy as np
from google.protobuf.message import DecodeError

from . import netkit_pb2 as pb

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

# Where the repeated BlobProto field sits in each layer message generation.
NET_LAYER_FIELDS = {  # NetParameter field -> (layer message, its blobs field)
    100: (pb.LayerParameter, 7),      # layer (V2)
    2: (pb.V1LayerParameter, 6),      # layers (V1)
}
V0_WRAPPER_FIELD, V0_LAYER_FIELD, V0_BLOBS_FIELD = 1, 1, 50  # V1LayerParameter.layer (V0)

BLOB_FLOATS = {5: ("data", np.float32), 6: ("diff", np.float32),
               8: ("double_data", np.float64), 9: ("double_diff", np.float64)}


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(buf, start=0, end=None):
    """Yield (field number, wire type, value start, value end, field start) for each field
    of the message in buf[start:end]; LENGTH values span their payload only."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            _, value_end = read_varint(buf, pos)
        elif wire_type == FIXED64:
            value_end = pos + 8
        elif wire_type == FIXED32:
            value_end = pos + 4
        elif wire_type == LENGTH:
            length, pos = read_varint(buf, pos)
            value_end = pos + length
        else:
            raise WireError("unsupported wire type %d (field %d)" % (wire_type, number))
        if value_end > end:
            raise WireError("field %d runs past the end of its message" % number)
        yield number, wire_type, pos, value_end, field_start
        pos = value_end


def decode_blob(buf, start=0, end=None):
    """(BlobProto without its float values, {"data"|"diff"|...: numpy view}) from the
    BlobProto in buf[start:end]. Unpacked (one-tag-per-value) floats, which protobuf also
    accepts, are left in the returned message."""
    rest = bytearray()
    arrays = {}
    view = memoryview(buf)
    for number, wire_type, lo, hi, field_start in fields(buf, start, end):
        kind = BLOB_FLOATS.get(number)
        if kind is not None and wire_type == LENGTH:
            name, dtype = kind
            values = np.frombuffer(view[lo:hi], dtype=np.dtype(dtype).newbyteorder("<"))
            previous = arrays.get(name)
            arrays[name] = values if previous is None else np.concatenate([previous, values])
        else:
            rest += view[field_start:hi]
    proto = pb.BlobProto()
    proto.ParseFromString(bytes(rest))
    for name, dtype in BLOB_FLOATS.values():
        repeated = getattr(proto, name)
        if len(repeated):  # unpacked values: rare, small, old writers
            arrays[name] = np.concatenate([arrays.get(name, np.zeros(0, dtype)),
                                           np.array(repeated, dtype)])
            del repeated[:]
    return proto, arrays


def blob_values(arrays, diff=False):
    """The float32 values of a decoded blob (float or double storage)."""
    if diff:
        values = arrays.get("double_diff", arrays.get("diff"))
    else:
        values = arrays.get("double_data", arrays.get("data"))
    return np.zeros(0, np.float32) if values is None else values.astype(np.float32, copy=False)


class Chunks(list):
    """A message's bytes as a list of buffers (bytes, or float32 arrays viewed as bytes):
    large values are written to a file straight from the arrays, never concatenated."""

    @property
    def size(self):
        return sum(memoryview(c).nbytes for c in self)

    def tobytes(self):
        return b"".join(memoryview(c).cast("B") for c in self)


def encode_blob(data, diff=None):
    """BlobProto Chunks for a float32 array (and diff), byte for byte what protobuf writes
    for the same message: data (5), diff (6), then shape (7); a 0-axis array has no shape."""
    data = np.asarray(data, dtype="<f4", order="C")
    out = Chunks()
    out += packed(5, data)
    if diff is not None:
        out += packed(6, np.asarray(diff, dtype="<f4", order="C"))
    if data.ndim:
        dims = b"".join(encode_varint(d) for d in data.shape)
        out.append(length_field(7, encode_varint(1 << 3 | LENGTH) + encode_varint(len(dims)) + dims))
    return out


def packed(number, array):
    if not array.size:
        return []
    return [length_head(number, array.nbytes), array.reshape(-1)]


def length_head(number, size):
    return encode_varint(number << 3 | LENGTH) + encode_varint(size)


def length_field(number, payload):
    return length_head(number, len(payload)) + payload


def encode_layer(layer_param, blobs, blobs_field=7):
    """A layer message as Chunks: `layer_param` (its blobs field empty) with the given
    BlobProto Chunks inserted where protobuf's field-number order puts them."""
    body = layer_param.SerializeToString()
    cut = len(body)
    for number, _, _, _, field_start in fields(body):
        if number > blobs_field:
            cut = field_start
            break
    out = Chunks([body[:cut]])
    for blob in blobs:
        out.append(length_head(blobs_field, blob.size))
        out += blob
    out.append(body[cut:])
    return out


def decode_net(buf):
    """(NetParameter with every blob's float values removed, [(layer name, [value arrays per
    blob])] in file order) from a serialized NetParameter of any generation."""
    rest = bytearray()
    values = []
    view = memoryview(buf)
    for number, wire_type, lo, hi, field_start in fields(buf):
        kind = NET_LAYER_FIELDS.get(number)
        if kind is None or wire_type != LENGTH:
            rest += view[field_start:hi]
            continue
        message, blobs_field = kind
        layer, arrays = decode_layer(buf, lo, hi, message, blobs_field)
        values.append(arrays)
        rest += length_field(number, layer.SerializeToString())
    net = pb.NetParameter()
    net.ParseFromString(bytes(rest))
    names = [layer.name for layer in net.layer] or [
        layer.name or layer.layer.name for layer in net.layers]
    return net, list(zip(names, values))


def decode_layer(buf, start, end, message, blobs_field):
    """A layer message parsed without its blobs' values, and those values (one dict per
    blob). A V1 layer wrapping a V0 one keeps the V0 blobs in the same way."""
    rest = []
    arrays = []
    protos = []
    view = memoryview(buf)
    for number, wire_type, lo, hi, field_start in fields(buf, start, end):
        if number == blobs_field and wire_type == LENGTH:
            proto, values = decode_blob(buf, lo, hi)
            protos.append(proto)
            arrays.append(values)
        elif message is pb.V1LayerParameter and number == V0_WRAPPER_FIELD:
            inner, inner_arrays = decode_layer(buf, lo, hi, pb.V0LayerParameter, V0_BLOBS_FIELD)
            arrays.extend(inner_arrays)
            rest.append(length_field(number, inner.SerializeToString()))
        else:
            rest.append(bytes(view[field_start:hi]))
    layer = message()
    try:
        layer.ParseFromString(b"".join(rest))
    except DecodeError:
        # A fork's field under a number netkit's schema gives another message: keep the
        # fields that parse alone (the prototxt, not the weights file, configures layers).
        layer.ParseFromString(b"".join(chunk for chunk in rest if _parses(message, chunk)))
    getattr(layer, layer.DESCRIPTOR.fields_by_number[blobs_field].name).extend(protos)
    return layer, arrays


def _parses(message, chunk):
    try:
        message().ParseFromString(chunk)
    except DecodeError:
        return False
    return True
