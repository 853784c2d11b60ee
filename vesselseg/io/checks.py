"""Chunked validation of volumes: finite intensities, label codes, matching shapes.

Each check walks the volume in z-slabs so that memory stays bounded for any depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vesselseg.errors import LabelValueError, NonFiniteError, ShapeMismatchError
from vesselseg.io.slabs import iter_slabs

LABEL_CODES = (0, 1, 2)  # 0 not annotated, 1 vessel, 2 background


def check_finite(volume: Any, name: str | None = None) -> None:
    """Raise :class:`NonFiniteError` if a float volume holds NaN or inf (reports the z index)."""
    if not np.issubdtype(np.dtype(volume.dtype), np.floating):
        return
    name = name or str(getattr(volume, "path", "volume"))
    for z0, slab in iter_slabs(volume):
        bad = ~np.isfinite(slab)
        if bad.any():
            z = z0 + int(np.argwhere(bad)[0][0])
            kind = "NaN" if np.isnan(slab).any() else "infinite"
            raise NonFiniteError(f"{name}: {kind} intensities (first at z={z})")


@dataclass(frozen=True)
class LabelCounts:
    """Voxel counts per label code of a 0/1/2 annotation."""

    unannotated: int
    vessel: int
    background: int

    @property
    def total(self) -> int:
        return self.unannotated + self.vessel + self.background

    @property
    def annotated_fraction(self) -> float:
        return (self.vessel + self.background) / max(self.total, 1)


def count_labels(volume: Any, name: str | None = None) -> LabelCounts:
    """Count 0/1/2 labels slab by slab; any other value raises :class:`LabelValueError`."""
    name = name or str(getattr(volume, "path", "mask"))
    counts = np.zeros(3, dtype=np.int64)
    for _, slab in iter_slabs(volume):
        if np.issubdtype(slab.dtype, np.floating):  # accepted only if they hold 0/1/2 exactly
            if not np.isfinite(slab).all() or (slab != np.round(slab)).any():
                raise LabelValueError(f"{name}: labels must be the integers 0, 1, 2")
        if slab.size and (slab.min() < 0 or slab.max() > 2):
            bad = np.unique(slab[(slab < 0) | (slab > 2)])[:5]
            shown = ", ".join(str(v.item()) for v in bad)
            raise LabelValueError(
                f"{name}: label values must be 0 (not annotated), 1 (vessel) or 2 (background), "
                f"found {shown}"
            )
        counts += np.bincount(slab.astype(np.int64, copy=False).ravel(), minlength=3)[:3]
    return LabelCounts(int(counts[0]), int(counts[1]), int(counts[2]))


def check_same_shape(image: Any, other: Any, what: str = "mask") -> None:
    if tuple(image.shape) != tuple(other.shape):
        raise ShapeMismatchError(
            f"{getattr(other, 'path', what)}: {what} shape {tuple(other.shape)} does not match "
            f"image shape {tuple(image.shape)} of {getattr(image, 'path', 'image')}"
        )


def value_range(volume: Any) -> tuple[float, float]:
    """Minimum and maximum of a volume, computed slab by slab."""
    lo, hi = np.inf, -np.inf
    for _, slab in iter_slabs(volume):
        lo = min(lo, float(np.min(slab)))
        hi = max(hi, float(np.max(slab)))
    return lo, hi
