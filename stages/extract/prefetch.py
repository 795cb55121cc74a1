"""Background prefetching for extraction: an iterator run ahead in a daemon thread.

`BackgroundIterator` lets decoding of the next batches overlap the backbone forward of the current
one; the producer's exceptions reach the consumer, and leaving the ``with`` block early stops and
joins the thread.
"""

from __future__ import annotations

import queue
import threading

__all__ = ["BackgroundIterator"]


class BackgroundIterator:
    """Run an iterator in a daemon thread, `prefetch` items ahead; use as a context manager.

    Exceptions raised by the iterator are re-raised in the consumer.  Leaving the `with` block
    early (error, interrupt) stops the producer at its next item and joins the thread.
    """

    _END = object()

    def __init__(self, iterator, prefetch: int = 2) -> None:
        self._iterator = iter(iterator)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._iterator:
                if not self._put((True, item)):
                    return
            self._put((True, self._END))
        except BaseException as exc:  # forwarded to the consumer
            self._put((False, exc))
        finally:
            self._finished.set()

    @property
    def finished(self) -> bool:
        """The producer has stopped: every item (or its error) is queued, or it was closed."""
        return self._finished.is_set()

    def __iter__(self):
        while True:
            ok, item = self._queue.get()
            if not ok:
                raise item
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        """Stop the producer and wait for it (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> BackgroundIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
