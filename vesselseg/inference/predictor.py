"""Streaming sliding-window predictor: bounded memory, resumable, byte-reproducible.

How a volume ``(Z, Y, X)`` is processed
---------------------------------------
The window grid (:func:`~vesselseg.inference.tiling.make_grid`) is walked in the fixed order of
its :class:`~vesselseg.inference.plan.Plan`: plane *region* (usually the whole ``y x x`` plane),
then z-row of windows, then y-strip, then x. Windows are fed to the network ``batch_size`` at a
time; batches are consecutive runs of that global order, so a batch's content never depends on
where a run started.

Weighted sums are kept only for *cells* (:class:`~vesselseg.inference.plan.Cell`) by a
:class:`Blender`. A cell is finished once the last window that covers it has been added; it is
then divided by the sum of those windows' weights (a function of the grid alone, recomputed at
that moment rather than stored), handed to the sink and freed. Because windows advance row by
row and strip by strip, the live cells are the z-overlap with the next row (``tile_z - step_z``
planes of the region) plus the current strip (``tile_z x tile_y x region_x``): memory depends on
the tile, the batch and the plane, never on the depth. When even that is too much for the
plane, the plane is cut into regions, each predicted with every window that touches it (windows
on a region border are computed once per region they touch), so memory is O(tile x region).

Input is read one strip (``tile_z x tile_y x region_x``) at a time by a background thread
(:class:`~vesselseg.inference.reader.StripReader`), normalised, and queued while the network
runs on the previous one.

Resuming
--------
After the last window of every z-row the sink is asked to ``checkpoint(next_tile)``: every
cell finished so far has been written. A run started with ``resume_from=T`` recomputes, from
the batch that holds the first window touching an unfinished cell, exactly the windows and
additions an uninterrupted run would do for the unfinished cells (finished cells are skipped),
so the output is bit-for-bit the same.

MONAI's ``sliding_window_inference`` blends the same windows with the same weights, but keeps
the whole output volume in memory and cannot resume; that is why this engine is our own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vesselseg.inference.blocks import batch_starts, strip_keys_of
from vesselseg.inference.plan import (
    DEFAULT_MAX_BUFFER_BYTES,
    CellKey,
    Plan,
    StripKey,
    Tile,
    choose_block,
    make_plan,
)
from vesselseg.inference.reader import Preprocess, StripReader
from vesselseg.inference.sinks import Sink
from vesselseg.inference.tiling import TileGrid

log = logging.getLogger(__name__)

PredictFn = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, tz, ty, tx)`` float32 input → ``(B, 1, tz, ty, tx)`` float32 values to blend."""


@dataclass
class RunStats:
    """What one :meth:`StreamingPredictor.run` did."""

    tiles: int = 0  # windows run through the network (including recomputed ones)
    seconds: float = 0.0
    forward_seconds: float = 0.0
    read_wait_seconds: float = 0.0
    peak_buffer_bytes: int = 0  # weighted-sum accumulators alive at once, at most
    peak_strip_bytes: int = 0
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class WindowWeights:
    """The ``(tz, ty, tx)`` float32 blending weight of each window, computed once per kind."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._cache: dict[tuple[bool, ...], np.ndarray] = {}

    def __call__(self, region: int, iz: int, jy: int, kx: int) -> np.ndarray:
        """Weight of a window (grid indices; ``jy``/``kx`` within the region)."""
        reg = self.plan.regions[region]
        iy, ix = reg.iy[jy], reg.ix[kx]
        g = self.plan.grid
        key: tuple[bool, ...] = ()
        if g.border:  # border windows differ by which volume edges they touch
            key = (
                iz == 0,
                iz == len(g.starts[0]) - 1,
                iy == 0,
                iy == len(g.starts[1]) - 1,
                ix == 0,
                ix == len(g.starts[2]) - 1,
            )
        if key not in self._cache:
            self._cache[key] = g.weight(iz, iy, ix).numpy().copy()
        return self._cache[key]

    def sum_over(self, key: CellKey) -> np.ndarray:
        """Sum of the weights of every window over cell ``key``, added in processing order.

        It depends only on the grid, so it is computed when the cell is finished instead of
        being accumulated (half the buffer memory)."""
        plan = self.plan
        region, a, b = key
        total = np.zeros(plan.cell_shape(key), np.float32)
        for iz in plan.rows_of_z[a]:
            for jy in plan.strips_of_y[region][b]:
                for kx in range(len(plan.regions[region].ix)):
                    src, dst = plan.overlap(iz, jy, kx, key)
                    total[dst] += self(region, iz, jy, kx)[src]
        return total


class Blender:
    """The weighted sums of the live cells of one run (float32, on the host).

    :meth:`add` adds one window's values times its weight to the cells it covers (cells already
    final before ``resume_from`` are skipped); :meth:`finish` divides a finished cell by its
    weight sum, writes it to the sink and frees it.
    """

    def __init__(
        self,
        plan: Plan,
        weights: WindowWeights,
        resume_from: int = 0,
        cells: set[CellKey] | None = None,
    ) -> None:
        self.plan, self.weights, self.resume_from = plan, weights, resume_from
        self.cells = cells  # only these cells are kept (None: all), see :meth:`run`
        self.live: dict[CellKey, np.ndarray] = {}
        self.bytes = 0
        self.peak_bytes = 0
        grid = plan.grid
        self._weighted = bool(grid.border) or grid.blend != "constant"
        self._scratch = np.empty(grid.tile, np.float32) if self._weighted else None

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Add ``values * weight`` of one window ``(tz, ty, tx)`` to the cells it covers."""
        plan, region = self.plan, tile.region
        if self._weighted:
            weight = self.weights(region, tile.iz, tile.jy, tile.kx)
            values = np.multiply(values, weight, out=self._scratch)
        for a in plan.z_cells_of_row[tile.iz]:
            for b in plan.y_cells_of_strip[region][tile.jy]:
                key = (region, a, b)
                if plan.cells[key].last < self.resume_from:  # written before the restart
                    continue
                if self.cells is not None and key not in self.cells:  # another block's
                    continue
                if key not in self.live:
                    self.live[key] = np.zeros(plan.cell_shape(key), np.float32)
                    self.bytes += self.live[key].nbytes
                src, dst = plan.overlap(tile.iz, tile.jy, tile.kx, key)
                self.live[key][dst] += values[src]
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def finish(self, key: CellKey, sink: Sink) -> None:
        """Divide a finished cell by its weights, write it and free it."""
        if key not in self.live:  # finished before a restart, or never touched
            return
        acc = self.live.pop(key)
        values = np.divide(acc, self.weights.sum_over(key), out=acc)
        sink.write(*self.plan.cell_slices(key), values)
        self.bytes -= acc.nbytes


class _Windows:
    """Cuts the windows of a batch out of the strips the reader delivers, in order."""

    def __init__(self, plan: Plan, reader: StripReader, stats: RunStats) -> None:
        self.plan, self.reader, self.stats = plan, reader, stats
        self.key: StripKey | None = None
        self.strip: np.ndarray | None = None

    def batch(self, tiles: list[Tile]) -> torch.Tensor:
        """``(B, 1, tz, ty, tx)`` float32 input of ``tiles``."""
        plan, tx = self.plan, self.plan.grid.tile[2]
        inputs = []
        for tile in tiles:
            key = plan.strip_of(tile)
            if key != self.key:
                t0 = time.perf_counter()
                self.strip = self.reader.get(key)
                self.stats.read_wait_seconds += time.perf_counter() - t0
                self.key = key
                self.stats.peak_strip_bytes = max(self.stats.peak_strip_bytes, self.strip.nbytes)
            assert self.strip is not None
            region = plan.regions[tile.region]
            x0 = plan.grid.starts[2][region.ix[tile.kx]] - plan.x_extent(tile.region)[0]
            inputs.append(self.strip[:, :, x0 : x0 + tx])
        return torch.from_numpy(np.stack(inputs)[:, None])


class StreamingPredictor:
    """Blend ``predict_fn`` over a sliding-window grid, streaming input and output.

    ``predict_fn`` maps a ``(B, 1, tz, ty, tx)`` float32 batch to the values to blend (e.g.
    probabilities) of the same shape. ``preprocess`` maps raw input regions to float32 network
    input (default: cast). ``max_buffer_bytes`` bounds accumulators + input strips; a plane
    that needs more is cut into regions (``block`` forces a region size ``(y, x)``).
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        grid: TileGrid,
        batch_size: int = 2,
        preprocess: Preprocess | None = None,
        block: tuple[int, int] | None = None,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        prefetch: int = 1,
        release_input: Callable[[], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.predict_fn = predict_fn
        self.grid = grid
        self.batch_size = batch_size
        self.preprocess = preprocess or (lambda a: np.asarray(a, dtype=np.float32))
        self.block = block if block is not None else choose_block(grid, max_buffer_bytes)
        self.plan = make_plan(grid, self.block)
        self.prefetch = prefetch
        self.release_input = release_input
        self.weights = WindowWeights(self.plan)

    def weight_sum(self, key: CellKey) -> np.ndarray:
        """Sum of the weights of every window over cell ``key`` (see :class:`WindowWeights`)."""
        return self.weights.sum_over(key)

    def batches(self, start: int) -> Iterator[list[Tile]]:
        """Batches of windows from the one holding window ``start`` to the end."""
        first = (start // self.batch_size) * self.batch_size
        tiles = self.plan.tiles
        for b in range(first, len(tiles), self.batch_size):
            yield tiles[b : b + self.batch_size]

    def batches_for(self, cells: set[CellKey]) -> list[list[Tile]]:
        """The batches (of a whole run) holding a window that adds to one of ``cells``."""
        tiles, size = self.plan.tiles, self.batch_size
        return [tiles[b : b + size] for b in batch_starts(self.plan, cells, size)]

    def run(
        self,
        volume: Any,
        sink: Sink,
        resume_from: int = 0,
        on_tiles: Callable[[int], None] | None = None,
        cells: set[CellKey] | None = None,
    ) -> RunStats:
        """Predict ``volume`` (``(Z, Y, X)``, lazily sliced) into ``sink``.

        ``resume_from`` is the ``next_tile`` of the sink's last checkpoint (0: from scratch).
        ``on_tiles(n)`` is called after every batch with the number of new windows.
        ``cells`` (e.g. the cells of some z-blocks, :mod:`~vesselseg.inference.blocks`) limits
        the run to those cells: only the batches holding a window that adds to one of them are
        run, and only they are written, each exactly as a whole run writes it.
        """
        if tuple(volume.shape) != self.grid.shape:
            raise ValueError(f"volume shape {tuple(volume.shape)} != grid shape {self.grid.shape}")
        stats = RunStats(resumed_from=resume_from)
        start = self.plan.restart_tile(resume_from) if resume_from else 0
        start_time = time.perf_counter()
        blender = Blender(self.plan, self.weights, resume_from, cells)
        batches: Iterable[list[Tile]] = self.batches(start)
        keys = self.plan.strip_keys((start // self.batch_size) * self.batch_size)
        if cells is not None:  # some blocks only: the batches their windows are in
            batches = self.batches_for(cells)
            keys = strip_keys_of(self.plan, [t for batch in batches for t in batch])
        reader = StripReader(
            volume,
            self.plan,
            keys,
            self.preprocess,
            depth=self.prefetch,
            release=self.release_input,
        )
        windows = _Windows(self.plan, reader, stats)
        try:
            with torch.inference_mode():
                for batch in batches:
                    values = self._forward(windows.batch(batch), stats)
                    self._blend(batch, values, blender, sink)
                    if on_tiles is not None:
                        on_tiles(len(batch))
        finally:
            reader.close()
        stats.peak_buffer_bytes = blender.peak_bytes
        stats.seconds = time.perf_counter() - start_time
        return stats

    def _forward(self, x: torch.Tensor, stats: RunStats) -> np.ndarray:
        """The network's ``(B, tz, ty, tx)`` float32 values for the input batch ``x``."""
        t0 = time.perf_counter()
        out = self.predict_fn(x)
        stats.forward_seconds += time.perf_counter() - t0
        stats.tiles += len(x)
        values = out.to("cpu", torch.float32).numpy().reshape(len(x), *self.grid.tile)
        return np.ascontiguousarray(values)

    def _blend(self, batch: list[Tile], values: np.ndarray, blender: Blender, sink: Sink) -> None:
        """Add a batch's windows, write the cells they finish, checkpoint after each z-row."""
        plan = self.plan
        for tile, tile_values in zip(batch, values):
            blender.add(tile, tile_values)
            for key in plan.finish_at.get(tile.index, ()):
                blender.finish(key, sink)
            if tile.index in plan.row_ends and tile.index + 1 > blender.resume_from:
                sink.checkpoint(tile.index + 1)
