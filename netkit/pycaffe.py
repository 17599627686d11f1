"""pycaffe's Net conveniences, kept apart from the Net's own machinery.

`NetConveniences` is a base of netkit's Net: `forward_all`
(batched forward over any number of inputs), `layer_dict`, `blob_loss_weights` and the
`_layer_names` / `_blob_names` lists of pycaffe's Net. `layer_type_list()` names the
registered layer types, as `caffe.layer_type_list()`.
"""
from collections import OrderedDict

import numpy as np


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
