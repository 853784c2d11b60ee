"""Scoring: truth of a sample, per-volume metrics, their aggregate, the PR sweep.

For every volume of a dataset folder that has a dense truth (``truth_<X>``, or Kaggle labels)
or a sparse annotation (``mask_<X>``), the probabilities are scored with
:func:`vesselseg.metrics.evaluate_pair`; voxel counts are summed over volumes (micro Dice,
precision, recall), clDice and surface Dice averaged.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.bundle import Resolver
from vesselseg.config import InferConfig
from vesselseg.errors import DatasetError
from vesselseg.inference.outputs import open_probabilities
from vesselseg.io.dataset import Sample, discover_dataset
from vesselseg.io.spacing import VoxelSize

log = logging.getLogger(__name__)

SUMMED = ("tp", "fp", "fn", "tn")
AVERAGED = ("cldice", "surface_dice")


def binary_truth(raw: np.ndarray) -> np.ndarray:
    """Dense 0/255 (or 0/1) labels as 0/1 truth."""
    return (raw > 0).astype(np.uint8)


def truth_of(sample: Sample) -> tuple[Any, bool] | None:
    """``(truth volume, is_sparse)`` of a sample, preferring a dense truth."""
    from vesselseg.io.readers import MappedVolume, open_volume

    if sample.truth is not None:
        return sample.open_truth(), False
    if sample.layout == "kaggle" and sample.mask is not None:
        return MappedVolume(open_volume(sample.mask), binary_truth, np.uint8), False
    if sample.mask is not None:
        return sample.open_mask(), True
    return None


def scored_samples(data_dir: Path) -> list[tuple[Sample, Any, bool]]:
    """``(sample, truth, is_sparse)`` of every volume of ``data_dir`` that has a truth."""
    samples = []
    for sample in discover_dataset(data_dir):
        truth = truth_of(sample)
        if truth is not None:
            samples.append((sample, *truth))
    if not samples:
        raise DatasetError(
            f"{data_dir}: no volume with a truth (truth_<X>) or annotation (mask_<X>)"
        )
    return samples


def best_threshold(
    data_dir: Path,
    model: Path,
    pred_dir: Path,
    cfg: InferConfig,
    n_thresholds: int,
    resolve: Resolver | None = None,
) -> tuple[float, float]:
    """``(threshold, dice)`` of the best Dice summed over the volumes of ``data_dir``, chosen
    as the training's calibration chooses (:func:`~vesselseg.evaluation.calibrate.
    choose_threshold`: thresholds within its tie margin of the best go to the one nearest
    0.5), so the two agree on the same validation volumes and grid."""
    from vesselseg.evaluation.calibrate import choose_threshold
    from vesselseg.inference.run import ensure_predictions
    from vesselseg.metrics import threshold_sweep
    from vesselseg.metrics.evaluate import threshold_grid

    scored = scored_samples(data_dir)
    probs = ensure_predictions([s for s, _, _ in scored], model, pred_dir, cfg, resolve=resolve)
    total = None
    for sample, truth, sparse in scored:
        # interior thresholds only: 0 and 1 would make every or no voxel vessel
        grid = threshold_grid(n_thresholds)[1:-1]
        sweep = threshold_sweep(open_probabilities(probs[sample.id]), truth, grid, sparse=sparse)
        total = sweep if total is None else total + sweep
    assert total is not None
    dice = total.dice()
    i = choose_threshold([float(t) for t in total.thresholds], dice)
    return float(total.thresholds[i]), float(dice[i])


def voxel_sizes(
    scored: list[tuple[Sample, Any, bool]], cfg: InferConfig, in_voxels: bool = False
) -> dict[str, VoxelSize]:
    """The voxel size each volume is measured in: its image's (``cfg.spacing``/``cfg.unit``
    override the file), or unit voxels when the tolerance is given in voxels."""
    from vesselseg.io.readers import open_volume
    from vesselseg.io.spacing import UNKNOWN

    if in_voxels:
        return {sample.id: UNKNOWN for sample, _, _ in scored}
    return {
        sample.id: open_volume(sample.image, spacing=cfg.spacing, unit=cfg.unit).voxel_size
        for sample, _, _ in scored
    }


def units_of(per_volume: dict[str, dict[str, Any]]) -> str:
    """The unit the volumes were measured in: ``um``, ``mm``, ``voxel`` (unknown spacing) or
    ``mixed``."""
    units = {v.get("unit") or "voxel" for v in per_volume.values()}
    return units.pop() if len(units) == 1 else "mixed"


def score_volumes(
    scored: list[tuple[Sample, Any, bool]],
    probs: dict[str, Path],
    threshold: float,
    tolerance: float,
    n_thresholds: int,
    plots_dir: Path,
    sizes: dict[str, VoxelSize] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, list[Any]]], list[Path]]:
    """``(metrics per volume, PR sweeps, pictures written)`` of every scored sample.

    ``sizes`` (see :func:`voxel_sizes`) gives each volume's voxel size: surface Dice and its
    areas are then physical, ``tolerance`` in that unit; a volume without a known size is
    measured on unit voxels. Each volume's entry records its spacing and unit."""
    from vesselseg.evaluation.pictures import write_pictures
    from vesselseg.metrics import evaluate_pair
    from vesselseg.progress import progress_bar

    per_volume: dict[str, dict[str, Any]] = {}
    curves = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_paths: list[Path] = []
    with progress_bar("evaluate", total=len(scored), unit="volumes") as advance:
        for sample, truth, sparse in scored:
            prob = open_probabilities(probs[sample.id])
            size = (sizes or {}).get(sample.id)
            known = size is not None and size.known
            spacing = tuple(size.spacing) if known else (1.0, 1.0, 1.0)
            result = evaluate_pair(
                prob, truth, threshold, tolerance, n_thresholds, spacing=spacing, sparse=sparse
            )
            result["spacing"], result["unit"] = list(spacing), size.unit if known else None
            curves.append(result.pop("pr_curve"))
            per_volume[sample.id] = result
            plot_paths += write_pictures(sample, prob, truth, sparse, threshold, plots_dir)
            log.info("%s: dice %.4f", sample.id, result["dice"])
            advance(1)
    return per_volume, curves, plot_paths


def aggregate(per_volume: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Voxel counts summed over volumes (micro Dice etc.); topology metrics averaged."""
    from vesselseg.metrics.confusion import Confusion

    counts = {k: int(sum(v[k] for v in per_volume.values())) for k in SUMMED}
    conf = Confusion(counts["tp"], counts["fp"], counts["fn"], counts["tn"])
    overall: dict[str, Any] = {"volumes": len(per_volume), **conf.as_dict()}
    for key in AVERAGED:
        values = [v[key] for v in per_volume.values() if v.get(key) is not None]
        overall[key] = float(np.mean(values)) if values else None
    return overall


def write_pr_csv(curves: list[dict[str, list[Any]]], path: Path) -> Path:
    """Sum the per-volume sweeps and write threshold, precision, recall, dice rows."""
    from vesselseg.io.atomic import atomic_open
    from vesselseg.metrics.confusion import Confusion

    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["threshold", "precision", "recall", "dice"])
        for i, threshold in enumerate(curves[0]["threshold"]):
            c = Confusion(*(int(sum(curve[k][i] for curve in curves)) for k in SUMMED))
            writer.writerow(
                [f"{threshold:.4f}", f"{c.precision:.6f}", f"{c.recall:.6f}", f"{c.dice:.6f}"]
            )
    return path
