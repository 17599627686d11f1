"""pycaffe's Net conveniences, kept apart from the Net's own machinery.

`NetConveniences` is a base of netkit's Net: `forward_all` and `forward_backward_all`
(batched passes over any number of inputs), `share_with`, `save_hdf5` / `load_hdf5`,
`top_names` / `bottom_names`, `layer_dict`, `blob_loss_weights`, and pycaffe's underscore
names (`_layer_names`, `_blob_names`, `_blobs`, `_inputs`, `_top_ids`, `_forward` ...).
`layer_type_list()` names the registered layer types, as `caffe.layer_type_list()`.
`alias_caffe()` makes `import caffe` (and its submodules) give netkit, for pycaffe scripts
and layer modules run unchanged.
"""
import importlib
import importlib.util
import sys
from collections import OrderedDict
from itertools import zip_longest

import numpy as np

from .errors import NetkitError


# pycaffe's modules and the netkit modules that stand in for them.
PYCAFFE_MODULES = {"caffe": "netkit", "caffe.io": "netkit.io", "caffe.proto": "netkit.proto",
                   "caffe.proto.caffe_pb2": "netkit.netkit_pb2", "caffe.draw": "netkit.draw",
                   "caffe.net_spec": "netkit.net_spec", "caffe.classifier": "netkit.classifier",
                   "caffe.detector": "netkit.detector", "caffe.coord_map": "netkit.coord_map",
                   "caffe._caffe": "netkit._caffe", "caffe.pycaffe": "netkit"}


def alias_caffe():
    """Where no real pycaffe is installed, make `import caffe`, `import caffe.draw`,
    `from caffe.proto import caffe_pb2` ... give netkit's modules. Returns False (and
    changes nothing) when a `caffe` module exists: the user's pycaffe wins."""
    if "caffe" in sys.modules or importlib.util.find_spec("caffe") is not None:
        return False
    for name, target in PYCAFFE_MODULES.items():
        sys.modules[name] = importlib.import_module(target)
    return True


def layer_type_list():
    """The registered layer type names, sorted."""
    import netkit.layers  # noqa: F401  (registers every layer type)
    from .registry import layers
    return layers.names()


class NetConveniences:
    """pycaffe Net methods built on netkit's Net (`forward`, `blobs`, `layers` ...)."""

    @property
    def _layer_names(self):
        return list(self.layer_names)

    @property
    def _blob_names(self):
        return list(self.blobs)

    # pycaffe's underscore names (its compiled module's), which some scripts use: blobs by
    # index in `_blob_names` order, and the passes over layer index ranges.
    @property
    def _blobs(self):
        return list(self.blobs.values())

    def _blob_ids(self, names):
        index = {name: i for i, name in enumerate(self.blobs)}
        return [index[name] for name in names if name in index]

    @property
    def _inputs(self):
        return self._blob_ids(self.inputs)

    @property
    def _outputs(self):
        return self._blob_ids(self.outputs)

    @property
    def _blob_loss_weights(self):
        return list(self.blob_loss_weights.values())

    def _top_ids(self, i):
        return self._blob_ids(self.layer_top_names[i])

    def _bottom_ids(self, i):
        return self._blob_ids(self.layer_bottom_names[i])

    def _forward(self, start, end):
        return self.forward_layers(start, end)

    def _backward(self, start, end):
        self.backward_layers(start, end)

    def _set_input_arrays(self, data, labels):
        self.set_input_arrays(data, labels)

    @property
    def top_names(self):
        """{layer name: its top blob names}, in net order (pycaffe's Net.top_names)."""
        return OrderedDict(zip(self.layer_names, self.layer_top_names))

    @property
    def bottom_names(self):
        """{layer name: its bottom blob names}, in net order (pycaffe's Net.bottom_names)."""
        return OrderedDict(zip(self.layer_names, self.layer_bottom_names))

    @property
    def layer_dict(self):
        """{layer name: layer}, in net order."""
        return OrderedDict(zip(self.layer_names, self.layers))

    @property
    def blob_loss_weights(self):
        """{blob name: loss weight}, 0 for blobs that are no loss, in net order."""
        return OrderedDict((name, self.output_loss_weight(name)) for name in self.blobs)

    def _batch(self, arrays):
        """Split {blob name: N items} into batches of the net's batch size (the first
        blob's first axis, as pycaffe); the last batch is padded with zeros to full size."""
        num = len(next(iter(arrays.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        for start in range(0, num, batch_size):
            batch = {}
            for name, items in arrays.items():
                chunk = np.asarray(items[start:start + batch_size])
                if len(chunk) < batch_size:
                    padding = np.zeros((batch_size - len(chunk),) + chunk.shape[1:],
                                       dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, padding])
                batch[name] = chunk
            yield batch

    def forward_all(self, blobs=None, **kwargs):
        """Forward any number of inputs batch by batch (`kwargs`: input name -> N items);
        returns {output (and each of `blobs`): host array of N results}."""
        if not kwargs:
            raise ValueError("forward_all needs input arrays, e.g. forward_all(data=x)")
        names = list(OrderedDict.fromkeys(list(self.outputs) + list(blobs or [])))
        results = {name: [] for name in names}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for name in names:
                results[name].append(self.backend.asnumpy(outs[name]))
        num = len(next(iter(kwargs.values())))
        return {name: np.concatenate(parts)[:num] for name, parts in results.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: `kwargs` give N items per input (forwarded batch
        by batch) and per output (their diffs, back-propagated batch by batch); returns
        ({output and each of `blobs`: N results}, {input and each of `diffs`: N diffs})
        as host arrays."""
        unknown = [n for n in kwargs if n not in self.inputs and n not in self.outputs]
        if unknown or not kwargs:
            raise NetkitError("forward_backward_all takes input arrays and output diffs "
                              "(inputs: %s; outputs: %s), got %s"
                              % (", ".join(self.inputs), ", ".join(self.outputs),
                                 ", ".join(unknown) or "nothing"))
        out_names = list(OrderedDict.fromkeys(list(self.outputs) + list(blobs or [])))
        diff_names = list(OrderedDict.fromkeys(list(self.inputs) + list(diffs or [])))
        outs = {name: [] for name in out_names}
        grads = {name: [] for name in diff_names}
        inputs = {n: kwargs[n] for n in self.inputs if n in kwargs}
        top_diffs = {n: kwargs[n] for n in self.outputs if n in kwargs}
        for forward_batch, backward_batch in zip_longest(
                self._batch(inputs) if inputs else (), self._batch(top_diffs) if top_diffs
                else (), fillvalue={}):
            for name, value in self.forward(blobs=blobs, **forward_batch).items():
                outs[name].append(self.backend.asnumpy(value).copy())
            for name, value in self.backward(diffs=diffs, **backward_batch).items():
                grads[name].append(self.backend.asnumpy(value).copy())
        num = len(next(iter(kwargs.values())))
        return ({name: np.concatenate(parts)[:num] for name, parts in outs.items()},
                {name: np.concatenate(parts)[:num] for name, parts in grads.items()})

    def share_with(self, other):
        """Use `other`'s trained parameters by layer name, as Caffe's
        ShareTrainedLayersWith: this net's param blobs then alias other's data (a test net
        following its train net). Layers `other` lacks keep their own."""
        source = dict(zip(other.layer_names, other.layers))
        for name, layer in zip(self.layer_names, self.layers):
            src = source.get(name)
            if src is None:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise NetkitError("share_with: incompatible number of blobs for layer '%s' "
                                  "(source %d, target %d)"
                                  % (name, len(src.blobs), len(layer.blobs)))
            for i, (mine, theirs) in enumerate(zip(layer.blobs, src.blobs)):
                if mine.shape != theirs.shape:
                    raise NetkitError("share_with: cannot share param %d weights from layer "
                                      "'%s'; shape mismatch. Source param shape is %s; target "
                                      "param shape is %s" % (i, name, theirs.shape, mine.shape))
                mine.data = theirs.data

    def save_hdf5(self, path):
        """Write the weights as Caffe's HDF5 weights file (pycaffe's Net.save_hdf5)."""
        from .weights import save_net_hdf5
        save_net_hdf5(self, path)

    def load_hdf5(self, path):
        """Copy weights from a Caffe HDF5 weights file by layer name (Net.load_hdf5)."""
        from .weights import copy_trained_layers_hdf5
        copy_trained_layers_hdf5(self, path)
