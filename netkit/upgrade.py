"""Upgrades applied on every read: legacy net-level inputs -> an Input layer.

Caffe's deploy files often declare inputs with the net-level `input` + `input_dim` or
`input_shape` fields; a modern net expresses the same with an Input layer first.
"""
from . import netkit_pb2 as pb
from .errors import NetkitError


def upgrade_net(param, source="<net>"):
    """Return `param` in the current (V2, Input-layer) form."""
    if param.layers:
        raise NetkitError("%s: this net uses the V1 'layers {}' format, which this version "
                          "of netkit cannot upgrade yet; rewrite it with 'layer {}'" % source)
    if not param.input:
        return param
    return upgrade_input_fields(param, source)


def upgrade_input_fields(param, source):
    """net-level input/input_dim/input_shape -> an Input layer named 'input'."""
    n = len(param.input)
    if param.input_shape and len(param.input_shape) not in (1, n):
        raise NetkitError("%s: %d input_shape entries for %d inputs" % (source, len(param.input_shape), n))
    if param.input_dim and len(param.input_dim) != 4 * n:
        raise NetkitError("%s: input_dim must give 4 values per input (%d inputs, %d values)"
                          % (source, n, len(param.input_dim)))
    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.input[:]
    del out.input_dim[:]
    del out.input_shape[:]
    del out.layer[:]
    layer = out.layer.add()
    layer.name = "input"
    layer.type = "Input"
    for i, name in enumerate(param.input):
        layer.top.append(name)
        shape = layer.input_param.shape.add()
        if param.input_shape:
            shape.CopyFrom(param.input_shape[min(i, len(param.input_shape) - 1)])
        elif param.input_dim:
            shape.dim.extend(param.input_dim[4 * i:4 * i + 4])
    out.layer.extend(param.layer)
    return out
