"""Torch datasets of 3D crops: random augmented crops for training, fixed crops for validation.

Items are ``(image, label)``: ``image`` float32 ``[1, z, y, x]`` normalised with the volume's
percentiles, ``label`` uint8 ``[1, z, y, x]`` (0 not annotated, 1 vessel, 2 background).

Volume handles are opened lazily, once per process, on first use (never pickled), so every
DataLoader worker reads through its own file handles. Randomness comes from one
``np.random.Generator`` per process, seeded from the dataset ``seed`` and, inside a worker,
the worker's torch seed (``base_seed + worker_id``, drawn from the main process's torch
generator): with a fixed seed (``pytorch_lightning.seed_everything``) runs repeat exactly, and
workers, epochs (non-persistent workers re-seed, persistent ones continue their stream) and
volumes all get different crops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from vesselseg.config import DataConfig, as_triple
from vesselseg.data.annotation_index import AnnotationIndex, load_or_build_index
from vesselseg.data.augment import augment
from vesselseg.data.crops import CropSampler, Triple, read_crop
from vesselseg.data.normalize import IntensityStats, load_or_compute_stats, normalize
from vesselseg.errors import DatasetError
from vesselseg.io.dataset import Sample, validate_training_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeEntry:
    """What a dataset needs to know about one volume (picklable: paths, index, stats)."""

    sample: Sample
    index: AnnotationIndex
    stats: IntensityStats


def prepare_volumes(
    samples: Sequence[Sample],
    percentiles: Sequence[float],
    cache_dir: str | Path | None = None,
    max_index_points: int = 2_000_000,
) -> list[VolumeEntry]:
    """Validate ``samples`` and load (or build and cache) their annotation index and stats.

    Volumes without any annotated voxel are dropped with a warning.
    """
    validate_training_set(list(samples))
    entries = []
    for sample in samples:
        index = load_or_build_index(sample, cache_dir, max_points=max_index_points)
        if index.n_vessel + index.n_background == 0:
            log.warning("%s: no annotated voxels, volume skipped", sample.mask)
            continue
        stats = load_or_compute_stats(sample.open_image(), percentiles, cache_dir)
        entries.append(VolumeEntry(sample, index, stats))
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

    @classmethod
    def from_config(cls, cfg: DataConfig) -> AugmentParams:
        return cls(cfg.flip, cfg.rot90, cfg.intensity_scale, cfg.intensity_shift, cfg.noise_std)


class _CropDatasetBase(Dataset):
    """Per-process lazy volume handles shared by the training and validation datasets."""

    def __init__(
        self,
        volumes: Sequence[VolumeEntry],
        crop_size: int | Sequence[int],
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        seed: int = 0,
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
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._samplers: dict[int, CropSampler] = {}
        self._rng: np.random.Generator | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_samplers={}, _rng=None, _pid=-1)
        return state

    def sampler(self, volume: int) -> CropSampler:
        """The (lazily opened) crop sampler of ``volume`` in this process."""
        if self._pid != os.getpid():  # forked into a worker: do not share handles or RNG
            self._reset()
        if volume not in self._samplers:
            entry = self.volumes[volume]
            mask = entry.sample.open_mask()
            if mask is None:
                raise ValueError(f"{entry.sample.image}: sample has no mask")
            self._samplers[volume] = CropSampler(
                entry.sample.open_image(), mask, entry.index, self.crop_size,
                self.min_vessel_voxels, self.background_crop_fraction,
                image_pad_value=entry.stats.lo,
            )
        return self._samplers[volume]

    def rng(self) -> np.random.Generator:
        """This process's generator: dataset seed (+ the worker's torch seed in a worker)."""
        if self._pid != os.getpid():
            self._reset()
        if self._rng is None:
            info = get_worker_info()
            entropy = [self.seed] if info is None else [self.seed, int(info.seed) % 2**63]
            self._rng = np.random.default_rng(entropy)
        return self._rng

    def _to_tensors(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, ...]:
        return torch.from_numpy(image[None]), torch.from_numpy(label[None])


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
    ) -> None:
        super().__init__(volumes, crop_size, min_vessel_voxels, background_crop_fraction, seed)
        self.samples_per_volume = samples_per_volume
        self.augmentation = augmentation

    def __len__(self) -> int:
        return self.samples_per_volume * len(self.volumes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        volume = i % len(self.volumes)
        rng = self.rng()
        image, label = self.sampler(volume).sample(rng)
        stats = self.volumes[volume].stats
        image = normalize(image, stats.lo, stats.hi)
        if self.augmentation is not None:
            a = self.augmentation
            image, label = augment(image, label, rng, a.flip, a.rot90, a.intensity_scale,
                                   a.intensity_shift, a.noise_std)
        return self._to_tensors(image, label)


class FixedCropDataset(_CropDatasetBase):
    """``crops_per_volume`` fixed crops per volume, drawn once from ``seed``; no augmentation.

    Origins are chosen like training crops (same vessel/background rule) with a generator
    seeded by ``(seed, volume)``, so validation sees the same crops in every epoch and run.
    """

    def __init__(
        self,
        volumes: Sequence[VolumeEntry],
        crop_size: int | Sequence[int],
        crops_per_volume: int,
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        super().__init__(volumes, crop_size, min_vessel_voxels, background_crop_fraction, seed)
        self.crops: list[tuple[int, Triple]] = []
        for v in range(len(self.volumes)):
            rng = np.random.default_rng([seed, v])
            sampler = self.sampler(v)
            self.crops += [(v, sampler.sample_label(rng)[0]) for _ in range(crops_per_volume)]
        self._reset()  # close the handles opened to choose the origins

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        volume, origin = self.crops[i]
        sampler = self.sampler(volume)
        stats = self.volumes[volume].stats
        image = read_crop(sampler.image, origin, self.crop_size, stats.lo)
        label = read_crop(sampler.mask, origin, self.crop_size, 0).astype(np.uint8, copy=False)
        return self._to_tensors(normalize(image, stats.lo, stats.hi), np.ascontiguousarray(label))
