"""3D segmentation networks and :func:`build_model`.

Every network is a plain ``nn.Module`` with explicit typed init arguments that maps a tensor
``(B, in_channels, Z, Y, X)`` to logits ``(B, 1, Z, Y, X)`` (no sigmoid). Submodules import
torch (and MONAI) when first used, so importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vesselseg.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from vesselseg.config import ModelConfig

__all__ = [
    "build_model",
    "check_input_shape",
    "count_parameters",
    "for_volumes",
    "group_count",
    "is_slice_model",
]


def build_model(cfg: ModelConfig, in_channels: int = 1) -> nn.Module:
    """Build the network named by ``cfg.name`` with one logit channel: "vnet" or "unet" (3D),
    or "unet2d" (a :class:`~vesselseg.models.unet2d.SliceUNet` of ``cfg.context`` slices;
    :func:`for_volumes` turns it into a whole-tile network).

    Raises :class:`~vesselseg.errors.ConfigError` for an unknown name or a setting the chosen
    network cannot take.
    """
    kwargs = {
        "in_channels": in_channels,
        "out_channels": 1,
        "base_channels": cfg.base_channels,
        "depth": cfg.depth,
        "norm": cfg.norm,
        "groups": cfg.groups,
        "dropout": cfg.dropout,
    }
    if cfg.name == "vnet":
        from vesselseg.models.vnet import VNet

        return VNet(**kwargs)
    if cfg.name in ("unet", "unet2d") and cfg.depth < 2:
        raise ConfigError(f"model.depth: {cfg.name} needs depth >= 2, got {cfg.depth}")
    if cfg.name == "unet":
        from vesselseg.models.unet3d import UNet3D

        return UNet3D(**kwargs)
    if cfg.name == "unet2d":
        from vesselseg.models.unet2d import SliceUNet

        return SliceUNet(**kwargs, context=cfg.context)
    raise ConfigError(f"model.name: unknown model {cfg.name!r}")


def for_volumes(net: nn.Module, cfg: ModelConfig) -> nn.Module:
    """The network that maps a whole tile ``(B, 1, Z, Y, X)`` to same-shape output: 3D
    networks as they are, a 2D slice network wrapped to run along ``cfg.views`` and average."""
    if cfg.name != "unet2d":
        return net
    from vesselseg.models.unet2d import MultiAxisNet

    return MultiAxisNet(net, cfg.views)


def is_slice_model(cfg: ModelConfig) -> bool:
    """True for models trained on (2.5D) slices rather than 3D crops."""
    return cfg.name == "unet2d"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
    factor = 2 ** (depth - 1)
    spatial = tuple(int(s) for s in shape[2:])
    if any(s % factor for s in spatial):
        raise ValueError(
            f"{model}: input spatial shape {spatial} must be divisible by 2**(depth-1) = "
            f"{factor} (depth={depth}); pad or crop to a multiple of {factor}"
        )
