"""Which input voxels hold tissue, for skipping windows that hold none (``infer.skip_empty``).

A voxel is tissue when its raw intensity is at least ``infer.tissue_threshold`` (before any
normalisation), or when a tissue-mask volume of the input's shape is non-zero there. A window
whose input (the part inside the volume; padding is never tissue) holds no tissue voxel is not
run through the network: its values are 0, exactly as if the network had returned 0 for it,
and it is blended like every other window. Which windows are skipped is a function of the
input alone, so resuming and sharding are unchanged.

The reader tests each strip it reads (:meth:`Tissue.columns`): one boolean per x column of the
strip, true where any voxel of that column (over the strip's z and y) is tissue; a window is
empty when none of its ``tile_x`` columns is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Tissue:
    """``threshold`` on the raw intensity, or a lazily sliced ``mask`` volume (non-zero:
    tissue) of the streamed volume's shape; ``key`` identifies it in resume keys."""

    threshold: float | None = None
    mask: Any = None
    key: Any = None

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.mask is None):
            raise ValueError("give a tissue threshold or a tissue mask, not both or neither")

    def columns(self, raw: np.ndarray, box: Box) -> np.ndarray:
        """``(x,)`` bool: whether any voxel of each x column of ``raw`` (the volume's
        ``box``) is tissue."""
        if raw.size == 0:
            return np.zeros(raw.shape[2], bool)
        if self.mask is not None:
            inside = np.asarray(self.mask[box]) != 0
        else:
            inside = np.asarray(raw) >= self.threshold
        return inside.any(axis=(0, 1))


def tissue_for(cfg: Any, name: str, volume: Any, source: Any) -> Tissue | None:
    """The tissue test of one input (None when ``cfg.skips_empty`` is off). ``volume`` is the
    input as opened, ``source`` what is streamed (the input itself, or its view on the model's
    grid: a mask is then resampled with it, non-zero wherever any tissue voxel contributes,
    and a threshold applies to the resampled intensities). A ``tissue_mask`` folder holds one
    mask per input, named like the input (``name``)."""
    from pathlib import Path

    from vesselseg.data.cache import fingerprint
    from vesselseg.errors import MissingPathError, ShapeMismatchError
    from vesselseg.inference.resample import ResampledVolume
    from vesselseg.io import open_volume

    if not cfg.skips_empty:
        return None
    if cfg.tissue_threshold is not None:
        return Tissue(
            threshold=float(cfg.tissue_threshold), key={"threshold": cfg.tissue_threshold}
        )
    path = Path(cfg.tissue_mask)
    if path.is_dir():
        path = path / name
    if not path.exists():
        raise MissingPathError(f"{path}: tissue mask not found (--tissue-mask)")
    mask = open_volume(path)
    if tuple(mask.shape) != tuple(volume.shape):
        raise ShapeMismatchError(
            f"{path}: tissue mask shape {tuple(mask.shape)} != input shape {tuple(volume.shape)}"
        )
    if source is not volume:
        mask = ResampledVolume(mask, source.shape)
    return Tissue(mask=mask, key={"mask": fingerprint(path)})
