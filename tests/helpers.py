"""Small shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from vesselseg.config import Params, apply_overrides

TINY_TRAIN = [
    "model.base_channels=4",
    "model.depth=2",
    "data.crop_size=16",
    "infer.tile_size=16",
    "data.samples_per_volume=2",
    "train.batch_size=2",
    "train.overlay_every_n_epochs=1",
    "train.experiment=test",
]


def tiny_params(dataset: Path, *extra: str) -> Params:
    """Seconds-long training settings on ``dataset`` (train/ and val/), plus ``extra``
    ``section.key=value`` overrides."""
    return apply_overrides(
        Params(),
        [
            *TINY_TRAIN,
            f"data.train_dir={dataset / 'train'}",
            f"data.val_dir={dataset / 'val'}",
            *extra,
        ],
    )
