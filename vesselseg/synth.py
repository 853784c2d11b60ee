"""Synthetic vessel volumes with a dense truth and a sparse, human-like annotation.

No real data can be downloaded where this project is built and tested, so the demo, the tests
and the benchmarks run on volumes made here:

* a branching tree of tapered, gently curving tubes (radii ``min_radius``..``max_radius``);
  each bifurcation follows Murray's law ``r**3 = r1**3 + r2**3`` with Murray's optimal
  branching angles;
* tissue texture (low-frequency undulation plus smoothed noise), vessels brighter or darker
  than tissue (random per volume), a phase-contrast look (blur plus edge fringes from a
  Laplacian of the vessel map) and Gaussian noise;
* a dense truth (0/1) and a sparse annotation in the 0/1/2 code: a few partial 2D slices along
  random axes, each a rectangle around a vessel, with vessel = 1 and background = 2; the
  uncertain half-voxel rim just outside each vessel is left unannotated, as a person would.

Everything is generated slab by slab along z with a halo, from per-plane seeded noise, so the
result is identical for any slab size and memory stays bounded for any depth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselseg.config import SynthConfig, as_triple

log = logging.getLogger(__name__)

HALO = 16  # voxels of context around a slab; > the summed radii of the filters below
SPLITS = ("train", "val", "test", "unlabelled")


@dataclass(frozen=True)
class Segment:
    """A tapered cylinder from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``), in (z, y, x)."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float


@dataclass(frozen=True)
class Patch:
    """An annotated rectangle on the plane ``index`` along ``axis``: ``lo``..``hi`` (other axes)."""

    axis: int
    index: int
    lo: tuple[int, int]
    hi: tuple[int, int]


@dataclass(frozen=True)
class VolumePlan:
    """Everything random about one volume, drawn up front from its seed."""

    shape: tuple[int, int, int]
    segments: list[Segment]
    patches: list[Patch]
    contrast: float
    waves: np.ndarray  # (k, 5): kz, ky, kx, phase, amplitude
    noise: float
    seed: int
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (z, y, x) per voxel, in um

    @property
    def extent(self) -> tuple[float, float, float]:
        """The physical size of the volume, ``shape * spacing``."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]


# --------------------------------------------------------------------------- the tree


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about unit ``axis``."""
    return (
        v * math.cos(angle)
        + np.cross(axis, v) * math.sin(angle)
        + axis * np.dot(axis, v) * (1 - math.cos(angle))
    )


def murray_split(radius: float, asymmetry: float) -> tuple[float, float, float, float]:
    """Child radii and branching angles for a parent of ``radius``.

    ``asymmetry`` = r2 / r1 in (0, 1]. Radii satisfy ``r**3 = r1**3 + r2**3``; the angles are
    Murray's optima ``cos(t1) = (r**4 + r1**4 - r2**4) / (2 r**2 r1**2)`` and likewise for t2.
    """
    r1 = radius / (1.0 + asymmetry**3) ** (1.0 / 3.0)
    r2 = asymmetry * r1
    c1 = (radius**4 + r1**4 - r2**4) / (2 * radius**2 * r1**2)
    c2 = (radius**4 + r2**4 - r1**4) / (2 * radius**2 * r2**2)
    return r1, r2, math.acos(max(-1.0, min(1.0, c1))), math.acos(max(-1.0, min(1.0, c2)))


def grow_tree(
    shape: tuple[float, float, float],
    rng: np.random.Generator,
    n_trees: int,
    max_radius: float,
    min_radius: float,
    max_segments: int = 4000,
) -> list[Segment]:
    """Grow ``n_trees`` vessel trees entering a box of size ``shape`` (physical units) from
    random faces."""
    size = np.asarray(shape, dtype=float)
    segments: list[Segment] = []
    stack: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(n_trees):
        axis = int(rng.integers(3))
        start = rng.uniform(0.2, 0.8, 3) * size
        side = int(rng.integers(2))
        start[axis] = 0.0 if side == 0 else size[axis] - 1
        direction = np.zeros(3)
        direction[axis] = 1.0 if side == 0 else -1.0
        direction = _unit(direction + rng.normal(0, 0.3, 3))
        radius = max_radius * rng.uniform(0.7, 1.0)
        stack.append((start, direction, radius))
    while stack and len(segments) < max_segments:
        point, direction, radius = stack.pop()
        length = radius * rng.uniform(5.0, 9.0) + 6.0
        n_steps = 4
        end_radius = radius * rng.uniform(0.85, 0.95)
        for step in range(n_steps):
            r0 = radius + (end_radius - radius) * step / n_steps
            r1 = radius + (end_radius - radius) * (step + 1) / n_steps
            direction = _unit(direction + rng.normal(0, 0.12, 3))
            nxt = point + direction * (length / n_steps)
            segments.append(Segment(tuple(point), tuple(nxt), r0, r1))
            point = nxt
            if np.any(point < -radius) or np.any(point > size + radius):
                break
        else:
            r_a, r_b, t_a, t_b = murray_split(end_radius, rng.uniform(0.5, 1.0))
            normal = _unit(np.cross(direction, rng.normal(0, 1, 3)))
            for child_r, angle in ((r_a, t_a), (r_b, -t_b)):
                if child_r >= min_radius:
                    stack.append((point.copy(), _unit(_rotate(direction, normal, angle)), child_r))
    return segments


# --------------------------------------------------------------------------- planning


def plan_volume(
    shape: tuple[int, int, int],
    seed: int,
    cfg: SynthConfig,
    annotate: bool = True,
    spacing: tuple[float, float, float] | None = None,
) -> VolumePlan:
    """Draw the tree, the contrast, the texture and the annotation patches of one volume.

    Everything random is drawn in physical units (um) from the volume's extent
    ``shape * spacing`` (``spacing`` defaults to ``cfg.spacing``), so the same seed and extent
    give the same vessel tree at any voxel size: ``(96, 96, 96)`` at 1 um and ``(48, 48, 48)``
    at 2 um hold the same vessels, rendered on different grids.
    """
    given = spacing or cfg.spacing
    spacing = tuple(float(v) for v in (given if isinstance(given, (list, tuple)) else [given] * 3))
    extent = tuple(n * v for n, v in zip(shape, spacing))
    rng = np.random.default_rng(seed)
    scale = min(extent) / 96.0
    segments = grow_tree(
        extent, rng, cfg.n_trees, cfg.max_radius * max(1.0, scale**0.5), cfg.min_radius
    )
    contrast = float(rng.uniform(0.25, 0.45) * rng.choice([-1.0, 1.0]))
    k = 6
    waves = np.column_stack(
        [
            rng.normal(0, 1, (k, 3)) * (2 * math.pi / rng.uniform(20, 60, (k, 1))),
            rng.uniform(0, 2 * math.pi, k),
            rng.uniform(0.01, 0.04, k),
        ]
    )
    grid = tuple(max(1, round(e)) for e in extent)  # patches are drawn on a 1 um grid
    patches = _plan_patches(grid, segments, rng, cfg.annotated_fraction) if annotate else []
    if annotate and spacing != (1.0, 1.0, 1.0):
        patches = [_patch_on_grid(p, spacing, shape) for p in patches]
    return VolumePlan(shape, segments, patches, contrast, waves, cfg.noise, seed, spacing)


def _patch_on_grid(patch: Patch, spacing: tuple[float, ...], shape: tuple[int, ...]) -> Patch:
    """A patch drawn on the 1 um grid, on the voxel grid of ``spacing``."""
    others = [a for a in range(3) if a != patch.axis]

    def to_voxels(value: float, axis: int) -> int:
        return int(np.clip(round(value / spacing[axis]), 0, shape[axis]))

    index = min(to_voxels(patch.index, patch.axis), shape[patch.axis] - 1)
    lo = tuple(to_voxels(v, a) for v, a in zip(patch.lo, others))
    hi = tuple(max(to_voxels(v, a), lo_v + 1) for v, a, lo_v in zip(patch.hi, others, lo))
    return Patch(patch.axis, index, lo, hi)  # type: ignore[arg-type]


def _plan_patches(
    shape: tuple[int, int, int],
    segments: list[Segment],
    rng: np.random.Generator,
    fraction: float,
) -> list[Patch]:
    """Rectangles on random planes, each centred near a vessel, until ``fraction`` is covered."""
    inside = [s for s in segments if all(0 <= c < n for c, n in zip(s.p1, shape))]
    if not inside:
        return []
    lengths = np.array([math.dist(s.p0, s.p1) for s in inside])
    target = fraction * float(np.prod(shape)) * rng.uniform(0.8, 1.25)
    covered = 0.0
    patches: list[Patch] = []
    while covered < target and len(patches) < 10_000:
        seg = inside[int(rng.choice(len(inside), p=lengths / lengths.sum()))]
        t = rng.uniform()
        centre = [a + t * (b - a) for a, b in zip(seg.p0, seg.p1)]
        axis = int(rng.integers(3))
        others = [a for a in range(3) if a != axis]
        lo, hi = [], []
        for a in others:
            side = max(8, int(shape[a] * rng.uniform(0.15, 0.4)))
            start = int(
                np.clip(centre[a] - side * rng.uniform(0.3, 0.7), 0, max(shape[a] - side, 0))
            )
            lo.append(start)
            hi.append(min(shape[a], start + side))
        index = int(np.clip(round(centre[axis]), 0, shape[axis] - 1))
        patches.append(Patch(axis, index, (lo[0], lo[1]), (hi[0], hi[1])))
        covered += (hi[0] - lo[0]) * (hi[1] - lo[1])
    return patches


# --------------------------------------------------------------------------- rendering


def signed_distance(
    segments: list[Segment],
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Distance to the nearest tube surface (negative inside) on a box, float32 (z, y, x).

    Voxel ``i`` of the box lies at ``(origin + i) * spacing``; distances are physical. Voxels
    farther than a few units from every tube hold a large positive value.
    """
    far = np.float32(8.0)
    sdf = np.full(shape, far, dtype=np.float32)
    o = np.asarray(origin, dtype=float)
    n = np.asarray(shape)
    step = np.asarray(spacing, dtype=float)
    unit = tuple(spacing) == (1.0, 1.0, 1.0)
    for seg in segments:
        p0, p1 = np.asarray(seg.p0), np.asarray(seg.p1)
        reach = max(seg.r0, seg.r1) + float(far)
        lo = np.maximum(np.floor((np.minimum(p0, p1) - reach) / step - o).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(p0, p1) + reach) / step - o).astype(int) + 1, n)
        if np.any(hi <= lo):
            continue
        z, y, x = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if not unit:
            z, y, x = z * step[0], y * step[1], x * step[2]
        d = p1 - p0
        dd = float(np.dot(d, d)) or 1e-12
        oz, oy, ox = o * step
        rz, ry, rx = z + oz - p0[0], y + oy - p0[1], x + ox - p0[2]
        t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / dd, 0.0, 1.0)
        dist = np.sqrt((rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2)
        value = (dist - (seg.r0 + t * (seg.r1 - seg.r0))).astype(np.float32)
        region = sdf[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.minimum(region, value, out=region)
    return sdf


def _plane_noise(seed: int, stream: int, z_range: range, plane: tuple[int, int]) -> np.ndarray:
    """White noise whose plane z depends only on (seed, stream, z): identical for any slab."""
    out = np.empty((len(z_range), *plane), dtype=np.float32)
    for i, z in enumerate(z_range):
        out[i] = np.random.default_rng([seed, stream, z]).standard_normal(plane, dtype=np.float32)
    return out


def render_slab(plan: VolumePlan, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (float32), truth (uint8 0/1) and annotation (uint8 0/1/2) of planes ``z0:z1``."""
    from scipy import ndimage

    depth, ny, nx = plan.shape
    e0, e1 = max(0, z0 - HALO), min(depth, z1 + HALO)
    ext = (e1 - e0, ny, nx)
    sdf = signed_distance(plan.segments, (e0, 0, 0), ext, plan.spacing)
    unit = plan.spacing == (1.0, 1.0, 1.0)
    voxel = float(np.prod(plan.spacing)) ** (1 / 3)  # partial-volume width: about one voxel
    soft = np.clip(0.5 - (sdf if unit else sdf / np.float32(voxel)), 0.0, 1.0)

    def sigma(physical: float) -> float | tuple[float, ...]:
        return physical if unit else tuple(physical / v for v in plan.spacing)

    z, y, x = np.ogrid[e0:e1, 0:ny, 0:nx]
    if not unit:
        z, y, x = z * plan.spacing[0], y * plan.spacing[1], x * plan.spacing[2]
    tissue = np.full(ext, 0.5, dtype=np.float32)
    for kz, ky, kx, phase, amplitude in plan.waves:
        tissue += np.float32(amplitude) * np.cos(kz * z + ky * y + kx * x + phase).astype(
            np.float32
        )
    grain = ndimage.gaussian_filter(_plane_noise(plan.seed, 1, range(e0, e1), (ny, nx)), sigma(1.5))
    tissue += 0.12 * grain

    image = tissue + np.float32(plan.contrast) * soft
    image = ndimage.gaussian_filter(image, sigma(0.8))
    fringe = ndimage.laplace(ndimage.gaussian_filter(soft, sigma(1.0)))
    image -= np.float32(0.6 * abs(plan.contrast)) * fringe
    image += np.float32(plan.noise) * _plane_noise(plan.seed, 2, range(e0, e1), (ny, nx))

    core = slice(z0 - e0, z1 - e0)
    sdf_core = sdf[core]
    truth = (sdf_core <= 0).astype(np.uint8)
    mask = annotation_slab(plan.patches, z0, z1, sdf_core if unit else sdf_core / voxel)
    return image[core].astype(np.float32), truth, mask


def annotation_slab(patches: list[Patch], z0: int, z1: int, sdf: np.ndarray) -> np.ndarray:
    """The 0/1/2 annotation of planes ``z0:z1`` given their signed distance ``sdf``."""
    mask = np.zeros(sdf.shape, dtype=np.uint8)
    for p in patches:
        region: tuple[slice, ...]
        if p.axis == 0:
            if not z0 <= p.index < z1:
                continue
            region = (
                slice(p.index - z0, p.index - z0 + 1),
                slice(p.lo[0], p.hi[0]),
                slice(p.lo[1], p.hi[1]),
            )
        else:
            zs, ze = max(p.lo[0], z0), min(p.hi[0], z1)
            if zs >= ze:
                continue
            plane = slice(p.index, p.index + 1)
            rest = slice(p.lo[1], p.hi[1])
            region = (
                (slice(zs - z0, ze - z0), plane, rest)
                if p.axis == 1
                else (slice(zs - z0, ze - z0), rest, plane)
            )
        d = sdf[region]
        mask[region] = np.where(d <= 0, 1, np.where(d > 0.5, 2, 0)).astype(np.uint8)
    return mask


def iter_volume(
    plan: VolumePlan, slab: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(z0, image, truth, mask)`` slabs of ``slab`` planes."""
    for z0 in range(0, plan.shape[0], slab):
        yield (z0, *render_slab(plan, z0, min(z0 + slab, plan.shape[0])))


# --------------------------------------------------------------------------- writing


def volume_seed(seed: int, index: int) -> int:
    """The seed of volume ``index`` of a dataset made with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_volume_set(
    plan: VolumePlan,
    out_dir: Path,
    sample_id: str,
    fmt: str,
    slab: int,
    with_mask: bool,
    on_slab: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write ``data_<id>``, ``truth_<id>`` and (``with_mask``) ``mask_<id>`` slab by slab."""
    from contextlib import ExitStack

    from vesselseg.io.writers import SUFFIX, VolumeWriter

    suffix = SUFFIX[fmt]
    names = {"data": np.float32, "truth": np.uint8}
    if with_mask:
        names["mask"] = np.uint8
    with ExitStack() as stack:
        writers = {
            role: stack.enter_context(
                VolumeWriter(out_dir / f"{role}_{sample_id}{suffix}", plan.shape, dtype, fmt=fmt)
            )
            for role, dtype in names.items()
        }
        for z0, image, truth, mask in iter_volume(plan, slab):
            z1 = z0 + image.shape[0]
            writers["data"][z0:z1] = image
            writers["truth"][z0:z1] = truth
            if with_mask:
                writers["mask"][z0:z1] = mask
            if on_slab:
                on_slab(z1 - z0)
    return [w.path for w in writers.values()]


def synthesize_dataset(
    cfg: SynthConfig, out_dir: str | Path, on_slab: Callable[[int], None] | None = None
) -> dict[str, list[str]]:
    """Write the train/val/test/unlabelled splits of ``cfg`` under ``out_dir``.

    Returns the ids per split. Volume ``i`` (counted across splits) is seeded with
    ``volume_seed(cfg.seed, i)``, so each volume is reproducible on its own.
    """
    out = Path(out_dir)
    shape = as_triple(cfg.shape)
    counts = {
        "train": cfg.n_train,
        "val": cfg.n_val,
        "test": cfg.n_test,
        "unlabelled": cfg.n_unlabelled,
    }
    ids: dict[str, list[str]] = {}
    index = 0
    for split in SPLITS:
        ids[split] = []
        for _ in range(counts[split]):
            sample_id = f"{index:03d}"
            annotate = split != "unlabelled"
            plan = plan_volume(shape, volume_seed(cfg.seed, index), cfg, annotate=annotate)
            (out / split).mkdir(parents=True, exist_ok=True)
            write_volume_set(plan, out / split, sample_id, cfg.format, cfg.slab, annotate, on_slab)
            log.info(
                "synth %s/%s: %d segments, %d patches",
                split,
                sample_id,
                len(plan.segments),
                len(plan.patches),
            )
            ids[split].append(sample_id)
            index += 1
    return ids


def synthesize_with_progress(cfg: SynthConfig, out_dir: str | Path) -> str:
    """:func:`synthesize_dataset` with a progress bar over planes; returns a summary line."""
    from vesselseg.progress import progress_bar

    n_volumes = cfg.n_train + cfg.n_val + cfg.n_test + cfg.n_unlabelled
    planes = n_volumes * as_triple(cfg.shape)[0]
    with progress_bar("synth", total=planes, unit="planes") as advance:
        ids = synthesize_dataset(cfg, out_dir, on_slab=advance)
    counts = ", ".join(f"{len(v)} {k}" for k, v in ids.items() if v)
    return f"wrote {n_volumes} volumes ({counts}) of shape {as_triple(cfg.shape)} to {out_dir}"
