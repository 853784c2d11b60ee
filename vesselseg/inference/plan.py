"""The pure planning of a streamed prediction: regions, windows, cells and their order.

Everything here depends only on the window grid (:func:`~vesselseg.inference.tiling.make_grid`)
and the plane block; nothing reads a volume or runs a network, so a plan can be built, tested
and compared on its own (the predictor, the reader and the blending all follow it).

* A *region* is a rectangle of the plane (usually the whole ``y x x`` plane); a plane too big for
  the memory budget is cut into several (:func:`choose_block`, :func:`plan_regions`).
* Windows are walked region, then z-row, then y-strip, then x (:class:`Tile`, in that order).
* A *cell* is an elementary output box of a region, cut by every window edge along z and y
  (full region width along x; :func:`~vesselseg.inference.tiling.cell_bounds`). The set of
  windows covering a cell is constant, so it is finished after the last of them (:class:`Cell`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

from vesselseg.inference.tiling import TileGrid, cell_bounds

DEFAULT_MAX_BUFFER_BYTES = 1 << 30

CellKey = tuple[int, int, int]
"""``(region, z-cell, y-cell)``."""

StripKey = tuple[int, int, int]
"""``(region, window row iz, grid strip iy)``: one ``(tz, ty, region width)`` input strip."""

Slices = tuple[slice, slice, slice]


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
    cells: dict[CellKey, Cell]
    row_ends: set[int]  # indices of windows that end a z-row of a region
    finish_at: dict[int, list[CellKey]]
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

    @cached_property
    def _sorted_row_ends(self) -> list[int]:
        return sorted(self.row_ends)

    def row_of(self, index: int) -> tuple[int, int]:
        """First and last window index of the z-row (of its region) holding window ``index``."""
        ends = self._sorted_row_ends
        at = bisect.bisect_left(ends, index)
        return (ends[at - 1] + 1 if at else 0), ends[at]

    def strip_of(self, tile: Tile) -> StripKey:
        """The input strip window ``tile`` is cut from."""
        return (tile.region, tile.iz, self.regions[tile.region].iy[tile.jy])

    def strip_keys(self, start: int) -> list[StripKey]:
        """The strips windows ``start, start + 1, ...`` are cut from, in order, once each."""
        keys: list[StripKey] = []
        for tile in self.tiles[start:]:
            key = self.strip_of(tile)
            if not keys or keys[-1] != key:
                keys.append(key)
        return keys

    def x_extent(self, region: int) -> tuple[int, int]:
        """``[x0, x1)`` (padded coordinates) of the windows touching ``region``: a strip's width."""
        reg, xs, tx = self.regions[region], self.grid.starts[2], self.grid.tile[2]
        return xs[reg.ix[0]], xs[reg.ix[-1]] + tx

    def overlap(self, iz: int, jy: int, kx: int, cell: CellKey) -> tuple[Slices, Slices]:
        """``(window slices, cell slices)`` of the part of window ``(iz, jy, kx)`` (``jy``/``kx``
        within the cell's region) inside ``cell``."""
        grid, region = self.grid, cell[0]
        reg = self.regions[region]
        z0 = grid.starts[0][iz]
        y0 = grid.starts[1][reg.iy[jy]]
        x0 = grid.starts[2][reg.ix[kx]]
        (za0, za1), (yb0, yb1) = self.z_cells[cell[1]], self.y_cells[region][cell[2]]
        rx0, rx1 = reg.x
        cx0, cx1 = max(x0, rx0), min(x0 + grid.tile[2], rx1)
        src = (slice(za0 - z0, za1 - z0), slice(yb0 - y0, yb1 - y0), slice(cx0 - x0, cx1 - x0))
        dst = (slice(None), slice(None), slice(cx0 - rx0, cx1 - rx0))
        return src, dst

    def cell_shape(self, key: CellKey) -> tuple[int, int, int]:
        """``(z, y, x)`` size of cell ``key`` (x: its region's width)."""
        cell, reg = self.cells[key], self.regions[key[0]]
        return (cell.z[1] - cell.z[0], cell.y[1] - cell.y[0], reg.x[1] - reg.x[0])

    def cell_slices(self, key: CellKey) -> Slices:
        """Where cell ``key`` lies in the volume (unpadded coordinates)."""
        cell, reg = self.cells[key], self.regions[key[0]]
        pz, py, px = self.grid.pad
        return (
            slice(cell.z[0] - pz, cell.z[1] - pz),
            slice(cell.y[0] - py, cell.y[1] - py),
            slice(reg.x[0] - px, reg.x[1] - px),
        )


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
    cells: dict[CellKey, Cell] = {}
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
    finish_at: dict[int, list[CellKey]] = {}
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
