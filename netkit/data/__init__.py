"""Data input: Datum records and LMDBs, the DataTransformer, the prefetch thread, MNIST.

The layers that use these live in netkit.layers (Input, DummyData, Data, HDF5Data).
"""
import numpy as np

from ..rng import host_rng


def private_rng():
    """A RandomState of its own for one data layer, seeded from netkit's random stream.

    A data layer draws crops, mirror coins, skips and shuffles from it alone, so runs with
    the same seed give the same batches however the prefetch thread is scheduled.
    """
    return np.random.RandomState(int(host_rng().randint(0, 2 ** 31 - 1)))


def shape_text(shape):
    """A shape as messages write it: (3, 224, 224) -> '3x224x224'."""
    return "x".join(str(d) for d in shape)
