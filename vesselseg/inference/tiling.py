"""Tile grids and tile weights: small pure functions, no I/O.

Conventions (all per axis unless stated):

* ``size`` is the (padded) length of the volume along an axis, ``tile`` the window length.
* :func:`scan_step` and :func:`axis_starts` reproduce MONAI's grid
  (``monai.inferers.utils._get_scan_interval`` + ``monai.data.utils.dense_patch_slices``): the
  step is ``int(tile * (1 - overlap))`` (at least 1; the whole tile when ``tile == size``),
  windows start at ``0, step, 2*step, ...`` until one reaches the end, and the last window is
  shifted back to end exactly at ``size``. With the same tile, overlap and blending, the
  predictor therefore blends the very same windows as ``sliding_window_inference``.
* :func:`gaussian_importance` is MONAI's ``compute_importance_map(mode="gaussian",
  sigma_scale=0.125)`` (nnU-Net uses the same idea): a separable Gaussian with
  ``sigma = sigma_scale * tile``, clamped below at ``max(min, 1e-3)`` so no voxel has zero
  weight.
* ``border`` mode (seed 000's ``--border B``): windows step by ``tile - 2*B`` and each keeps only
  its interior ``[B, tile - B)``, except at the volume's edges where the window's outer
  ``B`` voxels are kept too (nothing else predicts them). Kept voxels have weight 1, the rest 0.
* :func:`pad_amounts` pads an axis shorter than the tile up to the tile, split like MONAI's
  (``diff // 2`` before, the rest after).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Blend = Literal["gaussian", "constant"]
Triple = tuple[int, int, int]


def scan_step(size: int, tile: int, overlap: float) -> int:
    """Distance between window starts along one axis (MONAI ``_get_scan_interval``)."""
    if tile == size:
        return tile
    step = int(tile * (1 - overlap))
    return step if step > 0 else 1


def axis_starts(size: int, tile: int, step: int) -> list[int]:
    """Window start positions along one axis of length ``size >= tile``.

    ``[0, step, 2*step, ...]`` up to the first window reaching ``size``; that last window is
    moved back to start at ``size - tile``. Matches MONAI's ``dense_patch_slices``.
    """
    if tile > size:
        raise ValueError(f"tile {tile} is larger than the (padded) axis {size}")
    count = 1
    for d in range(int(math.ceil(size / step))):
        if d * step + tile >= size:
            count = d + 1
            break
    return [d * step - max(d * step + tile - size, 0) for d in range(count)]


def border_step(tile: int, border: int) -> int:
    """Step of the ``border`` variant: consecutive windows' interiors ``tile - 2*border`` abut."""
    step = tile - 2 * border
    if step < 1:
        raise ValueError(f"border {border} leaves no interior in a tile of {tile}")
    return step


def pad_amounts(size: int, tile: int) -> tuple[int, int]:
    """``(before, after)`` padding that brings an axis of ``size`` up to ``tile`` (MONAI split)."""
    diff = max(tile - size, 0)
    return diff // 2, diff - diff // 2


def gaussian_importance(tile: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """``(tz, ty, tx)`` float32 Gaussian importance map: MONAI's ``compute_importance_map``.

    Separable ``exp(-x**2 / (2 sigma**2))`` with ``x`` centred on the tile and
    ``sigma = sigma_scale * tile`` (per axis), then clamped below at ``max(min, 1e-3)``.
    """
    from monai.data.utils import compute_importance_map  # monai is slow to import: lazily

    shape = tuple(int(n) for n in tile)
    return compute_importance_map(
        shape, mode="gaussian", sigma_scale=sigma_scale, device="cpu", dtype=torch.float32
    )


def border_weights_1d(tile: int, border: int, first: bool, last: bool) -> torch.Tensor:
    """``(tile,)`` 0/1 weights keeping ``[border, tile - border)``, plus the outer edge voxels
    on a side where the window touches the volume's start (``first``) or end (``last``)."""
    w = torch.zeros(tile, dtype=torch.float)
    lo = 0 if first else border
    hi = tile if last else tile - border
    w[lo:hi] = 1.0
    return w


@dataclass(frozen=True)
class TileGrid:
    """The windows over a padded volume and their blending weights.

    ``starts[a]`` are the window starts along axis ``a`` in padded coordinates; every window is
    ``tile`` voxels. The volume itself occupies ``[pad[a], pad[a] + shape[a])`` of the padded
    axis of length ``padded[a]``.
    """

    shape: Triple
    tile: Triple
    padded: Triple
    pad: Triple
    starts: tuple[list[int], list[int], list[int]]
    blend: Blend
    border: int
    sigma_scale: float = 0.125

    @property
    def n_tiles(self) -> int:
        return len(self.starts[0]) * len(self.starts[1]) * len(self.starts[2])

    def weight(self, iz: int, iy: int, ix: int) -> torch.Tensor:
        """``(tz, ty, tx)`` float32 weight of window ``(iz, iy, ix)`` (grid indices)."""
        if self.border:
            idx = (iz, iy, ix)
            parts = [
                border_weights_1d(
                    self.tile[a],
                    self.border,
                    first=idx[a] == 0,
                    last=idx[a] == len(self.starts[a]) - 1,
                )
                for a in range(3)
            ]
            return parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
        if self.blend == "gaussian":
            return gaussian_importance(self.tile, self.sigma_scale)
        return torch.ones(self.tile, dtype=torch.float)


def make_grid(
    shape: Sequence[int],
    tile: Sequence[int],
    overlap: float = 0.25,
    blend: Blend = "gaussian",
    border: int = 0,
    sigma_scale: float = 0.125,
) -> TileGrid:
    """The window grid for a volume of ``shape`` ``(z, y, x)``.

    Axes shorter than the tile are padded up to it (:func:`pad_amounts`). With ``border > 0``
    the windows step by ``tile - 2*border`` and ``overlap``/``blend`` are ignored.
    """
    shape3 = tuple(int(s) for s in shape)
    tile3 = tuple(int(t) for t in tile)
    if len(shape3) != 3 or len(tile3) != 3:
        raise ValueError(f"expected 3D shape and tile, got {shape3} and {tile3}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    pads = [pad_amounts(s, t) for s, t in zip(shape3, tile3)]
    padded = tuple(s + p[0] + p[1] for s, p in zip(shape3, pads))
    starts = []
    for size, t in zip(padded, tile3):
        step = border_step(t, border) if border else scan_step(size, t, overlap)
        starts.append(axis_starts(size, t, step))
    return TileGrid(
        shape=shape3,  # type: ignore[arg-type]
        tile=tile3,  # type: ignore[arg-type]
        padded=padded,  # type: ignore[arg-type]
        pad=tuple(p[0] for p in pads),  # type: ignore[arg-type]
        starts=(starts[0], starts[1], starts[2]),
        blend=blend,
        border=border,
        sigma_scale=sigma_scale,
    )


def cell_bounds(starts: Sequence[int], tile: int, lo: int, hi: int) -> list[int]:
    """Sorted boundaries of the elementary intervals of ``[lo, hi)`` cut by every window edge.

    Inside one interval the set of windows covering a voxel is constant, so an interval is
    finished as soon as the last window covering it has been added.
    """
    edges = {lo, hi}
    for s in starts:
        for e in (s, s + tile):
            if lo < e < hi:
                edges.add(e)
    return sorted(edges)
