"""Residual 3D U-Net built from MONAI blocks.

Level ``i`` holds ``C_i = base_channels * 2**i`` channels, ``i in range(depth)``:

- encoder: ``ResidualUnit`` (two 3x3x3 conv + norm + dropout + PReLU subunits) per level, stride
  2 from level 1 on (the down-sampling is the residual unit's first conv, as MONAI's ``UNet``);
- decoder: 3x3x3 stride-2 transposed ``Convolution`` ``C_{i+1} -> C_i``, concatenation with the
  encoder's level-``i`` output, ``ResidualUnit`` ``2 * C_i -> C_i``;
- head: 1x1x1 conv ``C_0 -> out_channels`` logits (no sigmoid).

Unlike ``monai.networks.nets.UNet`` the last decoder layer keeps ``C_0`` channels, so no norm
layer ever sees a single channel and the logits come from a plain linear head.
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from vesselseg.models import check_input_shape, group_count

NormKind = Literal["batch", "group"]


def _norm_arg(kind: NormKind, channels: int, groups: int) -> str | tuple:
    if kind == "batch":
        return "batch"
    if kind == "group":
        return ("group", {"num_groups": group_count(channels, groups)})
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class UNet3D(nn.Module):
    """Residual U-Net: ``(B, in_channels, Z, Y, X)`` -> logits ``(B, out_channels, Z, Y, X)``.

    ``depth >= 2``. Z, Y and X must each be divisible by ``2 ** (depth - 1)`` (e.g. 8 for
    ``depth=4``); otherwise ``forward`` raises ``ValueError``. ``norm="group"`` uses GroupNorm
    with the largest group count ``<= min(groups, channels)`` that divides each layer's channels.
    ``dropout > 0`` adds Dropout3d after every norm.
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
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"UNet3D: depth must be >= 2, got {depth}")
        self.depth = depth
        ch = [base_channels * 2**i for i in range(depth)]
        common = {"spatial_dims": 3, "dropout": dropout or None, "dropout_dim": 3}

        self.encoder = nn.ModuleList(
            ResidualUnit(
                in_channels=in_channels if i == 0 else ch[i - 1],
                out_channels=ch[i],
                strides=1 if i == 0 else 2,
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
                strides=2,
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
                subunits=2,
                norm=_norm_arg(norm, ch[i], groups),
                **common,
            )
            for i in reversed(range(depth - 1))
        )
        self.head = nn.Conv3d(ch[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, Z, Y, X)`` for ``x`` of shape ``(B, C, Z, Y, X)``."""
        check_input_shape(x.shape, self.depth, "UNet3D")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsample, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
