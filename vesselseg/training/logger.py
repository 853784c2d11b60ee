"""Lightning's ``MLFlowLogger`` on vesselseg's MLflow store (:mod:`vesselseg.tracking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vesselseg import tracking


def lightning_logger(
    experiment: str,
    run_name: str | None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    root: str | Path | None = None,
) -> Any:
    """A Lightning ``MLFlowLogger`` on our store; ``run_id`` continues an existing run.

    The logger calls ``mlflow.set_tracking_uri``: use it inside
    :func:`vesselseg.tracking.keep_global_tracking_uri` to leave the process-wide URI as it was.
    """
    from pytorch_lightning.loggers import MLFlowLogger

    tracking.ensure_experiment(experiment, root)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name or None,
        run_id=run_id,
        tracking_uri=tracking.tracking_uri(root),
        tags=tags,
        log_model=False,
    )
