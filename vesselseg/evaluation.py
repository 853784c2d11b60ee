"""``vesselseg evaluate``: score predictions against truth, write metrics, curves and pictures.

For every volume of a dataset folder that has a dense truth (``truth_<X>``, or Kaggle labels)
or a sparse annotation (``mask_<X>``), the predictions written by ``vesselseg predict`` are
scored with :func:`vesselseg.metrics.evaluate_pair` (missing predictions are made on the fly).
Outputs:

* ``metrics.json`` — overall (voxel counts summed over volumes; clDice and surface Dice
  averaged) and per-volume metrics, for ``dvc metrics``;
* ``plots/pr.csv`` — precision, recall and Dice over thresholds, for ``dvc plots``;
* ``plots/<X>.mip.png`` — maximum-intensity projection of true positives, false positives and
  false negatives; ``plots/<X>.slices.png`` — three orthogonal slices with the same colours;
* the best-Dice threshold on the validation set (``--val-dir``), which ``vesselseg predict
  --threshold-from metrics.json`` uses.

Everything is logged to MLflow: to the model's training run when the model knows it, else to
a new evaluation run.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.bundle import Resolver
from vesselseg.config import InferConfig
from vesselseg.errors import DatasetError
from vesselseg.inference.outputs import open_probabilities
from vesselseg.io.atomic import commit, partial_path, write_text
from vesselseg.io.dataset import Sample, discover_dataset
from vesselseg.io.slabs import iter_slabs

log = logging.getLogger(__name__)

SUMMED = ("tp", "fp", "fn", "tn")
AVERAGED = ("cldice", "surface_dice")
COLOURS = {"tp": (1.0, 0.85, 0.2), "fp": (0.95, 0.2, 0.2), "fn": (0.2, 0.5, 1.0)}


def binary_truth(raw: np.ndarray) -> np.ndarray:
    """Dense 0/255 (or 0/1) labels as 0/1 truth."""
    return (raw > 0).astype(np.uint8)


@dataclass
class EvalSummary:
    """What :func:`evaluate_dataset` wrote and found."""

    overall: dict[str, Any]
    per_volume: dict[str, dict[str, Any]]
    metrics_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    best_threshold_val: float | None = None
    run_id: str | None = None


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
    """``(threshold, dice)`` maximising Dice summed over the volumes of ``data_dir``."""
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
        total = sweep if total is None else _add_sweeps(total, sweep)
    assert total is not None
    return total.best()


def _add_sweeps(a: Any, b: Any) -> Any:
    from vesselseg.metrics.confusion import SweepCounts

    return SweepCounts(a.thresholds, a.tp + b.tp, a.fp + b.fp, a.fn + b.fn, a.tn + b.tn)


def evaluate_dataset(
    data_dir: str | Path,
    model: str | Path,
    pred_dir: str | Path,
    cfg: InferConfig,
    metrics_path: str | Path = "metrics.json",
    plots_dir: str | Path = "plots",
    val_dir: str | Path | None = None,
    tolerance: float = 0.0,
    n_thresholds: int = 21,
    mlflow: bool = True,
    mlflow_root: str | Path | None = None,
    resolve: Resolver | None = None,
) -> EvalSummary:
    """Score every volume of ``data_dir``; write metrics, PR curve and pictures; log them.

    ``resolve`` turns registry URIs among an ensemble's members into files."""
    from vesselseg.inference.run import ensure_predictions

    data_dir, model, pred_dir = Path(data_dir), Path(model), Path(pred_dir)
    metrics_path, plots_dir = Path(metrics_path), Path(plots_dir)
    scored = scored_samples(data_dir)
    probs = ensure_predictions([s for s, _, _ in scored], model, pred_dir, cfg, resolve=resolve)
    per_volume, curves, plot_paths = score_volumes(
        scored, probs, cfg.threshold, tolerance, n_thresholds, plots_dir
    )
    overall = aggregate(per_volume)
    best_val = None
    if val_dir is not None:
        best_val, val_dice = best_threshold(
            Path(val_dir), model, pred_dir, cfg, n_thresholds, resolve
        )
        overall["best_threshold_val"] = best_val
        overall["best_dice_val"] = val_dice
    pr_path = write_pr_csv(curves, plots_dir / "pr.csv")
    write_json(
        metrics_path,
        {
            "overall": overall,
            "per_volume": per_volume,
            "model": str(model),
            "data": str(data_dir),
            "threshold": cfg.threshold,
            "tolerance": tolerance,
        },
    )
    summary = EvalSummary(overall, per_volume, metrics_path, [pr_path, *plot_paths], best_val)
    if mlflow:
        summary.run_id = log_to_mlflow(summary, model, mlflow_root)
    return summary


def score_volumes(
    scored: list[tuple[Sample, Any, bool]],
    probs: dict[str, Path],
    threshold: float,
    tolerance: float,
    n_thresholds: int,
    plots_dir: Path,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, list[Any]]], list[Path]]:
    """``(metrics per volume, PR sweeps, pictures written)`` of every scored sample."""
    from vesselseg.metrics import evaluate_pair
    from vesselseg.progress import progress_bar

    per_volume: dict[str, dict[str, Any]] = {}
    curves = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_paths: list[Path] = []
    with progress_bar("evaluate", total=len(scored), unit="volumes") as advance:
        for sample, truth, sparse in scored:
            prob = open_probabilities(probs[sample.id])
            result = evaluate_pair(prob, truth, threshold, tolerance, n_thresholds, sparse=sparse)
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``metrics.json`` (indented, sorted keys), atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True))


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


# --------------------------------------------------------------------------- pictures


def outcome_mips(prob: Any, truth: Any, sparse: bool, threshold: float) -> dict[str, np.ndarray]:
    """Maximum projections along z of TP, FP and FN voxels, streamed slab by slab."""
    mips = {k: np.zeros(truth.shape[1:], dtype=bool) for k in COLOURS}
    for z0, t in iter_slabs(truth):
        p = np.asarray(prob[z0 : z0 + t.shape[0]]) >= threshold
        vessel = t == 1
        background = (t == 2) if sparse else (t == 0)
        for key, hit in (("tp", p & vessel), ("fp", p & background), ("fn", ~p & vessel)):
            mips[key] |= hit.any(axis=0)
    return mips


def colourise(layers: dict[str, np.ndarray], base: np.ndarray | None = None) -> np.ndarray:
    """RGB picture: ``base`` grey image (or black), FN then FP then TP painted on top."""
    shape = next(iter(layers.values())).shape
    if base is None:
        rgb = np.zeros((*shape, 3))
    else:
        lo, hi = np.percentile(base, [1, 99])
        grey = np.clip((base - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=-1) * 0.8
    for key in ("fn", "fp", "tp"):
        rgb[layers[key]] = COLOURS[key]
    return rgb


def write_pictures(
    sample: Sample, prob: Any, truth: Any, sparse: bool, threshold: float, plots_dir: Path
) -> list[Path]:
    """``<id>.mip.png`` and ``<id>.slices.png`` for one volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    legend = [Patch(color=COLOURS[k], label=k.upper()) for k in ("tp", "fp", "fn")]
    mip_path = plots_dir / f"{sample.id}.mip.png"
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(colourise(outcome_mips(prob, truth, sparse, threshold)))
    ax.set_title(f"{sample.id}: max projection along z")
    ax.legend(handles=legend, loc="lower right", fontsize=8)
    ax.axis("off")
    _save(fig, mip_path)

    image = sample.open_image()
    centre = [s // 2 for s in image.shape]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    for axis, ax in enumerate(axes):
        index = [slice(None)] * 3
        index[axis] = slice(centre[axis], centre[axis] + 1)
        key = tuple(index)
        img = np.squeeze(np.asarray(image[key]).astype(np.float32), axis=axis)
        t = np.squeeze(np.asarray(truth[key]), axis=axis)
        p = np.squeeze(np.asarray(prob[key]), axis=axis) >= threshold
        background = (t == 2) if sparse else (t == 0)
        layers = {"tp": p & (t == 1), "fp": p & background, "fn": ~p & (t == 1)}
        ax.imshow(colourise(layers, img))
        ax.set_title(f"{'zyx'[axis]} = {centre[axis]}")
        ax.axis("off")
    axes[-1].legend(handles=legend, loc="lower right", fontsize=8)
    slices_path = plots_dir / f"{sample.id}.slices.png"
    _save(fig, slices_path)
    return [mip_path, slices_path]


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    # NAME.part, renamed when complete; a failed save keeps the .part (no finished-looking file)
    tmp = partial_path(path)
    fig.tight_layout()
    try:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    commit(tmp, path)


# --------------------------------------------------------------------------- MLflow


def log_to_mlflow(summary: EvalSummary, model: Path, mlflow_root: str | Path | None) -> str:
    """Log overall metrics (``test_*``) and files to the model's run, or a new one."""
    from vesselseg import tracking
    from vesselseg.bundle import load_meta
    from vesselseg.inference.ensemble import is_ensemble_file

    run_id = None if is_ensemble_file(model) else load_meta(model).info.get("run_id")
    metrics = {
        f"test_{k}": float(v)
        for k, v in summary.overall.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in SUMMED
    }
    files = [summary.metrics_path, *summary.plot_paths]
    return tracking.log_evaluation(run_id, metrics, files, mlflow_root)
