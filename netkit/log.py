"""Caffe-format (glog) log lines, so existing parse_log-style tools read netkit's logs.

Each line looks like  I1121 23:48:39.123456 12345 solver.py:120] Iteration 100 ...
"""
import logging
import os
import sys
import time

logger = logging.getLogger("netkit")


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = record.created
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(t)) + ".%06d" % int((t % 1) * 1e6)
        return "%s%s %5d %s:%d] %s" % (record.levelname[0], stamp, os.getpid(),
                                       record.filename, record.lineno, record.getMessage())


class StderrHandler(logging.StreamHandler):
    """Writes each record to the sys.stderr of that moment, not of set-up: a script or test
    that calls the CLI in-process and redirects stderr afterwards still gets the log."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        """StreamHandler assigns its stream; this handler has none of its own."""


def setup_logging(stream=None, level=logging.INFO):
    """Send netkit's log to `stream` (default: stderr, as Caffe's glog) in glog format."""
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(GlogFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def fmt(x):
    """A number as C++ iostreams print it by default (6 significant digits)."""
    return "%g" % x


def loss_suffix(weight, value):
    """Caffe's ' (* w = w*v loss)' note after an output that carries a loss weight."""
    return " (* %s = %s loss)" % (fmt(weight), fmt(weight * value)) if weight else ""
