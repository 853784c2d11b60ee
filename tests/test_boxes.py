"""The person-like sparse boxes drawn from a dense truth (vesselseg.synth.boxes)."""

from __future__ import annotations

import numpy as np
import pytest

from vesselseg.synth.boxes import Box, boxes_mask, dense_mask, draw_boxes


def vessel_truth(shape=(15, 200, 240), seed: int = 3) -> np.ndarray:
    """Random thin tubes along y and x on every slice, a few percent of the voxels."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    for z in range(shape[0]):
        for _ in range(3):
            truth[z, int(rng.integers(shape[1])), :] = 1
            truth[z, :, int(rng.integers(shape[2]))] = 1
    return truth


def test_boxes_reach_the_fraction_hold_vessel_and_lie_on_distinct_slices() -> None:
    truth = vessel_truth()
    boxes = draw_boxes(truth, fraction=0.01, side=64, seed=0)
    # fewest whole 64 x 64 boxes reaching 1 % of 15 * 200 * 240 voxels: ceil(7200 / 4096) = 2
    assert len(boxes) == 2
    assert len({b.z for b in boxes}) == len(boxes)
    mask = boxes_mask(truth, boxes)
    inside = np.zeros(truth.shape, bool)
    for b in boxes:
        assert (b.y1 - b.y0, b.x1 - b.x0) == (64, 64)
        assert 0 <= b.y0 and b.y1 <= 200 and 0 <= b.x0 and b.x1 <= 240
        assert truth[b.region()].any()  # centred around a vessel
        inside[b.region()] = True
    assert np.count_nonzero(mask) == inside.sum() == 2 * 64 * 64
    assert 0.01 <= np.count_nonzero(mask) / mask.size < 0.02
    assert not mask[~inside].any()  # 0 outside every box
    assert np.array_equal(mask[inside], np.where(truth[inside] > 0, 1, 2))  # 1 vessel, 2 not


def test_boxes_are_seeded_and_exclude_slices() -> None:
    truth = vessel_truth()
    a = draw_boxes(truth, 0.01, 64, seed=5)
    assert a == draw_boxes(truth, 0.01, 64, seed=5)
    assert a != draw_boxes(truth, 0.01, 64, seed=6)
    val = draw_boxes(truth, side=64, seed=9, n_boxes=3, exclude=a)
    assert len(val) == 3 and not {b.z for b in val} & {b.z for b in a}


def test_boxes_clip_to_the_plane_and_need_vessel() -> None:
    truth = np.zeros((3, 40, 50), np.uint8)
    truth[1, 39, 49] = 1  # one vessel pixel in a corner of one slice
    (box,) = draw_boxes(truth, side=128, seed=0, n_boxes=1)
    assert box == Box(1, 0, 40, 0, 50)  # the whole plane: the side is clipped to it
    with pytest.raises(ValueError, match="no vessel"):
        draw_boxes(np.zeros((3, 8, 8), np.uint8))
    assert np.array_equal(dense_mask(truth), np.where(truth, 1, 2))
