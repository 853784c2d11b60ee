"""The network side of inference: load a saved model, make it fast, wrap it as a predict function.

* :func:`load_model` reads ``NAME.pt`` + ``NAME.json`` (or a Lightning ``.ckpt``) with
  :func:`vesselseg.bundle.build_from_bundle`, or an ensemble file
  (:mod:`vesselseg.inference.ensemble`); ``models:/NAME@ALIAS`` is the registry issue's. 2D
  slice models come back wrapped to run along their views (:func:`vesselseg.models.for_volumes`).
* :func:`fold_batchnorm` folds eval-mode BatchNorm into the convolution before it (inside
  ``nn.Sequential`` containers, where the order of execution is the order of children), which
  removes one pass over every activation. The result equals the original up to float rounding.
* :func:`make_predict_fn` returns ``(B, 1, z, y, x)`` float32 → sigmoid probabilities (networks
  with ``outputs_probabilities = True`` already give probabilities), under
  ``torch.inference_mode``, with optional bf16 autocast and flip test-time augmentation: the mean
  over all 8 combinations of flipping the z, y and x axes (nnU-Net's ``mirror_axes=(0, 1, 2)``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vesselseg.errors import ConfigError

log = logging.getLogger(__name__)

FLIPS: list[tuple[int, ...]] = [
    tuple(axis for axis, on in zip((2, 3, 4), bits) if on)
    for bits in itertools.product((False, True), repeat=3)
]


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def load_model(source: str | Path) -> tuple[nn.Module, Any]:
    """``(network in eval mode, ModelMeta)`` from a model file, registry URI or ensemble file.

    The network maps a whole tile ``(B, 1, Z, Y, X)`` to a same-shape output.
    """
    from vesselseg.bundle import build_from_bundle
    from vesselseg.inference.ensemble import is_ensemble_file, load_ensemble
    from vesselseg.models import for_volumes
    from vesselseg.registry import resolve_model

    if is_ensemble_file(source):
        return load_ensemble(source)
    path = resolve_model(str(source))
    net, meta = build_from_bundle(path)
    return for_volumes(net, meta.model_config(str(path))).eval(), meta


def divisor(meta_model: dict[str, Any]) -> int:
    """Every tile side must be a multiple of this for the saved network (``2**(depth-1)``)."""
    from vesselseg.models.shapes import size_divisor

    return size_divisor(int(meta_model.get("depth", 1)))


CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_into(conv: nn.Module, bn: nn.BatchNorm3d) -> bool:
    """Fold ``bn`` into ``conv`` in place; False when the pair cannot be folded."""
    if not isinstance(conv, CONVS) or conv.groups != 1:
        return False
    if conv.weight.dim() != (4 if isinstance(bn, nn.BatchNorm2d) else 5):
        return False
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return False
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.affine:
            shift = shift + bn.bias
        out_dim = 1 if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
        shape = [1] * conv.weight.dim()
        shape[out_dim] = -1
        conv.weight.mul_(scale.reshape(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = bias * scale + shift
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)
    return True


def _leaves(seq: nn.Sequential) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, name, module)`` of the modules run in order by nested ``nn.Sequential``s."""
    out: list[tuple[nn.Module, str, nn.Module]] = []
    for name, child in seq.named_children():
        if isinstance(child, nn.Sequential):
            out.extend(_leaves(child))
        else:
            out.append((seq, name, child))
    return out


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every ``Conv → BatchNorm`` pair (2D or 3D) run back to back inside
    ``nn.Sequential`` containers (e.g. MONAI ``Convolution`` = conv + ADN) into the conv, in
    place. ``net`` must be in eval mode. Returns the number of folded pairs."""
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode")
    folded = 0
    outer = [m for m in net.modules() if isinstance(m, nn.Sequential)]
    nested = {
        id(c) for m in outer for c in m.modules() if c is not m and isinstance(c, nn.Sequential)
    }
    for seq in outer:
        if id(seq) in nested:
            continue
        leaves = _leaves(seq)
        for (_, _, conv), (parent, name, bn) in zip(leaves, leaves[1:]):
            if isinstance(bn, BATCH_NORMS) and _fold_into(conv, bn):
                setattr(parent, name, nn.Identity())
                folded += 1
    return folded


def prepare_network(net: nn.Module, device: torch.device, optimize: bool = True) -> nn.Module:
    """Eval mode on ``device``; on CPU with ``optimize``: BatchNorm folded, channels-last."""
    net = net.eval().to(device)
    if optimize:
        n = fold_batchnorm(net)
        log.debug("folded %d BatchNorm layers", n)
        if device.type == "cpu":
            for module in net.modules():  # 3D convs channels-last-3d, 2D convs channels-last
                weight = getattr(module, "weight", None)
                if isinstance(module, CONVS) and weight is not None:
                    fmt = torch.channels_last_3d if weight.dim() == 5 else torch.channels_last
                    module.to(memory_format=fmt)
    return net


def make_predict_fn(
    net: nn.Module,
    device: torch.device,
    precision: str = "32",
    tta: bool = False,
    channels_last: bool | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(B, 1, z, y, x)`` float32 (any device) → ``(B, 1, z, y, x)`` float32 probabilities on
    the CPU: ``sigmoid(net(x))`` (``net(x)`` itself for networks whose
    ``outputs_probabilities`` is True), averaged over the 8 flips when ``tta``."""
    if precision not in ("32", "bf16"):
        raise ConfigError(f"--precision: expected 32 or bf16, got {precision!r}")
    if channels_last is None:
        channels_last = device.type == "cpu"
    flips = FLIPS if tta else [()]
    from vesselseg.inference.ensemble import probabilities_of

    to_prob = probabilities_of(net)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                return net(x).float()
        return net(x)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(device, non_blocking=True)
            total: torch.Tensor | None = None
            for axes in flips:
                xin = torch.flip(x, axes) if axes else x
                prob = to_prob(forward(xin).float())
                prob = torch.flip(prob, axes) if axes else prob
                total = prob if total is None else total + prob
            assert total is not None
            if len(flips) > 1:
                total = total / len(flips)
            return total.to("cpu", torch.float32).contiguous()

    return predict
