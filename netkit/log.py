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

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        """StreamHandler assigns its stream; this handler has none of its own."""


# GLOG_minloglevel, as glog reads it: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
GLOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def glog_level(level):
    """The logging level of glog level `level` (0 INFO .. 3 FATAL, clamped to that range)."""
    return GLOG_LEVELS[min(max(int(level), 0), 3)]


def env_level():
    """The level GLOG_minloglevel asks for (INFO when unset or unreadable)."""
    try:
        return glog_level(os.environ.get("GLOG_minloglevel", 0))
    except ValueError:
        return logging.INFO


def default_logging():
    """pycaffe writes glog's INFO lines to stderr from the first Net or Solver a script
    makes ("Logging before InitGoogleLogging() is written to STDERR"), so scripts see
    "Iteration N, loss = ..." and can feed parse_log. netkit does the same when neither
    its logger nor the root logger has a handler yet: an application that configured
    logging keeps its own. GLOG_minloglevel quiets it as it quiets Caffe."""
    if logger.handlers or logging.getLogger().handlers:
        return
    setup_logging(level=logger.level or env_level())  # a level the script set stays


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


def init_log(level=None, stderr=True):
    """pycaffe's caffe.init_log([level[, stderr]]): netkit's log in glog format on stderr
    from now on, at glog level `level` (0 INFO .. 3 FATAL; default GLOG_minloglevel's).
    With stderr False the log is off, as glog's would go to files netkit does not write."""
    chosen = env_level() if level is None else glog_level(level)
    setup_logging(level=chosen if stderr else logging.CRITICAL + 1)
