"""Crops resampled on the fly: where a :class:`CropBox` samples a volume, and how.

A crop of ``size`` voxels at the target spacing samples the volume at source coordinates
``start + j * step`` (``j = 0 .. size - 1`` per axis, in source voxels; ``step`` = target
spacing / volume spacing, times the crop's zoom). :func:`~vesselseg.data.crops.read_box` reads
only the source region those coordinates touch, plus a 1-voxel margin
(:meth:`CropBox.source_region`), and resamples it here.

Images are interpolated trilinearly, labels by nearest neighbour (a label is never blended,
so 0 stays "not annotated"). Trilinear interpolation on an axis-aligned grid is separable:
three 1D linear passes (:func:`linear_resample`) give exactly what
``scipy.ndimage.map_coordinates(order=1)`` gives on the full coordinate grid, 4-10x faster for
a 48³ crop (no 3 x 110k coordinate arrays, no per-point 8-neighbour loop), and without torch
threads inside DataLoader workers. A sample that falls exactly on a source voxel returns that
voxel's value, so a step of 1 at an integer start reproduces the volume bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Triple = tuple[int, int, int]
Coords = tuple[float, float, float]
MARGIN = 1  # source voxels read beyond the outermost sample on each side


@dataclass(frozen=True)
class CropBox:
    """Where a resampled crop lies in its volume: crop voxel ``j`` samples source coordinate
    ``start + j * step`` per axis ``(z, y, x)``; the crop has ``size`` voxels."""

    start: Coords
    step: Coords
    size: Triple

    def coordinates(self, axis: int) -> np.ndarray:
        """``(size[axis],)`` float64 source coordinates of the crop's samples along ``axis``."""
        return self.start[axis] + np.arange(self.size[axis], dtype=np.float64) * self.step[axis]

    def source_region(self, margin: int = MARGIN) -> tuple[Triple, Triple]:
        """``(origin, size)`` of the source box the samples need, ``margin`` voxels wider."""
        lo, extent = [], []
        for a in range(3):
            c = self.coordinates(a)
            first, last = math.floor(float(c.min())) - margin, math.floor(float(c.max())) + 1
            lo.append(first)
            extent.append(last + margin - first + 1)
        return (lo[0], lo[1], lo[2]), (extent[0], extent[1], extent[2])


def linear_resample(array: np.ndarray, coords: Sequence[np.ndarray]) -> np.ndarray:
    """Trilinear samples of ``array`` ``(z, y, x)`` at the grid ``coords[0] x coords[1] x
    coords[2]`` (float32). Coordinates are clamped to the array (edge values beyond it)."""
    out = np.asarray(array, dtype=np.float32)
    for axis, c in enumerate(coords):
        n = out.shape[axis]
        c = np.clip(np.asarray(c, dtype=np.float64), 0, n - 1)
        i0 = np.floor(c).astype(np.intp)  # in [0, n - 1]
        i1 = np.minimum(i0 + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = c.size
        w = (c - i0).astype(np.float32).reshape(shape)
        a, b = np.take(out, i0, axis=axis), np.take(out, i1, axis=axis)
        out = a + (b - a) * w  # w == 0 (a sample on a voxel) gives a exactly
    return np.ascontiguousarray(out, dtype=np.float32)


def nearest_resample(array: np.ndarray, coords: Sequence[np.ndarray]) -> np.ndarray:
    """Nearest-neighbour samples (``floor(c + 0.5)``, clamped) of ``array`` on the grid
    ``coords``, in ``array``'s dtype: values are copied, never blended."""
    index = [
        np.clip(np.floor(np.asarray(c, dtype=np.float64) + 0.5).astype(np.intp), 0, n - 1)
        for c, n in zip(coords, array.shape, strict=True)
    ]
    return np.ascontiguousarray(array[np.ix_(*index)])


def _sample_range(p: int, c: int, f: float, n: int) -> tuple[int, int]:
    """Crop indices ``j`` that may hold source voxel ``p``: those whose samples
    ``p + (i - j) * f`` all lie on the volume, in ``[0, n - 1]`` (no padding, and the crop is
    inside the volume as plain crops are); when the crop's extent exceeds the volume, the one
    index that starts the crop within a step of the volume's start (its far end is padded, as
    in :func:`~vesselseg.data.crops.read_crop`)."""
    eps = 1e-9
    low = max(0, math.ceil((p - (n - 1) + (c - 1) * f) / f - eps))
    high = min(c - 1, math.floor(p / f + eps))
    if low > high:
        j = min(c - 1, max(0, math.floor(p / f + eps)))
        return j, j
    return low, high


def box_containing(
    point: Sequence[int],
    size: Sequence[int],
    step: Sequence[float],
    volume_shape: Sequence[int],
    rng: np.random.Generator,
    center_axis: int | None = None,
) -> CropBox:
    """A crop of ``size`` samples ``step`` apart, one of which is exactly on ``point``.

    Along each axis the crop index ``j`` that lands on the point is uniform over those that
    keep every sample inside the volume (:func:`_sample_range`); along ``center_axis`` it is the
    centre index ``size // 2``. As the point is a sample, nearest-neighbour resampling keeps its
    label: a crop drawn around an annotated voxel always holds that voxel's label.
    """
    start = []
    for a, (p, c, f, n) in enumerate(zip(point, size, step, volume_shape, strict=True)):
        if a == center_axis:
            j = int(c) // 2
        else:
            low, high = _sample_range(int(p), int(c), float(f), int(n))
            j = int(rng.integers(low, high + 1))
        start.append(float(p) - j * float(f))
    return CropBox(
        (start[0], start[1], start[2]),
        (float(step[0]), float(step[1]), float(step[2])),
        (int(size[0]), int(size[1]), int(size[2])),
    )


def random_box(
    size: Sequence[int],
    step: Sequence[float],
    volume_shape: Sequence[int],
    rng: np.random.Generator,
) -> CropBox:
    """A crop of ``size`` samples ``step`` apart at a uniformly random place inside the volume
    (at its start where the crop's extent exceeds the volume)."""
    start = []
    for c, f, n in zip(size, step, volume_shape, strict=True):
        room = (n - 1) - (c - 1) * f  # starts in [0, room] keep every sample on the volume
        start.append(float(rng.uniform(0, room)) if room > 0 else 0.0)
    return CropBox(
        (start[0], start[1], start[2]),
        (float(step[0]), float(step[1]), float(step[2])),
        (int(size[0]), int(size[1]), int(size[2])),
    )
