"""Torch datasets of 3D crops: random augmented crops for training, fixed crops for validation.

Items are ``(image, label)``: ``image`` float32 ``[1, z, y, x]`` normalised with the volume's
percentiles (or the dataset's statistics, ``data.normalization: dataset``), ``label`` uint8
``[1, z, y, x]`` (0 not annotated, 1 vessel, 2 background).

With ``views`` (2D/2.5D "multiview" models) an item is a stack of ``context`` neighbouring
slices along one of the ``views`` axes, moved to the front: ``image`` ``[1, context, h, w]``
and the label of its centre slice ``[1, 1, h, w]``; the in-plane size comes from the crop
size's other two sides. Slices are read lazily from the volume (no re-sliced copies), and
the centre slice always holds the annotated voxel the crop was drawn around.

Volume handles are opened lazily, once per process, on first use (never pickled), so every
DataLoader worker reads through its own file handles. A training crop's randomness is seeded by
``(seed, key)`` where :class:`EpochSampler` hands out keys ``epoch * len + i``: crops depend on
neither the worker count nor the history, so a run resumed from a checkpoint at epoch ``e``
sees exactly the crops an uninterrupted run sees.

With a ``target_spacing`` (:func:`~vesselseg.data.target_spacing.resolve_target_spacing`) every
crop is sampled at that voxel size: a volume at spacing ``s`` is read every ``target / s``
source voxels and resampled on the fly (trilinear image, nearest label), slabs included (their
``context`` slices are slices at the target spacing). ``scale_range`` zooms training crops
(drawn per crop from its ``(seed, key)`` generator); validation crops are never zoomed. 90°
rotations stay in planes of equal target spacing. With ``oblique_max_deg`` (``model.oblique``,
slab items only) training slabs are tilted by random rotations (:mod:`vesselseg.data.oblique`);
validation slabs never are. Without a target (every volume's spacing
unknown) nothing is resampled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vesselseg.config import DataConfig, as_triple
from vesselseg.data.annotation_index import AnnotationIndex, load_or_build_index
from vesselseg.data.augment import augment
from vesselseg.data.crops import CropSampler, Triple, Where, slab_size
from vesselseg.data.normalize import (
    DatasetIntensity,
    IntensityStats,
    load_or_compute_stats,
    normaliser,
)
from vesselseg.data.target_spacing import source_step
from vesselseg.errors import DatasetError
from vesselseg.io.dataset import Sample, validate_training_set
from vesselseg.io.spacing import UNKNOWN, VoxelSize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeEntry:
    """What a dataset needs to know about one volume (picklable: paths, index, stats, voxel
    size). ``intensity`` (dataset normalisation) replaces the volume's percentiles ``stats``
    when given."""

    sample: Sample
    index: AnnotationIndex
    stats: IntensityStats
    voxel_size: VoxelSize = UNKNOWN
    intensity: DatasetIntensity | None = None

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw intensities → network input, as inference will do it."""
        return normaliser(self.stats, self.intensity)[0](raw)

    @property
    def pad_value(self) -> float:
        """The raw value padding stands for (the transform's floor)."""
        return normaliser(self.stats, self.intensity)[1]


def prepare_volumes(
    samples: Sequence[Sample],
    percentiles: Sequence[float],
    cache_dir: str | Path | None = None,
    max_index_points: int = 2_000_000,
    intensity: DatasetIntensity | None = None,
) -> list[VolumeEntry]:
    """Validate ``samples`` and load (or build and cache) their annotation index and stats.

    Volumes without any annotated voxel are dropped with a warning. Each entry keeps its
    image's voxel size, and ``intensity`` (dataset normalisation; None: per volume).
    """
    validate_training_set(list(samples))
    entries = []
    for sample in samples:
        index = load_or_build_index(sample, cache_dir, max_points=max_index_points)
        if index.n_vessel + index.n_background == 0:
            log.warning("%s: no annotated voxels, volume skipped", sample.mask)
            continue
        image = sample.open_image()
        stats = load_or_compute_stats(image, percentiles, cache_dir)
        entries.append(VolumeEntry(sample, index, stats, image.voxel_size, intensity))
    if not entries:
        raise DatasetError(f"{samples[0].image.parent}: no annotated volume")
    return entries


@dataclass(frozen=True)
class AugmentParams:
    """Arguments of :func:`vesselseg.data.augment.augment`."""

    flip: bool = True
    rot90: bool = True
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0
    noise_std: float = 0.0
    lowres_factor: float = 1.0
    lowres_probability: float = 0.0

    @classmethod
    def from_config(cls, cfg: DataConfig) -> AugmentParams:
        return cls(
            cfg.flip,
            cfg.rot90,
            cfg.intensity_scale,
            cfg.intensity_shift,
            cfg.noise_std,
            cfg.lowres_factor,
            cfg.lowres_probability,
        )


class _CropDatasetBase(Dataset):
    """Per-process lazy volume handles shared by the training and validation datasets.

    ``target_spacing`` (None: no resampling) is the voxel size of every crop; ``scale_range``
    the zoom augmentation (see :class:`~vesselseg.data.crops.CropSampler`).
    """

    def __init__(
        self,
        volumes: Sequence[VolumeEntry],
        crop_size: int | Sequence[int],
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        seed: int = 0,
        views: Sequence[int] | None = None,
        context: int = 1,
        target_spacing: VoxelSize | None = None,
        scale_range: float = 0.0,
        oblique_max_deg: float = 0.0,
    ) -> None:
        if not volumes:
            raise ValueError("a crop dataset needs at least one volume")
        self.volumes = list(volumes)
        self.crop_size: Triple = as_triple(
            crop_size if isinstance(crop_size, int) else list(crop_size)
        )
        self.min_vessel_voxels = min_vessel_voxels
        self.background_crop_fraction = background_crop_fraction
        self.seed = seed
        self.views = tuple(views) if views else None
        self.context = context
        self.target_spacing = target_spacing
        self.scale_range = float(scale_range)
        self.oblique_max_deg = float(oblique_max_deg) if self.views else 0.0
        if context < 1 or context % 2 == 0:
            raise ValueError(f"context must be odd and >= 1, got {context}")
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._samplers: dict[tuple[int, int | None], CropSampler] = {}

    def region_size(self, axis: int | None) -> Triple:
        """The ``(z, y, x)`` region read for one item: the crop, or a slab along ``axis``."""
        return self.crop_size if axis is None else slab_size(self.crop_size, axis, self.context)

    def pick_axis(self, rng: np.random.Generator) -> int | None:
        """The slicing axis of one item (None for 3D crops)."""
        return None if self.views is None else self.views[int(rng.integers(len(self.views)))]

    def item_spacing(self, axis: int | None) -> tuple[float, ...] | None:
        """The voxel size of an item's axes (the slicing axis first for slabs); None without
        a target spacing."""
        if self.target_spacing is None:
            return None
        s = self.target_spacing.spacing
        return tuple(s) if axis is None else (s[axis], *(s[a] for a in range(3) if a != axis))

    def to_item(
        self, image: np.ndarray, label: np.ndarray, axis: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """3D crops as they are; slabs with the slicing axis first."""
        if axis is None:
            return image, label
        return np.moveaxis(image, axis, 0), np.moveaxis(label, axis, 0)

    def _to_tensors(
        self, image: np.ndarray, label: np.ndarray, axis: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        if axis is not None:  # a 2.5D model predicts the centre slice of its stack
            mid = self.context // 2
            label = label[mid : mid + 1]
        image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
        return torch.from_numpy(image[None]), torch.from_numpy(label[None])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_samplers={}, _pid=-1)
        return state

    def sampler(self, volume: int, axis: int | None = None) -> CropSampler:
        """The (lazily opened) crop sampler of ``volume`` in this process (slabs along
        ``axis`` when given)."""
        if self._pid != os.getpid():  # forked into a worker: do not share handles or RNG
            self._reset()
        if (volume, axis) not in self._samplers:
            entry = self.volumes[volume]
            mask = entry.sample.open_mask()
            if mask is None:
                raise ValueError(f"{entry.sample.image}: sample has no mask")
            self._samplers[(volume, axis)] = CropSampler(
                entry.sample.open_image(),
                mask,
                entry.index,
                self.region_size(axis),
                self.min_vessel_voxels,
                self.background_crop_fraction,
                image_pad_value=entry.pad_value,
                center_axis=axis,
                step=source_step(entry.voxel_size, self.target_spacing),
                scale_range=self.scale_range,
                oblique_max_deg=self.oblique_max_deg,  # 0 unless slab items
                sample_spacing=(
                    (1.0, 1.0, 1.0) if self.target_spacing is None else self.target_spacing.spacing
                ),
            )
        return self._samplers[(volume, axis)]


class RandomCropDataset(_CropDatasetBase):
    """``samples_per_volume * n_volumes`` random augmented crops; item ``i`` → volume ``i % n``.

    Every access draws a fresh crop (see :class:`~vesselseg.data.crops.CropSampler`).
    """

    def __init__(
        self,
        volumes: Sequence[VolumeEntry],
        crop_size: int | Sequence[int],
        samples_per_volume: int,
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        augmentation: AugmentParams | None = None,
        seed: int = 0,
        weights: Sequence[float] | None = None,
        views: Sequence[int] | None = None,
        context: int = 1,
        target_spacing: VoxelSize | None = None,
        scale_range: float = 0.0,
        oblique_max_deg: float = 0.0,
    ) -> None:
        super().__init__(
            volumes,
            crop_size,
            min_vessel_voxels,
            background_crop_fraction,
            seed,
            views,
            context,
            target_spacing,
            scale_range,
            oblique_max_deg,
        )
        self.samples_per_volume = samples_per_volume
        self.augmentation = augmentation
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(self.volumes),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError("weights must be one non-negative number per volume")
            self.weights = w / w.sum()

    def __len__(self) -> int:
        return self.samples_per_volume * len(self.volumes)

    def volume_of(self, key: int, rng: np.random.Generator | None = None) -> int:
        """The volume crop ``key`` comes from (``rng``: the crop's own generator)."""
        if self.weights is None:
            return key % len(self.volumes)
        rng = rng if rng is not None else np.random.default_rng([self.seed, key])
        # e.g. labelled vs pseudo-labelled volumes in a chosen ratio
        return int(rng.choice(len(self.volumes), p=self.weights))

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop number ``key``: volume ``key % n_volumes``, random draws seeded by
        ``(seed, key)``, so a crop depends on neither the worker nor the history. Keys past
        ``len(self)`` come from :class:`EpochSampler` (``epoch * len + i``)."""
        if key < 0:
            raise IndexError(key)
        rng = np.random.default_rng([self.seed, key])
        volume = self.volume_of(key, rng)
        axis = self.pick_axis(rng)
        image, label = self.to_item(*self.sampler(volume, axis).sample(rng), axis)
        image = self.volumes[volume].normalize(image)
        if self.augmentation is not None:
            a = self.augmentation
            image, label = augment(
                image,
                label,
                rng,
                a.flip,
                a.rot90,
                a.intensity_scale,
                a.intensity_shift,
                a.noise_std,
                self.item_spacing(axis),
                a.lowres_factor,
                a.lowres_probability,
            )
        return self._to_tensors(image, label, axis)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled keys ``epoch * n + i`` for a :class:`RandomCropDataset` of length ``n``.

    Lightning calls :meth:`set_epoch` before every epoch, so epoch ``e`` draws the same crops
    in the same order whether the run went straight through or resumed from a checkpoint.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        return iter((self.epoch * self.length + order).tolist())


class FixedCropDataset(_CropDatasetBase):
    """``crops_per_volume`` fixed crops per volume, drawn once from ``seed``; no augmentation.

    Origins are chosen like training crops (same vessel/background rule) with a generator
    seeded by ``(seed, volume)``, so validation sees the same crops in every epoch and run.
    With ``views``, crop ``j`` of a volume is a slab along ``views[j % len(views)]``. Crops are
    at ``target_spacing`` (resampled, never zoomed); ``crops`` holds ``(volume, axis, where)``
    with ``where`` an origin, or a :class:`~vesselseg.data.resample.CropBox` when resampled.
    """

    def __init__(
        self,
        volumes: Sequence[VolumeEntry],
        crop_size: int | Sequence[int],
        crops_per_volume: int,
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        seed: int = 0,
        views: Sequence[int] | None = None,
        context: int = 1,
        target_spacing: VoxelSize | None = None,
    ) -> None:
        super().__init__(
            volumes,
            crop_size,
            min_vessel_voxels,
            background_crop_fraction,
            seed,
            views,
            context,
            target_spacing,
        )
        self.crops: list[tuple[int, int | None, Where]] = []
        for v in range(len(self.volumes)):
            rng = np.random.default_rng([seed, v])
            for j in range(crops_per_volume):
                axis = None if self.views is None else self.views[j % len(self.views)]
                self.crops.append((v, axis, self.sampler(v, axis).sample_label(rng)[0]))
        self._reset()  # close the handles opened to choose the origins

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        volume, axis, where = self.crops[i]
        sampler = self.sampler(volume, axis)
        image, label = sampler.read_image(where), sampler.read_label(where)
        image, label = self.to_item(self.volumes[volume].normalize(image), label, axis)
        return self._to_tensors(image, label, axis)
