"""Whether an input is predicted at the model's voxel size, and on which grid.

A saved model records the spacing it was trained at (``ModelMeta.spacing`` ``(z, y, x)`` and
``ModelMeta.unit``; older models have none). An input whose known spacing differs from it is
resampled to a grid of the model's spacing (:func:`scale_decision`): ``n * s_input / s_model``
voxels per axis, rounded (:func:`~vesselseg.inference.resample.grid_shape`). Nothing is
resampled when either spacing is unknown, when ``infer.resample`` is off (``--no-resample``),
or when the rounding gives the input's own shape; each of these is said in one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vesselseg.errors import ConfigError
from vesselseg.inference.resample import Triple, grid_shape
from vesselseg.io.spacing import SpacingError, VoxelSize, voxel_size

log = logging.getLogger(__name__)

TO_UM = {"um": 1.0, "mm": 1000.0}


def model_voxel_size(meta: Any) -> VoxelSize | None:
    """The training voxel size a model's settings record (``meta.spacing`` + ``meta.unit``,
    unit ``um`` when absent), or None for a model saved without one (or before models
    recorded it; any object without the attributes counts as such)."""
    spacing = getattr(meta, "spacing", None)
    if spacing is None:
        return None
    try:
        return voxel_size(spacing, getattr(meta, "unit", None) or "um", where="model spacing")
    except SpacingError as exc:
        raise ConfigError(f"the model's settings: {exc}") from None


def merged_voxel_size(metas: Sequence[Any], where: str) -> VoxelSize | None:
    """The one training voxel size of ensemble members (those that record one), or None.

    Members trained at different voxel sizes cannot share one resampled grid: an error."""
    known = [v for v in (model_voxel_size(m) for m in metas) if v is not None]
    if not known:
        return None
    first = in_um(known[0])
    for other in known[1:]:
        if any(abs(a - b) > 1e-4 * max(a, b) for a, b in zip(first, in_um(other))):
            raise ConfigError(
                f"{where}: ensemble members were trained at different voxel sizes "
                f"({known[0].describe()} and {other.describe()})"
            )
    return known[0]


def in_um(size: VoxelSize) -> tuple[float, float, float]:
    """The spacing ``(z, y, x)`` in micrometres."""
    factor = TO_UM[size.unit]
    z, y, x = (v * factor for v in size.spacing)
    return z, y, x


@dataclass(frozen=True)
class ScaleDecision:
    """An input predicted on another grid: ``grid`` voxels at about the model's spacing."""

    input_shape: Triple
    grid: Triple
    input_size: VoxelSize
    model_size: VoxelSize

    def key(self) -> dict[str, Any]:
        """What the output depends on beyond today's resume key."""
        return {
            "input_shape": list(self.input_shape),
            "grid": list(self.grid),
            "input_spacing_um": list(in_um(self.input_size)),
            "model_spacing_um": list(in_um(self.model_size)),
            "interpolation": "trilinear",
        }


def scale_decision(
    name: str,
    shape: Sequence[int],
    input_size: VoxelSize,
    model_size: VoxelSize | None,
    enabled: bool = True,
) -> ScaleDecision | None:
    """The grid to predict ``name`` on, or None to predict it on its own grid (logged)."""
    if model_size is None:
        log.info("%s: the model records no training voxel size: predicted as is", name)
        return None
    if not input_size.known:
        log.info(
            "%s: voxel size unknown (give --spacing Z,Y,X): predicted as is, not resampled "
            "to the model's %s",
            name,
            model_size.describe(),
        )
        return None
    source, target = in_um(input_size), in_um(model_size)
    shape3: Triple = (int(shape[0]), int(shape[1]), int(shape[2]))
    grid = grid_shape(shape3, source, target)
    if grid == shape3:
        return None
    if not enabled:
        log.info(
            "%s: voxel size %s, the model's %s: predicted as is (--no-resample)",
            name,
            input_size.describe(),
            model_size.describe(),
        )
        return None
    log.info(
        "%s: voxel size %s, the model's %s: predicted on a %s grid resampled to the model's "
        "spacing (trilinear), outputs written at the input's %s grid",
        name,
        input_size.describe(),
        model_size.describe(),
        "x".join(map(str, grid)),
        "x".join(map(str, shape3)),
    )
    return ScaleDecision(shape3, grid, input_size, model_size)
