"""MLflow: where runs go, experiment set-up, artifacts. The only module that imports mlflow.

Default store: SQLite under ``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``
(the plain ``./mlruns`` file store is deprecated in MLflow 3). ``MLFLOW_TRACKING_URI`` selects
a real tracking server instead.
"""

from __future__ import annotations

import logging
import os
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


def lightning_logger(
    experiment: str,
    run_name: str | None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    root: str | Path | None = None,
) -> Any:
    """A Lightning ``MLFlowLogger`` on our store; ``run_id`` continues an existing run."""
    from pytorch_lightning.loggers import MLFlowLogger

    ensure_experiment(experiment, root)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name or None,
        run_id=run_id,
        tracking_uri=tracking_uri(root),
        tags=tags,
        log_model=False,
    )


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


def git_commit() -> str | None:
    """The current git commit of the working directory, if any."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
