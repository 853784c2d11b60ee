"""V-Net (Milletari, Navab & Ahmadi, 2016) for binary 3D segmentation.

Layout for ``depth`` levels, level ``l`` holding ``C_l = base_channels * 2**l`` channels:

- input transition: 5x5x5 conv to ``C_0`` + norm, plus the input repeated to ``C_0`` channels
  (residual), PReLU;
- down transition to level ``l``: 2x2x2 stride-2 conv ``C_{l-1} -> C_l`` + norm + PReLU, then a
  residual stage of ``min(l + 1, 3)`` (5x5x5 conv + norm + PReLU) layers (1, 2, 3, 3, ... as the
  paper);
- up transition to level ``l``: 2x2x2 stride-2 transposed conv to ``C_l`` channels + norm +
  PReLU, concatenated with the encoder's level-``l`` output (``2 * C_l`` channels), then a
  residual stage of ``min(l + 1, 3)`` layers;
- output: 1x1x1 conv to ``out_channels`` logits (no sigmoid).

Dropout3d (when ``dropout > 0``) sits where the paper's reference code has it: on the input of
the down and up transitions of the two deepest levels.

Anisotropic data (``strides``/``kernels``, as ``vesselseg plan`` sets them): the down and up
transitions of level ``l`` use kernel = stride = ``strides[l - 1]`` per axis instead of 2x2x2,
and the 5x5x5 convolutions of level ``l`` (input transition for level 0) use ``kernels[l]``.
Without them the network is exactly the isotropic one above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from vesselseg.models.shapes import check_input_shape, group_count

NormKind = Literal["batch", "group"]
Axes = int | tuple[int, ...]  # one size for every axis, or (z, y, x)


def _norm(kind: NormKind, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels, groups), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


def _n_convs(level: int) -> int:
    return min(level + 1, 3)


def _dropout(p: float) -> nn.Module:
    return nn.Dropout3d(p) if p > 0 else nn.Identity()


class _ResidualStage(nn.Module):
    """``n`` (5x5x5, or ``kernel``, conv + norm + PReLU) layers added to their input, then
    PReLU."""

    def __init__(
        self, channels: int, n_convs: int, norm: NormKind, groups: int, kernel: Axes = 5
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [
                nn.Conv3d(channels, channels, kernel, padding=_half(kernel), bias=False),
                _norm(norm, channels, groups),
                nn.PReLU(channels),
            ]
        self.convs = nn.Sequential(*layers)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


def _half(kernel: Axes) -> Axes:
    """The "same" padding of an odd kernel."""
    return kernel // 2 if isinstance(kernel, int) else tuple(k // 2 for k in kernel)


class _InputTransition(nn.Module):
    def __init__(
        self, in_channels: int, channels: int, norm: NormKind, groups: int, kernel: Axes = 5
    ) -> None:
        super().__init__()
        self.channels = channels
        self.repeats = math.ceil(channels / in_channels)
        self.conv = nn.Conv3d(in_channels, channels, kernel, padding=_half(kernel), bias=False)
        self.norm = _norm(norm, channels, groups)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if x.shape[1] == 1 else x.repeat(1, self.repeats, 1, 1, 1)[:, : self.channels]
        return self.act(self.norm(self.conv(x)) + skip)


class _DownTransition(nn.Module):
    def __init__(
        self,
        in_channels: int,
        n_convs: int,
        norm: NormKind,
        groups: int,
        dropout: float,
        stride: Axes = 2,
        kernel: Axes = 5,
    ) -> None:
        super().__init__()
        out = 2 * in_channels
        self.down = nn.Sequential(
            nn.Conv3d(in_channels, out, stride, stride=stride, bias=False),
            _norm(norm, out, groups),
            nn.PReLU(out),
        )
        self.drop = _dropout(dropout)
        self.stage = _ResidualStage(out, n_convs, norm, groups, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.drop(self.down(x)))


class _UpTransition(nn.Module):
    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        n_convs: int,
        norm: NormKind,
        groups: int,
        dropout: float,
        stride: Axes = 2,
        kernel: Axes = 5,
    ) -> None:
        super().__init__()
        self.drop = _dropout(dropout)
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, skip_channels, stride, stride=stride, bias=False),
            _norm(norm, skip_channels, groups),
            nn.PReLU(skip_channels),
        )
        self.stage = _ResidualStage(2 * skip_channels, n_convs, norm, groups, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(torch.cat([self.up(self.drop(x)), skip], dim=1))


def _levels(values: Sequence[Sequence[int]] | None, count: int, what: str) -> list | None:
    """``values`` as ``count`` ``(z, y, x)`` tuples (None stays None)."""
    if values is None:
        return None
    levels = [tuple(int(v) for v in level) for level in values]
    if len(levels) != count or any(len(level) != 3 for level in levels):
        raise ValueError(f"VNet: {what} must be {count} (z, y, x) tuples, got {values}")
    return levels


class VNet(nn.Module):
    """V-Net: ``(B, in_channels, Z, Y, X)`` -> logits ``(B, out_channels, Z, Y, X)``.

    Z, Y and X must each be divisible by ``2 ** (depth - 1)`` (e.g. 8 for ``depth=4``);
    otherwise ``forward`` raises ``ValueError``. ``norm="group"`` uses GroupNorm with the
    largest group count ``<= min(groups, channels)`` that divides each layer's channels.
    ``dropout > 0`` adds Dropout3d to the two deepest levels. ``strides`` (``depth - 1``
    ``(z, y, x)`` steps of 1 or 2) and ``kernels`` (``depth`` odd ``(z, y, x)`` kernels) make
    it anisotropic; a side must then be divisible by the product of its axis's strides.
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
        strides: Sequence[Sequence[int]] | None = None,
        kernels: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"VNet: depth must be >= 1, got {depth}")
        self.depth = depth
        self.strides = _levels(strides, depth - 1, "strides")
        step: list[Axes] = list(self.strides or [2] * (depth - 1))  # into level l: step[l - 1]
        kernel: list[Axes] = list(_levels(kernels, depth, "kernels") or [5] * depth)
        ch = [base_channels * 2**level for level in range(depth)]
        deep = max(1, depth - 2)  # first level that gets dropout

        self.input = _InputTransition(in_channels, ch[0], norm, groups, kernel[0])
        self.downs = nn.ModuleList(
            _DownTransition(
                ch[level - 1],
                _n_convs(level),
                norm,
                groups,
                dropout if level >= deep else 0.0,
                step[level - 1],
                kernel[level],
            )
            for level in range(1, depth)
        )
        ups: list[nn.Module] = []
        below = ch[-1]  # channels coming up from the level below
        for level in reversed(range(depth - 1)):
            p = dropout if level + 1 >= deep else 0.0
            ups.append(
                _UpTransition(
                    below, ch[level], _n_convs(level), norm, groups, p, step[level], kernel[level]
                )
            )
            below = 2 * ch[level]
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv3d(below, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, Z, Y, X)`` for ``x`` of shape ``(B, C, Z, Y, X)``."""
        check_input_shape(x.shape, self.depth, "VNet", strides=self.strides)
        skips = [self.input(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        out = skips.pop()
        for up in self.ups:
            out = up(out, skips.pop())
        return self.head(out)
