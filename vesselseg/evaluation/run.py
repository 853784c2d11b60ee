"""``vesselseg evaluate``: score a model on a dataset folder, write metrics, curves, pictures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.bundle import Resolver
from vesselseg.config import InferConfig
from vesselseg.evaluation.outputs import model_label, resolve_outputs, write_json
from vesselseg.evaluation.score import (
    aggregate,
    best_threshold,
    score_volumes,
    scored_samples,
    units_of,
    voxel_sizes,
    write_pr_csv,
)
from vesselseg.lineage import DatasetRef, dataset_ref


@dataclass
class EvalSummary:
    """What :func:`evaluate_dataset` wrote and found."""

    overall: dict[str, Any]
    per_volume: dict[str, dict[str, Any]]
    metrics_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    best_threshold_val: float | None = None
    run_id: str | None = None
    plots_dir: Path = Path("plots")
    dataset: DatasetRef | None = None


def evaluate_dataset(
    data_dir: str | Path,
    model: str | Path,
    pred_dir: str | Path,
    cfg: InferConfig,
    metrics_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    tolerance: float = 0.0,
    n_thresholds: int = 21,
    mlflow: bool = True,
    mlflow_root: str | Path | None = None,
    resolve: Resolver | None = None,
    experiment: str = "vesselseg",
    dvc_yaml: str | Path = "dvc.yaml",
    tolerance_in_voxels: bool = False,
) -> EvalSummary:
    """Score every volume of ``data_dir``; write metrics, PR curve and pictures; log them.

    ``metrics_path``/``plots_dir`` default to ``metrics/<data>.<model>.json`` and
    ``plots/<data>.<model>/`` (:mod:`vesselseg.evaluation.outputs`; a default that a stage of
    ``dvc_yaml`` owns is refused). The MLflow run is described in
    :mod:`vesselseg.evaluation.tracked` (``experiment`` when the model has no run in the
    store). ``resolve`` turns registry URIs among an ensemble's members into files.
    Surface Dice is measured in each volume's voxel size (``cfg.spacing`` overrides the files)
    with ``tolerance`` in its unit, or on unit voxels with ``tolerance_in_voxels``."""
    from vesselseg.inference.loader import resolved_threshold
    from vesselseg.inference.run import ensure_predictions
    from vesselseg.plots import write_pr_curve

    data_dir, model, pred_dir = Path(data_dir), Path(model), Path(pred_dir)
    cfg = dataclasses.replace(cfg, threshold=resolved_threshold(cfg, model, resolve))
    metrics_path, plots_dir = resolve_outputs(data_dir, model, metrics_path, plots_dir, dvc_yaml)
    scored = scored_samples(data_dir)
    dataset = dataset_ref(data_dir)
    probs = ensure_predictions([s for s, _, _ in scored], model, pred_dir, cfg, resolve=resolve)
    per_volume, curves, plot_paths = score_volumes(
        scored, probs, cfg.threshold, tolerance, n_thresholds, plots_dir,
        voxel_sizes(scored, cfg, tolerance_in_voxels),
    )  # fmt: skip
    overall = aggregate(per_volume)
    best_val = None
    if val_dir is not None:
        best_val, val_dice = best_threshold(
            Path(val_dir), model, pred_dir, cfg, n_thresholds, resolve
        )
        overall["best_threshold_val"] = best_val
        overall["best_dice_val"] = val_dice
    pr_path = write_pr_csv(curves, plots_dir / "pr.csv")
    n = overall["volumes"]
    title = f"{model_label(model)} on {dataset.name} ({n} volume{'' if n == 1 else 's'})"
    pr_png = write_pr_curve(pr_path, plots_dir / "pr.png", title, cfg.threshold)
    write_json(
        metrics_path,
        {
            "overall": overall,
            "per_volume": per_volume,
            "model": str(model),
            "data": str(data_dir),
            "dataset": dataset.as_dict(),
            "threshold": cfg.threshold,
            "tolerance": tolerance,
            "tolerance_unit": "voxel" if tolerance_in_voxels else units_of(per_volume),
        },
    )
    summary = EvalSummary(
        overall,
        per_volume,
        metrics_path,
        [pr_path, pr_png, *plot_paths],
        best_val,
        plots_dir=plots_dir,
        dataset=dataset,
    )
    if mlflow:
        from vesselseg.evaluation.tracked import log_evaluation_run

        files = [metrics_path, *summary.plot_paths]
        summary.run_id = log_evaluation_run(
            overall, files, model, dataset, experiment, mlflow_root, resolve
        )
    return summary
