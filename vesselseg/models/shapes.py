"""Shape rules shared by the networks: down-sampling divisors and normalisation groups.

Pure functions with no torch import, so configuration checks (training, tuning, inference
tiling) use the same rule as the networks themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

AXES = ("z", "y", "x")


def size_divisor(depth: int) -> int:
    """Every spatial side must be a multiple of this: a network of ``depth`` levels halves each
    axis ``depth - 1`` times, so ``2 ** (depth - 1)`` (1 for a depth below 2)."""
    return 2 ** max(int(depth) - 1, 0)


def size_divisors(
    depth: int, strides: Sequence[Sequence[int]] | None = None, spatial_dims: int = 3
) -> tuple[int, ...]:
    """Per-axis divisors ``(dz, dy, dx)``: the product of each axis's strides over the
    ``depth - 1`` down-sampling steps; ``strides=None`` is stride 2 on every axis, which gives
    :func:`size_divisor` on each."""
    if strides is None:
        return (size_divisor(depth),) * spatial_dims
    return tuple(math.prod(int(step[a]) for step in strides) for a in range(spatial_dims))


def model_divisors(model: Mapping[str, Any] | Any) -> tuple[int, int, int]:
    """``(dz, dy, dx)`` every tile or crop side must be a multiple of, for a model's settings
    (a :class:`~vesselseg.config.ModelConfig` or its dict, as saved in a bundle).

    3D networks: :func:`size_divisors` of ``depth`` and ``strides``. ``unet2d`` pools only the
    in-plane axes of its ``views``; an axis that is in-plane for no view is free (1).
    """
    get = model.get if isinstance(model, Mapping) else lambda k, d=None: getattr(model, k, d)
    depth = int(get("depth", 1))
    if get("name") != "unet2d":
        return size_divisors(depth, get("strides"))  # type: ignore[return-value]
    views = [AXES.index(v) for v in get("views", AXES) or AXES]
    in_plane = {a for v in views for a in range(3) if a != v}
    return tuple(size_divisor(depth) if a in in_plane else 1 for a in range(3))  # type: ignore[return-value]


def group_count(channels: int, groups: int) -> int:
    """Largest number of GroupNorm groups ``<= min(groups, channels)`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def check_input_shape(
    shape: Sequence[int],
    depth: int,
    model: str,
    spatial_dims: int = 3,
    strides: Sequence[Sequence[int]] | None = None,
) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``(B, C, *spatial)`` with ``spatial_dims`` sides,
    each divisible by its :func:`size_divisors` (``2 ** (depth - 1)`` without ``strides``: the
    network halves each axis ``depth - 1`` times)."""
    if len(shape) != 2 + spatial_dims:
        axes = "(B, C, Z, Y, X)" if spatial_dims == 3 else "(B, C, Y, X)"
        raise ValueError(f"{model}: expected a {axes} tensor, got shape {tuple(shape)}")
    spatial = tuple(int(s) for s in shape[2:])
    if strides is None:
        factor = size_divisor(depth)
        if any(s % factor for s in spatial):
            raise ValueError(
                f"{model}: input spatial shape {spatial} must be divisible by 2**(depth-1) = "
                f"{factor} (depth={depth}); pad or crop to a multiple of {factor}"
            )
        return
    factors = size_divisors(depth, strides, spatial_dims)
    if any(s % f for s, f in zip(spatial, factors, strict=True)):
        raise ValueError(
            f"{model}: input spatial shape {spatial} must be divisible by {factors} per axis "
            f"(the product of each axis's strides); pad or crop to multiples of {factors}"
        )
