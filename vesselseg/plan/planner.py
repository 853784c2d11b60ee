"""``make_plan(fingerprint, cfg) -> Plan``: sizes, network topology and batch from the data.

A pure function (no files, no torch, no clock). The rules, in order:

1. **Target spacing** — the median spacing per axis over the volumes. When the coarsest axis is
   more than ``cfg.anisotropy_threshold`` times coarser than the others *and* has that many
   times fewer voxels (thick slices, nnU-Net's case), its target is the 10th percentile of its
   spacings instead (never finer than the other axes): resampling the thinnest-sliced volumes
   coarser would lose their detail.
2. **Extent** — each volume's shape at the target spacing; the smallest per axis bounds every
   crop (a crop never exceeds the smallest volume, so no crop is mostly padding).
3. **3D crop** — ``cfg.crop_voxels`` voxels (None: 48³, the CPU default; a CUDA machine
   resolves it to 128³ beforehand, see :func:`vesselseg.plan.machine.resolve_machine`) spread
   so that the crop covers the same physical length on every axis; an axis capped by the
   extent gives its share to the others (a 15-slice stack gets 15 slices and wider planes).
4. **Topology** — :func:`~vesselseg.plan.topology.pool_schedule` (no pooling along an axis
   until its spacing is within ``cfg.anisotropy_ratio`` of the finest), then every crop side
   is rounded to a multiple of its axis's divisor (to the nearest, down where the extent caps
   it; at least 8 voxels, the config's smallest side).
5. **Memory** — :func:`~vesselseg.plan.topology.training_bytes` of ``cfg.min_batch_size`` crops
   must fit :data:`USABLE_FRACTION` of ``cfg.memory_gb`` (None: 4 GB); otherwise the voxel
   target shrinks by 15 % and steps 3-4 repeat.
6. **Batch** — as many crops as memory allows, at most ``cfg.max_batch_size``, at least
   ``cfg.min_batch_size`` where memory allows, and no more than covers
   :data:`DATASET_FRACTION` of the dataset's voxels per step (nnU-Net's guard against
   over-fitting small datasets).
7. **Tile** — the crop (the network sees at inference what it saw in training), each side
   rounded up to the 2D model's divisor too so a multiview model can use the same tile.
8. **2D (unet2d / multiview)** — a view is kept when both in-plane extents reach
   ``cfg.min_view_pixels`` (a 15 x 512 x 512 stack keeps only ``z``); slices get ``4 *
   crop_voxels**(2/3)`` pixels (96² on CPU), physically square, capped by the extents; depth
   from the same feature-map rule; batch as in 6.
9. **Intensity** — with ``data.normalization: dataset``, ``data.intensity_stats`` from the
   annotated voxels (0.5/99.5 percentiles, mean, sd): every volume is normalised alike.
10. **Epoch** — ``data.samples_per_volume`` is raised (never lowered) so that an epoch
   draws at least ``cfg.crops_per_epoch`` crops from the annotated volumes.

Every value records its source: ``"user"`` for keys in ``explicit`` (taken from ``params``
as they are, and used by the later rules: a user's crop fixes the topology's input),
``"fingerprint"`` for values derived from the data, ``"default"`` for planner settings left at
their defaults.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vesselseg.config import Params, PlanConfig, as_triple, flatten
from vesselseg.plan.fingerprint import Fingerprint
from vesselseg.plan.topology import KERNEL, Topology, pool_schedule, training_bytes

CPU_MEMORY_GB = 4.0
CPU_CROP_VOXELS = 48**3
USABLE_FRACTION = 0.85  # of memory_gb: the rest for the runtime, allocator and data
DATASET_FRACTION = 0.05  # one step covers at most this share of the dataset's voxels
SHRINK = 0.85
MIN_SIDE = 8
AXES = ("z", "y", "x")
SOURCES = ("fingerprint", "default", "user")


@dataclass
class PlannedValue:
    """A value of the plan, where it came from, and why."""

    value: Any
    source: str
    note: str = ""


@dataclass
class Plan:
    """Planned ``params.yaml`` keys (dotted) and derived facts (``info``)."""

    values: dict[str, PlannedValue] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: Fingerprint | None = None

    def value(self, key: str) -> Any:
        return self.values[key].value

    def source(self, key: str) -> str:
        return self.values[key].source


@dataclass
class _Context:
    fingerprint: Fingerprint
    cfg: PlanConfig
    params: Params
    explicit: Collection[str]
    plan: Plan
    flat: dict[str, Any]

    def user(self, key: str) -> bool:
        return key in self.explicit and key in self.flat

    def put(self, key: str, value: Any, note: str = "", source: str = "fingerprint") -> Any:
        """Record ``key``: the user's value when they set it, else ``value``."""
        if self.user(key):
            value, source, note = self.flat[key], "user", ""
        self.plan.values[key] = PlannedValue(value, source, note)
        return value


def make_plan(
    fingerprint: Fingerprint,
    cfg: PlanConfig,
    params: Params | None = None,
    explicit: Collection[str] = (),
) -> Plan:
    """The plan for ``fingerprint`` (module docstring); ``params`` gives the network settings
    the plan builds on (model name, channels, context) and, for the ``explicit`` dotted keys,
    the user's values, which win."""
    params = params or Params()
    plan = Plan(fingerprint=fingerprint)
    ctx = _Context(fingerprint, cfg, params, {*explicit, *cfg.keep}, plan, flatten(params))
    memory = cfg.memory_gb if cfg.memory_gb is not None else CPU_MEMORY_GB
    voxels = cfg.crop_voxels if cfg.crop_voxels is not None else CPU_CROP_VOXELS
    mem_note = "4 GB on CPU" if cfg.memory_gb is None else "given"
    ctx.put("plan.memory_gb", memory, mem_note, "user" if ctx.user("plan.memory_gb") else "default")
    ctx.put("plan.crop_voxels", voxels, "", "user" if ctx.user("plan.crop_voxels") else "default")
    target = _target_spacing(ctx)
    extent = _smallest_extent(fingerprint, target)
    total = sum(math.prod(e) for e in _extents(fingerprint, target))
    ctx.plan.info.update(
        unit=fingerprint.unit,
        smallest_extent=list(extent),
        dataset_voxels=int(total),
        usable_bytes=int(memory * 2**30 * USABLE_FRACTION),
    )
    views_2d = _plan_2d(ctx, target, extent, voxels, total)
    _plan_3d(ctx, target, extent, voxels, total, views_2d)
    _plan_intensity(ctx)
    _plan_epoch(ctx)
    return ctx.plan


def _plan_epoch(ctx: _Context) -> None:
    """``data.samples_per_volume`` raised so that an epoch draws at least
    ``plan.crops_per_epoch`` crops (nnU-Net fixes the iterations of an epoch, not the crops
    per case): two training volumes would otherwise get half the optimiser steps of four.
    Recorded only where it raises the configured value."""
    volumes = ctx.fingerprint.volumes
    annotated = [v for v in volumes if v.annotated_voxels] or list(volumes)
    have = ctx.params.data.samples_per_volume
    need = math.ceil(ctx.cfg.crops_per_epoch / len(annotated))
    if need > have or ctx.user("data.samples_per_volume"):
        note = f"{ctx.cfg.crops_per_epoch} crops an epoch over {len(annotated)} volume(s)"
        ctx.put("data.samples_per_volume", max(need, have), note)


def _plan_intensity(ctx: _Context) -> None:
    """``data.normalization: dataset`` (nnU-Net's CT scheme): the annotated voxels' 0.5 and
    99.5 percentiles (the clip) and their mean and standard deviation (the z-score)."""
    stats = ctx.fingerprint.annotated
    if ctx.params.data.normalization != "dataset" or stats is None:
        return
    value = [round(float(v), 6) for v in (stats.p0_5, stats.p99_5, stats.mean, stats.std)]
    if not (value[0] < value[1] and value[3] > 0):  # a flat dataset: clip nothing away
        value = [value[0], value[0] + 1.0, value[2], max(value[3], 1.0)]
    ctx.put("data.intensity_stats", value, "annotated voxels: 0.5/99.5 percentiles, mean, sd")


def _target_spacing(ctx: _Context) -> tuple[float, float, float]:
    spacings = np.array([v.spacing for v in ctx.fingerprint.volumes], dtype=np.float64)
    shapes = np.array([v.shape for v in ctx.fingerprint.volumes], dtype=np.float64)
    target = np.median(spacings, axis=0)
    note = "median spacing per axis"
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    threshold = ctx.cfg.anisotropy_threshold
    median_shape = np.median(shapes, axis=0)
    if target[coarse] > threshold * target[others].max() and (
        median_shape[coarse] * threshold < median_shape[others].min()
    ):
        low = float(np.percentile(spacings[:, coarse], 10))
        target[coarse] = max(low, float(target[others].max()))
        note += f"; {AXES[coarse]}: 10th percentile (anisotropic)"
    value = [round(float(t), 6) for t in target]
    value = ctx.put("data.target_spacing", value, note)
    ctx.plan.info["target_spacing"] = list(value)
    return (float(value[0]), float(value[1]), float(value[2]))


def _extents(fingerprint: Fingerprint, target: Sequence[float]) -> list[tuple[int, ...]]:
    return [
        tuple(max(1, round(n * s / t)) for n, s, t in zip(v.shape, v.spacing, target, strict=True))
        for v in fingerprint.volumes
    ]


def _smallest_extent(fingerprint: Fingerprint, target: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(min(e[a] for e in _extents(fingerprint, target))) for a in range(3))


def field_of_view(spacing: Sequence[float], extent: Sequence[int], voxels: float) -> list[float]:
    """Sides (voxels) of a box of about ``voxels`` voxels covering the same physical length on
    every axis, each capped by ``extent``; a capped axis leaves its share to the others."""
    sides = [0.0] * len(spacing)
    free = list(range(len(spacing)))
    while free:
        fixed = math.prod(sides[a] for a in range(len(spacing)) if a not in free)
        length = (voxels / max(fixed, 1.0) * math.prod(spacing[a] for a in free)) ** (1 / len(free))
        over = [a for a in free if length / spacing[a] > extent[a]]
        if not over:
            for a in free:
                sides[a] = length / spacing[a]
            break
        for a in over:
            sides[a] = float(extent[a])
            free.remove(a)
    return sides


def round_sides(
    sides: Sequence[float], divisors: Sequence[int], extent: Sequence[int]
) -> list[int]:
    """Each side to a multiple of its divisor: the nearest, down where that would exceed the
    extent, at least the divisor and :data:`MIN_SIDE`."""
    out = []
    for side, div, ext in zip(sides, divisors, extent, strict=True):
        n = max(div, round(side / div) * div)
        if n > ext:
            n = max(div, (ext // div) * div)
        while n < MIN_SIDE:
            n += div
        out.append(int(n))
    return out


def _batch(ctx: _Context, per_sample: float, fixed: float, voxels: int, total: int) -> int:
    cfg = ctx.cfg
    usable = ctx.plan.info["usable_bytes"] - fixed
    fits = int(usable // per_sample) if per_sample > 0 else cfg.max_batch_size
    covering = round(DATASET_FRACTION * total / max(voxels, 1))
    wanted = min(cfg.max_batch_size, max(cfg.min_batch_size, covering))
    return max(1, min(wanted, fits))


def _plan_3d(
    ctx: _Context,
    target: tuple[float, ...],
    extent: tuple[int, ...],
    voxels: int,
    total: int,
    views_2d: tuple[int, tuple[int, ...]] | None,
) -> None:
    p, cfg = ctx.params, ctx.cfg
    name = p.model.name if p.model.name != "unet2d" else "unet"
    kernel = KERNEL[name]
    depth = p.model.depth if ctx.user("model.depth") else None
    user_crop = as_triple(p.data.crop_size) if ctx.user("data.crop_size") else None
    budget = float(voxels)
    while True:
        sides = list(user_crop) if user_crop else field_of_view(target, extent, budget)
        topology = _topology(ctx, target, sides, depth, kernel)
        crop = list(user_crop) if user_crop else round_sides(sides, topology.divisors, extent)
        need = training_bytes(name, p.model.base_channels, topology, crop, cfg.min_batch_size)
        if user_crop or need <= ctx.plan.info["usable_bytes"] or math.prod(crop) <= MIN_SIDE**3:
            break
        budget *= SHRINK
    one = training_bytes(name, p.model.base_channels, topology, crop, 1)
    fixed = training_bytes(name, p.model.base_channels, topology, crop, 0)
    batch = _batch(ctx, one - fixed, fixed, math.prod(crop), total)
    if p.model.name == "unet2d":  # the 3D plan only informs the info section
        ctx.plan.info["plan_3d"] = {"crop_size": crop, "depth": topology.depth}
        return
    _put_topology(ctx, topology, kernel, name)
    crop = as_triple(
        ctx.put("data.crop_size", crop, "same physical length per axis, fits the volumes")
    )
    tile = crop
    if views_2d is not None:  # a multiview model predicts with the same tile
        depth_2d, in_plane = views_2d
        div = [2 ** (depth_2d - 1) if a in in_plane else 1 for a in range(3)]
        tile = tuple(-(-t // d) * d for t, d in zip(tile, div, strict=True))
    ctx.put("infer.tile_size", list(tile), "the crop (multiples of the 2D divisors too)")
    ctx.put("train.batch_size", batch, f"memory {_gb(one - fixed)} GB per crop")
    ctx.plan.info["train_gb_3d"] = _gb(
        training_bytes(name, p.model.base_channels, topology, crop, batch)
    )


def _topology(
    ctx: _Context, target: Sequence[float], sides: Sequence[float], depth: int | None, kernel: int
) -> Topology:
    p, cfg = ctx.params, ctx.cfg
    if ctx.user("model.strides") and p.model.strides is not None:
        strides = tuple(tuple(s) for s in p.model.strides)
        auto = pool_schedule(
            target, sides, cfg.anisotropy_ratio, cfg.min_feature_map, 99, len(strides) + 1, kernel
        )
        kernels = tuple(tuple(k) for k in p.model.kernels) if p.model.kernels else auto.kernels
        return Topology(strides, kernels)
    return pool_schedule(
        target, sides, cfg.anisotropy_ratio, cfg.min_feature_map, cfg.max_depth, depth, kernel
    )


def _put_topology(ctx: _Context, topology: Topology, kernel: int, name: str) -> None:
    """Depth, strides and kernels; each list is None (the networks' default) when it holds
    only stride 2, or only ``kernel``, so an isotropic plan keeps today's network exactly."""
    ctx.put("model.depth", topology.depth, "pooled until the bottleneck reaches min_feature_map")
    strides = [list(s) for s in topology.strides]
    kernels = [list(k) for k in topology.kernels]
    iso_strides = all(set(s) == {2} for s in strides)
    iso_kernels = all(set(k) == {kernel} for k in kernels)
    rule = "no pooling along an axis until within anisotropy_ratio of the finest"
    ctx.put("model.strides", None if iso_strides else strides, "isotropic" if iso_strides else rule)
    ctx.put("model.kernels", None if iso_kernels else kernels, "isotropic" if iso_kernels else rule)
    ctx.plan.info["divisors"] = list(topology.divisors)
    ctx.plan.info["network"] = name


def _gb(n: float) -> float:
    return round(n / 2**30, 3)


def _plan_2d(
    ctx: _Context, target: tuple[float, ...], extent: tuple[int, ...], voxels: int, total: int
) -> tuple[int, tuple[int, ...]]:
    """The slice model's plan; returns its depth and the axes that are in-plane for a view."""
    p, cfg = ctx.params, ctx.cfg
    slice_model = p.model.name == "unet2d"
    keep = [v for v in AXES if all(extent[a] >= cfg.min_view_pixels for a in _plane(v))]
    if not keep:  # nothing wide enough: the view with the widest slices
        keep = [max(AXES, key=lambda v: min(extent[a] for a in _plane(v)))]
    note = f"slices at least {cfg.min_view_pixels} pixels wide"
    views = ctx.put("model.views", keep, note)
    in_plane = tuple(sorted({a for v in views for a in _plane(v)}))
    pixels = 4 * voxels ** (2 / 3)
    sides = [0.0, 0.0, 0.0]
    for v in views:
        plane = _plane(v)
        fov = field_of_view([target[a] for a in plane], [extent[a] for a in plane], pixels)
        for a, s in zip(plane, fov, strict=True):
            sides[a] = max(sides[a], s)
    for a in range(3):
        if a not in in_plane:  # only ever the slicing axis: replaced by the context
            sides[a] = min(extent[a], max(sides))
    key_depth = "model.depth" if slice_model else "multiview.depth"
    depth = p.model.depth if slice_model else p.multiview.depth
    if not ctx.user(key_depth):
        smallest = min(sides[a] for a in in_plane)
        depth = 1
        while depth < cfg.max_depth and smallest >= 2 * cfg.min_feature_map:
            depth, smallest = depth + 1, smallest / 2
        depth = max(depth, 2)
    div = [2 ** (depth - 1) if a in in_plane else 1 for a in range(3)]
    crop_key = "data.crop_size" if slice_model else "multiview.crop_size"
    if ctx.user(crop_key):
        crop = list(as_triple(ctx.flat[crop_key]))
    else:
        crop = round_sides(sides, div, extent)
    base = p.model.base_channels if slice_model else p.multiview.base_channels
    square = Topology(((2, 2),) * (depth - 1), ((3, 3),) * depth)
    pixels_2d = max(crop[a] * crop[b] for a, b in (_plane(v) for v in views))
    one = training_bytes("unet2d", base, square, (pixels_2d,), 1)
    fixed = training_bytes("unet2d", base, square, (pixels_2d,), 0)
    batch = _batch(ctx, one - fixed, fixed, pixels_2d, total)
    ctx.put(key_depth, depth, "pooled until the bottleneck reaches min_feature_map")
    ctx.put(crop_key, crop, "slices of 4 * crop_voxels^(2/3) pixels, fit the volumes")
    ctx.put(
        "train.batch_size" if slice_model else "multiview.batch_size",
        batch,
        f"memory {_gb(one - fixed)} GB per slice",
    )
    if slice_model:
        ctx.put("infer.tile_size", crop, "the slice crop")
    return depth, in_plane


def _plane(view: str) -> tuple[int, int]:
    """The in-plane axes of slices along ``view``."""
    axis = AXES.index(view)
    a, b = (x for x in range(3) if x != axis)
    return a, b
