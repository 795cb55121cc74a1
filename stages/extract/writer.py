"""The store writer thread of extraction: consecutive row blocks in, chunk-aligned writes out.

`ChunkedWriter` takes the encoder's row blocks in order on a bounded queue and hands a
`VideoWriter` whole ``chunk_steps`` blocks from a background thread (the tail at the end), so every
Zarr chunk is encoded once and the backbone never waits on compression or on creating the video's
arrays (the thread calls the writer's ``prepare()`` first); a writer-thread error is re-raised in
the producer.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

__all__ = ["ChunkedWriter"]


class ChunkedWriter:
    """Writer thread: consecutive row blocks in → whole `chunk_steps` blocks out to a VideoWriter.

    Writing chunk-aligned blocks means every Zarr chunk is encoded once (no read-modify-write).
    Use as a context manager; leaving it normally flushes the tail and re-raises writer errors.
    """

    def __init__(self, writer, num_steps: int, chunk_steps: int, queue_size: int = 4) -> None:
        self.writer, self.num_steps, self.chunk_steps = writer, num_steps, chunk_steps
        self.rows_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._pending: list[dict[int, np.ndarray]] = []
        self._pending_rows = 0
        self._next_row = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def put(self, t0: int, arrays: dict[int, np.ndarray]) -> None:
        """Queue rows t0:t0+n (must follow the previous block); raises a writer-thread error."""
        if t0 != self._next_row:
            raise RuntimeError(f"rows must arrive in order: expected {self._next_row}, got {t0}")
        self._next_row += len(next(iter(arrays.values())))
        if self._next_row > self.num_steps:
            raise RuntimeError(f"got {self._next_row} rows for a video of {self.num_steps} steps")
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(arrays, timeout=0.1)
                return
            except queue.Full:
                continue

    def _flush(self, final: bool) -> None:
        rows = self._pending_rows if final else self._pending_rows // self.chunk_steps * self.chunk_steps
        if rows == 0:
            return
        merged = {k: np.concatenate([p[k] for p in self._pending]) for k in self._pending[0]}
        self.writer.write(self.rows_written, {k: v[:rows] for k, v in merged.items()})
        self.rows_written += rows
        rest = {k: v[rows:] for k, v in merged.items()}
        self._pending = [rest] if self._pending_rows > rows else []
        self._pending_rows -= rows

    def _run(self) -> None:
        ended = False  # the end-of-stream marker has been consumed
        try:
            prepare = getattr(self.writer, "prepare", None)
            if prepare is not None:  # the video's arrays are created here, while the first batch encodes
                prepare()
            while (arrays := self._queue.get()) is not None:
                self._pending.append(arrays)
                self._pending_rows += len(next(iter(arrays.values())))
                if self._pending_rows >= self.chunk_steps:
                    self._flush(final=False)
            ended = True
            self._flush(final=True)
        except BaseException as exc:
            self._error = exc
            # drain so the producer never blocks; the marker comes once, so stop if it came already
            while not ended and self._queue.get() is not None:
                pass

    def __enter__(self) -> ChunkedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        while self._thread.is_alive():  # the thread exits after the marker, whatever happened
            self._thread.join(timeout=0.1)
        if exc_type is None and self._error is not None:
            raise self._error
