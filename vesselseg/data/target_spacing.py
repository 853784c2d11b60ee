"""The voxel size training crops are resampled to (``data.target_spacing``), and per-volume steps.

Rules (:func:`resolve_target_spacing`):

* ``data.target_spacing: null`` takes the median spacing of the training volumes per axis. A
  volume with unknown spacing counts as ``(1, 1, 1)``. When *every* volume's spacing is
  unknown there is no target: nothing is resampled (crops are exactly those of a
  spacing-unaware run) and the model records no spacing.
* An explicit ``data.target_spacing`` is in the training volumes' unit; volumes of unknown
  spacing count as ``(1, 1, 1)`` of it. When no volume has a known spacing the target is
  ``known=False`` (in voxels): crops are still resampled to it, but the model records no
  spacing.
* Volumes in ``um`` and ``mm`` may be mixed: spacings are converted to ``um`` then (all in
  ``mm``: ``mm``).

A volume at spacing ``s`` is sampled every ``step = target / s`` source voxels per axis
(:func:`source_step`): a crop of ``C`` voxels covers ``C * step`` source voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vesselseg.io.spacing import VoxelSize, check_spacing

Coords = tuple[float, float, float]
TO_UM = {"um": 1.0, "mm": 1000.0}


def common_unit(voxel_sizes: Sequence[VoxelSize]) -> str:
    """``mm`` when every known spacing is in mm, else ``um``."""
    units = {v.unit for v in voxel_sizes if v.known}
    return "mm" if units == {"mm"} else "um"


def spacing_in(voxel_size: VoxelSize, unit: str) -> Coords:
    """``voxel_size``'s spacing in ``unit``; an unknown spacing is ``(1, 1, 1)`` in any unit."""
    if not voxel_size.known:
        return (1.0, 1.0, 1.0)
    factor = TO_UM[voxel_size.unit] / TO_UM[unit]
    z, y, x = (float(v) * factor for v in voxel_size.spacing)
    return (z, y, x)


def resolve_target_spacing(
    voxel_sizes: Sequence[VoxelSize], target: Sequence[float] | None = None
) -> VoxelSize | None:
    """The spacing crops are resampled to, or None for no resampling (see the module doc).

    The result is ``known=True`` when some volume has a known spacing, ``known=False`` for an
    explicit ``target`` over volumes that all lack one.
    """
    known = any(v.known for v in voxel_sizes)
    unit = common_unit(voxel_sizes)
    if target is not None:
        z, y, x = check_spacing(list(target), "data.target_spacing")
        return VoxelSize((z, y, x), unit, known)
    if not known:
        return None
    spacings = np.array([spacing_in(v, unit) for v in voxel_sizes], dtype=np.float64)
    z, y, x = (float(f"{v:.6g}") for v in np.median(spacings, axis=0))
    return VoxelSize((z, y, x), unit, True)


def source_step(voxel_size: VoxelSize, target: VoxelSize | None) -> Coords:
    """Source voxels per crop voxel along ``(z, y, x)``: ``target / spacing`` (1 without a
    target)."""
    if target is None:
        return (1.0, 1.0, 1.0)
    source = spacing_in(voxel_size, target.unit)
    z, y, x = (float(t) / s for t, s in zip(target.spacing, source, strict=True))
    return (z, y, x)
