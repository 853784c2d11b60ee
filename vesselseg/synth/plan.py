"""The random part of a synthetic volume: vessel trees, contrast, texture and annotation
patches, drawn up front from a seed in physical units (see :mod:`vesselseg.synth`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vesselseg.config import SynthConfig


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
    unlabelled_band: float = 0.5  # voxels just outside a vessel an annotator leaves at 0

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
    return VolumePlan(
        shape, segments, patches, contrast, waves, cfg.noise, seed, spacing, cfg.unlabelled_band
    )


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
