"""3D segmentation networks and :func:`build_model`.

Every network is a plain ``nn.Module`` with explicit typed init arguments that maps a tensor
``(B, in_channels, Z, Y, X)`` to logits ``(B, 1, Z, Y, X)`` (no sigmoid). Submodules import
torch (and MONAI) when first used, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vesselseg.errors import ConfigError
from vesselseg.models.shapes import (
    check_input_shape,
    group_count,
    model_divisors,
    size_divisor,
    size_divisors,
)

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
    "model_divisors",
    "size_divisor",
    "size_divisors",
]


def build_model(cfg: ModelConfig, in_channels: int = 1) -> nn.Module:
    """Build the network named by ``cfg.name`` with one logit channel: "vnet" or "unet" (3D),
    or "unet2d" (a :class:`~vesselseg.models.unet2d.SliceUNet` of ``cfg.context`` slices;
    :func:`for_volumes` turns it into a whole-tile network). ``cfg.strides`` and
    ``cfg.kernels`` (anisotropic 3D networks) are ignored by ``unet2d``.

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
    per_axis = {"strides": cfg.strides, "kernels": cfg.kernels}  # the 3D networks' only
    if cfg.name == "vnet":
        from vesselseg.models.vnet import VNet

        return VNet(**kwargs, **per_axis)
    if cfg.name in ("unet", "unet2d") and cfg.depth < 2:
        raise ConfigError(f"model.depth: {cfg.name} needs depth >= 2, got {cfg.depth}")
    if cfg.name == "unet":
        from vesselseg.models.unet3d import UNet3D

        return UNet3D(**kwargs, **per_axis)
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
