"""Read-ahead of input strips: a background thread reads, normalises and pads them in order.

The predictor asks for strips in the plan's order (:meth:`~vesselseg.inference.plan.Plan.
strip_keys`); the thread stays ``depth`` strips ahead, so reading the next strip overlaps the
network's work on the current one. An error in the thread is re-raised in the consumer.
With a :class:`~vesselseg.inference.tissue.Tissue` test, each strip also says which of its x
columns hold tissue (from the raw values, before normalisation), for ``infer.skip_empty``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from vesselseg.inference.plan import Plan, StripKey
from vesselseg.inference.tissue import Tissue

Preprocess = Callable[[np.ndarray], np.ndarray]
"""Raw region ``(z, y, x)`` → float32 network input of the same shape."""


class Strip(NamedTuple):
    """A strip's ``(tz, ty, width)`` float32 input and, with a tissue test, ``(width,)`` bool:
    which of its x columns hold tissue (None: no test)."""

    data: np.ndarray
    tissue: np.ndarray | None = None


class StripReader:
    """Reads, normalises and pads input strips in a background thread, in order.

    A strip is ``(tz, ty, width)`` float32 for window row ``iz``, strip ``iy`` and the x-extent
    of a region (padded coordinates; voxels outside the volume are 0). ``release()`` is called
    after every strip read (e.g. to drop the input's memory-mapped pages); ``tissue`` marks
    the strip's columns that hold tissue (:class:`Strip`).
    """

    def __init__(
        self,
        volume: Any,
        plan: Plan,
        keys: list[StripKey],
        preprocess: Preprocess,
        depth: int = 1,
        release: Callable[[], None] | None = None,
        tissue: Tissue | None = None,
    ) -> None:
        self.volume, self.plan, self.grid = volume, plan, plan.grid
        self.preprocess = preprocess
        self.tissue = tissue
        self.release = release
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(keys,), daemon=True)
        self._thread.start()

    def read(self, key: StripKey) -> Strip:
        """The strip ``key = (region, iz, iy)``: ``(tz, ty, width)`` float32 input (and its
        tissue columns)."""
        region, iz, iy = key
        g = self.grid
        x0, x1 = self.plan.x_extent(region)
        lo = (g.starts[0][iz], g.starts[1][iy], x0)
        hi = (lo[0] + g.tile[0], lo[1] + g.tile[1], x1)
        src = [
            (max(lo[a], g.pad[a]) - g.pad[a], min(hi[a], g.pad[a] + g.shape[a]) - g.pad[a])
            for a in range(3)
        ]
        box = (slice(*src[0]), slice(*src[1]), slice(*src[2]))
        raw = self.volume[box]
        columns = None
        if self.tissue is not None:
            columns = np.zeros(hi[2] - lo[2], bool)
            x0 = src[2][0] + g.pad[2] - lo[2]
            columns[x0 : x0 + src[2][1] - src[2][0]] = self.tissue.columns(raw, box)
        data = np.ascontiguousarray(self.preprocess(raw), dtype=np.float32)
        size = tuple(b - a for a, b in zip(lo, hi))
        if data.shape == size:
            return Strip(data, columns)
        out = np.zeros(size, dtype=np.float32)
        dst = tuple(
            slice(src[a][0] + g.pad[a] - lo[a], src[a][1] + g.pad[a] - lo[a]) for a in range(3)
        )
        out[dst] = data
        return Strip(out, columns)

    def _work(self, keys: list[StripKey]) -> None:
        try:
            for key in keys:
                item: Any = (key, self.read(key))
                if self.release is not None:
                    self.release()
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the reader is closed first; False when closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, key: StripKey) -> Strip:
        """The next strip, which must be ``key`` (raises the thread's error, if any)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        got, data = item
        if got != key:  # pragma: no cover - order is fixed by construction
            raise RuntimeError(f"strip reader out of order: wanted {key}, got {got}")
        return data

    def close(self) -> None:
        """Stop the thread (also while it waits on a full queue) and wait for it."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
