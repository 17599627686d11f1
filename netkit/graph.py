"""Pure NetParameter -> NetParameter passes: NetState filtering and Split insertion.

Each pass returns a new message and leaves its input untouched, so each is testable alone.
"""
from collections import defaultdict

from . import netkit_pb2 as pb
from .errors import NetkitError


def state_meets_rule(state, rule):
    """Caffe's StateMeetsRule: phase, min/max level, every stage present, no not_stage."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer, state):
    if layer.include and layer.exclude:
        raise NetkitError("layer '%s': specify either include or exclude rules, not both"
                          % layer.name)
    if layer.include:
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def filter_net(param, state):
    """Keep the layers whose include/exclude rules admit `state` (a NetState)."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    out.state.CopyFrom(state)
    for layer in param.layer:
        if layer_included(layer, state):
            out.layer.add().CopyFrom(layer)
    return out


def split_layer_name(layer_name, blob_name, top_index):
    return "%s_%s_%d_split" % (blob_name, layer_name, top_index)


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return "%s_%s_%d_split_%d" % (blob_name, layer_name, top_index, split_index)


def insert_splits(param, where=lambda layer: "layer '%s'" % layer.name):
    """Caffe's InsertSplits: a top read by several bottoms (a loss top counting as one more
    reader) gets a Split layer whose tops feed each reader, named as Caffe names them.
    A bottom nothing produces is an error, located by `where(layer)`."""
    producer = {}  # blob name -> (layer index, top index) of its latest producer
    readers = defaultdict(int)  # (layer index, top index) -> number of bottoms reading it
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for name in layer.bottom:
            if name not in producer:
                raise NetkitError("%s: unknown bottom blob '%s'; no layer before it produces "
                                  "it" % (where(layer), name))
            readers[producer[name]] += 1
        for j, name in enumerate(layer.top):
            producer[name] = (i, j)
            if j < len(layer.loss_weight) and layer.loss_weight[j]:
                loss_weight[(i, j)] = layer.loss_weight[j]
                readers[(i, j)] += 1

    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    producer = {}
    next_split = defaultdict(int)
    for i, layer in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for k, name in enumerate(layer.bottom):
            src = producer[name]
            if readers[src] > 1:
                src_layer = param.layer[src[0]].name
                new.bottom[k] = split_blob_name(src_layer, name, src[1], next_split[src])
                next_split[src] += 1
        for j, name in enumerate(layer.top):
            producer[name] = (i, j)
            count = readers[(i, j)]
            if count <= 1:
                continue
            split = out.layer.add()
            split.name = split_layer_name(layer.name, name, j)
            split.type = "Split"
            split.bottom.append(name)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, name, j, k))
            weight = loss_weight.get((i, j))
            if weight:
                # The loss moves to the split's first top; the layer itself carries none.
                split.loss_weight.append(weight)
                split.loss_weight.extend([0.0] * (count - 1))
                del new.loss_weight[:]
                next_split[(i, j)] += 1
    return out
