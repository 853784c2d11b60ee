"""2D / 2.5D U-Net applied slice by slice, and its multi-axis ("multiview") wrapper.

Seed 004 trains 2D models on slices taken along all three axes of each volume and averages
the three predictions. Here a 2D model is a 3D operator with a thin receptive field:

* :class:`SliceUNet` — a 2D :class:`~vesselseg.models.unet3d.ResidualUNet` whose ``k =
  context`` input channels are ``k`` neighbouring slices (2.5D; ``k = 1`` is plain 2D). It maps
  ``(B, 1, D, H, W)`` to logits ``(B, 1, D - k + 1, H, W)``: one output slice per full stack of
  ``k`` input slices ("valid" along the first spatial axis, "same" in-plane). Training feeds
  ``k``-slice crops and gets the centre slice's logits.
* :class:`MultiAxisNet` — inference: a 3D tile ``(B, 1, Z, Y, X)`` is sliced along each
  chosen axis (edge-replicated by ``k // 2`` slices so the output keeps the tile's shape), each
  axis gives probabilities, and their mean is returned (``outputs_probabilities = True``
  tells :func:`vesselseg.inference.network.make_predict_fn` not to apply a sigmoid again).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vesselseg.models.unet3d import NormKind, ResidualUNet

AXES = {"z": 0, "y": 1, "x": 2}


class SliceUNet(nn.Module):
    """2.5D U-Net: ``(B, 1, D, H, W)`` -> logits ``(B, 1, D - context + 1, H, W)``.

    ``context`` (odd) neighbouring slices along D are the input channels of a 2D residual U-Net
    (``depth``, ``base_channels``, ``norm`` as the 3D one); H and W must be divisible by
    ``2 ** (depth - 1)``. Slices go through the 2D network ``chunk`` at a time so a large tile
    never holds every slice's activations at once.
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
        context: int = 1,
        chunk: int = 64,
    ) -> None:
        super().__init__()
        if in_channels != 1 or out_channels != 1:
            raise ValueError("SliceUNet: one input and one output channel (volumes are grey)")
        if context < 1 or context % 2 == 0:
            raise ValueError(f"SliceUNet: context must be odd and >= 1, got {context}")
        self.context = context
        self.depth = depth
        self.chunk = chunk
        self.unet = ResidualUNet(
            context, 1, base_channels, depth, norm, groups, dropout, spatial_dims=2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, D - k + 1, H, W)`` for ``x`` ``(B, 1, D, H, W)``, ``k = context``."""
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"SliceUNet: expected (B, 1, D, H, W), got {tuple(x.shape)}")
        b, _, d, h, w = x.shape
        k = self.context
        if d < k:
            raise ValueError(f"SliceUNet: needs at least {k} slices along D, got {d}")
        n = d - k + 1
        # (B, n, H, W, k) -> (B * n, k, H, W): one k-channel image per output slice
        stacks = x[:, 0].unfold(1, k, 1).permute(0, 1, 4, 2, 3).reshape(b * n, k, h, w)
        outs = [self.unet(part) for part in torch.split(stacks, self.chunk)]
        return torch.cat(outs).reshape(b, n, h, w).unsqueeze(1)


def axis_indices(views: Sequence[str]) -> tuple[int, ...]:
    """``["z", "x"]`` -> ``(0, 2)``; raises ``ValueError`` for an unknown or repeated axis."""
    axes = tuple(AXES[v] for v in views if v in AXES)
    if len(axes) != len(views) or len(set(axes)) != len(axes) or not axes:
        raise ValueError(f"views must be distinct axes among z, y, x, got {list(views)}")
    return axes


class MultiAxisNet(nn.Module):
    """``(B, 1, Z, Y, X)`` -> probabilities ``(B, 1, Z, Y, X)``: the mean over ``views`` of
    ``sigmoid(slice_net)`` applied slice by slice along each axis.

    Along the slicing axis the tile is edge-replicated by ``context // 2`` slices, so every
    output slice has a full stack; only a tile's outermost slices see replicated context, and
    overlapping windows with Gaussian blending give those little weight.
    """

    outputs_probabilities = True

    def __init__(self, slice_net: SliceUNet, views: Sequence[str] = ("z", "y", "x")) -> None:
        super().__init__()
        self.slice_net = slice_net
        self.axes = axis_indices(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.slice_net.context // 2
        total: torch.Tensor | None = None
        for axis in self.axes:
            along = x.movedim(2 + axis, 2)
            if half:
                along = F.pad(along, (0, 0, 0, 0, half, half), mode="replicate")
            prob = torch.sigmoid(self.slice_net(along).float()).movedim(2, 2 + axis)
            total = prob if total is None else total + prob
        assert total is not None
        return total / len(self.axes)
