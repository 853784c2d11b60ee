"""Voxel confusion counts → Dice, IoU, precision, recall; counts for many thresholds in one pass.

Truth is either *dense* (0/1 or bool: every voxel counts, 1 = vessel) or *sparse* 0/1/2
(0 = not annotated, 1 = vessel, 2 = background; only annotated voxels count). The prediction is
a 0/1 (or bool) mask, or float probabilities, positive where ``p >= threshold``.

One pass tabulates, per slab, the voxels of each truth code (0, 1, 2) against the prediction, so
the dense/sparse reading can be chosen after the pass ("auto": sparse iff a 2 occurs). For a
threshold sweep the same pass histograms, per truth code, how many of the (sorted) thresholds
each probability reaches; reverse cumulative sums of those histograms give the counts at every
threshold, exactly equal to thresholding one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vesselseg.errors import LabelValueError, NonFiniteError
from vesselseg.metrics.slabs import SLAB_BYTES, check_pair, pred_mask, slab_ranges

BYTES_PER_VOXEL = 16.0  # prediction (float32) + truth + codes + bincount's intp copy
SWEEP_BYTES_PER_VOXEL = 24.0  # + searchsorted levels (intp) and the combined histogram index


def ratio(num: float, den: float) -> float:
    """``num / den``, with ``0 / 0`` taken as 1.0 (nothing to find and nothing wrongly found)."""
    return float(num) / float(den) if den else 1.0


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of a binary prediction against truth (annotated voxels only when sparse)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def dice(self) -> float:
        """``2 TP / (2 TP + FP + FN)``; 1.0 when truth and prediction are both empty."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """``TP / (TP + FP + FN)``; 1.0 when both are empty."""
        return ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``; 1.0 when nothing is predicted."""
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)``; 1.0 when the truth holds no vessel."""
        return ratio(self.tp, self.tp + self.fn)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "dice": self.dice,
            "iou": self.iou,
            "precision": self.precision,
            "recall": self.recall,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


@dataclass(frozen=True)
class SweepCounts:
    """Confusion counts at each of ``thresholds`` (arrays of shape ``(n,)``, in given order)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    def at(self, i: int) -> Confusion:
        return Confusion(int(self.tp[i]), int(self.fp[i]), int(self.fn[i]), int(self.tn[i]))

    def __add__(self, other: SweepCounts) -> SweepCounts:
        """The counts of both (e.g. summed over volumes), at the same thresholds."""
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("only sweeps over the same thresholds add up")
        return SweepCounts(
            self.thresholds, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.tn + other.tn,
        )  # fmt: skip

    def dice(self) -> np.ndarray:
        return np.array([self.at(i).dice for i in range(len(self.thresholds))])

    def best(self) -> tuple[float, float]:
        """``(threshold, dice)`` of the best Dice (the lowest such threshold on ties)."""
        dice = self.dice()
        order = np.argsort(self.thresholds, kind="stable")
        i = int(order[np.argmax(dice[order])])
        return float(self.thresholds[i]), float(dice[i])

    def as_dict(self) -> dict[str, list[float] | list[int]]:
        """JSON-ready columns: threshold, precision, recall, dice, tp, fp, fn, tn."""
        rows = [self.at(i) for i in range(len(self.thresholds))]
        return {
            "threshold": [float(t) for t in self.thresholds],
            "precision": [c.precision for c in rows],
            "recall": [c.recall for c in rows],
            "dice": [c.dice for c in rows],
            "tp": [c.tp for c in rows],
            "fp": [c.fp for c in rows],
            "fn": [c.fn for c in rows],
            "tn": [c.tn for c in rows],
        }


@dataclass(frozen=True)
class CountTables:
    """What one counting pass saw.

    ``table[code, positive]``: voxels with truth ``code`` (0, 1, 2) and binary prediction
    ``positive`` at the main threshold, shape ``(3, 2)``. ``hist[code, k]``: voxels with truth
    ``code`` whose probability reaches exactly ``k`` of the sorted thresholds, shape
    ``(3, n + 1)`` (None without a sweep).
    """

    table: np.ndarray
    hist: np.ndarray | None
    thresholds: np.ndarray | None

    @property
    def has_background_label(self) -> bool:
        return bool(self.table[2].sum() > 0)

    def confusion(self, sparse: bool | None = None) -> Confusion:
        neg, pos = _negatives_positives(self.table, self.resolve(sparse))
        return Confusion(tp=int(pos[1]), fp=int(neg[1]), fn=int(pos[0]), tn=int(neg[0]))

    def sweep(self, sparse: bool | None = None) -> SweepCounts:
        if self.hist is None or self.thresholds is None:
            raise ValueError("no thresholds were counted in this pass")
        neg, pos = _negatives_positives(self.hist, self.resolve(sparse))
        # voxels at or above sorted threshold i are those reaching more than i thresholds
        tp_sorted = np.cumsum(pos[::-1])[::-1][1:]
        fp_sorted = np.cumsum(neg[::-1])[::-1][1:]
        order = np.argsort(self.thresholds, kind="stable")
        tp, fp = np.empty_like(tp_sorted), np.empty_like(fp_sorted)
        tp[order], fp[order] = tp_sorted, fp_sorted
        return SweepCounts(self.thresholds, tp, fp, pos.sum() - tp, neg.sum() - fp)

    def resolve(self, sparse: bool | None) -> bool:
        """Sparse reading as asked, or ("auto", None) sparse iff a label 2 occurred."""
        return self.has_background_label if sparse is None else bool(sparse)


def _negatives_positives(rows: np.ndarray, sparse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows of truth negatives and positives: sparse ignores code 0; dense counts 0 and 2."""
    negatives = rows[2] if sparse else rows[0] + rows[2]
    return negatives, rows[1]


def truth_codes(slab: np.ndarray) -> np.ndarray:
    """Truth slab as uint8 codes 0/1/2; any other value raises :class:`LabelValueError`."""
    if slab.dtype == np.bool_:
        return slab.view(np.uint8)
    if np.issubdtype(slab.dtype, np.floating) and (
        not np.isfinite(slab).all() or (slab != np.round(slab)).any()
    ):
        raise LabelValueError("truth labels must be the integers 0, 1 or 2")
    if slab.size and (slab.min() < 0 or slab.max() > 2):
        bad = np.unique(slab[(slab < 0) | (slab > 2)])[:5]
        shown = ", ".join(str(v.item()) for v in bad)
        raise LabelValueError(
            f"truth labels must be 0 (not annotated), 1 (vessel) or 2 (background), found {shown}"
        )
    return slab.astype(np.uint8, copy=False)


def sweep_levels(slab: np.ndarray, sorted_thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_thresholds`` each voxel reaches (``p >= t``), shape of ``slab``.

    Masks count as probabilities 0.0/1.0; probabilities are compared in their own dtype.
    """
    if np.issubdtype(slab.dtype, np.floating):
        values = slab
        levels = sorted_thresholds.astype(slab.dtype)
    else:
        values = pred_mask(slab).astype(np.float32)
        levels = sorted_thresholds.astype(np.float32)
    return np.searchsorted(levels, values, side="right")


def count_pass(
    pred: Any,
    truth: Any,
    threshold: float = 0.5,
    thresholds: Sequence[float] | np.ndarray | None = None,
    slab_bytes: int = SLAB_BYTES,
) -> CountTables:
    """Walk the pair once and tabulate truth codes against the prediction (see CountTables)."""
    depth, height, width = check_pair(pred, truth)
    levels = None if thresholds is None else np.asarray(thresholds, dtype=np.float64).ravel()
    sorted_levels = None if levels is None else np.sort(levels)
    cost = BYTES_PER_VOXEL if levels is None else SWEEP_BYTES_PER_VOXEL
    table = np.zeros(6, dtype=np.int64)
    n_bins = 0 if sorted_levels is None else len(sorted_levels) + 1
    hist = None if sorted_levels is None else np.zeros(3 * n_bins, dtype=np.int64)
    for z0, z1 in slab_ranges(depth, height * width, cost, slab_bytes):
        p = np.asarray(pred[z0:z1])
        if np.issubdtype(p.dtype, np.floating) and np.isnan(p).any():
            raise NonFiniteError(f"prediction holds NaN (in planes {z0}..{z1 - 1})")
        codes = truth_codes(np.asarray(truth[z0:z1]))
        combined = codes * np.uint8(2) + pred_mask(p, threshold).view(np.uint8)
        table += np.bincount(combined.ravel(), minlength=6)
        if hist is not None and sorted_levels is not None:
            index = codes.astype(np.intp) * n_bins + sweep_levels(p, sorted_levels)
            hist += np.bincount(index.ravel(), minlength=3 * n_bins)
    return CountTables(
        table.reshape(3, 2),
        None if hist is None else hist.reshape(3, n_bins),
        levels,
    )


def confusion_counts(
    pred: Any,
    truth: Any,
    threshold: float = 0.5,
    sparse: bool | None = None,
    slab_bytes: int = SLAB_BYTES,
) -> Confusion:
    """Confusion counts of ``pred`` (thresholded at ``threshold``) against ``truth``.

    ``sparse``: True counts annotated voxels only (truth 1 or 2), False counts every voxel
    (1 vessel, else background), None decides from the data (sparse iff a label 2 occurs).
    """
    return count_pass(pred, truth, threshold, None, slab_bytes).confusion(sparse)


def threshold_sweep(
    pred: Any,
    truth: Any,
    thresholds: Sequence[float] | np.ndarray,
    sparse: bool | None = None,
    slab_bytes: int = SLAB_BYTES,
) -> SweepCounts:
    """Confusion counts at every threshold in one pass (precision–recall curve, best Dice)."""
    return count_pass(pred, truth, 0.5, thresholds, slab_bytes).sweep(sparse)
