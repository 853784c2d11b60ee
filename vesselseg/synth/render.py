"""Rendering a planned synthetic volume slab by slab: image, dense truth and annotation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vesselseg.synth.plan import Patch, Segment, VolumePlan

HALO = 16  # voxels of context around a slab; > the summed radii of the filters below


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


def _laplacian(field: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The Laplacian of ``field`` in physical units (per um^2): the same edge fringe at every
    voxel size (a voxel Laplacian of the same profile grows with the voxel size squared)."""
    from scipy import ndimage

    if tuple(spacing) == (1.0, 1.0, 1.0):  # the same sum, in the bytes the demo data has always had
        return ndimage.laplace(field)
    out = np.zeros_like(field)
    for axis, step in enumerate(spacing):
        out += ndimage.correlate1d(field, [1.0, -2.0, 1.0], axis=axis) / np.float32(step**2)
    return out


def _grain_gain(spacing: tuple[float, float, float], width: float) -> float:
    """Gain that gives white noise smoothed by a Gaussian of ``width`` um the same amplitude
    at every voxel size: smoothing over s voxels divides its std by about s^(3/2), and
    ``width`` um is ``width / spacing`` voxels (1 at unit spacing)."""
    if tuple(spacing) == (1.0, 1.0, 1.0):
        return 1.0
    voxels = [max(width / step, 0.5) for step in spacing]
    return float(np.prod(voxels) / width**3) ** 0.5


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
    tissue += np.float32(0.12 * _grain_gain(plan.spacing, 1.5)) * grain

    image = tissue + np.float32(plan.contrast) * soft
    image = ndimage.gaussian_filter(image, sigma(0.8))
    fringe = _laplacian(ndimage.gaussian_filter(soft, sigma(1.0)), plan.spacing)
    image -= np.float32(0.6 * abs(plan.contrast)) * fringe
    noise = plan.noise / float(np.prod(plan.spacing)) ** 0.5  # per um^3: a voxel averages it
    image += np.float32(noise) * _plane_noise(plan.seed, 2, range(e0, e1), (ny, nx))

    core = slice(z0 - e0, z1 - e0)
    sdf_core = sdf[core]
    truth = (sdf_core <= 0).astype(np.uint8)
    mask = annotation_slab(
        plan.patches, z0, z1, sdf_core if unit else sdf_core / voxel, plan.unlabelled_band
    )
    return image[core].astype(np.float32), truth, mask


def annotation_slab(
    patches: list[Patch], z0: int, z1: int, sdf: np.ndarray, band: float = 0.5
) -> np.ndarray:
    """The 0/1/2 annotation of planes ``z0:z1`` given their signed distance ``sdf`` (in
    voxels): inside a patch 1 in vessels, 2 beyond ``band`` voxels from them, 0 between."""
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
        mask[region] = np.where(d <= 0, 1, np.where(d > band, 2, 0)).astype(np.uint8)
    return mask


def iter_volume(
    plan: VolumePlan, slab: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(z0, image, truth, mask)`` slabs of ``slab`` planes."""
    for z0 in range(0, plan.shape[0], slab):
        yield (z0, *render_slab(plan, z0, min(z0 + slab, plan.shape[0])))
