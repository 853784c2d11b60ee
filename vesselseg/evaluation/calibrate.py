"""Calibrated thresholds: the validation threshold becomes part of the model.

Trained from sparse boxes, a network's probabilities drift away from 0.5 (the best Dice on
real volumes has sat anywhere from 0.2 to 0.8). After training, :func:`calibrate_model`
predicts the validation volumes with the saved model exactly as ``predict`` does (streamed,
on the model's voxel grid, blended), counts the annotated voxels (labels 1 and 2; 0 ignored)
above each threshold of a grid (0.05 … 0.95 by default) and keeps the threshold of the best
Dice (:func:`choose_threshold`: every threshold within :data:`TIE` of the best counts as a
tie, and the one nearest 0.5 wins). The threshold is written into the model's settings
(``NAME.json`` ``threshold`` and ``info.calibration``), so ``predict``, ``evaluate``, the
registry and the pyfunc use it unless ``--threshold`` / ``infer.threshold`` says otherwise,
and it is logged to the training run (metrics ``calibrated_threshold``,
``calibrated_val_dice``, ``val_dice_at_0.5``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.config import InferConfig, Params
from vesselseg.errors import DatasetError

log = logging.getLogger(__name__)

# Validation Dice within this of the best counts as a tie, broken towards DEFAULT: the
# threshold leaves 0.5 only for a real gain. Sparse validation labels leave out the voxels
# around each vessel's edge (the annotation rim), so their Dice barely sees the edge and
# tends to favour lower thresholds than the dense truth does: on the demo, a calibrated
# 0.35 that was 0.005 better than 0.5 on the validation boxes scored 0.807 test Dice against
# 0.835 at 0.5 (3D U-Net, train.seed 2). With 1e-3 the chosen threshold ranged 0.15 - 0.6
# over seeds and was the largest source of the demo's spread.
TIE = 0.01
DEFAULT = 0.5


def calibration_grid(step: float = 0.05) -> np.ndarray:
    """Thresholds ``step, 2 step, …, 1 - step`` (0.05 … 0.95 by default)."""
    n = int(round(1 / step))
    return np.round(np.arange(1, n) * step, 6)


@dataclass
class Calibration:
    """The chosen threshold, its validation Dice, and the curve it was chosen from."""

    threshold: float
    dice: float
    dice_at_default: float
    thresholds: list[float] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)
    volumes: int = 0
    annotated_voxels: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        return (
            f"calibrated threshold {self.threshold:.2f} (validation Dice {self.dice:.4f}; "
            f"{self.dice_at_default:.4f} at {DEFAULT}; {self.volumes} volume(s), "
            f"{self.annotated_voxels:,} annotated voxels)"
        )


def choose_threshold(
    thresholds: Sequence[float], dice: Sequence[float], tie: float = TIE, prefer: float = DEFAULT
) -> int:
    """Index of the best Dice; among those within ``tie`` of it, the threshold nearest
    ``prefer`` (a flat curve keeps the usual 0.5 rather than an arbitrary end)."""
    t, d = np.asarray(thresholds, dtype=np.float64), np.asarray(dice, dtype=np.float64)
    if t.size == 0 or t.shape != d.shape:
        raise ValueError("choose_threshold: one Dice per threshold, at least one")
    near = np.flatnonzero(d >= d.max() - tie)
    return int(near[np.argmin(np.abs(t[near] - prefer))])


def calibration_from_counts(sweep: Any, volumes: int, annotated: int) -> Calibration:
    """A :class:`Calibration` from summed :class:`~vesselseg.metrics.SweepCounts`."""
    thresholds = [float(t) for t in sweep.thresholds]
    dice = [float(v) for v in sweep.dice()]
    i = choose_threshold(thresholds, dice)
    at_default = int(np.argmin(np.abs(np.asarray(thresholds) - DEFAULT)))
    return Calibration(
        thresholds[i], dice[i], dice[at_default], thresholds, dice, volumes, annotated
    )


def calibrate_threshold(
    model: str | Path,
    val_dir: str | Path,
    cfg: InferConfig,
    grid: Sequence[float] | None = None,
    work_dir: str | Path | None = None,
) -> Calibration:
    """Predict the annotated volumes of ``val_dir`` with ``model`` (settings ``cfg``) and pick
    the threshold of the best Dice on their annotated voxels (``mask_X``: 1 vessel, 2
    background, 0 ignored). Predictions go to ``work_dir`` (default a temporary folder)."""
    from vesselseg.inference.outputs import open_probabilities
    from vesselseg.inference.run import ensure_predictions
    from vesselseg.io.dataset import discover_dataset
    from vesselseg.metrics import threshold_sweep

    samples = [s for s in discover_dataset(val_dir) if s.mask is not None]
    if not samples:
        raise DatasetError(f"{val_dir}: no annotated volume (mask_X) to calibrate on")
    grid = np.asarray(calibration_grid() if grid is None else grid, dtype=np.float64)
    cfg = dataclasses.replace(cfg, out_format="npy", prob_dtype="float32", naming="default")
    with tempfile.TemporaryDirectory(prefix="vesselseg-calibrate-") as tmp:
        folder = Path(work_dir) if work_dir is not None else Path(tmp)
        probs = ensure_predictions(samples, Path(model), folder, cfg)
        total, annotated = None, 0
        for sample in samples:
            mask = sample.open_mask()
            sweep = threshold_sweep(open_probabilities(probs[sample.id]), mask, grid, sparse=True)
            annotated += int(sweep.tp[0] + sweep.fp[0] + sweep.fn[0] + sweep.tn[0])
            total = sweep if total is None else total + sweep
    assert total is not None
    return calibration_from_counts(total, len(samples), annotated)


def record_calibration(model: str | Path, calibration: Calibration) -> Any:
    """Write the threshold into the model's settings (``NAME.json``); returns the new meta."""
    from vesselseg.bundle import load_meta, update_settings

    info = {**load_meta(model).info, "calibration": calibration.as_dict()}
    return update_settings(model, threshold=calibration.threshold, info=info)


def calibrate_model(
    params: Params,
    model: str | Path,
    run_id: str | None = None,
    mlflow_root: str | Path | None = None,
) -> Calibration | None:
    """After ``vesselseg train``: calibrate ``model`` on ``data.val_dir`` (when
    ``train.calibrate_threshold``), record the threshold in its settings and its training run
    (metrics, and the settings file again as the ``model/`` artifact). None when switched off
    or when the validation folder holds no annotation (logged)."""
    if not params.train.calibrate_threshold:
        return None
    cfg = dataclasses.replace(params.infer, threshold=None)
    if params.data.spacing is not None and cfg.spacing is None:  # the validation voxel size
        cfg = dataclasses.replace(cfg, spacing=params.data.spacing, unit=params.data.unit)
    try:
        calibration = calibrate_threshold(model, params.data.val_dir, cfg)
    except DatasetError as exc:
        log.warning("threshold not calibrated: %s", exc)
        return None
    record_calibration(model, calibration)
    log.info("%s: %s", model, calibration.line())
    if run_id:
        from vesselseg import tracking
        from vesselseg.bundle import meta_path

        metrics = {
            "calibrated_threshold": calibration.threshold,
            "calibrated_val_dice": calibration.dice,
            f"val_dice_at_{DEFAULT}": calibration.dice_at_default,
        }
        tracking.log_metrics(run_id, metrics, root=mlflow_root)
        tracking.log_artifact(run_id, meta_path(Path(model)), "model", mlflow_root)
    return calibration
