"""LightningDataModule: validated train/val volumes → random training crops, fixed val crops.

Batches are ``(image, label)``: float32 ``[B, 1, z, y, x]`` and uint8 ``[B, 1, z, y, x]``
(0 not annotated, 1 vessel, 2 background), at the target voxel size
``VesselDataModule.spacing`` (``data.target_spacing``, default the median spacing of the
labelled training volumes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vesselseg.config import DataConfig
from vesselseg.data.datasets import (
    AugmentParams,
    EpochSampler,
    FixedCropDataset,
    RandomCropDataset,
    VolumeEntry,
    prepare_volumes,
)
from vesselseg.data.normalize import DatasetIntensity
from vesselseg.data.target_spacing import resolve_target_spacing
from vesselseg.errors import ConfigError, DatasetError
from vesselseg.io.dataset import discover_dataset
from vesselseg.io.spacing import VoxelSize

log = logging.getLogger(__name__)


def dataset_intensity(cfg: DataConfig) -> DatasetIntensity | None:
    """The dataset-level statistics every volume is normalised with (``data.normalization:
    dataset``), or None for per-volume percentiles; dataset normalisation without
    ``data.intensity_stats`` (which the plan fills) is a :class:`ConfigError`."""
    if cfg.normalization != "dataset":
        return None
    if cfg.intensity_stats is None:
        raise ConfigError(
            "data.normalization: dataset needs data.intensity_stats [lo, hi, mean, std]; "
            "the plan fills them in (plan.enabled: true) or set them yourself"
        )
    return DatasetIntensity.from_list(cfg.intensity_stats)


class VesselDataModule(pl.LightningDataModule):
    """Train on random crops of ``data_cfg.train_dir``, validate on fixed crops of ``val_dir``.

    ``seed`` fixes the validation crops, the shuffling and the crop streams of the loaders.
    ``val_crops_per_volume`` defaults to ``data_cfg.samples_per_volume``. ``views`` (axis
    indices) and ``context`` switch to 2.5D slab items for slice models (see
    :mod:`vesselseg.data.datasets`).

    After :meth:`setup`, :attr:`spacing` is the voxel size every crop (training, validation,
    pseudo-labelled) is resampled to, resolved from ``data.target_spacing`` and the labelled
    training volumes (:func:`~vesselseg.data.target_spacing.resolve_target_spacing`); None
    when no volume has a known spacing and no target is set (nothing is resampled).
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        batch_size: int,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        val_crops_per_volume: int | None = None,
        max_index_points: int = 2_000_000,
        pseudo_dir: str | Path | None = None,
        pseudo_ratio: float = 0.5,
        views: Sequence[int] | None = None,
        context: int = 1,
        oblique_max_deg: float = 0.0,
    ) -> None:
        super().__init__()
        self.data_cfg = data_cfg
        self.batch_size = batch_size
        self.seed = seed
        self.cache_dir = cache_dir
        self.val_crops_per_volume = val_crops_per_volume or data_cfg.samples_per_volume
        self.max_index_points = max_index_points
        self.pseudo_dir = pseudo_dir
        self.pseudo_ratio = pseudo_ratio
        self.views = views
        self.context = context
        self.oblique_max_deg = oblique_max_deg
        self.train_set: RandomCropDataset | None = None
        self.val_set: FixedCropDataset | None = None
        self.spacing: VoxelSize | None = None
        self._spacing_resolved = False

    def _volumes(self, folder: str) -> list[VolumeEntry]:
        cfg = self.data_cfg
        return self._prepare(discover_dataset(folder, True, cfg.spacing, cfg.unit))

    def _prepare(self, samples: list) -> list[VolumeEntry]:
        return prepare_volumes(
            samples,
            self.data_cfg.percentiles,
            self.cache_dir,
            self.max_index_points,
            dataset_intensity(self.data_cfg),
        )

    def _training_volumes(self) -> tuple[list[VolumeEntry], list[float] | None]:
        """Labelled volumes, plus pseudo-labelled ones drawn ``pseudo_ratio`` of the time."""
        labelled = self._volumes(self.data_cfg.train_dir)
        self._resolve_spacing([entry.voxel_size for entry in labelled])
        if self.pseudo_dir is None:
            return labelled, None
        from vesselseg.io.pseudo_layout import discover_pseudo

        samples = discover_pseudo(self.pseudo_dir)
        try:
            pseudo = self._prepare(samples)
        except DatasetError as exc:  # e.g. a stage-1 model too unsure for any vessel label
            log.warning("pseudo labels not used: %s", exc)
            return labelled, None
        r = self.pseudo_ratio
        weights = [(1 - r) / len(labelled)] * len(labelled) + [r / len(pseudo)] * len(pseudo)
        return labelled + pseudo, weights

    def _resolve_spacing(self, voxel_sizes: list[VoxelSize]) -> None:
        if self._spacing_resolved:
            return
        self.spacing = resolve_target_spacing(voxel_sizes, self.data_cfg.target_spacing)
        self._spacing_resolved = True
        if self.spacing is None:
            return
        shown = " x ".join(f"{v:g}" for v in self.spacing.spacing)
        if self.spacing.known:
            log.info("crops resampled to %s %s (z, y, x)", shown, self.spacing.unit)
        elif self.spacing.spacing != (1.0, 1.0, 1.0):
            log.warning(
                "no training volume has a known voxel size: crops are resampled to %s voxels "
                "(z, y, x) and the model records no spacing",
                shown,
            )

    def setup(self, stage: str | None = None) -> None:
        cfg = self.data_cfg
        if not self._spacing_resolved and stage not in (None, "fit"):  # validation only
            samples = discover_dataset(cfg.train_dir, True, cfg.spacing, cfg.unit)
            self._resolve_spacing([s.open_image().voxel_size for s in samples])
        if self.train_set is None and stage in (None, "fit"):
            volumes, weights = self._training_volumes()
            self.train_set = RandomCropDataset(
                volumes,
                cfg.crop_size,
                cfg.samples_per_volume,
                cfg.min_vessel_voxels,
                cfg.background_crop_fraction,
                AugmentParams.from_config(cfg),
                seed=self.seed,
                weights=weights,
                views=self.views,
                context=self.context,
                target_spacing=self.spacing,
                scale_range=cfg.scale_range,
                oblique_max_deg=self.oblique_max_deg,
            )
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = FixedCropDataset(
                self._volumes(cfg.val_dir),
                cfg.crop_size,
                self.val_crops_per_volume,
                cfg.min_vessel_voxels,
                cfg.background_crop_fraction,
                seed=self.seed,
                views=self.views,
                context=self.context,
                target_spacing=self.spacing,
            )

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        workers = self.data_cfg.num_loader_workers
        sampler = EpochSampler(len(dataset), self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
