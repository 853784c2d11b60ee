"""Reading a pair of volumes in z-slabs, with halos, and turning slabs into masks.

A *volume* here is anything with ``shape`` (z, y, x), ``dtype`` and numpy-style region reads
``volume[z0:z1]``: ``np.ndarray``, ``np.memmap``, a zarr array or a :class:`vesselseg.io.Volume`.
Every metric walks the z axis in slabs whose depth comes from a byte budget, so a 1024³ pair
never has more than one slab (plus its halo) of each volume in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vesselseg.errors import ShapeMismatchError, VolumeFormatError
from vesselseg.io.slabs import SLAB_BYTES, slab_ranges

__all__ = [
    "SLAB_BYTES",
    "check_pair",
    "padded_mask",
    "pred_mask",
    "read_clipped",
    "slab_ranges",
    "truth_mask",
]


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
