"""A dataset fingerprint: what the planner needs to know about the training volumes.

Per volume: shape, spacing ``(z, y, x)`` and unit, annotated and vessel voxel counts. For the
dataset: intensity statistics of the annotated vessel voxels (``foreground``) and of all
annotated voxels, the annotated fraction, the vessel fraction among annotated voxels, and the
vessel radius distribution in physical units.

**Radius.** For the vessel voxels (label 1) the Euclidean distance transform with
``sampling=spacing`` gives the physical distance to the nearest labelled background voxel
(label 2; unannotated voxels count as "unknown", not background, so a sparse box on one slice
still measures the in-plane radius; a region with no label 2 falls back to "everything but
label 1"). The radius of a vessel is the distance transform on its centre line: the values
reported are those at the ridge voxels (vessel voxels whose distance is a maximum among the
vessel voxels of their 3 x 3 x 3 neighbourhood), so a straight cylinder of radius r reads r to
within about half a voxel of its cross-section (the distance reaches the centre of the
nearest background voxel; the digitised cross-section itself is only that precise), and thin
slices bound the values measured across them by multiples of the slice spacing.
Percentiles 10/50/90.

**Bounded work.** Masks are read slab by slab (``vesselseg.io.slabs``); images only where a
slab holds annotation. Means and standard deviations are exact; percentiles come from a seeded
random subsample of at most :data:`SAMPLE_CAP` values per statistic over the whole dataset.
The distance transform runs on blocks with a halo of :data:`HALO_PLANES` voxels along z (and
y/x tiles where a plane is larger than the slab budget), so memory stays within
:data:`~vesselseg.io.slabs.SLAB_BYTES`-sized blocks whatever the volume's size.

Spacing comes from the volume (``volume.spacing``, ``volume.unit``); a volume without them
(readers before the voxel-size work) counts as ``(1, 1, 1)`` µm.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vesselseg.errors import DatasetError
from vesselseg.io.slabs import SLAB_BYTES, iter_slabs

log = logging.getLogger(__name__)

SAMPLE_CAP = 2**20  # values per statistic kept for percentiles, over the whole dataset
HALO_PLANES = 16  # halo of a distance-transform block, in voxels per axis
EDT_BYTES_PER_VOXEL = 48  # mask, image, feature transform, distances, maximum filter
PERCENTILES = (0.5, 50.0, 99.5)
RADIUS_PERCENTILES = (10.0, 50.0, 90.0)
UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
DEFAULT_SPACING = (1.0, 1.0, 1.0)
DEFAULT_UNIT = "um"


@dataclass(frozen=True)
class VolumeFingerprint:
    """One training volume: shape and spacing ``(z, y, x)``, unit, label counts."""

    id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = DEFAULT_SPACING
    unit: str = DEFAULT_UNIT
    annotated_voxels: int = 0
    vessel_voxels: int = 0


@dataclass(frozen=True)
class IntensityStats:
    """Intensities of a set of voxels: percentiles 0.5/50/99.5 (subsampled), mean, std."""

    count: int
    p0_5: float
    p50: float
    p99_5: float
    mean: float
    std: float


@dataclass(frozen=True)
class RadiusStats:
    """Vessel radius percentiles (10/50/90) at ridge voxels, in the fingerprint's unit."""

    count: int
    p10: float
    p50: float
    p90: float


@dataclass(frozen=True)
class Fingerprint:
    """The dataset's fingerprint; every statistic is None where no annotation exists."""

    volumes: tuple[VolumeFingerprint, ...]
    unit: str = DEFAULT_UNIT
    foreground: IntensityStats | None = None
    annotated: IntensityStats | None = None
    annotated_fraction: float | None = None
    vessel_fraction: float | None = None
    radius: RadiusStats | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        def opt(kind: type, value: Any) -> Any:
            return None if value is None else kind(**value)

        volumes = tuple(
            VolumeFingerprint(**{**v, "shape": tuple(v["shape"]), "spacing": tuple(v["spacing"])})
            for v in data["volumes"]
        )
        return cls(
            volumes=volumes,
            unit=data.get("unit", DEFAULT_UNIT),
            foreground=opt(IntensityStats, data.get("foreground")),
            annotated=opt(IntensityStats, data.get("annotated")),
            annotated_fraction=data.get("annotated_fraction"),
            vessel_fraction=data.get("vessel_fraction"),
            radius=opt(RadiusStats, data.get("radius")),
            notes=tuple(data.get("notes", ())),
        )


@dataclass
class VolumeInput:
    """What :func:`fingerprint_volumes` reads: an image, an optional label mask (0 unannotated,
    1 vessel, 2 background) — anything lazily sliced with ``shape``/``dtype``, numpy arrays
    included — with spacing ``(z, y, x)`` and unit."""

    id: str
    image: Any
    mask: Any = None
    spacing: Sequence[float] = DEFAULT_SPACING
    unit: str = DEFAULT_UNIT


def fingerprint_dataset(samples: Sequence[Any]) -> Fingerprint:
    """Fingerprint of :class:`~vesselseg.io.Sample` s (image + mask opened lazily).

    Spacing and unit are ``volume.spacing``/``volume.unit`` where the reader provides them,
    else ``(1, 1, 1)`` µm.
    """

    def inputs() -> Iterable[VolumeInput]:
        for sample in samples:
            image = sample.open_image()
            spacing = tuple(getattr(image, "spacing", None) or DEFAULT_SPACING)
            unit = str(getattr(image, "unit", None) or DEFAULT_UNIT)
            yield VolumeInput(sample.id, image, sample.open_mask(), spacing, unit)

    return fingerprint_volumes(list(inputs()))


def fingerprint_volumes(items: Sequence[VolumeInput], seed: int = 0) -> Fingerprint:
    """Fingerprint of volumes given directly (see :class:`VolumeInput`)."""
    if not items:
        raise DatasetError("fingerprint: no volumes")
    unit, scales = _common_unit([item.unit for item in items])
    counts = [_label_counts(item.mask) for item in items]  # pass 1: masks only
    total_annotated = sum(c[0] for c in counts)
    total_vessel = sum(c[1] for c in counts)
    rng = np.random.default_rng(seed)
    rates = (
        min(1.0, SAMPLE_CAP / max(total_vessel, 1)),
        min(1.0, SAMPLE_CAP / max(total_annotated, 1)),
    )
    fg, ann, radii = _Moments(), _Moments(), []
    volumes = []
    for item, scale, (n_annotated, n_vessel) in zip(items, scales, counts, strict=True):
        spacing = tuple(float(s) * scale for s in item.spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise DatasetError(f"{item.id}: spacing {tuple(item.spacing)} must be 3 values > 0")
        shape = tuple(int(s) for s in item.image.shape)
        volumes.append(VolumeFingerprint(item.id, shape, spacing, unit, n_annotated, n_vessel))
        if item.mask is not None and n_annotated:  # pass 2: images where annotated
            _scan(item, spacing, rates, rng, fg, ann, radii)
    n_voxels = sum(int(np.prod(v.shape)) for v in volumes)
    radius = np.concatenate(radii) if radii else np.empty(0)
    if radius.size > SAMPLE_CAP:
        radius = rng.choice(radius, SAMPLE_CAP, replace=False)
    return Fingerprint(
        volumes=tuple(volumes),
        unit=unit,
        foreground=fg.stats(),
        annotated=ann.stats(),
        annotated_fraction=total_annotated / n_voxels if total_annotated else None,
        vessel_fraction=total_vessel / total_annotated if total_annotated else None,
        radius=_radius_stats(radius),
    )


def _common_unit(units: list[str]) -> tuple[str, list[float]]:
    """One unit for the dataset and each volume's factor to it (µm when units differ)."""
    if len(set(units)) == 1:
        return units[0], [1.0] * len(units)
    unknown = [u for u in units if u not in UNIT_TO_UM]
    if unknown:
        raise DatasetError(f"fingerprint: volumes mix units {sorted(set(units))}")
    return "um", [UNIT_TO_UM[u] for u in units]


def _label_counts(mask: Any) -> tuple[int, int]:
    """``(annotated, vessel)`` voxels of ``mask`` (0, 0 without one), slab by slab."""
    if mask is None:
        return 0, 0
    annotated = vessel = 0
    for _, slab in iter_slabs(mask):
        annotated += int(np.count_nonzero(slab))
        vessel += int(np.count_nonzero(slab == 1))
    return annotated, vessel


class _Moments:
    """Exact count/mean/std (float64 sums) and a subsample for percentiles."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0
        self.sample: list[np.ndarray] = []

    def add(self, values: np.ndarray, rate: float, rng: np.random.Generator) -> None:
        if not values.size:
            return
        values = values.astype(np.float64, copy=False)
        self.n += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())
        keep = values if rate >= 1 else values[rng.random(values.size) < rate]
        self.sample.append(keep.astype(np.float32))

    def stats(self) -> IntensityStats | None:
        if not self.n:
            return None
        sample = np.concatenate(self.sample) if self.sample else np.zeros(1, np.float32)
        lo, mid, hi = (float(v) for v in np.percentile(sample, PERCENTILES))
        mean = self.total / self.n
        std = float(np.sqrt(max(self.squares / self.n - mean * mean, 0.0)))
        return IntensityStats(self.n, lo, mid, hi, float(mean), std)


def _radius_stats(radius: np.ndarray) -> RadiusStats | None:
    if not radius.size:
        return None
    p10, p50, p90 = (float(v) for v in np.percentile(radius, RADIUS_PERCENTILES))
    return RadiusStats(int(radius.size), p10, p50, p90)


def _scan(
    item: VolumeInput,
    spacing: tuple[float, ...],
    rates: tuple[float, float],
    rng: np.random.Generator,
    fg: _Moments,
    ann: _Moments,
    radii: list[np.ndarray],
) -> None:
    """Pass 2 over one volume: intensities of annotated voxels, radii at vessel ridges."""
    for core, outer in _blocks(tuple(int(s) for s in item.image.shape)):
        labels = np.asarray(item.mask[outer])
        inner = tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer))
        core_labels = labels[inner]
        if not core_labels.any():
            continue
        image = np.asarray(item.image[core])
        fg.add(image[core_labels == 1], rates[0], rng)
        ann.add(image[core_labels > 0], rates[1], rng)
        if (core_labels == 1).any():
            radius = ridge_radii(labels, spacing)[inner][core_labels == 1]
            radii.append(radius[~np.isnan(radius)])


def ridge_radii(labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Per voxel of ``labels``: the vessel radius at ridge voxels (distance transform with
    ``sampling=spacing`` to the nearest background; see the module docstring), NaN elsewhere."""
    from scipy import ndimage

    vessel = labels == 1
    inside = labels != 2 if (labels == 2).any() else vessel
    distance = np.where(vessel, ndimage.distance_transform_edt(inside, sampling=tuple(spacing)), 0)
    ridge = vessel & (distance >= ndimage.maximum_filter(distance, size=3))
    return np.where(ridge, distance, np.nan).astype(np.float32)


def _blocks(
    shape: tuple[int, int, int], halo: int = HALO_PLANES, budget: int = SLAB_BYTES
) -> Iterable[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """``(core, core + halo)`` slices covering ``shape`` whose haloed blocks fit ``budget`` at
    :data:`EDT_BYTES_PER_VOXEL`: the whole volume when it fits, else z slabs of whole planes,
    else z slabs of y/x tiles (at least one plane deep, at least 64 voxels wide)."""
    nz, ny, nx = shape
    voxels = max(1, budget // EDT_BYTES_PER_VOXEL)
    thin = min(nz, 2 * halo + 1)  # planes of the thinnest haloed slab
    if thin * ny * nx <= voxels:
        tile_y, tile_x = ny, nx
    else:
        side = max(64, int((voxels / thin) ** 0.5) - 2 * halo)
        tile_y, tile_x = min(ny, side), min(nx, side)
    plane = min(ny, tile_y + 2 * halo) * min(nx, tile_x + 2 * halo)
    depth = nz if nz * plane <= voxels else max(1, voxels // plane - 2 * halo)
    for z0 in range(0, nz, depth):
        for y0 in range(0, ny, tile_y):
            for x0 in range(0, nx, tile_x):
                core = (
                    slice(z0, min(nz, z0 + depth)),
                    slice(y0, min(ny, y0 + tile_y)),
                    slice(x0, min(nx, x0 + tile_x)),
                )
                outer = tuple(
                    slice(max(0, c.start - halo), min(n, c.stop + halo))
                    for c, n in zip(core, shape, strict=True)
                )
                yield core, outer
