"""Weighted sums of the live cells, kept as torch tensors on the inference device.

:class:`WindowWeights` holds each kind of window weight once (on the device);
:class:`Blender` adds a window's values times its weight to the cells it covers and, when a
cell is finished, divides it by the sum of the weights over it and hands the result to the
host: on CUDA through a pinned buffer with a non-blocking copy (the writer thread waits for
the copy's event before touching it, :mod:`~vesselseg.inference.writer`), on the CPU as the
accumulator itself (no copy).

Every operation is elementwise and in a fixed order (the plan's window order), so the result
depends only on the grid, the device and the network's values: a run resumed on the same
device and thread count adds exactly the same numbers in the same order as an uninterrupted
one.

On the CPU the tensors are the same, but the arithmetic on them runs through NumPy views of
their memory (:func:`host_view`): one IEEE operation per element either way, so the bytes are
the same, but NumPy does it on the calling thread, whereas every small torch operation would
wake torch's OpenMP pool and wait at its barrier - on a busy machine, where a pool thread may
not be scheduled, that wait was measured at 16 ms per 48^3 multiply instead of 0.04 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vesselseg.inference.heap import mapped_zeros
from vesselseg.inference.plan import CellKey, Plan, Slices, Tile


def host_view(t: torch.Tensor) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (None for a tensor on another device)."""
    return t.numpy() if t.device.type == "cpu" else None


def zeros(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """float32 zeros on ``device`` (on the CPU in a mapping of their own, off the C heap:
    cells live for a row of windows, and on the heap they fragmented it,
    :mod:`~vesselseg.inference.heap`)."""
    if device.type == "cpu":
        return torch.from_numpy(mapped_zeros(shape))
    return torch.zeros(shape, dtype=torch.float32, device=device)


def add_into(acc: torch.Tensor, dst: Slices, values: torch.Tensor, src: Slices) -> None:
    """``acc[dst] += values[src]`` (NumPy on the CPU)."""
    a, v = host_view(acc), host_view(values)
    if a is not None and v is not None:
        a[dst] += v[src]
    else:
        acc[dst] += values[src]


class WindowWeights:
    """The ``(tz, ty, tx)`` float32 blending weight of each window, computed once per kind,
    on ``device``."""

    def __init__(self, plan: Plan, device: torch.device | str = "cpu") -> None:
        self.plan = plan
        self.device = torch.device(device)
        self._cache: dict[tuple[bool, ...], torch.Tensor] = {}

    def __call__(self, region: int, iz: int, jy: int, kx: int) -> torch.Tensor:
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
            weight = g.weight(iz, iy, ix).to(torch.float32).contiguous()
            self._cache[key] = weight.to(self.device)
        return self._cache[key]

    def sum_over(self, key: CellKey) -> torch.Tensor:
        """Sum of the weights of every window over cell ``key``, added in processing order.

        It depends only on the grid, so it is computed when the cell is finished instead of
        being accumulated (half the buffer memory)."""
        plan = self.plan
        region, a, b = key
        total = zeros(plan.cell_shape(key), self.device)
        for iz in plan.rows_of_z[a]:
            for jy in plan.strips_of_y[region][b]:
                for kx in range(len(plan.regions[region].ix)):
                    src, dst = plan.overlap(iz, jy, kx, key)
                    add_into(total, dst, self(region, iz, jy, kx), src)
        return total


@dataclass
class Finished:
    """A finished cell on its way to the sink: where it goes, its float32 values on the host
    and, on CUDA, the event after which the non-blocking copy into them is complete."""

    slices: Slices
    values: np.ndarray
    ready: Any = None  # torch.cuda.Event or None
    host: torch.Tensor | None = None  # keeps the pinned buffer alive until written


class Blender:
    """The weighted sums of the live cells of one run (float32 tensors on ``weights.device``).

    :meth:`add` adds one window's values times its weight to the cells it covers (cells already
    final before ``resume_from`` are skipped); :meth:`finish` divides a finished cell by its
    weight sum, frees it and returns it for the host (:class:`Finished`).
    """

    def __init__(
        self,
        plan: Plan,
        weights: WindowWeights,
        resume_from: int = 0,
        cells: set[CellKey] | None = None,
    ) -> None:
        self.plan, self.weights, self.resume_from = plan, weights, resume_from
        self.cells = cells  # only these cells are kept (None: all), see StreamingPredictor.run
        self.device = weights.device
        self.live: dict[CellKey, torch.Tensor] = {}
        self.bytes = 0
        self.peak_bytes = 0
        grid = plan.grid
        self._weighted = bool(grid.border) or grid.blend != "constant"
        self._scratch = zeros(grid.tile, self.device) if self._weighted else None

    def add(self, tile: Tile, values: torch.Tensor) -> None:
        """Add ``values * weight`` of one window ``(tz, ty, tx)`` (on the device) to the cells
        it covers."""
        plan, region = self.plan, tile.region
        if self._weighted:
            weight = self.weights(region, tile.iz, tile.jy, tile.kx)
            assert self._scratch is not None
            host = host_view(values)
            if host is not None:
                np.multiply(host, weight.numpy(), out=self._scratch.numpy())
                values = self._scratch
            else:
                values = torch.mul(values, weight, out=self._scratch)
        for a in plan.z_cells_of_row[tile.iz]:
            for b in plan.y_cells_of_strip[region][tile.jy]:
                key = (region, a, b)
                if plan.cells[key].last < self.resume_from:  # written before the restart
                    continue
                if self.cells is not None and key not in self.cells:  # another block's
                    continue
                acc = self.live.get(key)
                if acc is None:
                    acc = self.live[key] = zeros(plan.cell_shape(key), self.device)
                    self.bytes += acc.numel() * 4
                src, dst = plan.overlap(tile.iz, tile.jy, tile.kx, key)
                add_into(acc, dst, values, src)
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def finish(self, key: CellKey) -> Finished | None:
        """Divide a finished cell by its weights and free it; None when it was finished before
        a restart (or never touched)."""
        acc = self.live.pop(key, None)
        if acc is None:
            return None
        self.bytes -= acc.numel() * 4
        weight_sum = self.weights.sum_over(key)
        slices = self.plan.cell_slices(key)
        host = host_view(acc)
        if host is not None:
            return Finished(slices, np.divide(host, weight_sum.numpy(), out=host))
        acc.div_(weight_sum)
        host = torch.empty(acc.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(acc, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return Finished(slices, host.numpy(), ready, host)
