"""The process random stream (Caffe's RNG): fillers, data shuffling and device RNG seeds.

`set_random_seed` makes runs repeatable: every draw, on any backend, derives from it.
"""
import numpy as np

_host = np.random.RandomState()


def set_random_seed(seed):
    """Seed all netkit randomness (SolverParameter.random_seed)."""
    global _host
    _host = np.random.RandomState(int(seed) & 0xFFFFFFFF)


def host_rng():
    """The host RandomState used by fillers and data shuffling."""
    return _host


def device_rng(backend):
    """A RandomState of the backend's array module, seeded from the host stream."""
    return backend.xp.random.RandomState(int(_host.randint(0, 2 ** 31 - 1)))
