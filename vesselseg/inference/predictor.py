"""Streaming sliding-window predictor: bounded memory, resumable, byte-reproducible.

How a volume ``(Z, Y, X)`` is processed
---------------------------------------
The window grid (:func:`~vesselseg.inference.tiling.make_grid`) is walked in a fixed order:
plane *region* (usually the whole ``y x x`` plane), then z-row of windows, then y-strip, then
x. Windows are fed to the network ``batch_size`` at a time; batches are consecutive runs of
that global order, so a batch's content never depends on where a run started.

Weighted sums are kept only for *cells*: the elementary boxes cut out of a region by every
window edge along z and y (full region width along x; see
:func:`~vesselseg.inference.tiling.cell_bounds`). A cell is finished once the last window that
covers it has been added; it is then divided by the sum of those windows' weights (a function
of the grid alone, recomputed at that moment rather than stored), handed to the sink and
freed. Because windows advance row by row and strip by strip, the live cells are
the z-overlap with the next row (``tile_z - step_z`` planes of the region) plus the current
strip (``tile_z x tile_y x region_x``): memory depends on the tile, the batch and the plane,
never on the depth. When even that is too much for the plane, the plane is cut into regions,
each predicted with every window that touches it (windows on a region border are computed
once per region they touch), so memory is O(tile x region).

Input is read one strip (``tile_z x tile_y x region_x``) at a time by a background thread,
normalised, and queued while the network runs on the previous one.

Resuming
--------
After the last window of every z-row the sink is asked to ``checkpoint(next_tile)``: every
cell finished so far has been written. A run started with ``resume_from=T`` recomputes, from
the batch that holds the first window touching an unfinished cell, exactly the windows and
additions an uninterrupted run would do for the unfinished cells (finished cells are skipped),
so the output is bit-for-bit the same.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vesselseg.inference.tiling import TileGrid, cell_bounds

log = logging.getLogger(__name__)

PredictFn = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, tz, ty, tx)`` float32 input → ``(B, 1, tz, ty, tx)`` float32 values to blend."""

Preprocess = Callable[[np.ndarray], np.ndarray]
"""Raw region ``(z, y, x)`` → float32 network input of the same shape."""

DEFAULT_MAX_BUFFER_BYTES = 1 << 30


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


@dataclass(frozen=True)
class Region:
    """A rectangle of the plane ``[y0, y1) x [x0, x1)`` (padded coordinates) and the grid
    indices ``iy``/``ix`` of the windows that touch it."""

    y: tuple[int, int]
    x: tuple[int, int]
    iy: tuple[int, ...]
    ix: tuple[int, ...]


@dataclass(frozen=True)
class Tile:
    """One window: its position in the processing order and its grid indices."""

    index: int
    region: int
    iz: int
    jy: int  # position in the region's ``iy``
    kx: int  # position in the region's ``ix``


@dataclass
class Cell:
    """An elementary output box; ``first``/``last`` are the indices of the first/last window
    adding to it."""

    region: int
    z: tuple[int, int]
    y: tuple[int, int]
    first: int
    last: int


@dataclass
class Plan:
    """Everything about a run that depends only on the volume shape and the settings."""

    grid: TileGrid
    regions: list[Region]
    tiles: list[Tile]
    cells: dict[tuple[int, int, int], Cell]
    row_ends: set[int]  # indices of windows that end a z-row of a region
    finish_at: dict[int, list[tuple[int, int, int]]]
    z_cells: list[tuple[int, int]]
    z_cells_of_row: list[list[int]]
    rows_of_z: list[list[int]]
    strips_of_y: list[list[list[int]]]  # per region, per y-cell: strip positions
    y_cells: list[list[tuple[int, int]]]  # per region
    y_cells_of_strip: list[list[list[int]]]  # per region, per strip position

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    def restart_tile(self, resume_from: int) -> int:
        """The first window to recompute when resuming after ``resume_from`` windows."""
        first = resume_from
        for cell in self.cells.values():
            if cell.last >= resume_from and cell.first < first:
                first = cell.first
        return first


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


def plan_regions(grid: TileGrid, block: tuple[int, int] | None) -> list[Region]:
    """Cut the real part of the padded plane into ``block``-sized regions (None: one region)."""
    (py, px), (sy, sx) = grid.pad[1:], grid.shape[1:]
    ty, tx = grid.tile[1:]
    by, bx = block if block is not None else (sy, sx)
    regions = []
    for y0 in range(py, py + sy, by):
        y1 = min(y0 + by, py + sy)
        for x0 in range(px, px + sx, bx):
            x1 = min(x0 + bx, px + sx)
            iy = tuple(i for i, s in enumerate(grid.starts[1]) if s < y1 and s + ty > y0)
            ix = tuple(i for i, s in enumerate(grid.starts[2]) if s < x1 and s + tx > x0)
            regions.append(Region((y0, y1), (x0, x1), iy, ix))
    return regions


def make_plan(grid: TileGrid, block: tuple[int, int] | None = None) -> Plan:
    """Processing order, cells and their first/last windows for ``grid``."""
    tz, ty = grid.tile[0], grid.tile[1]
    zs, ys = grid.starts[0], grid.starts[1]
    regions = plan_regions(grid, block)
    z_lo, z_hi = grid.pad[0], grid.pad[0] + grid.shape[0]
    zb = cell_bounds(zs, tz, z_lo, z_hi)
    z_cells = list(zip(zb[:-1], zb[1:]))
    z_cells_of_row = [
        [a for a, (c0, c1) in enumerate(z_cells) if s <= c0 and c1 <= s + tz] for s in zs
    ]
    rows_of_z = [[i for i, s in enumerate(zs) if s <= c0 and c1 <= s + tz] for c0, c1 in z_cells]

    tiles: list[Tile] = []
    cells: dict[tuple[int, int, int], Cell] = {}
    row_ends: set[int] = set()
    y_cells_all, y_cells_of_strip_all, strips_of_y_all = [], [], []
    for r, region in enumerate(regions):
        offset = len(tiles)
        nj, nk = len(region.iy), len(region.ix)
        for iz in range(len(zs)):
            for j in range(nj):
                for k in range(nk):
                    tiles.append(Tile(len(tiles), r, iz, j, k))
            row_ends.add(len(tiles) - 1)
        yb = cell_bounds([ys[i] for i in region.iy], ty, *region.y)
        y_cells = list(zip(yb[:-1], yb[1:]))
        strips_of_y = [
            [j for j, i in enumerate(region.iy) if ys[i] <= c0 and c1 <= ys[i] + ty]
            for c0, c1 in y_cells
        ]
        y_cells_of_strip = [
            [b for b, (c0, c1) in enumerate(y_cells) if ys[i] <= c0 and c1 <= ys[i] + ty]
            for i in region.iy
        ]
        y_cells_all.append(y_cells)
        strips_of_y_all.append(strips_of_y)
        y_cells_of_strip_all.append(y_cells_of_strip)
        for a, zc in enumerate(z_cells):
            for b, yc in enumerate(y_cells):
                first = offset + (rows_of_z[a][0] * nj + strips_of_y[b][0]) * nk
                last = offset + (rows_of_z[a][-1] * nj + strips_of_y[b][-1]) * nk + nk - 1
                cells[(r, a, b)] = Cell(r, zc, yc, first, last)
    finish_at: dict[int, list[tuple[int, int, int]]] = {}
    for key, cell in cells.items():
        finish_at.setdefault(cell.last, []).append(key)
    return Plan(
        grid=grid,
        regions=regions,
        tiles=tiles,
        cells=cells,
        row_ends=row_ends,
        finish_at=finish_at,
        z_cells=z_cells,
        z_cells_of_row=z_cells_of_row,
        rows_of_z=rows_of_z,
        strips_of_y=strips_of_y_all,
        y_cells=y_cells_all,
        y_cells_of_strip=y_cells_of_strip_all,
    )


def estimate_buffer_bytes(grid: TileGrid, region_y: int, region_x: int) -> int:
    """Rough peak bytes of accumulators + input strips for a ``region_y x region_x`` region.

    Live cells: the largest z-overlap of two rows over the region plus the current strip
    (weighted sums, float32); input: three strips in flight (float32).
    """
    tz, ty, tx = grid.tile
    zs = grid.starts[0]
    step = min((b - a for a, b in zip(zs, zs[1:])), default=tz)
    carry = max(tz - step, 0) * region_y * region_x
    strip = tz * (2 * ty) * region_x
    inputs = 3 * tz * ty * (region_x + tx)
    return 4 * (carry + strip + inputs)


def choose_block(grid: TileGrid, max_bytes: int) -> tuple[int, int] | None:
    """The largest square-ish plane block whose estimate fits ``max_bytes`` (None: no cut)."""
    sy, sx = grid.shape[1:]
    if estimate_buffer_bytes(grid, sy, sx) <= max_bytes:
        return None
    ty, tx = grid.tile[1:]
    side = max(sy, sx)
    while side > max(ty, tx):
        if estimate_buffer_bytes(grid, min(side, sy), min(side, sx)) <= max_bytes:
            break
        side = int(side * 0.8)
    side = max(side, ty, tx)
    return (min(side, sy), min(side, sx))


class StripReader:
    """Reads, normalises and pads input strips in a background thread, in order.

    A strip is ``(tz, ty, width)`` float32 for window row ``iz``, strip ``iy`` and the x-extent
    of a region (padded coordinates; voxels outside the volume are 0).
    """

    def __init__(
        self,
        volume: Any,
        grid: TileGrid,
        keys: list[tuple[int, int, int]],
        regions: list[Region],
        preprocess: Preprocess,
        depth: int = 1,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.volume, self.grid, self.regions = volume, grid, regions
        self.preprocess = preprocess
        self.release = release
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(keys,), daemon=True)
        self._thread.start()

    def x_extent(self, region: int) -> tuple[int, int]:
        reg, xs, tx = self.regions[region], self.grid.starts[2], self.grid.tile[2]
        return xs[reg.ix[0]], xs[reg.ix[-1]] + tx

    def read(self, key: tuple[int, int, int]) -> np.ndarray:
        """The strip ``key = (region, iz, iy)`` as ``(tz, ty, width)`` float32."""
        region, iz, iy = key
        g = self.grid
        lo = (g.starts[0][iz], g.starts[1][iy], self.x_extent(region)[0])
        hi = (lo[0] + g.tile[0], lo[1] + g.tile[1], self.x_extent(region)[1])
        src = [
            (max(lo[a], g.pad[a]) - g.pad[a], min(hi[a], g.pad[a] + g.shape[a]) - g.pad[a])
            for a in range(3)
        ]
        raw = self.volume[tuple(slice(a, b) for a, b in src)]
        data = np.ascontiguousarray(self.preprocess(raw), dtype=np.float32)
        size = tuple(b - a for a, b in zip(lo, hi))
        if data.shape == size:
            return data
        out = np.zeros(size, dtype=np.float32)
        dst = tuple(
            slice(src[a][0] + g.pad[a] - lo[a], src[a][1] + g.pad[a] - lo[a]) for a in range(3)
        )
        out[dst] = data
        return out

    def _work(self, keys: list[tuple[int, int, int]]) -> None:
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

    def get(self, key: tuple[int, int, int]) -> np.ndarray:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        got, data = item
        if got != key:  # pragma: no cover - order is fixed by construction
            raise RuntimeError(f"strip reader out of order: wanted {key}, got {got}")
        return data

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


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
        self._weights: dict[tuple[bool, ...], np.ndarray] = {}
        self._scratch: np.ndarray | None = None  # weighted window, reused

    # ------------------------------------------------------------------ helpers

    def _weight(self, region: int, iz: int, jy: int, kx: int) -> np.ndarray:
        """``(tz, ty, tx)`` float32 weight of a window (grid indices; ``jy``/``kx`` within the
        region)."""
        reg = self.plan.regions[region]
        iy, ix = reg.iy[jy], reg.ix[kx]
        g = self.grid
        key: tuple[bool, ...] = ()
        if g.border:
            key = (
                iz == 0,
                iz == len(g.starts[0]) - 1,
                iy == 0,
                iy == len(g.starts[1]) - 1,
                ix == 0,
                ix == len(g.starts[2]) - 1,
            )
        if key not in self._weights:
            self._weights[key] = g.weight(iz, iy, ix).numpy().copy()
        return self._weights[key]

    def _overlap(
        self, region: int, iz: int, jy: int, kx: int, a: int, b: int
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """``(window slices, cell slices)`` of the part of a window inside cell ``(a, b)``."""
        plan, grid = self.plan, self.grid
        reg = plan.regions[region]
        z0 = grid.starts[0][iz]
        y0 = grid.starts[1][reg.iy[jy]]
        x0 = grid.starts[2][reg.ix[kx]]
        (za0, za1), (yb0, yb1) = plan.z_cells[a], plan.y_cells[region][b]
        rx0, rx1 = reg.x
        cx0, cx1 = max(x0, rx0), min(x0 + grid.tile[2], rx1)
        src = (slice(za0 - z0, za1 - z0), slice(yb0 - y0, yb1 - y0), slice(cx0 - x0, cx1 - x0))
        dst = (slice(None), slice(None), slice(cx0 - rx0, cx1 - rx0))
        return src, dst

    def weight_sum(self, key: tuple[int, int, int]) -> np.ndarray:
        """Sum of the weights of every window over cell ``key``, added in processing order.

        It depends only on the grid, so it is computed when the cell is finished instead of
        being accumulated (half the buffer memory)."""
        region, a, b = key
        cell = self.plan.cells[key]
        reg = self.plan.regions[region]
        shape = (cell.z[1] - cell.z[0], cell.y[1] - cell.y[0], reg.x[1] - reg.x[0])
        total = np.zeros(shape, np.float32)
        for iz in self.plan.rows_of_z[a]:
            for jy in self.plan.strips_of_y[region][b]:
                for kx in range(len(reg.ix)):
                    src, dst = self._overlap(region, iz, jy, kx, a, b)
                    total[dst] += self._weight(region, iz, jy, kx)[src]
        return total

    def _strip_keys(self, start: int) -> list[tuple[int, int, int]]:
        keys: list[tuple[int, int, int]] = []
        for tile in self.plan.tiles[start:]:
            region = self.plan.regions[tile.region]
            key = (tile.region, tile.iz, region.iy[tile.jy])
            if not keys or keys[-1] != key:
                keys.append(key)
        return keys

    def batches(self, start: int) -> Iterator[list[Tile]]:
        """Batches of windows from the one holding window ``start`` to the end."""
        first = (start // self.batch_size) * self.batch_size
        tiles = self.plan.tiles
        for b in range(first, len(tiles), self.batch_size):
            yield tiles[b : b + self.batch_size]

    # ------------------------------------------------------------------ run

    def run(
        self,
        volume: Any,
        sink: Sink,
        resume_from: int = 0,
        on_tiles: Callable[[int], None] | None = None,
    ) -> RunStats:
        """Predict ``volume`` (``(Z, Y, X)``, lazily sliced) into ``sink``.

        ``resume_from`` is the ``next_tile`` of the sink's last checkpoint (0: from scratch).
        ``on_tiles(n)`` is called after every batch with the number of new windows.
        """
        if tuple(volume.shape) != self.grid.shape:
            raise ValueError(f"volume shape {tuple(volume.shape)} != grid shape {self.grid.shape}")
        plan, grid = self.plan, self.grid
        tz, ty, tx = grid.tile
        stats = RunStats(resumed_from=resume_from)
        start = plan.restart_tile(resume_from) if resume_from else 0
        start_time = time.perf_counter()
        live: dict[tuple[int, int, int], np.ndarray] = {}
        live_bytes = 0
        reader = StripReader(
            volume,
            grid,
            self._strip_keys((start // self.batch_size) * self.batch_size),
            plan.regions,
            self.preprocess,
            depth=self.prefetch,
            release=self.release_input,
        )
        strip_key: tuple[int, int, int] | None = None
        strip: np.ndarray | None = None
        try:
            with torch.inference_mode():
                for batch in self.batches(start):
                    # ---- gather input windows (reading the next strips ahead in a thread)
                    inputs = []
                    for tile in batch:
                        region = plan.regions[tile.region]
                        key = (tile.region, tile.iz, region.iy[tile.jy])
                        if key != strip_key:
                            t0 = time.perf_counter()
                            strip = reader.get(key)
                            stats.read_wait_seconds += time.perf_counter() - t0
                            strip_key = key
                            stats.peak_strip_bytes = max(stats.peak_strip_bytes, strip.nbytes)
                        assert strip is not None
                        x0 = grid.starts[2][region.ix[tile.kx]] - reader.x_extent(tile.region)[0]
                        inputs.append(strip[:, :, x0 : x0 + tx])
                    x = torch.from_numpy(np.stack(inputs)[:, None])
                    # ---- network
                    t0 = time.perf_counter()
                    out = self.predict_fn(x)
                    stats.forward_seconds += time.perf_counter() - t0
                    stats.tiles += len(batch)
                    values = np.ascontiguousarray(
                        out.to("cpu", torch.float32).numpy().reshape(len(batch), tz, ty, tx)
                    )
                    # ---- accumulate, finish cells, checkpoint
                    for tile, tile_values in zip(batch, values):
                        live_bytes = self._add(tile, tile_values, live, live_bytes, resume_from)
                        stats.peak_buffer_bytes = max(stats.peak_buffer_bytes, live_bytes)
                        for key in plan.finish_at.get(tile.index, ()):
                            live_bytes -= self._finish(key, live, sink)
                        if tile.index in plan.row_ends and tile.index + 1 > resume_from:
                            sink.checkpoint(tile.index + 1)
                    if on_tiles is not None:
                        on_tiles(len(batch))
        finally:
            reader.close()
        stats.seconds = time.perf_counter() - start_time
        return stats

    def _add(
        self,
        tile: Tile,
        values: np.ndarray,
        live: dict[tuple[int, int, int], np.ndarray],
        live_bytes: int,
        resume_from: int,
    ) -> int:
        """Add ``values * weight`` of one window ``(tz, ty, tx)`` to the cells it covers."""
        plan, grid = self.plan, self.grid
        region = tile.region
        if grid.border or grid.blend != "constant":
            if self._scratch is None:
                self._scratch = np.empty(grid.tile, np.float32)
            weight = self._weight(region, tile.iz, tile.jy, tile.kx)
            values = np.multiply(values, weight, out=self._scratch)
        width = plan.regions[region].x[1] - plan.regions[region].x[0]
        for a in plan.z_cells_of_row[tile.iz]:
            for b in plan.y_cells_of_strip[region][tile.jy]:
                key = (region, a, b)
                cell = plan.cells[key]
                if cell.last < resume_from:  # finished and written before the restart
                    continue
                if key not in live:
                    shape = (cell.z[1] - cell.z[0], cell.y[1] - cell.y[0], width)
                    live[key] = np.zeros(shape, np.float32)
                    live_bytes += live[key].nbytes
                src, dst = self._overlap(region, tile.iz, tile.jy, tile.kx, a, b)
                live[key][dst] += values[src]
        return live_bytes

    def _finish(
        self, key: tuple[int, int, int], live: dict[tuple[int, int, int], np.ndarray], sink: Sink
    ) -> int:
        """Divide a finished cell by its weights, write it, free it; returns bytes freed."""
        if key not in live:  # finished before a restart, or never touched
            return 0
        acc = live.pop(key)
        cell = self.plan.cells[key]
        region = self.plan.regions[cell.region]
        pz, py, px = self.grid.pad
        values = np.divide(acc, self.weight_sum(key), out=acc)
        sink.write(
            slice(cell.z[0] - pz, cell.z[1] - pz),
            slice(cell.y[0] - py, cell.y[1] - py),
            slice(region.x[0] - px, region.x[1] - px),
            values,
        )
        return acc.nbytes
