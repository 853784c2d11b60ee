"""MLflow: where runs go, experiment set-up, runs, artifacts.

A leaf service: it imports mlflow (inside functions) and the standard library only, so every
stage that records a run may use it. Lightning's MLflow logger lives in
:mod:`vesselseg.training.logger`; the Model Registry in :mod:`vesselseg.registry`.

Default store: SQLite under ``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``
(the plain ``./mlruns`` file store is deprecated in MLflow 3). ``MLFLOW_TRACKING_URI`` selects
a real tracking server instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("mlruns")


def tracking_uri(root: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:////abs/mlruns/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    folder = Path(root or DEFAULT_ROOT).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root(root: str | Path | None = None) -> str | None:
    """Artifact folder for new experiments of the embedded store (None for a server)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(root or DEFAULT_ROOT).resolve() / "artifacts").as_uri()


def quiet_mlflow() -> None:
    """No telemetry, no network probes, fewer log lines from MLflow and alembic."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_experiment(name: str, root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created with our artifact folder when missing."""
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(root))
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_root(root)
    if location:
        location = f"{location}/{name}"
    return client.create_experiment(name, artifact_location=location)


def _global_tracking_uri() -> str | None:
    """MLflow's process-wide tracking URI (``mlflow.set_tracking_uri``), or None when only
    ``$MLFLOW_TRACKING_URI`` or the default applies. ``set_tracking_uri`` also sets the variable,
    so the public ``is_tracking_uri_set`` is asked with the variable out of the way."""
    import mlflow

    env = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        return mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextmanager
def keep_global_tracking_uri() -> Iterator[None]:
    """Restore MLflow's process-wide tracking URI and ``$MLFLOW_TRACKING_URI`` on exit:
    Lightning's ``MLFlowLogger`` calls ``mlflow.set_tracking_uri``, which would otherwise leave
    a notebook (or the next run in the same process) pointed at this run's store."""
    import mlflow

    old, env = _global_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old)  # None unsets it: MLflow follows the variable again
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``, a registry version's
    ``models:/m-<id>`` source) at ``uri`` for the block; restore the global URI and
    ``$MLFLOW_TRACKING_URI`` after."""
    import mlflow

    with keep_global_tracking_uri():
        mlflow.set_tracking_uri(uri)
        yield


def client(root: str | Path | None = None) -> Any:
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root))


def log_artifact(
    run_id: str, path: str | Path, artifact_path: str | None = None, root: str | Path | None = None
) -> None:
    client(root).log_artifact(run_id, str(path), artifact_path)


def log_figure(
    run_id: str, figure: Any, artifact_file: str, root: str | Path | None = None
) -> None:
    client(root).log_figure(run_id, figure, artifact_file)


def log_metrics(
    run_id: str, metrics: dict[str, float], step: int | None = None, root: str | Path | None = None
) -> None:
    c = client(root)
    for key, value in metrics.items():
        c.log_metric(run_id, key, float(value), step=step or 0)


def reuse_or_start_run(
    experiment: str,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    root: str | Path | None = None,
) -> tuple[str, bool]:
    """``(run id, started)``: ``run_id`` untouched when this store has it (``started`` False),
    else a new run in ``experiment`` named ``run_name`` with ``tags`` (``started`` True)."""
    from mlflow.exceptions import MlflowException

    c = client(root)
    if run_id:
        try:
            c.get_run(run_id)
        except MlflowException:
            log.info("MLflow run %s is not in this store; starting a new one", run_id)
        else:
            return run_id, False
    experiment_id = ensure_experiment(experiment, root)
    run = c.create_run(experiment_id, run_name=run_name or None, tags=tags or {})
    return run.info.run_id, True


def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    root: str | Path | None = None,
    run_id: str | None = None,
) -> str:
    """Create a run (status RUNNING) and return its id; ``run_id`` reopens it if it exists."""
    run_id, started = reuse_or_start_run(experiment, run_id, run_name, tags, root)
    if not started:
        client(root).update_run(run_id, status="RUNNING")
        set_tags(run_id, tags or {}, root)
    return run_id


def end_run(run_id: str, status: str = "FINISHED", root: str | Path | None = None) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    client(root).set_terminated(run_id, status)


def set_tags(run_id: str, tags: dict[str, Any], root: str | Path | None = None) -> None:
    c = client(root)
    for key, value in tags.items():
        c.set_tag(run_id, key, str(value))


def log_params(run_id: str, params: dict[str, Any], root: str | Path | None = None) -> None:
    """Log ``{"train.lr": 0.001, ...}`` as run params (params are immutable once logged)."""
    from mlflow.entities import Param

    items = [Param(key, str(value)) for key, value in params.items()]
    c = client(root)
    for start in range(0, len(items), 100):
        c.log_batch(run_id, params=items[start : start + 100])


def log_evaluation(
    run_id: str | None,
    metrics: dict[str, float],
    files: list[Path],
    root: str | Path | None = None,
    experiment: str = "vesselseg",
) -> str:
    """Log evaluation metrics and files to ``run_id`` when this store has it, else a new run."""
    c = client(root)
    run_id, finish = reuse_or_start_run(
        experiment, run_id, "evaluate", {"vesselseg.stage": "evaluate"}, root
    )
    for key, value in metrics.items():
        c.log_metric(run_id, key, value)
    for path in files:
        c.log_artifact(run_id, str(path), "evaluation")
    if finish:
        c.set_terminated(run_id)
    return run_id
