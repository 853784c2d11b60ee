"""clDice (Shit et al., CVPR 2021): how well two masks agree on their centrelines.

With ``S(X)`` the 3D skeleton of mask ``X`` (scikit-image's ``skeletonize``, Lee's thinning)::

    Tprec  = |S(P) ∩ T| / |S(P)|      (topology precision: predicted centreline inside truth)
    Tsens  = |S(T) ∩ P| / |S(T)|      (topology sensitivity: true centreline that was found)
    clDice = 2 Tprec Tsens / (Tprec + Tsens)

Chunked: each z-slab of planes ``[z0, z1)`` is skeletonised together with ``halo`` planes on
either side, and only the skeleton voxels inside the core ``[z0, z1)`` are counted. This is an
approximation of the whole-volume skeleton: thinning is local — a voxel's fate depends on its
neighbourhood out to about the local vessel radius — so a slab's skeleton differs from the
global one only within roughly one radius of the slab's cut faces, and a halo wider than the
largest radius keeps those differences out of the counted core. On random tubes of radius 6–10
a halo of 8 already reproduced the whole-volume counts; the default of 16 leaves margin for
radii ~10 (a test checks chunked ≈ whole-volume). A budget large enough for one slab gives the
exact whole-volume value.

Conventions: both skeletons empty → clDice 1.0; one empty → its ratio is 0 and clDice 0.0.
Known limitation of the thinning (scikit-image issues #3757, #6513): some thick objects of even
width (e.g. an axis-aligned 8×8 bar) thin to nothing and so do not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vesselseg.metrics.slabs import (
    SLAB_BYTES,
    check_pair,
    pred_mask,
    read_clipped,
    slab_ranges,
    truth_mask,
)

SKELETON_HALO = 16  # planes; > the largest vessel radius expected (~10 voxels)
BYTES_PER_VOXEL = 16.0  # both inputs + masks + the thinning's uint8 working copies


@dataclass(frozen=True)
class ClDice:
    """Skeleton overlap counts and the scores derived from them."""

    skeleton_pred: int  # |S(P)|
    skeleton_pred_in_truth: int  # |S(P) ∩ T|
    skeleton_truth: int  # |S(T)|
    skeleton_truth_in_pred: int  # |S(T) ∩ P|

    @property
    def tprec(self) -> float:
        if self.skeleton_pred == 0:
            return 1.0 if self.skeleton_truth == 0 else 0.0
        return self.skeleton_pred_in_truth / self.skeleton_pred

    @property
    def tsens(self) -> float:
        if self.skeleton_truth == 0:
            return 1.0 if self.skeleton_pred == 0 else 0.0
        return self.skeleton_truth_in_pred / self.skeleton_truth

    @property
    def cldice(self) -> float:
        tprec, tsens = self.tprec, self.tsens
        return 2 * tprec * tsens / (tprec + tsens) if tprec + tsens else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cldice": self.cldice,
            "tprec": self.tprec,
            "tsens": self.tsens,
            "skeleton_pred_voxels": self.skeleton_pred,
            "skeleton_truth_voxels": self.skeleton_truth,
        }


def skeleton(mask: np.ndarray) -> np.ndarray:
    """3D skeleton of a boolean ``(z, y, x)`` mask, thinned only inside its bounding box.

    Thinning treats everything outside the array as background, so cropping to the bounding
    box gives the same skeleton for less work.
    """
    from skimage.morphology import skeletonize

    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    box = tuple(
        slice(int(np.argmax(axis_any)), len(axis_any) - int(np.argmax(axis_any[::-1])))
        for axis_any in (
            mask.any(axis=(1, 2)),
            mask.any(axis=(0, 2)),
            mask.any(axis=(0, 1)),
        )
    )
    out[box] = skeletonize(mask[box])
    return out


def core_skeleton(mask: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Skeleton of ``mask`` (a slab with its halo) restricted to planes ``[start, stop)``."""
    return skeleton(mask)[start:stop]


def cldice(
    pred: Any,
    truth: Any,
    threshold: float = 0.5,
    halo: int = SKELETON_HALO,
    slab_bytes: int = SLAB_BYTES,
) -> ClDice:
    """clDice of ``pred`` (thresholded) against dense ``truth`` (vessel = 1), slab by slab."""
    depth, height, width = check_pair(pred, truth)
    counts = np.zeros(4, dtype=np.int64)
    for z0, z1 in slab_ranges(depth, height * width, BYTES_PER_VOXEL, slab_bytes, halo):
        p_halo, p_lo = read_clipped(pred, z0 - halo, z1 + halo)
        p_mask = pred_mask(p_halo, threshold)
        t_halo, _ = read_clipped(truth, z0 - halo, z1 + halo)
        t_mask = truth_mask(t_halo)
        core = slice(z0 - p_lo, z1 - p_lo)
        s_pred = core_skeleton(p_mask, core.start, core.stop)
        s_truth = core_skeleton(t_mask, core.start, core.stop)
        counts += [
            np.count_nonzero(s_pred),
            np.count_nonzero(s_pred & t_mask[core]),
            np.count_nonzero(s_truth),
            np.count_nonzero(s_truth & p_mask[core]),
        ]
    return ClDice(*(int(c) for c in counts))
