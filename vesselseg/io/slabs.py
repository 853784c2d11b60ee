"""The one way the package walks a volume along z: slabs of planes that fit a byte budget.

Validation, metrics, pseudo labels and evaluation all read volumes bigger than memory slab by
slab; they share :data:`SLAB_BYTES` and these iterators so one budget bounds them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

SLAB_BYTES = 256 * 2**20  # working memory one slab walk may use


def slab_depth(shape: tuple[int, ...], bytes_per_voxel: float, budget: int = SLAB_BYTES) -> int:
    """How many z-planes of ``shape`` fit into ``budget`` bytes (at least one)."""
    plane = int(np.prod(shape[1:])) * bytes_per_voxel
    return max(1, int(budget // max(plane, 1.0)))


def slab_ranges(
    length: int, plane_voxels: int, bytes_per_voxel: float, budget: int = SLAB_BYTES, halo: int = 0
) -> Iterator[tuple[int, int]]:
    """Split ``range(length)`` into ``(z0, z1)`` cores of planes that fit ``budget`` bytes.

    ``bytes_per_voxel`` is the working memory needed per voxel of a slab (inputs, masks,
    temporaries); ``halo`` planes on each side are counted in the budget, but a core is always at
    least one plane deep, so a tiny budget means many thin slabs, never a failure.
    """
    planes = int(budget // max(plane_voxels * bytes_per_voxel, 1.0))
    depth = max(1, planes - 2 * halo)
    for z0 in range(0, length, depth):
        yield z0, min(length, z0 + depth)


def volume_slabs(
    shape: tuple[int, ...], bytes_per_voxel: float, budget: int = SLAB_BYTES, halo: int = 0
) -> list[tuple[int, int]]:
    """:func:`slab_ranges` of a volume of ``shape``, as a list."""
    plane = int(np.prod(shape[1:]))
    return list(slab_ranges(int(shape[0]), plane, bytes_per_voxel, budget, halo))


def iter_slabs(volume: Any, budget: int = SLAB_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(z0, volume[z0:z1])`` slabs of at most ``budget`` bytes (at least one plane)."""
    itemsize = np.dtype(volume.dtype).itemsize
    for z0, z1 in volume_slabs(tuple(volume.shape), itemsize, budget):
        yield z0, np.asarray(volume[z0:z1])
