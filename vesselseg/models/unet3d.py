"""Residual U-Net built from MONAI blocks, in 3D (:class:`UNet3D`) or 2D (``spatial_dims=2``,
used by :mod:`vesselseg.models.unet2d`).

Level ``i`` holds ``C_i = base_channels * 2**i`` channels, ``i in range(depth)``:

- encoder: ``ResidualUnit`` (two 3x3(x3) conv + norm + dropout + PReLU subunits) per level, stride
  2 from level 1 on (the down-sampling is the residual unit's first conv, as MONAI's ``UNet``);
- decoder: 3x3(x3) stride-2 transposed ``Convolution`` ``C_{i+1} -> C_i``, concatenation with the
  encoder's level-``i`` output, ``ResidualUnit`` ``2 * C_i -> C_i``;
- head: 1x1(x1) conv ``C_0 -> out_channels`` logits (no sigmoid).

Unlike ``monai.networks.nets.UNet`` the last decoder layer keeps ``C_0`` channels, so no norm
layer ever sees a single channel and the logits come from a plain linear head.

Anisotropic data (``strides``/``kernels``, as ``vesselseg plan`` sets them): the stride of the
down-sampling into level ``i`` is ``strides[i - 1]`` per axis (and the up-sampling out of it
mirrors it), and the convolutions of level ``i`` use kernel ``kernels[i]`` per axis (the
up-sampling into level ``i`` uses ``kernels[i + 1]``, the kernel of the level it comes from).
Without them every stride is 2 and every kernel 3, exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from vesselseg.models.shapes import check_input_shape, group_count

NormKind = Literal["batch", "group"]


def _norm_arg(kind: NormKind, channels: int, groups: int) -> str | tuple:
    if kind == "batch":
        return "batch"
    if kind == "group":
        return ("group", {"num_groups": group_count(channels, groups)})
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class ResidualUNet(nn.Module):
    """Residual U-Net: ``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``
    with ``len(spatial) == spatial_dims`` (2 or 3).

    ``depth >= 2``. Every spatial side must be divisible by ``2 ** (depth - 1)`` (e.g. 8 for
    ``depth=4``); otherwise ``forward`` raises ``ValueError``. ``norm="group"`` uses GroupNorm
    with the largest group count ``<= min(groups, channels)`` that divides each layer's channels.
    ``dropout > 0`` adds channel dropout after every norm. ``strides`` (``depth - 1``
    per-axis steps of 1 or 2) and ``kernels`` (``depth`` odd per-axis kernels) make it
    anisotropic; a side must then be divisible by the product of its axis's strides.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 4,
        norm: NormKind = "batch",
        groups: int = 8,
        dropout: float = 0.0,
        spatial_dims: int = 3,
        strides: Sequence[Sequence[int]] | None = None,
        kernels: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if depth < 2:
            raise ValueError(f"{name}: depth must be >= 2, got {depth}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.depth = depth
        self.spatial_dims = spatial_dims
        self.strides = _per_level(strides, depth - 1, spatial_dims, "strides", name)
        step = self.strides or [2] * (depth - 1)  # the stride into level i is step[i - 1]
        kernel = _per_level(kernels, depth, spatial_dims, "kernels", name) or [3] * depth
        ch = [base_channels * 2**i for i in range(depth)]
        common = {
            "spatial_dims": spatial_dims,
            "dropout": dropout or None,
            "dropout_dim": spatial_dims,
        }

        self.encoder = nn.ModuleList(
            ResidualUnit(
                in_channels=in_channels if i == 0 else ch[i - 1],
                out_channels=ch[i],
                strides=1 if i == 0 else step[i - 1],
                kernel_size=kernel[i],
                subunits=2,
                norm=_norm_arg(norm, ch[i], groups),
                **common,
            )
            for i in range(depth)
        )
        self.upsample = nn.ModuleList(
            Convolution(
                in_channels=ch[i + 1],
                out_channels=ch[i],
                strides=step[i],
                kernel_size=kernel[i + 1],
                is_transposed=True,
                norm=_norm_arg(norm, ch[i], groups),
                **common,
            )
            for i in reversed(range(depth - 1))
        )
        self.decoder = nn.ModuleList(
            ResidualUnit(
                in_channels=2 * ch[i],
                out_channels=ch[i],
                kernel_size=kernel[i],
                subunits=2,
                norm=_norm_arg(norm, ch[i], groups),
                **common,
            )
            for i in reversed(range(depth - 1))
        )
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.head = conv(ch[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` for ``x`` of shape ``(B, C, *spatial)``."""
        check_input_shape(x.shape, self.depth, type(self).__name__, self.spatial_dims, self.strides)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsample, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def _per_level(
    values: Sequence[Sequence[int]] | None, count: int, dims: int, what: str, name: str
) -> list[tuple[int, ...]] | None:
    """``values`` as ``count`` per-axis tuples of ``dims`` ints (None stays None)."""
    if values is None:
        return None
    levels = [tuple(int(v) for v in level) for level in values]
    if len(levels) != count or any(len(level) != dims for level in levels):
        raise ValueError(f"{name}: {what} must be {count} tuples of {dims} ints, got {values}")
    return levels


class UNet3D(ResidualUNet):
    """The 3D :class:`ResidualUNet`: ``(B, C, Z, Y, X)`` -> ``(B, out_channels, Z, Y, X)``."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 4,
        norm: NormKind = "batch",
        groups: int = 8,
        dropout: float = 0.0,
        strides: Sequence[Sequence[int]] | None = None,
        kernels: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            base_channels,
            depth,
            norm,
            groups,
            dropout,
            spatial_dims=3,
            strides=strides,
            kernels=kernels,
        )
