"""Upgrades applied on every read: Caffe's old net and solver formats -> the current ones.

Caffe changed its file formats several times and a Caffe user's files from every era must
keep working, text and binary alike. On reading a net, Caffe applies, in this order:

1. V0 -> V1. `layers { layer { type: "conv" num_output: 96 ... } bottom: ... }`, the flat
   V0LayerParameter nested in a V1LayerParameter: "padding" layers fold into the pad of the
   conv/pool layer that reads them, and each flat V0 field moves into its *_param message.
2. Data transformation. scale, mean_file, crop_size and mirror written in a V1 data layer's
   data_param, image_data_param or window_data_param move into transform_param.
3. V1 -> V2. `layers { type: CONVOLUTION blobs_lr: 1 weight_decay: 1 }` becomes
   `layer { type: "Convolution" param { lr_mult: 1 decay_mult: 1 } }`; blobs come along, so
   a V1 .caffemodel keeps its weights.
4. Net-level input/input_dim/input_shape -> an Input layer at the front of the net.
5. BatchNorm layers that still declare three param specs get lr_mult and decay_mult 0: their
   blobs are running statistics, not learned parameters.

A solver's `solver_type` enum becomes the `type` string. Each upgrade logs the lines Caffe
logs; what cannot be upgraded is a one-line NetkitError naming the file and the layer.
"""
from google.protobuf import unknown_fields

from . import netkit_pb2 as pb
from .errors import NetkitError
from .log import logger

V1 = pb.V1LayerParameter

# V0 type strings -> V1 LayerType values (V0 had no other types; "padding" folds away).
V0_LAYER_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# Where each flat V0 field goes in a V1 layer, by V0 layer type (None: whatever the type).
# A field set on a layer type it is not listed for cannot be upgraded.
V0_FIELDS = (
    ("num_output", {"conv": "convolution_param.num_output",
                    "innerproduct": "inner_product_param.num_output"}),
    ("biasterm", {"conv": "convolution_param.bias_term",
                  "innerproduct": "inner_product_param.bias_term"}),
    ("weight_filler", {"conv": "convolution_param.weight_filler",
                       "innerproduct": "inner_product_param.weight_filler"}),
    ("bias_filler", {"conv": "convolution_param.bias_filler",
                     "innerproduct": "inner_product_param.bias_filler"}),
    ("pad", {"conv": "convolution_param.pad", "pool": "pooling_param.pad"}),
    ("kernelsize", {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"}),
    ("group", {"conv": "convolution_param.group"}),
    ("stride", {"conv": "convolution_param.stride", "pool": "pooling_param.stride"}),
    ("pool", {"pool": "pooling_param.pool"}),
    ("dropout_ratio", {"dropout": "dropout_param.dropout_ratio"}),
    ("local_size", {"lrn": "lrn_param.local_size"}),
    ("alpha", {"lrn": "lrn_param.alpha"}),
    ("beta", {"lrn": "lrn_param.beta"}),
    ("k", {"lrn": "lrn_param.k"}),
    ("source", {"data": "data_param.source", "hdf5_data": "hdf5_data_param.source",
                "images": "image_data_param.source", "window_data": "window_data_param.source",
                "infogain_loss": "infogain_loss_param.source"}),
    ("scale", {None: "transform_param.scale"}),
    ("meanfile", {None: "transform_param.mean_file"}),
    ("batchsize", {"data": "data_param.batch_size", "hdf5_data": "hdf5_data_param.batch_size",
                   "images": "image_data_param.batch_size",
                   "window_data": "window_data_param.batch_size"}),
    ("cropsize", {None: "transform_param.crop_size"}),
    ("mirror", {None: "transform_param.mirror"}),
    ("rand_skip", {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"}),
    ("shuffle_images", {"images": "image_data_param.shuffle"}),
    ("new_height", {"images": "image_data_param.new_height"}),
    ("new_width", {"images": "image_data_param.new_width"}),
    ("concat_dim", {"concat": "concat_param.concat_dim"}),
    ("det_fg_threshold", {"window_data": "window_data_param.fg_threshold"}),
    ("det_bg_threshold", {"window_data": "window_data_param.bg_threshold"}),
    ("det_fg_fraction", {"window_data": "window_data_param.fg_fraction"}),
    ("det_context_pad", {"window_data": "window_data_param.context_pad"}),
    ("det_crop_mode", {"window_data": "window_data_param.crop_mode"}),
    ("hdf5_output_param", {"hdf5_output": "hdf5_output_param"}),
)

# V1 LayerType values -> V2 type strings.
V1_LAYER_TYPES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
    # DeepLab v1's types.
    V1.IMAGE_SEG_DATA: "ImageSegData", V1.SEG_ACCURACY: "SegAccuracy", V1.INTERP: "Interp",
    V1.MAT_WRITE: "MatWrite", V1.MAT_READ: "MatRead",
}

# Every *_param message of a V1 layer; LayerParameter has a field of the same name for each.
V1_PARAM_FIELDS = tuple(f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param"))

# V1 data layer types whose own param message carried the transformation fields.
DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
DATA_PARAM_OF_TYPE = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                      V1.WINDOW_DATA: "window_data_param"}

SOLVER_TYPES = {
    pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
    pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
    pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam",
}


# -- what needs upgrading --------------------------------------------------------------------
def net_needs_v0_upgrade(param):
    return any(v1.HasField("layer") for v1 in param.layers)


def net_needs_v1_upgrade(param):
    return len(param.layers) > 0


def net_needs_data_upgrade(param):
    for v1 in param.layers:
        field = DATA_PARAM_OF_TYPE.get(v1.type)
        if field and any(getattr(v1, field).HasField(f) for f in DATA_TRANSFORM_FIELDS):
            return True
    return False


def net_needs_input_upgrade(param):
    return len(param.input) > 0


def net_needs_batch_norm_upgrade(param):
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in param.layer)


def net_needs_upgrade(param):
    return (net_needs_v0_upgrade(param) or net_needs_v1_upgrade(param)
            or net_needs_data_upgrade(param) or net_needs_input_upgrade(param)
            or net_needs_batch_norm_upgrade(param))


# -- the whole net ---------------------------------------------------------------------------
def upgrade_net(param, source="<net>", copy=True):
    """`param` in the current form (V2 `layer {}`s, an Input layer, no deprecated fields).

    Returns `param` itself when it is already current. Otherwise upgrades a copy, or
    `param` in place when `copy` is false (a freshly read .caffemodel: saves copying its
    blobs once more). `source` names the file in log lines and errors.
    """
    if not net_needs_upgrade(param):
        return param
    if copy:
        original, param = param, pb.NetParameter()
        param.CopyFrom(original)
    if net_needs_v0_upgrade(param):
        logger.info("Attempting to upgrade input file specified using deprecated "
                    "V0LayerParameter: %s", source)
        upgrade_v0_net(param, source)
        logger.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        logger.warning("Note that V0NetParameter is deprecated; use netkit "
                       "upgrade_net_proto_text for prototxt and netkit "
                       "upgrade_net_proto_binary for model weights to upgrade this and any "
                       "other net protos to the new format.")
    if net_needs_data_upgrade(param):
        logger.info("Attempting to upgrade input file specified using deprecated "
                    "transformation parameters: %s", source)
        upgrade_net_data_transformation(param)
        logger.info("Successfully upgraded file specified using deprecated data "
                    "transformation parameters.")
        logger.warning("Note that transformation fields belong in transform_param messages; "
                       "the old places are deprecated.")
    if net_needs_v1_upgrade(param):
        logger.info("Attempting to upgrade input file specified using deprecated "
                    "V1LayerParameter: %s", source)
        upgrade_v1_net(param, source)
        logger.info("Successfully upgraded file specified using deprecated V1LayerParameter")
    if net_needs_input_upgrade(param):
        logger.info("Attempting to upgrade input file specified using deprecated "
                    "input fields: %s", source)
        upgrade_net_input(param, source)
        logger.info("Successfully upgraded file specified using deprecated input fields.")
        logger.warning("Note that net-level input fields are deprecated; use an Input layer.")
    if net_needs_batch_norm_upgrade(param):
        logger.info("Attempting to upgrade batch norm layers using deprecated params: %s",
                    source)
        upgrade_net_batch_norm(param)
        logger.info("Successfully upgraded batch norm layers using deprecated params.")
    return param


# -- V0 -> V1 --------------------------------------------------------------------------------
def upgrade_v0_net(param, source="<net>"):
    """V0 layers (`layers { layer { ... } }`) -> V1 layers, in place; returns `param`.

    Entries already in V1 form (no nested `layer`) pass through unchanged.
    """
    upgraded = [upgrade_v0_layer(v1, source) if v1.HasField("layer") else v1
                for v1 in fold_v0_padding_layers(param, source)]
    del param.layers[:]
    param.layers.extend(upgraded)
    return param


def fold_v0_padding_layers(param, source="<net>"):
    """The net's V0 layers without "padding" layers: each one's pad moves into the conv or
    pool layer that reads it, which then reads the padding layer's bottom instead.

    Returns a list of new V1LayerParameter messages.
    """
    layers = []
    producer = {name: None for name in param.input}  # blob -> the V0 layer that wrote it last
    for v1 in param.layers:
        v0 = v1.layer
        if v0.type != "padding":
            layers.append(V1())
            layers[-1].CopyFrom(v1)
        for j, name in enumerate(v1.bottom):
            if name not in producer:
                raise NetkitError("%s: layer '%s': unknown bottom blob '%s' (bottom %d)"
                                  % (source, _v0_name(v1), name, j))
            src = producer[name]
            if src is None or src.layer.type != "padding":
                continue
            where = "%s: layer '%s' reads padding layer '%s'" % (source, _v0_name(v1),
                                                                   src.layer.name)
            if v0.type not in ("conv", "pool"):
                raise NetkitError("%s, but only conv and pool layers can take a padding "
                                  "layer's output (this one is '%s')" % (where, v0.type))
            if len(v1.bottom) != 1:
                raise NetkitError("%s, so it must have one bottom, not %d"
                                  % (where, len(v1.bottom)))
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise NetkitError("%s, which must have one bottom and one top (it has %d and "
                                  "%d)" % (where, len(src.bottom), len(src.top)))
            layers[-1].layer.pad = src.layer.pad
            layers[-1].bottom[j] = src.bottom[0]
        for name in v1.top:
            producer[name] = v1
    return layers


def _v0_name(v1):
    return v1.layer.name if v1.HasField("layer") else v1.name


def upgrade_v0_layer(v1, source="<net>"):
    """A new V1LayerParameter from the V0 layer nested in `v1`."""
    v0 = v1.layer
    out = V1()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_LAYER_TYPES:
            raise NetkitError("%s: layer '%s': unknown V0 layer type '%s' (known types: %s)"
                              % (source, v0.name, v0.type, ", ".join(sorted(V0_LAYER_TYPES))))
        out.type = V0_LAYER_TYPES[v0.type]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in V0_FIELDS:
        if not v0.HasField(field):
            continue
        target = targets.get(None, targets.get(v0.type))
        if target is None:
            raise NetkitError("%s: layer '%s': V0 field '%s' has no meaning for layer type "
                              "'%s' and cannot be upgraded" % (source, v0.name, field, v0.type))
        _set_path(out, target, v0, field)
    return out


def _set_path(message, path, v0, field):
    """Set `message.<path>` (dotted) from `v0.<field>`: append to repeated fields, copy
    messages, and map enum values by name."""
    *parents, name = path.split(".")
    for parent in parents:
        message = getattr(message, parent)
    value = getattr(v0, field)
    target = message.DESCRIPTOR.fields_by_name[name]
    if target.is_repeated:
        getattr(message, name).append(value)
    elif target.message_type is not None:
        getattr(message, name).CopyFrom(value)
    elif target.enum_type is not None:
        label = v0.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name
        setattr(message, name, target.enum_type.values_by_name[label].number)
    else:
        setattr(message, name, value)


# -- data transformation fields --------------------------------------------------------------
def upgrade_net_data_transformation(param):
    """Move scale/mean_file/crop_size/mirror of V1 data layers into transform_param, in
    place; returns `param`.

    As in Caffe, every V1 data layer then has a transform_param and its own *_param
    message, empty ones included: an upgraded file is the one Caffe writes."""
    for v1 in param.layers:
        field = DATA_PARAM_OF_TYPE.get(v1.type)
        if field is None:
            continue
        data = getattr(v1, field)
        data.SetInParent()
        v1.transform_param.SetInParent()
        for name in DATA_TRANSFORM_FIELDS:
            if data.HasField(name):
                setattr(v1.transform_param, name, getattr(data, name))
                data.ClearField(name)
    return param


# -- V1 -> V2 --------------------------------------------------------------------------------
def upgrade_v1_net(param, source="<net>"):
    """V1 `layers {}` -> V2 `layer {}`, in place; returns `param`."""
    if param.layer:
        raise NetkitError("%s: the net has both 'layer' and 'layers' fields; the current "
                          "format is layer { type: 'Layer' ... }, not layers { type: LAYER ... "
                          "}: rewrite it in one format" % source)
    for v1 in param.layers:
        upgrade_v1_layer(v1, param.layer.add(), source)
    del param.layers[:]
    return param


def upgrade_v1_layer(v1, layer, source="<net>"):
    """Fill the empty LayerParameter `layer` from the V1LayerParameter `v1`."""
    if v1.HasField("layer"):
        raise NetkitError("%s: layer '%s' still holds a V0 layer; upgrade it from V0 first"
                          % (source, v1.name))
    _check_known_enums(v1, source)
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = V1_LAYER_TYPES[v1.type]
    layer.blobs.extend(v1.blobs)
    specs = (("name", v1.param), ("share_mode", v1.blob_share_mode),
             ("lr_mult", v1.blobs_lr), ("decay_mult", v1.weight_decay))
    for field, values in specs:
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], field, value)
    layer.loss_weight.extend(v1.loss_weight)
    for field in V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _check_known_enums(v1, source):
    """Binary files may carry enum values this schema does not know (a fork's layer type);
    protobuf keeps those among the unknown fields, where they would silently vanish."""
    fields = {V1.DESCRIPTOR.fields_by_name[n].number: n for n in ("type", "blob_share_mode")}
    for unknown in unknown_fields.UnknownFieldSet(v1):
        if unknown.field_number in fields:
            raise NetkitError("%s: layer '%s': unknown V1 %s value %s"
                              % (source, v1.name, fields[unknown.field_number], unknown.data))


# -- net-level inputs ------------------------------------------------------------------------
def upgrade_net_input(param, source="<net>"):
    """Net-level input + input_dim/input_shape -> an Input layer named 'input' at the front,
    in place; returns `param`. Inputs without any shape (old .caffemodel files) are dropped."""
    n = len(param.input)
    if param.input_shape and len(param.input_shape) not in (1, n):
        raise NetkitError("%s: %d input_shape entries for %d inputs"
                          % (source, len(param.input_shape), n))
    if param.input_dim and len(param.input_dim) != 4 * n:
        raise NetkitError("%s: input_dim must give 4 values per input (%d inputs, %d values)"
                          % (source, n, len(param.input_dim)))
    if param.input_shape or param.input_dim:
        layer = pb.LayerParameter(name="input", type="Input")
        for i, name in enumerate(param.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if param.input_shape:
                shape.CopyFrom(param.input_shape[min(i, len(param.input_shape) - 1)])
            else:
                shape.dim.extend(param.input_dim[4 * i:4 * i + 4])
        param.layer.insert(0, layer)
    del param.input[:]
    del param.input_dim[:]
    del param.input_shape[:]
    return param


# -- BatchNorm -------------------------------------------------------------------------------
def upgrade_net_batch_norm(param):
    """BatchNorm layers declaring three param specs (the old way to keep the solver off the
    statistics): lr_mult and decay_mult 0 on each, other spec fields kept; in place."""
    for layer in param.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0
    return param


# -- solvers ---------------------------------------------------------------------------------
def solver_needs_upgrade(param):
    return param.HasField("solver_type")


def upgrade_solver(param, source="<solver>"):
    """The deprecated `solver_type` enum -> the `type` string, in place; returns `param`."""
    if not solver_needs_upgrade(param):
        return param
    if param.HasField("type"):
        raise NetkitError("%s: cannot upgrade the solver: the deprecated solver_type (enum) "
                          "and type (string) are both given; keep only type" % source)
    logger.info("Attempting to upgrade input file specified using deprecated "
                "'solver_type' field (enum)': %s", source)
    param.type = SOLVER_TYPES[param.solver_type]
    param.ClearField("solver_type")
    logger.info("Successfully upgraded file specified using deprecated 'solver_type' field "
                "(enum) to 'type' field (string).")
    logger.warning("Note that the 'solver_type' field (enum) is deprecated; use the 'type' "
                   "field (string) for a solver's type.")
    return param
