"""The writer thread: finished cells go to the sink while the next windows are computed.

:class:`SinkThread` owns the sink for the length of a run: the predictor queues finished cells
(:class:`~vesselseg.inference.blender.Finished`) and checkpoints, and one background thread
hands them to the sink in the order they were queued, so a checkpoint is written only after
every cell finished before it (what ``--resume`` relies on). The queue is bounded in bytes
(at least one cell is always accepted), so memory stays O(tile x plane); on CUDA the thread
waits for each cell's copy event before reading its pinned host buffer. An error in the thread
is re-raised in the predictor at its next call (or at :meth:`SinkThread.close`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from vesselseg.inference.blender import Finished
from vesselseg.inference.sinks import Sink

DEFAULT_PENDING_BYTES = 256 << 20


class SinkThread:
    """Writes :class:`Finished` cells and checkpoints to ``sink`` from a background thread.

    ``max_pending_bytes`` bounds the finished-but-unwritten cells; ``wait_seconds`` is the
    time the caller spent blocked on a full queue, ``write_seconds`` the thread's time in the
    sink, ``peak_pending_bytes`` the most bytes queued at once.
    """

    def __init__(self, sink: Sink, max_pending_bytes: int = DEFAULT_PENDING_BYTES) -> None:
        self.sink = sink
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.peak_pending_bytes = 0
        self.wait_seconds = 0.0
        self.write_seconds = 0.0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="vesselseg-writer", daemon=True)
        self._thread.start()

    def write(self, cell: Finished) -> None:
        """Queue a finished cell (blocks while the queue holds ``max_pending_bytes``)."""
        size = cell.values.nbytes
        t0 = time.perf_counter()
        with self._cond:
            while (
                self._error is None
                and self.pending_bytes
                and self.pending_bytes + size > self.max_pending_bytes
            ):
                self._cond.wait()
            self._raise()
            self._items.append(cell)
            self.pending_bytes += size
            self.peak_pending_bytes = max(self.peak_pending_bytes, self.pending_bytes)
            self._cond.notify_all()
        self.wait_seconds += time.perf_counter() - t0

    def checkpoint(self, next_tile: int) -> None:
        """Queue ``sink.checkpoint(next_tile)`` after the cells queued so far."""
        with self._cond:
            self._raise()
            self._items.append(int(next_tile))
            self._cond.notify_all()

    def close(self, reraise: bool = True) -> None:
        """Write what is queued and stop; re-raise the thread's error, if any, unless
        ``reraise`` is False (the caller is failing already). Cells and checkpoints queued
        before a failure are still written: they are complete, and a resume then starts
        from the last checkpoint queued, whatever the thread's timing was."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if reraise:
            with self._cond:
                self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return
                item = self._items[0]
            try:
                t0 = time.perf_counter()
                if isinstance(item, Finished):
                    if item.ready is not None:
                        item.ready.synchronize()
                    self.sink.write(*item.slices, item.values)
                else:
                    self.sink.checkpoint(item)
                self.write_seconds += time.perf_counter() - t0
            except BaseException as exc:  # handed to the predictor, re-raised there
                with self._cond:
                    self._error = exc
                    self._items.clear()
                    self.pending_bytes = 0
                    self._cond.notify_all()
                return
            with self._cond:
                if self._items and self._items[0] is item:  # not cleared by an abort
                    self._items.popleft()
                    if isinstance(item, Finished):
                        self.pending_bytes -= item.values.nbytes
                self._cond.notify_all()
