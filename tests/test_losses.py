"""Masked Dice + BCE loss and hard Dice score on literal tensors."""

from __future__ import annotations

import math

import pytest
import torch

from vesselseg.losses import masked_dice_bce_loss, masked_dice_score

# (1, 1, 2, 2): vessel, background / not annotated, vessel
LOGITS_2X2 = [[[[0.0, 2.0], [-1.0, 5.0]]]]
TARGET_2X2 = [[[[1, 2], [0, 1]]]]


def _volume() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    return logits, target


def test_bce_matches_hand_computation_on_2x2() -> None:
    logits, target = torch.tensor(LOGITS_2X2), torch.tensor(TARGET_2X2)
    loss = masked_dice_bce_loss(logits, target, dice_weight=0.0, bce_weight=1.0)
    # -log(sigmoid(0)), -log(1 - sigmoid(2)), -log(sigmoid(5)); the label-0 voxel is ignored
    expected = (math.log(2.0) + math.log1p(math.exp(2.0)) + math.log1p(math.exp(-5.0))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_matches_hand_computation_on_2x2() -> None:
    logits, target = torch.tensor(LOGITS_2X2), torch.tensor(TARGET_2X2)
    loss = masked_dice_bce_loss(logits, target, dice_weight=1.0, bce_weight=0.0, smooth=1.0)
    s = [1 / (1 + math.exp(-v)) for v in (0.0, 2.0, 5.0)]  # annotated probabilities
    dice = (2 * (s[0] + s[2]) + 1) / (sum(s) + 2 + 1)
    assert loss.item() == pytest.approx(1 - dice, rel=1e-6)


def test_unannotated_voxels_get_exactly_zero_gradient() -> None:
    logits, target = _volume()
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(masked_dice_bce_loss(logits, target), logits)
    assert torch.all(grad[target == 0] == 0)
    assert torch.all(grad[target > 0] != 0)


def test_logits_at_label_0_do_not_change_the_loss() -> None:
    logits, target = _volume()
    changed = logits.clone()
    changed[target == 0] = torch.tensor([1e4, -1e4, float("inf"), float("nan")]).repeat(
        int((target == 0).sum()) // 4 + 1
    )[: int((target == 0).sum())]
    assert torch.equal(masked_dice_bce_loss(logits, target), masked_dice_bce_loss(changed, target))
    assert masked_dice_score(logits, target) == masked_dice_score(changed, target, from_logits=True)


def test_perfect_logits_give_zero_loss_and_dice_one() -> None:
    _, target = _volume()
    logits = torch.where(target == 1, 30.0, -30.0)
    logits[target == 0] = 30.0  # wrong but unannotated
    assert masked_dice_bce_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_dice_score(logits, target) == 1.0


def test_inverted_logits_give_dice_zero_and_high_loss() -> None:
    _, target = _volume()
    logits = torch.where(target == 1, -30.0, 30.0)
    assert masked_dice_score(logits, target) == 0.0
    assert masked_dice_bce_loss(logits, target).item() > 10


def test_dice_score_on_probabilities_and_threshold() -> None:
    target = torch.tensor([[[[1, 1], [2, 0]]]])
    probs = torch.tensor([[[[0.9, 0.4], [0.6, 1.0]]]])
    # threshold 0.5: P = {(0,0), (1,0)} (label-0 voxel dropped), T = {(0,0), (0,1)}
    assert masked_dice_score(probs, target) == pytest.approx(2 * 1 / 4)
    assert masked_dice_score(probs, target, threshold=0.3) == pytest.approx(2 * 2 / 5)
    logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4))
    assert masked_dice_score(logits, target, from_logits=True) == pytest.approx(0.5)


def test_all_unannotated_batch_gives_zero_with_grad() -> None:
    logits = torch.randn(2, 1, 3, 3, 3, requires_grad=True)
    target = torch.zeros(2, 1, 3, 3, 3, dtype=torch.long)
    loss = masked_dice_bce_loss(logits, target)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_2d_and_3d_shapes_agree() -> None:
    logits, target = _volume()
    loss3d = masked_dice_bce_loss(logits, target)
    loss2d = masked_dice_bce_loss(logits.reshape(2, 1, 16, 4), target.reshape(2, 1, 16, 4))
    assert loss2d.shape == ()
    assert loss2d.item() == pytest.approx(loss3d.item(), rel=1e-6)
    assert masked_dice_score(logits.reshape(8, 1, 4, 4), target.reshape(8, 1, 4, 4)) == (
        masked_dice_score(logits, target)
    )


def test_weights_combine_linearly_and_uint8_targets_work() -> None:
    logits, target = _volume()
    target = target.to(torch.uint8)
    dice = masked_dice_bce_loss(logits, target, dice_weight=1.0, bce_weight=0.0)
    bce = masked_dice_bce_loss(logits, target, dice_weight=0.0, bce_weight=1.0)
    both = masked_dice_bce_loss(logits, target, dice_weight=0.5, bce_weight=2.0)
    assert both.item() == pytest.approx(0.5 * dice.item() + 2.0 * bce.item(), rel=1e-6)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape|one shape"):
        masked_dice_bce_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
