"""Network topology from voxel size, and the memory a training step needs. Pure functions.

**Pooling rule** (the idea of nnU-Net's ``get_pool_and_conv_props``, written afresh): starting
from the target spacing and the crop size, each down-sampling step halves the axes that

- still have at least ``2 * min_feature_map`` voxels (the bottleneck keeps ``min_feature_map``),
- and whose current spacing is within ``ratio`` (``plan.anisotropy_ratio``, 2) of the finest
  current spacing among those axes,

so a 5 x 1 x 1 µm stack is pooled ``(1, 2, 2)`` until its in-plane spacing has caught up with
z. Steps stop when no axis qualifies or at ``max_depth`` levels (at least 2 levels: the U-Net
needs one down-sampling). A convolution kernel spans an axis (3, or 5 for the V-Net) once that
axis has been pooled or its spacing is within ``ratio`` of the finest; before that it is 1
along the axis (a 2D convolution per slice), and once wide it stays wide.

**Memory estimate** (calibrated on CPU by counting the tensors autograd keeps for the
backward pass, within about +5..18 % over the count for depths 2-5, isotropic and anisotropic):
activations kept per voxel of a crop are ``sum_l f_l * C_l / r_l`` float32 values, with
``C_l = base_channels * 2**l`` channels at level ``l`` and ``r_l`` the product of all strides
down to it (voxels shrink by ``r_l``); ``f_l`` is 4 (encoder) + 15 (decoder, all but the
bottom level) for the residual U-Net and ``3n + 3`` + ``6n + 5`` for the V-Net (``n =
min(l + 1, 3)`` convolutions per stage), plus one ``C_{l-1} / r_{l-1}`` per V-Net
down-sampling (its input). One sample of a step needs ``BACKWARD_FACTOR`` times that (the
gradients in flight during the backward pass); the parameters need 16 bytes each (weights,
gradients and Adam's two moments).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BACKWARD_FACTOR = 1.5  # peak of a training step / activations kept for backward
BYTES_PER_PARAMETER = 16  # float32 weight + gradient + two Adam moments
KERNEL = {"unet": 3, "vnet": 5, "unet2d": 3}  # the kernel of an axis a convolution spans


@dataclass(frozen=True)
class Topology:
    """Levels of a network: ``strides`` (``depth - 1`` per-axis steps) and ``kernels``
    (``depth`` per-axis kernels), both ``(z, y, x)``."""

    strides: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        return len(self.kernels)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the product of its strides: every crop side must be a multiple of it."""
        dims = len(self.kernels[0])
        return tuple(math.prod(step[a] for step in self.strides) for a in range(dims))


def pool_schedule(
    spacing: Sequence[float],
    size: Sequence[float],
    ratio: float,
    min_feature_map: int,
    max_depth: int,
    depth: int | None = None,
    kernel: int = 3,
) -> Topology:
    """The pooling rule above for a crop of ``size`` voxels at ``spacing``; ``depth`` forces
    that many levels (a user's ``model.depth``), pooling what can still be halved."""
    spacing, size = [float(s) for s in spacing], [float(s) for s in size]
    dims = len(spacing)
    wide = [False] * dims
    levels = (depth if depth is not None else max_depth) - 1
    strides: list[tuple[int, ...]] = []
    kernels = [_kernels(spacing, wide, ratio, kernel)]
    while len(strides) < max(levels, 1):
        fits = [a for a in range(dims) if size[a] >= 2 * min_feature_map]
        if not fits and depth is None and strides:
            break
        fits = fits or [a for a in range(dims) if size[a] >= 2] or list(range(dims))
        finest = min(spacing[a] for a in fits)
        pooled = [a for a in fits if spacing[a] / finest < ratio]
        for a in pooled:
            spacing[a] *= 2
            size[a] /= 2
            wide[a] = True
        strides.append(tuple(2 if a in pooled else 1 for a in range(dims)))
        kernels.append(_kernels(spacing, wide, ratio, kernel))
    return Topology(tuple(strides), tuple(kernels))


def _kernels(spacing: list[float], wide: list[bool], ratio: float, kernel: int) -> tuple[int, ...]:
    """Per axis: ``kernel`` where the axis is wide (pooled before, or near the finest spacing;
    marks it wide for the levels below), else 1."""
    finest = min(spacing)
    for a, s in enumerate(spacing):
        wide[a] = wide[a] or s / finest < ratio
    return tuple(kernel if w else 1 for w in wide)


def activation_floats(name: str, base_channels: int, topology: Topology) -> float:
    """Float32 values a training step keeps per crop voxel and sample (formula above)."""
    total, reduction, previous = 0.0, 1.0, 0.0
    depth = topology.depth
    for level in range(depth):
        if level:
            reduction *= math.prod(topology.strides[level - 1])
        per_voxel = base_channels * 2**level / reduction  # channels x voxels, relative to crop
        inner = level < depth - 1
        if name == "vnet":
            n = min(level + 1, 3)
            total += (3 * n + 3 + (6 * n + 5 if inner else 0)) * per_voxel + previous
        else:
            total += (4 + (15 if inner else 0)) * per_voxel
        previous = per_voxel
    return total


def parameter_count(name: str, base_channels: int, topology: Topology, in_channels: int = 1) -> int:
    """Approximate trainable parameters (convolution weights; norms and biases are small)."""
    channels = [base_channels * 2**level for level in range(topology.depth)]
    total = 0
    for level, c in enumerate(channels):
        k = math.prod(topology.kernels[level])
        below = channels[level - 1] if level else in_channels
        if name == "vnet":
            n = min(level + 1, 3)
            step = math.prod(topology.strides[level - 1]) if level else k
            total += below * c * step + n * c * c * k
            if level < topology.depth - 1:
                total += 2 * c * c * math.prod(topology.strides[level]) + n * 4 * c * c * k
        else:
            total += 2 * below * c * k + c * c * k
            if level < topology.depth - 1:
                up = math.prod(topology.kernels[level + 1])
                total += 2 * c * c * up + 3 * c * c * k + 2 * c * c
    return int(total)


def training_bytes(
    name: str, base_channels: int, topology: Topology, crop: Sequence[int], batch: int
) -> float:
    """Estimated peak memory of one training step: ``batch`` crops of ``crop`` voxels (the
    formula above; ``crop`` may be 2D for a slice network, whose topology is then 2D)."""
    per_sample = 4 * activation_floats(name, base_channels, topology) * math.prod(crop)
    params = BYTES_PER_PARAMETER * parameter_count(name, base_channels, topology)
    return BACKWARD_FACTOR * per_sample * batch + params
