"""Reading a pair of volumes in z-slabs, with halos, and turning slabs into masks.

A *volume* here is anything with ``shape`` (z, y, x), ``dtype`` and numpy-style region reads
``volume[z0:z1]``: ``np.ndarray``, ``np.memmap``, a zarr array or a :class:`vesselseg.io.Volume`.
Every metric walks the z axis in slabs whose depth comes from a byte budget, so a 1024³ pair
never has more than one slab (plus its halo) of each volume in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vesselseg.errors import ShapeMismatchError, VolumeFormatError

SLAB_BYTES = 256 * 2**20


def check_pair(pred: Any, truth: Any) -> tuple[int, int, int]:
    """The common ``(z, y, x)`` shape of a prediction and its truth; raise if they differ."""
    pred_shape, truth_shape = tuple(pred.shape), tuple(truth.shape)
    if len(pred_shape) != 3:
        raise VolumeFormatError(f"prediction must be 3D (z, y, x), got shape {pred_shape}")
    if pred_shape != truth_shape:
        raise ShapeMismatchError(
            f"prediction shape {pred_shape} does not match truth shape {truth_shape}"
        )
    return int(pred_shape[0]), int(pred_shape[1]), int(pred_shape[2])


def slab_ranges(
    length: int, plane_voxels: int, bytes_per_voxel: float, budget: int, halo: int = 0
) -> Iterator[tuple[int, int]]:
    """Split ``range(length)`` into ``(z0, z1)`` cores of planes that fit ``budget`` bytes.

    ``bytes_per_voxel`` is the working memory a metric needs per voxel of a slab (inputs,
    masks, temporaries); ``halo`` planes on each side are counted in the budget, but a core is
    always at least one plane deep, so a tiny budget means many thin slabs, never a failure.
    """
    planes = int(budget // max(plane_voxels * bytes_per_voxel, 1.0))
    depth = max(1, planes - 2 * halo)
    for z0 in range(0, length, depth):
        yield z0, min(length, z0 + depth)


def read_clipped(volume: Any, z0: int, z1: int) -> tuple[np.ndarray, int]:
    """Planes ``[max(z0, 0), min(z1, depth))`` of ``volume`` and the clipped start."""
    lo, hi = max(z0, 0), min(z1, int(volume.shape[0]))
    return np.asarray(volume[lo:hi]), lo


def padded_mask(
    volume: Any, z0: int, z1: int, to_mask: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``to_mask`` of planes ``[z0, z1)``; planes outside the volume are background (False)."""
    data, lo = read_clipped(volume, z0, z1)
    mask = to_mask(data)
    if lo == z0 and mask.shape[0] == z1 - z0:
        return mask
    out = np.zeros((z1 - z0, *mask.shape[1:]), dtype=bool)
    out[lo - z0 : lo - z0 + mask.shape[0]] = mask
    return out


def pred_mask(slab: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary prediction: probabilities ``>= threshold`` (in their own dtype), else nonzero."""
    if slab.dtype == np.bool_:
        return slab
    if np.issubdtype(slab.dtype, np.floating):
        return slab >= slab.dtype.type(threshold)
    return slab != 0


def truth_mask(slab: np.ndarray) -> np.ndarray:
    """Binary truth: label 1 is vessel; 0 and 2 (background, not annotated) are not."""
    if slab.dtype == np.bool_:
        return slab
    return slab == 1
