"""An evaluation in MLflow: one run per evaluation, linked to the run of the model evaluated.

* A model whose training run is in this store (``info.run_id`` in ``NAME.json``): the
  evaluation is a **child run** of it (same experiment; the UI nests it under the training
  run), named ``stage2 on test`` and tagged ``vesselseg.stage=evaluate``. The training run
  also gets the PR curve, the pictures and the metrics file under
  ``evaluation/<data>-<digest8>/`` and a tag ``vesselseg.evaluation.<data>-<digest8>`` = the
  evaluation run's id; its own metrics are never touched.
* An **ensemble** has no single training run: its evaluation is a run of its own in the
  experiment, tagged with its members' run ids (``vesselseg.ensemble.runs``, in member order)
  and holding the ensemble file (``model/``). So is a model whose run is not in this store.

Metrics carry the data folder's name — ``test_dice`` on ``data/raw/test``,
``unlabelled_dice`` on ``data/raw/unlabelled`` — and the run's dataset input and tags
(``vesselseg.dataset``, ``vesselseg.dataset.digest``: the DVC md5) say exactly which data and
version, so an evaluation on other data never replaces a test-set figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vesselseg.bundle import Resolver
from vesselseg.errors import VesselsegError
from vesselseg.evaluation.outputs import model_label, slug
from vesselseg.evaluation.score import SUMMED  # voxel counts: in metrics.json, not MLflow
from vesselseg.lineage import DatasetRef, pipeline_tags
from vesselseg.provenance import git_commit


def model_runs(model: Path, resolve: Resolver | None = None) -> tuple[str | None, list[str]]:
    """``(training run id of a model file or None, run ids of an ensemble's members)``; a
    member without a run gives ``""``."""
    from vesselseg.bundle import load_meta, model_file
    from vesselseg.inference.ensemble import is_ensemble_file, read_members

    if is_ensemble_file(model):
        runs = []
        for member, _ in read_members(model):
            try:
                runs.append(str(load_meta(model_file(member, resolve)).info.get("run_id") or ""))
            except VesselsegError:
                runs.append("")
        return None, runs
    run_id = load_meta(model).info.get("run_id")
    return (str(run_id) if run_id else None), []


def data_key(dataset: DatasetRef) -> str:
    """The data folder's name as a metric prefix: ``data/raw/test`` -> ``test``."""
    return slug(Path(dataset.source).name)


def evaluation_metrics(overall: dict[str, Any], dataset: DatasetRef) -> dict[str, float]:
    """``{<data>_<metric>: value}`` of the numeric overall metrics (voxel counts left out)."""
    prefix = data_key(dataset)
    return {
        f"{prefix}_{k}": float(v)
        for k, v in overall.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in SUMMED
    }


def log_evaluation_run(
    overall: dict[str, Any],
    files: list[Path],
    model: Path,
    dataset: DatasetRef,
    experiment: str = "vesselseg",
    root: str | Path | None = None,
    resolve: Resolver | None = None,
) -> str:
    """Log one evaluation (see the module docstring); returns the evaluation run's id."""
    from vesselseg import tracking

    parent, members = model_runs(model, resolve)
    key = data_key(dataset)
    tags = {
        "vesselseg.stage": "evaluate",
        "vesselseg.model": str(model),
        "vesselseg.dataset": dataset.name,
        "vesselseg.dataset.digest": dataset.digest,
        "vesselseg.dataset.source": dataset.source,
        "git_commit": git_commit() or "unknown",
        **pipeline_tags(),
    }
    if parent:
        tags["vesselseg.model_run_id"] = parent
    if members:
        tags["vesselseg.ensemble.runs"] = ",".join(members)
    name = f"{model_label(model)} on {key}"
    run_id, linked = tracking.start_linked_run(experiment, name, tags, parent, root)
    status = "FAILED"
    try:
        tracking.log_datasets(run_id, [(dataset, "evaluation")], root)
        tracking.log_evaluation(run_id, evaluation_metrics(overall, dataset), files, root=root)
        if members:
            tracking.log_artifact(run_id, model, "model", root)
        if linked and parent:
            folder = f"{key}-{dataset.digest[:8]}"
            tracking.log_evaluation(parent, {}, files, f"evaluation/{folder}", root)
            tracking.set_tags(parent, {f"vesselseg.evaluation.{folder}": run_id}, root)
        status = "FINISHED"
    finally:
        tracking.end_run(run_id, status, root)
    return run_id
