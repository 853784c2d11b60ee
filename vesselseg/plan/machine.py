"""The planner's machine-dependent defaults, resolved outside the pure planner."""

from __future__ import annotations

import dataclasses
import logging

from vesselseg.config import PlanConfig

log = logging.getLogger(__name__)

GPU_CROP_VOXELS = 128**3


def resolve_machine(cfg: PlanConfig) -> PlanConfig:
    """``cfg`` with ``memory_gb`` and ``crop_voxels`` filled in where they are None: the CUDA
    device's total memory and 128³ voxels when torch sees one; otherwise left None, which the
    planner reads as 4 GB and 48³ (on CPU, compute rather than memory limits the crop)."""
    if cfg.memory_gb is not None and cfg.crop_voxels is not None:
        return cfg
    memory = cuda_memory_gb()
    if memory is None:
        return cfg
    return dataclasses.replace(
        cfg,
        memory_gb=cfg.memory_gb if cfg.memory_gb is not None else memory,
        crop_voxels=cfg.crop_voxels if cfg.crop_voxels is not None else GPU_CROP_VOXELS,
    )


def cuda_memory_gb() -> float | None:
    """Total memory of CUDA device 0 in GiB, or None without one (or without torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if not torch.cuda.is_available():
        return None
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    log.debug("plan: CUDA device with %.1f GiB", memory)
    return round(float(memory), 1)
