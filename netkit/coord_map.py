"""pycaffe's coord_map: how positions in one NetSpec top correspond to positions in
another, and `crop`, which writes the Crop layer that aligns the two (FCN's skip layers).

A coordinate map is a triple (axis, a, b): along each spatial axis after `axis` (the
channel axis, or for a Crop the one before its first cropped axis), position x of the
layer's bottom lands on position a * x + b of its top. `a` and `b` are arrays with one
entry per spatial axis, or the scalars 1 and 0; axis None means the map holds along any
axis, as for the pass-through layers, which leave positions where they are.

    from netkit.coord_map import crop
    n.score = crop(n.upscore, n.data)   # Crop with the axis and offset that align them

Layers are read from the keyword arguments given to `L.<Type>(...)` (`Function.params`):
the fields may sit at the top level or in the layer's parameter dict
(`convolution_param=dict(...)`, `pooling_param=dict(...)`, `crop_param=dict(...)`).
"""
import numpy as np

from .net_spec import layers as L

# Layers whose top has the geometry of their bottom: position x stays position x.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold"]

# Where each windowed layer keeps its kernel, stride and pad when they are given as a dict.
_WINDOW_PARAMS = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
                  "Im2col": "convolution_param", "Pooling": "pooling_param"}

# Per-axis fields of old prototxt that the map does not read.
_LEGACY_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(Exception):
    """The layer has no coordinate map (InnerProduct, global pooling, data layers ...):
    positions of its top do not correspond to positions of its bottom."""


class AxisMismatchException(Exception):
    """Two maps act on different axes, so they cannot be chained."""


def _name(fn):
    """`Type` or `Type 'name'` for messages."""
    name = fn.params.get("name")
    return fn.type_name if name is None else "%s '%s'" % (fn.type_name, name)


def conv_params(fn):
    """(axis, stride, effective kernel size, pad) of a Convolution, Deconvolution, Im2col
    or Pooling layer, each an array over the spatial axes; the effective kernel of a
    dilated convolution spans (kernel_size - 1) * dilation + 1 positions."""
    params = fn.params.get(_WINDOW_PARAMS.get(fn.type_name), fn.params)
    legacy = _LEGACY_FIELDS & (set(fn.params) | set(params))
    if legacy:
        raise AssertionError("%s: cropping does not support the legacy _h/_w fields (%s); "
                             "give kernel_size, stride and pad as lists"
                             % (_name(fn), ", ".join(sorted(legacy))))
    if params.get("global_pooling"):
        raise UndefinedMapException("%s pools globally: its 1x1 top has no coordinate map"
                                    % _name(fn))
    if "kernel_size" not in params:
        raise AssertionError("%s has no kernel_size" % _name(fn))
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop layer with Caffe's defaults: axis 2 (crop height and
    width of N x C x H x W), offset 0; offset is an array."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The map (axis, a, b) from `fn`'s bottom to its top.

    A window of size k, stride s and pad p centres top position y on bottom position
    s * y - p + (k - 1) / 2, so x lands on x / s + (p - (k - 1) / 2) / s; Deconvolution
    is the reverse of that; a Crop with offset o moves x to x - o; pass-through layers
    give (None, 1, 0). Other layers raise UndefinedMapException.
    """
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, kernel, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (kernel - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, kernel, pad = conv_params(fn)
        return axis, stride, (kernel - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        # A Crop names its first cropped axis; maps name the axis before the spatial ones.
        return axis - 1, 1, -offset
    raise UndefinedMapException("%s has no coordinate map" % _name(fn))


def compose(base_map, next_map):
    """The map that applies `next_map` and then `base_map`: scales multiply, and the
    later shift b2 is scaled by a1 (x -> a1 * (a2 * x + b2) + b1). Axis None joins any
    axis; two different axes raise AxisMismatchException."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        axis = ax2
    elif ax2 is None or ax1 == ax2:
        axis = ax1
    else:
        raise AxisMismatchException("cannot chain a map along axis %s with one along axis %s"
                                    % (ax1, ax2))
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: y = a * x + b gives x = y / a - b / a."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mapped_bottoms(top):
    """The bottoms whose positions `top` relates to: all of them, except for a Crop, whose
    second bottom only gives the output size."""
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk_back(start):
    """(top, map from that top's positions to `start`'s) for `start` and then each
    ancestor reached through layers with a map, nearest first."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    yield start, maps[start]
    for top in frontier:
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(top):
            if bottom not in maps:
                maps[bottom] = compose(maps[top], step)
                frontier.append(bottom)
                yield bottom, maps[bottom]


def coord_map_from_to(top_from, top_to):
    """The map (axis, a, b) taking positions of `top_from` to positions of `top_to`.

    Both tops are walked back through the layers that have maps to the nearest top they
    share (for `top_to`); there, the map from the shared top to `top_to` is composed with
    the inverse of its map to `top_from`. Tops that share no such ancestor (e.g. one
    behind an InnerProduct) raise RuntimeError.
    """
    from_maps = dict(_walk_back(top_from))
    for top, to_map in _walk_back(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from, top_to):
    """An `L.Crop(top_from, top_to)` top that cuts `top_from` to `top_to`'s spatial size
    with the two aligned: `crop_param` axis is the first spatial axis and offset is where
    `top_to`'s position 0 falls in `top_from`. Raises AssertionError when the tops differ
    in scale, when `top_from` would need padding rather than cropping, or when the offset
    is fractional."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    if not (a == 1).all():
        raise AssertionError("scale mismatch on crop (a = {})".format(a))
    if not (b <= 0).all():
        raise AssertionError("cannot crop negative offset (b = {})".format(b))
    if not (np.round(b) == b).all():
        raise AssertionError("cannot crop noninteger offset (b = {})".format(b))
    offset = [int(o) for o in -np.round(b)]
    # A map along no particular axis (pass-through layers only) crops from Caffe's
    # default axis, 2.
    first_cropped = 2 if axis is None else int(axis) + 1
    return L.Crop(top_from, top_to, crop_param=dict(axis=first_cropped, offset=offset))
