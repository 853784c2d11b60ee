"""The network side of inference: load one saved network, make it fast, wrap it as a predict
function.

* :func:`load_network` reads ``NAME.pt`` + ``NAME.json`` (or a Lightning ``.ckpt``) with
  :func:`vesselseg.bundle.build_from_bundle`; 2D slice models come back wrapped to run along
  their views (:func:`vesselseg.models.for_volumes`). Ensembles and registry URIs are
  :func:`vesselseg.inference.loader.load_model`'s.
* :func:`fold_batchnorm` folds eval-mode BatchNorm into the convolution before it (inside
  ``nn.Sequential`` containers, where the order of execution is the order of children) with
  torch's ``fuse_conv_bn_eval``, which removes one pass over every activation. The result
  equals the original up to float rounding.
* :func:`make_predict_fn` returns ``(B, 1, z, y, x)`` float32 → sigmoid probabilities on the
  network's device (networks with ``outputs_probabilities = True`` already give
  probabilities), under ``torch.inference_mode``, with optional bf16/fp16 autocast and flip
  test-time augmentation: the mean over all 8 combinations of flipping the z, y and x axes
  (nnU-Net's ``mirror_axes=(0, 1, 2)``), the 8 copies batched through one network call.
* :func:`compile_network` wraps the network in ``torch.compile`` (``infer.compile``).
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


def load_network(path: str | Path) -> tuple[nn.Module, Any]:
    """``(network in eval mode, ModelMeta)`` of one saved model file (not an ensemble).

    The network maps a whole tile ``(B, 1, Z, Y, X)`` to a same-shape output.
    """
    from vesselseg.bundle import build_from_bundle
    from vesselseg.models import for_volumes

    net, meta = build_from_bundle(path)
    return for_volumes(net, meta.model_config(str(path))).eval(), meta


def probabilities_of(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns ``net``'s output into probabilities: sigmoid of logits, or nothing for
    networks whose ``outputs_probabilities`` is True (multi-axis 2D models, ensembles)."""
    return (lambda t: t) if getattr(net, "outputs_probabilities", False) else torch.sigmoid


def divisor(meta_model: dict[str, Any]) -> int:
    """Every tile side must be a multiple of this for the saved network (``2**(depth-1)``)."""
    from vesselseg.models.shapes import size_divisor

    return size_divisor(int(meta_model.get("depth", 1)))


CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
TRANSPOSED = (nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """True when ``bn`` can be folded into the ``conv`` run just before it."""
    if not isinstance(conv, CONVS) or not isinstance(bn, BATCH_NORMS) or conv.groups != 1:
        return False  # grouped transposed weights are laid out per group: not folded
    if conv.weight.dim() != (4 if isinstance(bn, nn.BatchNorm2d) else 5):
        return False
    return bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None


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
    """Fold every ``Conv → BatchNorm`` pair (2D or 3D, transposed too) run back to back inside
    ``nn.Sequential`` containers (e.g. MONAI ``Convolution`` = conv + ADN) into the conv, in
    place: the conv is replaced by torch's fused copy, the BatchNorm by ``nn.Identity``.
    ``net`` must be in eval mode. Returns the number of folded pairs."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

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
        for (conv_parent, conv_name, conv), (parent, name, bn) in zip(leaves, leaves[1:]):
            if _foldable(conv, bn):
                with torch.no_grad():
                    fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, TRANSPOSED))
                setattr(conv_parent, conv_name, fused)
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


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compile_network(net: nn.Module) -> nn.Module:
    """``torch.compile(net)``: compiled on the first call (tens of seconds), faster after.
    The predict function pads batches to one size (``pad_to``) so it compiles once."""
    return torch.compile(net, dynamic=False)  # type: ignore[return-value]


CPU_MIN_WINDOWS = 2  # windows per CPU network call at least (see make_predict_fn)


def make_predict_fn(
    net: nn.Module,
    device: torch.device,
    precision: str = "32",
    tta: bool = False,
    channels_last: bool | None = None,
    pad_to: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(B, 1, z, y, x)`` float32 (any device) → ``(B, 1, z, y, x)`` float32 probabilities on
    ``device``: ``sigmoid(net(x))`` (``net(x)`` itself for networks whose
    ``outputs_probabilities`` is True), averaged over the 8 flips when ``tta``.

    ``precision`` ``bf16`` or ``fp16`` runs the network under autocast (fp16: CUDA only). With
    ``tta`` the 8 flipped copies of the batch go through the network in one call (a batch of
    ``8 B``), not in a loop. ``pad_to`` pads a shorter batch with zeros to that many windows
    before the network (and drops the extra outputs), so a compiled network sees one shape.

    On the CPU a network call is never given a single window: PyTorch's CPU 3D convolutions
    run a batch of one several times slower than a batch of two (measured 8-10x per window
    on torch 2.13: the oneDNN path is not taken for ``N = 1``), so a lone window (the tail
    of a volume, a batch thinned by ``skip_empty``, ``batch_size: 1``) is padded with a zero
    window, whose output is dropped."""
    if precision not in ("32", "bf16", "fp16"):
        raise ConfigError(f"--precision: expected 32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs CUDA; use bf16 on the CPU")
    if channels_last is None:
        channels_last = device.type == "cpu"
    flips = FLIPS if tta else [()]
    to_prob = probabilities_of(net)
    size = None if pad_to is None else pad_to * len(flips)  # windows per network call
    least = CPU_MIN_WINDOWS if device.type == "cpu" else 1

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        target = max(size or n, least)
        if n < target:
            x = torch.cat([x, x.new_zeros((target - n, *x.shape[1:]))])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if precision in AUTOCAST:
            with torch.autocast(device_type=device.type, dtype=AUTOCAST[precision]):
                out = net(x)
        else:
            out = net(x)
        return to_prob(out.float())[:n]

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(device, non_blocking=True)
            if len(flips) == 1:
                return forward(x).contiguous()
            stacked = torch.cat([torch.flip(x, axes) if axes else x for axes in flips])
            probs = forward(stacked).chunk(len(flips))
            total = probs[0]
            for axes, prob in zip(flips[1:], probs[1:]):
                total = total + torch.flip(prob, axes)
            return (total / len(flips)).contiguous()

    return predict
