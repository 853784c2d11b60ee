"""Losses and a metric that ignore unannotated voxels.

Targets hold the label codes used on disk: 0 = not annotated, 1 = vessel (positive),
2 = background (negative). Label-0 voxels contribute nothing to the loss and receive exactly
zero gradient. Shapes are ``(B, 1, Z, Y, X)`` (or ``(B, 1, Y, X)`` for 2D); ``logits`` and
``target`` must have the same shape. Argument order is always ``(logits, target)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_dice_bce_loss", "masked_dice_score"]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have one shape"
        )


def masked_dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``dice_weight * soft Dice loss + bce_weight * BCE`` over annotated voxels only.

    Args:
        logits: raw network outputs, ``(B, 1, Z, Y, X)`` or ``(B, 1, Y, X)``, any float dtype.
        target: labels of the same shape, 0 = not annotated, 1 = vessel, 2 = background.
        dice_weight: weight of ``1 - soft Dice``.
        bce_weight: weight of binary cross-entropy.
        smooth: added to numerator and denominator of the soft Dice.

    BCE is the mean over annotated voxels. Soft Dice is computed once over the whole batch on
    annotated voxels: ``(2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p`` the
    sigmoid probabilities and ``t`` the vessel indicator, both zero at label 0. A batch without
    annotated voxels gives a zero loss that still has a (zero) gradient.

    Returns:
        A float32 scalar tensor.
    """
    _check_shapes(logits, target)
    logits = logits.float()
    annotated = target > 0
    positive = (target == 1).float()
    zero = logits.new_zeros(())

    bce = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
    bce = torch.where(annotated, bce, zero).sum() / annotated.sum().clamp_min(1)

    probs = torch.where(annotated, torch.sigmoid(logits), zero)
    intersection = (probs * positive).sum()
    dice = (2 * intersection + smooth) / (probs.sum() + positive.sum() + smooth)
    return dice_weight * (1 - dice) + bce_weight * bce


@torch.no_grad()
def masked_dice_score(
    logits_or_probs: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.5,
    from_logits: bool | None = None,
) -> float:
    """Hard Dice of the thresholded prediction against vessel labels on annotated voxels.

    Args:
        logits_or_probs: ``(B, 1, Z, Y, X)`` or ``(B, 1, Y, X)`` logits or probabilities.
        target: labels of the same shape, 0 = not annotated, 1 = vessel, 2 = background.
        threshold: probability above which a voxel is predicted vessel.
        from_logits: whether the input holds logits; ``None`` guesses: logits unless every
            value lies in [0, 1]. Pass it explicitly when you know.

    Returns:
        ``2 |P & T| / (|P| + |T|)`` over the whole batch, counting only label-1/2 voxels;
        1.0 when prediction and vessel labels are both empty there.
    """
    _check_shapes(logits_or_probs, target)
    values = logits_or_probs.float()
    if from_logits is None:
        from_logits = bool(values.min() < 0 or values.max() > 1)
    probs = torch.sigmoid(values) if from_logits else values
    annotated = target > 0
    pred = (probs > threshold) & annotated
    truth = target == 1
    denominator = int(pred.sum() + truth.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int((pred & truth).sum()) / denominator
