"""Nets written in Python (pycaffe's net_spec): layers as function calls, tops as values.

    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64,
                             ntop=2, transform_param=dict(scale=1. / 256))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    net_param = n.to_proto()          # a NetParameter; str(net_param) is its prototxt

`L.<Type>(*bottoms, **fields)` makes a layer of that type. Keyword arguments go to the
layer's own parameter message when it has that field (`<type>_param`, found as pycaffe
finds it: the LayerParameter field whose message type is `<Type>Parameter`), else to the
LayerParameter itself (`name`, `include`, `loss_weight`, `param`, ...); keywords ending
in "param" always go to the LayerParameter. Lists fill repeated fields, dicts fill
messages, and a single value given for a repeated field counts as a list of one.
`ntop=k` gives k tops (a tuple; 0 gives the layer itself), `in_place=True` writes the
top over the first bottom. Tops and layers take their names from the NetSpec attributes
they are assigned to; others are named `<Type><k>`. `P.<Type>.<ENUM>` is an enum value
of `<Type>Parameter`, e.g. `P.Pooling.MAX`.
"""
from collections import Counter, OrderedDict

from . import netkit_pb2 as pb


def param_name_dict():
    """{layer type: parameter field stem}, e.g. {"InnerProduct": "inner_product"}: every
    LayerParameter field `<stem>_param` whose message type is `<Type>Parameter`. Where a
    fork's field reuses a message (relu6_param is a ReLUParameter), BVLC's field, the one
    with the lower number, keeps the type: L.ReLU(negative_slope=...) sets relu_param."""
    names = {}
    for field in sorted(pb.LayerParameter.DESCRIPTOR.fields, key=lambda f: f.number):
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names.setdefault(type_name[:-len("Parameter")], field.name[:-len("_param")])
    return names


_param_names = param_name_dict()


def assign_proto(proto, name, value):
    """Set field `name` of `proto` from a Python value: lists fill repeated fields (dicts
    in them add messages), dicts fill a message field by field, other values are set."""
    field = getattr(proto, name)
    is_repeated = hasattr(field, "extend")
    if is_repeated and not isinstance(value, (list, tuple)):
        value = [value]
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for k, v in item.items():
                    assign_proto(message, k, v)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign_proto(field, k, v)
    else:
        setattr(proto, name, value)


def to_proto(*tops):
    """A NetParameter holding every layer needed to compute `tops`, with generated names."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = pb.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """One output blob of a layer: top number `n` of Function `fn`."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter holding every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops of earlier layers) and its fields."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError("%s input %d is not a Top (type is %s)"
                                % (type_name, index, type(bottom)))
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        """The layer's name: its first top's name, else its own NetSpec name or an
        automatic one."""
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        """Add this layer (after the layers its bottoms come from) to `layers`."""
        if self in layers:
            return
        bottom_names = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottom_names.append(layers[bottom.fn].top[bottom.n])
        layer = pb.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, _param_names[self.type_name] + "_param"),
                             key, value)
            except (AttributeError, KeyError):
                if not hasattr(layer, key):
                    raise AttributeError(
                        "L.%s(%s=...): neither LayerParameter nor a %sParameter has a field "
                        "'%s'; layers whose fields live in another message take it as a "
                        "dict, e.g. L.Deconvolution(x, convolution_param=dict(num_output=2))"
                        % (self.type_name, key, self.type_name, key)) from None
                assign_proto(layer, key, value)
        layers[self] = layer


class NetSpec:
    """Tops (and top-less layers) assigned as attributes or items, in order; `to_proto`
    names each after its attribute and returns the NetParameter that computes them all."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError("NetSpec has no top named '%s'" % name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.tops[item]

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = pb.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`L.<Type>(*bottoms, **fields)`: a layer of that type; returns its top, its tops
    (ntop > 1) or the layer itself (ntop=0)."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class _EnumValues:
    """The enum values of one `<Type>Parameter` message, as attributes."""

    def __init__(self, type_name):
        self._type_name = type_name

    def __getattr__(self, value_name):
        if value_name.startswith("__"):
            raise AttributeError(value_name)
        return getattr(getattr(pb, self._type_name + "Parameter"), value_name)


class Parameters:
    """`P.<Type>.<NAME>`: enum value NAME of `<Type>Parameter`, e.g. `P.Pooling.MAX`."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        return _EnumValues(type_name)


layers = Layers()
params = Parameters()
