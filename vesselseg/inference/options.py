"""The settings of a ``predict`` run: how inputs are read and outputs written, the prepared
model, and the checks of tiling and memory that come before anything is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesselseg.config import InferConfig, as_triple
from vesselseg.errors import ConfigError
from vesselseg.inference.plan import estimate_buffer_bytes
from vesselseg.inference.predictor import PredictFn
from vesselseg.inference.tiling import TileGrid
from vesselseg.io.spacing import VoxelSize

MIB = 1 << 20


def torch_threads() -> int:
    """CPU threads torch computes with (results differ in the last bits between counts)."""
    import torch

    return int(torch.get_num_threads())


def check_tiling(cfg: InferConfig, meta_model: dict[str, Any]) -> tuple[int, int, int]:
    """The tile size, after checking it suits the network (per-axis divisors, for anisotropic
    strides) and the border."""
    from vesselseg.models.shapes import model_divisors

    tile = as_triple(cfg.tile_size)
    divs = model_divisors(meta_model)
    div = divs[0] if len(set(divs)) == 1 else list(divs)
    if any(t % d for t, d in zip(tile, divs, strict=True)):
        raise ConfigError(
            f"tile size {list(tile)}: every side must be a multiple of {div} for this "
            f"{meta_model.get('name', 'model')} of depth {meta_model.get('depth')} "
            "(--tile-size)"
        )
    if cfg.border and 2 * cfg.border >= min(tile):
        raise ConfigError(
            f"--border {cfg.border}: must be less than half the smallest tile side {min(tile)}"
        )
    return tile


def check_memory(grid: TileGrid, batch_size: int, max_buffer_bytes: int) -> None:
    """Refuse a tile whose smallest possible working set exceeds the buffer budget."""
    tz, ty, tx = grid.tile
    need = estimate_buffer_bytes(grid, ty, tx) + 2 * 4 * batch_size * tz * ty * tx
    if need > max_buffer_bytes:
        raise ConfigError(
            f"tile size {list(grid.tile)} with batch {batch_size} needs about "
            f"{need / MIB:,.0f} MiB of buffers, more than the {max_buffer_bytes / MIB:,.0f} MiB "
            "allowed (--max-buffer-mib); use a smaller --tile-size"
        )


def fingerprint_of(path: Path) -> dict[str, Any]:
    from vesselseg.data.cache import fingerprint

    return fingerprint(path)


@dataclass(frozen=True)
class InputFormat:
    """How to read the input volumes: ``file_type`` (None: detected), and the ``shape`` and
    ``dtype`` of headerless ``.raw`` files."""

    file_type: str | None = None
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class PredictOptions:
    """How every volume of one :func:`predict_path` call is predicted and written."""

    cfg: InferConfig
    save_dir: Path
    reading: InputFormat = InputFormat()
    resume: bool = False
    max_buffer_bytes: int = 1024 * MIB
    show_progress: bool = True


@dataclass(frozen=True)
class PreparedModel:
    """A loaded network ready to predict with, and what identifies it in names and resume keys."""

    path: Path
    key: dict[str, Any]
    predict_fn: PredictFn
    percentiles: list[float]
    tile: tuple[int, int, int]
    device: str
    voxel_size: VoxelSize | None = None  # the training voxel size (None: not recorded)
    batch_size: int = 2  # windows per network call (``infer.batch_size``, ``auto`` resolved)
    threshold: float = 0.5  # the model's own mask threshold (calibrated at training)
    intensity: list[float] | None = None  # dataset normalisation [lo, hi, mean, std]

    def mask_threshold(self, cfg: InferConfig) -> float:
        """``infer.threshold`` (``--threshold``) when set, else the model's own."""
        return self.threshold if cfg.threshold is None else cfg.threshold


NetHook = Callable[[PredictFn], PredictFn]
