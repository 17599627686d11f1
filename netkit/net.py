"""Net: a NetParameter built into wired layers, with Caffe's forward/backward semantics.

Building is a list of passes: filter by NetState -> insert splits -> instantiate layers
-> wire bottoms/tops (in place by name) -> setup -> collect params (sharing by ParamSpec
name, lr_mult/decay_mult) -> decide need_backward and prune -> net outputs.
"""
import contextvars
import os
from collections import OrderedDict

import numpy as np

from . import netkit_pb2 as pb
from . import fillers, graph
from .backend import get_backend
from .blob import Blob
from .errors import NetkitError
from .layer import TEST, LayerSetupError
from .log import default_logging, logger
from .protoio import load_net_param
from .pycaffe import NetConveniences
from .registry import UnknownTypeError, layers as layer_registry
from .weights import Weights

# The prototxt path of the net being built ("<string>" for text): a Python layer imports
# its module from that file's directory, as pycaffe users arrange through PYTHONPATH.
building_source = contextvars.ContextVar("building_source", default=None)


class Param:
    """A learnable parameter blob with its multipliers (one per owner, shared ones merged)."""

    def __init__(self, blob, name, lr_mult, decay_mult):
        self.blob = blob
        self.name = name
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult


class Net(NetConveniences):
    """A Caffe net on one backend.

    Net(model, phase)  or  Net(model, weights, phase)  (pycaffe's orders), or keywords:
    Net(model, phase=TRAIN, weights="a.caffemodel,b.caffemodel", level=0, stages=(),
        backend="cpu").  `model` is a prototxt path, prototxt text or a NetParameter.
    """

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=(),
                 backend=None, state=None):
        for a in args:
            if isinstance(a, (str, os.PathLike)):
                weights = a
            else:
                phase = a
        phase = TEST if phase is None and state is None else phase
        default_logging()
        import netkit.layers  # noqa: F401  (registers every layer type)
        self.backend = get_backend(backend)
        param, self.source = load_net_param(model)
        if state is None:
            state = pb.NetState()
            state.CopyFrom(param.state)
            state.phase = phase
            if level:
                state.level = level
            state.stage.extend(stages)
        self.phase = state.phase
        self.name = param.name
        # Weights are opened first so that layers they cover skip their random fill (a
        # VGG-size net would spend seconds drawing values that are overwritten at once).
        # Several comma-separated files, as the train command's --weights, unless the whole
        # string names one file (pycaffe passes it on as one path, commas and all).
        if not weights:
            paths = []
        elif isinstance(weights, pb.NetParameter) or os.path.isfile(weights):
            paths = [weights]
        else:
            paths = [p for p in os.fspath(weights).split(",") if p]
        sources = [Weights(path) for path in paths]
        token = building_source.set(self.source)
        try:
            self._build(param, state, set().union(*(s.names for s in sources)))
        finally:
            building_source.reset(token)
        for source in sources:
            source.copy_to(self)

    # -- building ------------------------------------------------------------------------
    def _where(self, layer_param):
        return "%s: layer '%s' (type %s)" % (self.source, layer_param.name, layer_param.type)

    def _named(self, error, layer_param):
        """`error` as a NetkitError that names the file and the layer it came from (bad
        parameters, a shape that changed, data met in a pass such as a label out of range)."""
        if not isinstance(error, NetkitError):
            return NetkitError("%s: %s" % (self._where(layer_param), error))
        if "layer '%s'" % layer_param.name not in str(error):
            error.args = ("%s: %s" % (self._where(layer_param), error),) + error.args[1:]
        return error

    def _build(self, param, state, loaded=frozenset()):
        from .upgrade import upgrade_net
        param = upgrade_net(param, self.source)
        param = graph.filter_net(param, state)
        param = graph.insert_splits(param, self._where)
        self.param = param
        self.force_backward = param.force_backward
        self.layers = []
        self.layer_names = []
        self.blobs = OrderedDict()
        self.bottom_vecs, self.top_vecs = [], []
        self.layer_bottom_names, self.layer_top_names = [], []
        self.loss_weights = []  # per layer: list of (top index, weight)
        blob_need_backward = {}
        available = OrderedDict()
        self.layer_need_backward = []
        self.bottom_need_backward = []
        self._params = []  # learnable Params (owners only)
        self._param_owner = {}  # ParamSpec name -> (Param, layer name, shape)
        self.params = OrderedDict()

        for lp in param.layer:
            where = self._where(lp)
            try:
                cls = layer_registry.get(lp.type)
            except UnknownTypeError as e:
                raise NetkitError("%s: %s" % (where, e)) from None
            if len(lp.propagate_down) not in (0, len(lp.bottom)):
                raise NetkitError("%s: propagate_down must be given once per bottom (%d), got %d"
                                  % (where, len(lp.bottom), len(lp.propagate_down)))
            try:
                layer = cls(lp, state.phase, self.backend)
            except LayerSetupError as e:
                raise NetkitError("%s: %s" % (where, e)) from None
            bottom, need = [], []
            for k, name in enumerate(lp.bottom):  # graph.insert_splits checked each exists
                available.pop(name, None)
                bottom.append(self.blobs[name])
                need.append(bool(lp.propagate_down[k]) if lp.propagate_down
                            else blob_need_backward[name])
            top = []
            for j, name in enumerate(lp.top):
                if name in lp.bottom:
                    blob = self.blobs[name]  # in place
                elif name in self.blobs:
                    raise NetkitError("%s: top blob '%s' is produced by more than one layer"
                                      % (where, name))
                else:
                    blob = Blob((), self.backend)
                    self.blobs[name] = blob
                top.append(blob)
                available[name] = True
            top_names = list(lp.top)
            if layer.is_loss:
                # Caffe's AutoTopBlobs: a loss layer written without a top gets an anonymous
                # one; it counts in the loss but is no net output.
                while len(top) < max(layer.min_top or 0, layer.exact_num_top or 0):
                    top.append(Blob((), self.backend))
                    top_names.append("(automatic)")
            logger.info("Creating Layer %s", lp.name)
            for name in lp.bottom:
                logger.info("%s <- %s", lp.name, name)
            for name in lp.top:
                logger.info("%s -> %s", lp.name, name)
            try:
                layer.check_arity(bottom, top)
                with fillers.skipped(lp.name in loaded):
                    layer.setup(bottom, top)
                layer.reshape(bottom, top)
            except (LayerSetupError, NetkitError, ValueError) as e:
                raise self._named(e, lp) from None
            logger.info("Setting up %s", lp.name)
            for blob in top:
                logger.info("Top shape: %s", blob.shape_string())
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.bottom_vecs.append(bottom)
            self.top_vecs.append(top)
            self.layer_bottom_names.append(list(lp.bottom))
            self.layer_top_names.append(top_names)
            self.bottom_need_backward.append(need)
            self.loss_weights.append(self._loss_weights(layer, lp, len(top), where))

            layer_need = any(need[k] for k in range(len(bottom)))
            if not layer.param_propagate_down:
                layer.param_propagate_down = [True] * len(layer.blobs)
            if len(lp.param) > len(layer.blobs):
                raise NetkitError("%s: %d param specs given but the layer has %d parameter "
                                  "blob(s)" % (where, len(lp.param), len(layer.blobs)))
            for i in range(len(layer.blobs)):
                spec = lp.param[i] if i < len(lp.param) else pb.ParamSpec()
                layer_need |= self._append_param(layer, lp, i, spec, where)
            if layer.blobs:
                self.params[lp.name] = layer.blobs
            self.layer_need_backward.append(layer_need)
            for name in lp.top:
                blob_need_backward[name] = layer_need or blob_need_backward.get(name, False)

        self._prune_backward(param)
        for name, need in reversed(list(zip(self.layer_names, self.layer_need_backward))):
            logger.info("%s %s backward computation.", name,
                        "needs" if need else "does not need")
        self.outputs = sorted(available)  # Caffe keeps them in a std::set: by name
        for name in self.outputs:
            logger.info("This network produces output %s", name)
        logger.info("Network initialization done.")
        self.inputs = [name for i, layer in enumerate(self.layers) if layer.type == "Input"
                       for name in self.layer_top_names[i]]

    def _loss_weights(self, layer, lp, num_top, where):
        weights = list(lp.loss_weight)
        if not weights and layer.is_loss:
            weights = [1.0]
        if len(weights) > num_top:
            raise NetkitError("%s: %d loss_weight values for %d top(s)"
                              % (where, len(weights), num_top))
        return [(j, w) for j, w in enumerate(weights) if w]

    def _append_param(self, layer, lp, i, spec, where):
        """Register parameter blob i of a layer; returns whether it needs a gradient."""
        blob = layer.blobs[i]
        need = spec.lr_mult != 0
        layer.param_propagate_down[i] = need
        display = spec.name or "%s[%d]" % (lp.name, i)
        if spec.name and spec.name in self._param_owner:
            owner, owner_layer, _ = self._param_owner[spec.name]
            strict = spec.share_mode != pb.ParamSpec.PERMISSIVE
            if (strict and owner.blob.shape != blob.shape) or owner.blob.count != blob.count:
                raise NetkitError("%s: cannot share param '%s' owned by layer '%s': shape %s "
                                  "vs %s" % (where, spec.name, owner_layer,
                                             blob.shape, owner.blob.shape))
            if spec.HasField("lr_mult"):
                if getattr(owner, "lr_set", False) and owner.lr_mult != spec.lr_mult:
                    raise NetkitError("%s: shared param '%s' has mismatched lr_mult"
                                      % (where, spec.name))
                owner.lr_mult, owner.lr_set = spec.lr_mult, True
            if spec.HasField("decay_mult"):
                if getattr(owner, "decay_set", False) and owner.decay_mult != spec.decay_mult:
                    raise NetkitError("%s: shared param '%s' has mismatched decay_mult"
                                      % (where, spec.name))
                owner.decay_mult, owner.decay_set = spec.decay_mult, True
            if owner.blob.shape == blob.shape:
                layer.blobs[i] = owner.blob
            else:
                view = Blob((), self.backend)
                view._shape = blob.shape
                view.data = owner.blob.data.reshape(blob.shape)
                view.diff = owner.blob.diff.reshape(blob.shape)
                layer.blobs[i] = view
            return need
        p = Param(blob, display, spec.lr_mult, spec.decay_mult)
        p.lr_set, p.decay_set = spec.HasField("lr_mult"), spec.HasField("decay_mult")
        self._params.append(p)
        if spec.name:
            self._param_owner[spec.name] = (p, lp.name, blob.shape)
        return need

    def _prune_backward(self, param):
        """Caffe's pass: layers that feed no loss, or whose tops need no gradient, skip
        backward; force_backward then turns it back on where layers allow."""
        under_loss, skip = set(), set()
        for i in range(len(self.layers) - 1, -1, -1):
            contributes = any(w for _, w in self.loss_weights[i]) or any(
                n in under_loss for n in self.layer_top_names[i])
            skip_down = all(n in skip for n in self.layer_top_names[i])
            if self.layer_need_backward[i] and skip_down:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_vecs[i])
            if not contributes:
                self.layer_need_backward[i] = False
            for k, name in enumerate(self.layer_bottom_names[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][k] = False
                if not self.bottom_need_backward[i][k]:
                    skip.add(name)
        if param.force_backward:
            for i, layer in enumerate(self.layers):
                self.layer_need_backward[i] = True
                self.bottom_need_backward[i] = [
                    need or layer.allow_force_backward(k)
                    for k, need in enumerate(self.bottom_need_backward[i])]
                layer.param_propagate_down = [True] * len(layer.blobs)

    # -- running -------------------------------------------------------------------------
    @property
    def learnable_params(self):
        return self._params

    def output_loss_weight(self, name):
        """The loss weight of the layer top named `name` (0 if it is not a loss)."""
        for i, tops in enumerate(self.layer_top_names):
            for j, w in self.loss_weights[i]:
                if tops[j] == name:
                    return w
        return 0.0

    def layer_index(self, name):
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise NetkitError("no layer named '%s' in net '%s'" % (name, self.name)) from None

    def forward_layers(self, start=0, end=None):
        """Run layers start..end inclusive; returns the summed weighted loss (a float)."""
        end = len(self.layers) - 1 if end is None else end
        loss = None
        for i in range(start, end + 1):
            layer, bottom, top = self.layers[i], self.bottom_vecs[i], self.top_vecs[i]
            try:
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
            except (LayerSetupError, NetkitError) as e:
                raise self._named(e, self.param.layer[i]) from None
            for j, w in self.loss_weights[i]:
                # The loss weight rides in the top's diff, as in Caffe: backward reads it.
                top[j].diff[...] = w
                term = (top[j].data * top[j].diff).sum()
                loss = term if loss is None else loss + term
        return 0.0 if loss is None else float(loss)

    def backward_layers(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            if self.layer_need_backward[i]:
                try:
                    self.layers[i].backward(self.top_vecs[i], self.bottom_need_backward[i],
                                            self.bottom_vecs[i])
                except (LayerSetupError, NetkitError) as e:
                    raise self._named(e, self.param.layer[i]) from None

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set input blobs from kwargs (reshaping them to the arrays'
        shapes), run, return {output: data}. Inputs of a shape the net cannot take are an
        error that leaves the net's shapes as they were."""
        shapes = {name: self.blobs[name].shape for name in kwargs}
        for name, value in kwargs.items():
            self.blobs[name].reshape(np.shape(value))
            self.blobs[name].data[...] = self.backend.asarray(np.asarray(value, np.float32))
        i = 0 if start is None else self.layer_index(start)
        j = len(self.layers) - 1 if end is None else self.layer_index(end)
        try:
            self.loss = self.forward_layers(i, j)
        except NetkitError:
            if any(self.blobs[name].shape != shape for name, shape in shapes.items()):
                for name, shape in shapes.items():
                    self.blobs[name].reshape(shape)
                self.reshape()
            raise
        names = list(self.outputs if end is None else self.layer_top_names[j]) + list(blobs or [])
        return OrderedDict((n, self.blobs[n].data) for n in names)

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: set output diffs from kwargs, run, return {input: diff} (with
        `end`, the bottoms of layer `end` instead of the inputs) plus each of `diffs`."""
        for name, value in kwargs.items():
            if name not in self.outputs:
                raise NetkitError("backward: '%s' is not an output of net '%s' (outputs: %s)"
                                  % (name, self.name, ", ".join(self.outputs)))
            if np.shape(value) != tuple(self.blobs[name].shape):
                raise NetkitError("backward: diff for '%s' has shape %s, the blob %s"
                                  % (name, np.shape(value), tuple(self.blobs[name].shape)))
            self.blobs[name].diff[...] = self.backend.asarray(np.asarray(value, np.float32))
        i = len(self.layers) - 1 if start is None else self.layer_index(start)
        j = 0 if end is None else self.layer_index(end)
        self.backward_layers(i, j)
        names = list(self.inputs if end is None else self.layer_bottom_names[j])
        names += list(diffs or [])
        return OrderedDict((n, self.blobs[n].diff) for n in names)

    def forward_backward(self):
        loss = self.forward_layers()
        self.backward_layers()
        return loss

    def clear_param_diffs(self):
        for p in self._params:
            p.blob.diff[...] = 0

    def reshape(self):
        for layer, bottom, top in zip(self.layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)

    def set_input_arrays(self, data, labels):
        """pycaffe's set_input_arrays: hand arrays to the net's first layer (MemoryData)."""
        from .layers.memory_data import set_input_arrays
        set_input_arrays(self, data, labels)

    # -- weights -------------------------------------------------------------------------
    def copy_from(self, weights):
        """Copy blobs from a trained net (path or NetParameter) by layer name, as Caffe's
        CopyTrainedLayersFrom: unknown source layers are ignored, shapes must match."""
        Weights(weights).copy_to(self)

    def to_proto(self, write_diff=False):
        from .weights import net_to_proto
        return net_to_proto(self, write_diff)

    def save(self, path, write_diff=False):
        """Write the weights as a binary .caffemodel (NetParameter), atomically."""
        from .weights import save_net
        save_net(self, path, write_diff)

    def close(self):
        """Stop data layers' prefetch threads."""
        for layer in self.layers:
            close = getattr(layer, "close", None)
            if close:
                close()
