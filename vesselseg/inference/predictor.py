"""Streaming sliding-window predictor: bounded memory, resumable, byte-reproducible.

How a volume ``(Z, Y, X)`` is processed
---------------------------------------
The window grid (:func:`~vesselseg.inference.tiling.make_grid`) is walked in the fixed order of
its :class:`~vesselseg.inference.plan.Plan`: plane *region* (usually the whole ``y x x`` plane),
then z-row of windows, then y-strip, then x. Windows are fed to the network ``batch_size`` at a
time; batches are consecutive runs of that global order, so a batch's content never depends on
where a run started.

Weighted sums are kept only for *cells* (:class:`~vesselseg.inference.plan.Cell`) by a
:class:`~vesselseg.inference.blender.Blender`, as float32 torch tensors on the inference device
(CUDA when the network runs there: the network's output never leaves the device). A cell is
finished once the last window that covers it has been added; it is then divided by the sum of
those windows' weights (a function of the grid alone, recomputed at that moment rather than
stored), moved to the host (pinned memory and a non-blocking copy on CUDA) and queued for a
writer thread (:class:`~vesselseg.inference.writer.SinkThread`) that hands it to the sink, so
reading (the reader thread), computing and writing overlap. Because windows advance row by
row and strip by strip, the live cells are the z-overlap with the next row (``tile_z -
step_z`` planes of the region) plus the current strip (``tile_z x tile_y x region_x``):
memory depends on the tile, the batch and the plane, never on the depth. When even that is
too much for the plane, the plane is cut into regions, each predicted with every window that
touches it (windows on a region border are computed once per region they touch), so memory
is O(tile x region).

Input is read one strip (``tile_z x tile_y x region_x``) at a time by a background thread
(:class:`~vesselseg.inference.reader.StripReader`), normalised, and queued while the network
runs on the previous one. With a tissue test (``infer.skip_empty``,
:mod:`~vesselseg.inference.tissue`) the windows whose input holds no tissue are not run
through the network; they count as windows whose values are all 0, and the windows with tissue
are regrouped across batches so that every network call still gets ``batch_size`` of them
(:class:`_KeptWindows`).

Resuming
--------
After the last window of every z-row the sink is asked to ``checkpoint(next_tile)``: every
cell finished so far has been written. A run started with ``resume_from=T`` recomputes, from
the batch that holds the first window touching an unfinished cell, exactly the windows and
additions an uninterrupted run would do for the unfinished cells (finished cells are skipped),
so the output is bit-for-bit the same.

MONAI's ``sliding_window_inference`` blends the same windows with the same weights, but keeps
the whole output volume in memory (on the device, or on the host, not both at once) and cannot
resume; that is why this engine is our own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vesselseg.inference.blender import Blender, Finished, WindowWeights, host_view, zeros
from vesselseg.inference.blocks import batch_starts, strip_keys_of, tiles_for
from vesselseg.inference.heap import fix_mmap_threshold
from vesselseg.inference.plan import (
    DEFAULT_MAX_BUFFER_BYTES,
    CellKey,
    StripKey,
    Tile,
    choose_block,
    make_plan,
)
from vesselseg.inference.reader import Preprocess, Strip, StripReader
from vesselseg.inference.sinks import Sink
from vesselseg.inference.tiling import TileGrid
from vesselseg.inference.tissue import Tissue
from vesselseg.inference.writer import SinkThread

__all__ = ["Blender", "Finished", "PredictFn", "RunStats", "StreamingPredictor", "WindowWeights"]

log = logging.getLogger(__name__)

PredictFn = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, tz, ty, tx)`` float32 input → ``(B, 1, tz, ty, tx)`` float32 values to blend (on
any device; they are moved to the predictor's)."""


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
    skipped: int = 0  # windows without tissue, not run through the network
    write_wait_seconds: float = 0.0  # blocked on the writer thread's full queue
    write_seconds: float = 0.0  # the writer thread's time in the sink
    peak_pending_bytes: int = 0  # finished cells queued for the writer, at most
    extra: dict[str, Any] = field(default_factory=dict)


class _Windows:
    """Cuts the windows of a batch out of the strips the reader delivers, in order."""

    def __init__(self, plan: Any, reader: StripReader, stats: RunStats, pin: bool) -> None:
        self.plan, self.reader, self.stats, self.pin = plan, reader, stats, pin
        self.key: StripKey | None = None
        self.strip: Strip | None = None

    def batch(self, tiles: list[Tile]) -> tuple[torch.Tensor, np.ndarray | None]:
        """``(B, 1, tz, ty, tx)`` float32 input of ``tiles`` (pinned for CUDA) and, with a
        tissue test, ``(B,)`` bool: which windows hold no tissue."""
        plan, tile_size = self.plan, self.plan.grid.tile
        inputs, empty = [], []
        for tile in tiles:
            key = plan.strip_of(tile)
            if key != self.key:
                t0 = time.perf_counter()
                self.strip = self.reader.get(key)
                self.stats.read_wait_seconds += time.perf_counter() - t0
                self.key = key
                nbytes = self.strip.data.nbytes
                self.stats.peak_strip_bytes = max(self.stats.peak_strip_bytes, nbytes)
            assert self.strip is not None
            region = plan.regions[tile.region]
            x0 = plan.grid.starts[2][region.ix[tile.kx]] - plan.x_extent(tile.region)[0]
            inputs.append(self.strip.data[:, :, x0 : x0 + tile_size[2]])
            if self.strip.tissue is not None:
                empty.append(not self.strip.tissue[x0 : x0 + tile_size[2]].any())
        x = torch.empty((len(tiles), 1, *tile_size), dtype=torch.float32, pin_memory=self.pin)
        np.stack(inputs, out=x.numpy()[:, 0])
        return x, (np.array(empty, bool) if self.strip.tissue is not None else None)


class StreamingPredictor:
    """Blend ``predict_fn`` over a sliding-window grid, streaming input and output.

    ``predict_fn`` maps a ``(B, 1, tz, ty, tx)`` float32 batch to the values to blend (e.g.
    probabilities) of the same shape. ``preprocess`` maps raw input regions to float32 network
    input (default: cast). ``max_buffer_bytes`` bounds accumulators + input strips; a plane
    that needs more is cut into regions (``block`` forces a region size ``(y, x)``).
    ``device`` is where the weighted sums are kept (the network's device). With ``tissue``,
    windows holding no tissue are skipped (values 0, :mod:`~vesselseg.inference.tissue`).
    ``max_pending_bytes`` bounds the finished cells waiting for the writer thread (default: a
    quarter of ``max_buffer_bytes``).
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
        device: torch.device | str = "cpu",
        tissue: Tissue | None = None,
        max_pending_bytes: int | None = None,
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
        self.device = torch.device(device)
        self.tissue = tissue
        self.max_pending_bytes = max_pending_bytes or max(max_buffer_bytes // 4, 1)
        self.weights = WindowWeights(self.plan, self.device)

    def weight_sum(self, key: CellKey) -> torch.Tensor:
        """Sum of the weights of every window over cell ``key`` (see :class:`WindowWeights`)."""
        return self.weights.sum_over(key)

    def batches(self, start: int) -> Iterator[list[Tile]]:
        """Batches of windows from the one holding window ``start`` to the end."""
        first = (start // self.batch_size) * self.batch_size
        tiles = self.plan.tiles
        for b in range(first, len(tiles), self.batch_size):
            yield tiles[b : b + self.batch_size]

    def batches_for(self, cells: set[CellKey]) -> list[list[Tile]]:
        """The batches (of a whole run) holding a window that adds to one of ``cells``; with a
        tissue test, every window of the z-rows holding one, in batches (see
        :class:`_KeptWindows`)."""
        tiles, size = self.plan.tiles, self.batch_size
        if self.tissue is None:
            return [tiles[b : b + size] for b in batch_starts(self.plan, cells, size)]
        rows = sorted({self.plan.row_of(t) for t in tiles_for(self.plan, cells)})
        needed = [t for first, last in rows for t in tiles[first : last + 1]]
        return [needed[b : b + size] for b in range(0, len(needed), size)]

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
        ``on_tiles(n)`` is called after every batch with the number of new windows. The sink
        is called from a writer thread only, in order, and every call has been made when
        ``run`` returns. ``cells`` (e.g. the cells of some z-blocks,
        :mod:`~vesselseg.inference.blocks`) limits the run to those cells: only the batches
        holding a window that adds to one of them are run, and only they are written, each
        exactly as a whole run writes it.
        """
        if tuple(volume.shape) != self.grid.shape:
            raise ValueError(f"volume shape {tuple(volume.shape)} != grid shape {self.grid.shape}")
        stats = RunStats(resumed_from=resume_from)
        fix_mmap_threshold()  # a heap that does not fragment over a long run (inference.heap)
        start = self.plan.restart_tile(resume_from) if resume_from else 0
        if self.tissue is not None:  # windows are grouped row by row (see _KeptWindows)
            start = self.plan.row_of(start)[0]
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
            tissue=self.tissue,
        )
        windows = _Windows(self.plan, reader, stats, pin=self.device.type == "cuda")
        out = SinkThread(sink, self.max_pending_bytes)
        failed = True
        try:
            with torch.inference_mode():
                kept = _KeptWindows(self.batch_size, self.plan.row_ends)
                for batch in batches:
                    x, empty = windows.batch(batch)
                    if empty is None:  # no tissue test: every window through the network
                        self._blend(batch, self._network(x, stats), blender, out, on_tiles)
                        continue
                    stats.skipped += int(empty.sum())
                    for group in kept.add(batch, x, empty):
                        self._blend_group(group, stats, blender, out, on_tiles)
                for group in kept.flush():
                    self._blend_group(group, stats, blender, out, on_tiles)
            failed = False
        finally:
            reader.close()
            out.close(reraise=not failed)
        stats.peak_buffer_bytes = blender.peak_bytes
        stats.write_wait_seconds, stats.write_seconds = out.wait_seconds, out.write_seconds
        stats.peak_pending_bytes = out.peak_pending_bytes
        stats.seconds = time.perf_counter() - start_time
        return stats

    def _blend_group(
        self,
        group: _Group,
        stats: RunStats,
        blender: Blender,
        out: SinkThread,
        on_tiles: Callable[[int], None] | None,
    ) -> None:
        """Run a group's windows with tissue through the network in one call and blend all
        its windows in order (those without tissue as 0)."""
        values = zeros((len(group.tiles), *self.grid.tile), self.device)
        if group.inputs:
            computed = self._network(torch.stack(group.inputs), stats)
            host = host_view(values)
            if host is not None:  # NumPy indexing on the host (see blender.host_view)
                host[group.positions] = computed.numpy()
            else:
                values[torch.tensor(group.positions, device=self.device)] = computed
        self._blend(group.tiles, values, blender, out, on_tiles)

    def _network(self, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        """The ``(B, tz, ty, tx)`` float32 values (on the device) of the input batch ``x``."""
        t0 = time.perf_counter()
        out = self.predict_fn(x)
        stats.forward_seconds += time.perf_counter() - t0
        stats.tiles += len(x)
        return out.to(self.device, torch.float32).reshape(len(x), *self.grid.tile)

    def _blend(
        self,
        batch: list[Tile],
        values: torch.Tensor,
        blender: Blender,
        out: SinkThread,
        on_tiles: Callable[[int], None] | None = None,
    ) -> None:
        """Add a batch's windows, queue the cells they finish, checkpoint after each z-row;
        then ``on_tiles(len(batch))``."""
        plan = self.plan
        for tile, tile_values in zip(batch, values):
            blender.add(tile, tile_values)
            for key in plan.finish_at.get(tile.index, ()):
                cell = blender.finish(key)
                if cell is not None:
                    out.write(cell)
            if tile.index in plan.row_ends and tile.index + 1 > blender.resume_from:
                out.checkpoint(tile.index + 1)
        if on_tiles is not None:
            on_tiles(len(batch))


@dataclass
class _Group:
    """Consecutive windows (plan order) blended together: ``inputs`` are those with tissue, at
    ``positions`` within ``tiles``."""

    tiles: list[Tile] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


class _KeptWindows:
    """With ``skip_empty``: gathers the windows that hold tissue across batches so that the
    network still gets ``batch_size`` of them per call (a batch half without tissue would
    otherwise cost a whole call for half the windows). A group closes when it holds
    ``batch_size`` windows with tissue or at the end of a z-row (where a checkpoint needs
    every window before it blended), so grouping restarts with every row.

    Windows are still blended in plan order and those without tissue add exact zeros. The
    groups depend only on the plan and the data, because every run with a tissue test starts
    at the beginning of a z-row (a resumed run at the row of its restart window, a block of a
    sharded run with whole rows: :meth:`StreamingPredictor.batches_for`), so a window shares
    its network call with the same windows in every run, and resuming stays bit-for-bit."""

    def __init__(self, batch_size: int, row_ends: set[int]) -> None:
        self.batch_size, self.row_ends = batch_size, row_ends
        self.group = _Group()

    def add(self, tiles: list[Tile], x: torch.Tensor, empty: np.ndarray) -> list[_Group]:
        """Add a batch's windows; the groups that closed."""
        closed = []
        for tile, window, is_empty in zip(tiles, x, empty):
            group = self.group
            if not is_empty:
                group.positions.append(len(group.tiles))
                group.inputs.append(window)
            group.tiles.append(tile)
            if len(group.inputs) == self.batch_size or tile.index in self.row_ends:
                closed.append(group)
                self.group = _Group()
        return closed

    def flush(self) -> list[_Group]:
        """The open group, if it holds any window."""
        group, self.group = self.group, _Group()
        return [group] if group.tiles else []
