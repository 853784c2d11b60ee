"""All metrics of one prediction against its truth, in bounded memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from vesselseg.metrics.cldice import SKELETON_HALO, cldice
from vesselseg.metrics.components import count_components
from vesselseg.metrics.confusion import count_pass
from vesselseg.metrics.slabs import SLAB_BYTES, check_pair
from vesselseg.metrics.surface import surface_dice

log = logging.getLogger(__name__)

DENSE_ONLY = (
    "cldice",
    "tprec",
    "tsens",
    "skeleton_pred_voxels",
    "skeleton_truth_voxels",
    "surface_dice",
    "surface_area_pred",
    "surface_area_truth",
    "components_pred",
    "components_truth",
)


def threshold_grid(thresholds: Sequence[float] | np.ndarray | int) -> np.ndarray:
    """Thresholds as given, or ``n`` evenly spaced ones from 0 to 1 inclusive for an int."""
    if isinstance(thresholds, (int, np.integer)):
        grid = np.linspace(0.0, 1.0, int(thresholds))
    else:
        grid = np.asarray(thresholds, dtype=np.float64).ravel()
    if grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f"thresholds must be finite and at least one, got {thresholds!r}")
    return grid


def evaluate_pair(
    pred: Any,
    truth: Any,
    threshold: float = 0.5,
    tolerance: float = 0.0,
    thresholds: Sequence[float] | np.ndarray | int | None = None,
    slab_bytes: int = SLAB_BYTES,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    sparse: bool | None = None,
    skeleton_halo: int = SKELETON_HALO,
) -> dict[str, Any]:
    """Dice, IoU, precision, recall, clDice, surface Dice and component counts of a pair.

    ``pred``: probabilities (thresholded ``>= threshold``) or a 0/1 mask; ``truth``: dense 0/1
    or sparse 0/1/2 labels, ``(z, y, x)``, any lazily sliced volume. ``sparse=None`` reads the
    truth as sparse iff a label 2 occurs. Sparse truth scores annotated voxels only, and the
    metrics that need every voxel labelled (clDice, surface Dice, components) are None.
    ``thresholds`` (a sequence, or an int for that many evenly spaced in [0, 1]) adds
    ``pr_curve`` columns and the ``best_threshold`` by Dice. Values are plain floats, ints,
    lists and None (JSON- and MLflow-ready).
    """
    check_pair(pred, truth)
    grid = None if thresholds is None else threshold_grid(thresholds)
    started = time.perf_counter()
    tables = count_pass(pred, truth, threshold, grid, slab_bytes)
    is_sparse = tables.resolve(sparse)
    result: dict[str, Any] = {"sparse_truth": is_sparse, "threshold": float(threshold)}
    result.update(tables.confusion(is_sparse).as_dict())
    if grid is not None:
        sweep = tables.sweep(is_sparse)
        result["pr_curve"] = sweep.as_dict()
        result["best_threshold"], result["best_dice"] = sweep.best()
    log.debug("confusion counts in %.1f s", time.perf_counter() - started)
    if is_sparse:
        result.update(dict.fromkeys(DENSE_ONLY))
        result["tolerance"] = float(tolerance)
        return result
    started = time.perf_counter()
    result.update(cldice(pred, truth, threshold, skeleton_halo, slab_bytes).as_dict())
    log.debug("clDice in %.1f s", time.perf_counter() - started)
    started = time.perf_counter()
    result.update(surface_dice(pred, truth, tolerance, spacing, threshold, slab_bytes).as_dict())
    log.debug("surface Dice in %.1f s", time.perf_counter() - started)
    started = time.perf_counter()
    result["components_pred"] = count_components(pred, threshold, slab_bytes=slab_bytes)
    result["components_truth"] = count_components(truth, labels=True, slab_bytes=slab_bytes)
    log.debug("components in %.1f s", time.perf_counter() - started)
    return result
