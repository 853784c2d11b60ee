"""Where the predictor's finished output goes: the :class:`Sink` protocol and an in-memory sink.

A sink receives each finished cell once (``write``) and, after every z-row of windows, a
``checkpoint(next_tile)``: everything written so far is final, so a run can resume from there.
:class:`~vesselseg.inference.outputs.PredictionWriter` is the sink that writes files.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Sink(Protocol):
    """Receives finished output; ``z, y, x`` are slices in volume coordinates."""

    def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None: ...

    def checkpoint(self, next_tile: int) -> None: ...


class ArraySink:
    """Collects the blended output in memory (tests, small volumes)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array = np.full(shape, np.nan, dtype=np.float32)
        self.checkpoints: list[int] = []

    def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None:
        self.array[z, y, x] = values

    def checkpoint(self, next_tile: int) -> None:
        self.checkpoints.append(next_tile)
