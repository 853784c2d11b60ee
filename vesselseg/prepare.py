"""``vesselseg prepare``: validate the training data and build its caches once.

For every volume of the train and val folders: check it (shapes, label codes, finite values),
build the annotation index and the intensity percentiles (cached under ``data.cache_dir``),
and write a JSON summary (label counts, percentiles) that the DVC pipeline tracks.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from vesselseg.config import DataConfig, Params

log = logging.getLogger(__name__)


def prepare_data(cfg: DataConfig, out: str | Path) -> dict[str, Any]:
    """Validate + cache the train/val volumes of ``cfg``; write the summary to ``out``."""
    from vesselseg.data.datasets import prepare_volumes
    from vesselseg.io.atomic import write_json
    from vesselseg.io.dataset import discover_dataset

    summary: dict[str, Any] = {"percentiles": list(cfg.percentiles), "splits": {}}
    for split, folder in (("train", cfg.train_dir), ("val", cfg.val_dir)):
        samples = discover_dataset(folder, True, cfg.spacing, cfg.unit)
        entries = prepare_volumes(samples, cfg.percentiles, cfg.cache_dir or None)
        summary["splits"][split] = {e.sample.id: _volume_summary(e) for e in entries}
    write_json(Path(out), summary)
    return summary


def _volume_summary(entry: Any) -> dict[str, Any]:
    image = entry.sample.open_image()
    size = image.voxel_size
    return {
        "image": str(entry.sample.image),
        "shape": list(image.shape),
        "spacing": [float(v) for v in size.spacing] if size.known else None,
        "unit": size.unit if size.known else None,
        "vessel_voxels": int(entry.index.n_vessel),
        "background_voxels": int(entry.index.n_background),
        "intensity_lo": float(entry.stats.lo),
        "intensity_hi": float(entry.stats.hi),
    }


def prepare_and_plan(
    params: Params, out: str | Path, plan_out: str | Path | None, explicit: Collection[str]
) -> tuple[dict[str, Any], Any]:
    """:func:`prepare_data`, then (``plan.enabled`` and ``plan_out`` given) the dataset plan of
    the training volumes written to ``plan_out``; returns the summary and the plan (or None)."""
    from vesselseg.plan import plan_dataset, write_plan

    summary = prepare_data(params.data, out)
    if plan_out is None or not params.plan.enabled:
        return summary, None
    plan = plan_dataset(params.data.train_dir, params, explicit)
    write_plan(plan, plan_out)
    return summary, plan
