"""Intensity normalisation: per-volume robust percentiles, or dataset-level statistics.

The percentiles (``DataConfig.percentiles``, e.g. ``[0.5, 99.5]``) are estimated from a
bounded subsample: at most ``max_planes`` evenly spaced z-planes are read, and at most
``max_samples`` voxels drawn at random from them, so the cost does not grow with the volume.
They are cached as JSON beside the image (``<image>.stats.json``) or under a cache folder,
keyed by the image's path + size + mtime. :func:`normalize` maps ``lo → 0`` and ``hi → 1``.

With ``data.normalization: dataset`` every volume gets the same transform instead
(:class:`DatasetIntensity`, nnU-Net's CT scheme): clip to the dataset's ``[lo, hi]`` (0.5/99.5
percentiles of the annotated training voxels), subtract their mean, divide by their standard
deviation (:func:`zscore`). The numbers come from the plan's fingerprint and travel with the
model, so inference normalises exactly as training did. :func:`normaliser` picks the one a
volume gets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.data.cache import atomic_write, cache_candidates, fingerprint
from vesselseg.errors import NonFiniteError

log = logging.getLogger(__name__)

STATS_VERSION = 1
STATS_SUFFIX = ".stats.json"
CLIP = (-1.0, 2.0)


@dataclass(frozen=True)
class IntensityStats:
    """Intensities at the low/high percentiles of one volume."""

    lo: float
    hi: float
    percentiles: tuple[float, float]
    n_samples: int


def sample_intensities(
    volume: Any, max_samples: int = 1_000_000, max_planes: int = 64, seed: int = 0
) -> np.ndarray:
    """``(n,)`` float64 intensities, ``n <= max_samples``, from ``max_planes`` z-planes.

    Planes are evenly spaced along z (all planes if the volume is thinner); voxels are drawn
    uniformly at random (with replacement) within each plane.
    """
    depth = int(volume.shape[0])
    planes = np.unique(np.linspace(0, depth - 1, min(depth, max_planes)).round().astype(int))
    plane_size = int(np.prod(volume.shape[1:]))
    per_plane = max(1, max_samples // len(planes))
    rng = np.random.default_rng(seed)
    parts = []
    for z in planes:
        plane = np.asarray(volume[int(z) : int(z) + 1]).reshape(-1)
        if plane_size > per_plane:
            plane = plane[rng.integers(0, plane_size, per_plane)]
        parts.append(plane.astype(np.float64))
    return np.concatenate(parts)


def compute_stats(
    volume: Any,
    percentiles: Sequence[float] = (0.5, 99.5),
    max_samples: int = 1_000_000,
    max_planes: int = 64,
    seed: int = 0,
) -> IntensityStats:
    """Estimate the ``percentiles`` of ``volume`` ``(z, y, x)`` from a bounded subsample."""
    p_lo, p_hi = float(percentiles[0]), float(percentiles[1])
    values = sample_intensities(volume, max_samples, max_planes, seed)
    if not np.isfinite(values).all():
        raise NonFiniteError(f"{getattr(volume, 'path', 'volume')}: NaN or infinite intensities")
    lo, hi = np.percentile(values, [p_lo, p_hi])
    return IntensityStats(float(lo), float(hi), (p_lo, p_hi), int(values.size))


def normalize(
    array: np.ndarray, lo: float, hi: float, clip: tuple[float, float] | None = CLIP
) -> np.ndarray:
    """``(array - lo) / (hi - lo)`` as float32, clipped to ``clip`` (default ``[-1, 2]``).

    A flat volume (``hi <= lo``) is only shifted. Any shape.
    """
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    out = (np.asarray(array, dtype=np.float32) - np.float32(lo)) * np.float32(scale)
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out


@dataclass(frozen=True)
class DatasetIntensity:
    """Dataset-level intensity statistics: clip to ``[lo, hi]``, then ``(x - mean) / std``."""

    lo: float
    hi: float
    mean: float
    std: float

    @classmethod
    def from_list(cls, values: Sequence[float]) -> DatasetIntensity:
        lo, hi, mean, std = (float(v) for v in values)
        return cls(lo, hi, mean, std)

    def as_list(self) -> list[float]:
        return [self.lo, self.hi, self.mean, self.std]


def zscore(array: np.ndarray, lo: float, hi: float, mean: float, std: float) -> np.ndarray:
    """``(clip(array, lo, hi) - mean) / std`` as float32 (``std <= 0`` counts as 1). Any shape."""
    out = np.clip(np.asarray(array, dtype=np.float32), np.float32(lo), np.float32(hi))
    out -= np.float32(mean)
    out *= np.float32(1.0 / std if std > 0 else 1.0)
    return out


def normaliser(stats: IntensityStats | None, dataset: DatasetIntensity | None) -> tuple[Any, float]:
    """``(raw array -> network input, raw pad value)``: the dataset transform when ``dataset``
    is given, else the volume's percentiles ``stats``. The pad value is the raw intensity that
    maps to the transform's floor (``lo`` of either)."""
    if dataset is not None:
        d = dataset
        return (lambda a: zscore(a, d.lo, d.hi, d.mean, d.std)), d.lo
    if stats is None:
        raise ValueError("normaliser: give the volume's stats or the dataset's intensity")
    lo, hi = stats.lo, stats.hi
    return (lambda a: normalize(a, lo, hi)), lo


def load_or_compute_stats(
    volume: Any,
    percentiles: Sequence[float] = (0.5, 99.5),
    cache_dir: str | Path | None = None,
    max_samples: int = 1_000_000,
    max_planes: int = 64,
    view: Any = None,
) -> IntensityStats:
    """Percentile stats of a :class:`~vesselseg.io.Volume` (``.path`` needed), cached as JSON.

    ``view`` is the volume as the network sees it when that differs (resampled to the model's
    voxel size): the percentiles are then taken from its voxels, since they depend on the
    voxel size (a finer scan of the same sample is noisier per voxel, so its raw percentiles
    spread wider and would dim every vessel once normalised).

    The cache (``<image>.stats.json`` beside the image, else under ``cache_dir``, default
    ``~/.cache/vesselseg``) is reused while the image's path, size and mtime, the requested
    percentiles and the view's shape are unchanged.
    """
    source = Path(volume.path)
    key = {
        "version": STATS_VERSION,
        "source": fingerprint(source),
        "percentiles": [float(p) for p in percentiles],
        "max_samples": int(max_samples),
        "max_planes": int(max_planes),
    }
    if view is not None:
        key["view"] = [int(n) for n in view.shape]
    candidates = cache_candidates(source, STATS_SUFFIX, cache_dir)
    for path in candidates:
        stats = _read_stats(path, key)
        if stats is not None:
            return stats
    stats = compute_stats(volume if view is None else view, percentiles, max_samples, max_planes)
    log.info("intensity percentiles of %s: %.4g .. %.4g", source, stats.lo, stats.hi)
    text = json.dumps({"key": key, "stats": asdict(stats)}, indent=1).encode()
    if not any(atomic_write(p, lambda h: h.write(text)) for p in candidates):
        log.warning("could not cache the intensity stats of %s", source)
    return stats


def _read_stats(path: Path, key: dict[str, Any]) -> IntensityStats | None:
    try:
        data = json.loads(path.read_text())
        if data["key"] != key:
            return None
        s = data["stats"]
        return IntensityStats(
            float(s["lo"]),
            float(s["hi"]),
            (float(s["percentiles"][0]), float(s["percentiles"][1])),
            int(s["n_samples"]),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
