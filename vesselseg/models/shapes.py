"""Shape rules shared by the networks: down-sampling divisors and normalisation groups.

Pure functions with no torch import, so configuration checks (training, tuning, inference
tiling) use the same rule as the networks themselves.
"""

from __future__ import annotations

from collections.abc import Sequence


def size_divisor(depth: int) -> int:
    """Every spatial side must be a multiple of this: a network of ``depth`` levels halves each
    axis ``depth - 1`` times, so ``2 ** (depth - 1)`` (1 for a depth below 2)."""
    return 2 ** max(int(depth) - 1, 0)


def group_count(channels: int, groups: int) -> int:
    """Largest number of GroupNorm groups ``<= min(groups, channels)`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def check_input_shape(shape: Sequence[int], depth: int, model: str, spatial_dims: int = 3) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``(B, C, *spatial)`` with ``spatial_dims`` sides,
    each divisible by ``2 ** (depth - 1)`` (the network halves each axis ``depth - 1`` times)."""
    if len(shape) != 2 + spatial_dims:
        axes = "(B, C, Z, Y, X)" if spatial_dims == 3 else "(B, C, Y, X)"
        raise ValueError(f"{model}: expected a {axes} tensor, got shape {tuple(shape)}")
    factor = size_divisor(depth)
    spatial = tuple(int(s) for s in shape[2:])
    if any(s % factor for s in spatial):
        raise ValueError(
            f"{model}: input spatial shape {spatial} must be divisible by 2**(depth-1) = "
            f"{factor} (depth={depth}); pad or crop to a multiple of {factor}"
        )
