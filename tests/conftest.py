import logging
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _backends(config):
    names = ["cpu", "fakegpu"]
    if config.getoption("-m") and "gpu" in config.getoption("-m") and "not gpu" not in config.getoption("-m"):
        names = ["gpu"]
    return names


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends(metafunc.config), indirect=True)


@pytest.fixture
def closing():
    """Collects layers and nets and closes them (prefetch threads, files) after the test."""
    made = []
    yield made.append
    for thing in made:
        getattr(thing, "close", lambda: None)()  # HDF5Data holds no thread


@pytest.fixture
def log_lines():
    """Messages netkit logs during the test."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    from netkit.log import logger
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def backend(request):
    from netkit.backend import get_backend
    from netkit.rng import set_random_seed
    set_random_seed(1701)
    return get_backend(request.param)


@pytest.fixture(autouse=True)
def _seed():
    from netkit.rng import set_random_seed
    set_random_seed(1701)
    np.random.seed(1701)
