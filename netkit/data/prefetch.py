"""A prefetch thread: host batches are made ahead of time so that forward never waits.

As Caffe's BasePrefetchingDataLayer, a daemon thread calls `load()` again and again and
keeps up to `count` finished batches in a bounded queue; the consumer takes them in order
with `get()`. An exception inside the thread is handed to the consumer, which raises it as
a PrefetchError naming the data source.
"""
import queue
import threading

from ..errors import NetkitError


class PrefetchError(NetkitError, RuntimeError):
    """Loading a batch failed inside the prefetch thread, or prefetching has stopped."""


class _Failure:
    def __init__(self, error):
        self.error = error


class Prefetcher:
    """Runs `load()` on a daemon thread, holding up to `count` batches ready.

    `name` says where the batches come from (used in thread names and error messages);
    `close()`, if given, runs on the thread when it ends, so resources tied to that thread
    (an LMDB read transaction) are released there.
    """

    def __init__(self, load, count, name, close=None):
        if count < 1:
            raise ValueError("prefetch count must be at least 1, got %d" % count)
        self.name = name
        self._load = load
        self._close = close
        self._queue = queue.Queue(maxsize=count)
        self._stopping = threading.Event()
        self._failure = None
        self._thread = threading.Thread(target=self._run, name="netkit-prefetch " + name,
                                        daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stopping.is_set():
                self._queue.put(self._load())
        except Exception as e:
            self._queue.put(_Failure(e))
        finally:
            if self._close is not None:
                self._close()

    def get(self):
        """The next batch, waiting for it if needed."""
        if self._failure is not None:
            self._raise()
        if self._stopping.is_set():
            raise PrefetchError("%s: prefetching has stopped" % self.name)
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise PrefetchError("%s: prefetching has stopped" % self.name) from None
        if isinstance(item, _Failure):
            self._failure = item.error
            self._raise()
        return item

    def _raise(self):
        e = self._failure
        raise PrefetchError("%s: %s: %s" % (self.name, type(e).__name__, e)) from e

    def stop(self, timeout=10.0):
        """End the thread: stop loading, free a waiting put, and wait for it to finish."""
        self._stopping.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
            timeout -= 0.05
            if timeout <= 0:
                break

    @property
    def running(self):
        return self._thread.is_alive()
