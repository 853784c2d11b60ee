"""MLflow: where runs go, experiment set-up, runs, artifacts.

A leaf service: it imports mlflow (inside functions) and the standard library only, so every
stage that records a run may use it. Lightning's MLflow logger lives in
:mod:`vesselseg.training.logger`; the Model Registry in :mod:`vesselseg.registry`.

Default store: SQLite under ``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``
(the plain ``./mlruns`` file store is deprecated in MLflow 3). ``MLFLOW_TRACKING_URI`` selects
a real tracking server instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
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


# MLflow 3 opens an experiment in its GenAI view (traces, judges, prompts) unless it is tagged
# as model training: this tag (the value the UI's "Machine learning" type writes) says so.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
PARENT_RUN_TAG = "mlflow.parentRunId"  # the UI nests a run under this one


def ensure_experiment(name: str, root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created with our artifact folder when missing, and
    tagged as a model-training experiment (:data:`EXPERIMENT_KIND_TAG`) unless it has a kind."""
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(root))
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in (found.tags or {}):
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return found.experiment_id
    location = artifact_root(root)
    if location:
        location = f"{location}/{name}"
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
        )
    except MlflowException:
        # another process (a parallel tuning worker, a shard) created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def ui_url(
    experiment_id: str, run_id: str | None = None, base: str = "http://127.0.0.1:5000"
) -> str:
    """The MLflow UI page of an experiment's runs (or of one run), in the "Machine learning"
    view: MLflow 3.17's UI picks its view from ``?workflowType=`` (else the last one used)."""
    page = f"{base}/#/experiments/{experiment_id}"
    page += f"/runs/{run_id}" if run_id else "/runs"
    return f"{page}?workflowType=machine_learning"


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


def log_datasets(
    run_id: str, datasets: list[tuple[Any, str]], root: str | Path | None = None
) -> None:
    """Log ``[(dataset, context), ...]`` as the run's dataset inputs (the runs table's
    *Dataset* column). A dataset is a :class:`vesselseg.lineage.DatasetRef` (name, digest,
    source, profile); the context is ``training``, ``validation`` or ``evaluation``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [
        DatasetInput(
            Dataset(
                name=ref.name,
                digest=ref.digest,
                source_type="local",
                source=json.dumps({"uri": Path(ref.source).as_uri()}),
                profile=ref.profile(),
            ),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)],
        )
        for ref, context in datasets
    ]
    if inputs:
        _log_inputs_retrying(client(root), run_id, inputs)


def _log_inputs_retrying(c: Any, run_id: str, inputs: list[Any], attempts: int = 5) -> None:
    """``log_inputs``, retried when another process inserted the same dataset between the
    store's lookup and its insert (parallel tuning workers log the same train/val folders):
    the retry finds the dataset and links it instead of inserting it again."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            c.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if "UNIQUE constraint failed" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def metric_history(
    run_id: str, keys: list[str] | None = None, root: str | Path | None = None
) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` of a run's metrics (``keys``, or all), in logging
    order."""
    c = client(root)
    names = keys if keys is not None else sorted(c.get_run(run_id).data.metrics)
    history = {}
    for key in names:
        points = sorted(c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if points:
            history[key] = [(int(m.step), float(m.value)) for m in points]
    return history


def run_exists(run_id: str | None, root: str | Path | None = None) -> bool:
    """Whether this store has the run ``run_id``."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        client(root).get_run(run_id)
    except MlflowException:
        return False
    return True


def start_linked_run(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    root: str | Path | None = None,
) -> tuple[str, bool]:
    """``(run id, linked)``: a new run (RUNNING) named ``run_name``, a child of
    ``parent_run_id`` (in its experiment, nested under it in the UI; ``linked`` True) when this
    store has that run, else a run of ``experiment``."""
    c = client(root)
    tags = dict(tags)
    linked = run_exists(parent_run_id, root)
    if linked:
        experiment_id = c.get_run(str(parent_run_id)).info.experiment_id
        tags[PARENT_RUN_TAG] = str(parent_run_id)
    else:
        experiment_id = ensure_experiment(experiment, root)
    return c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id, linked


def log_evaluation(
    run_id: str,
    metrics: dict[str, float],
    files: list[Path],
    artifact_path: str = "evaluation",
    root: str | Path | None = None,
) -> None:
    """Log evaluation metrics (step 0) and files (under ``artifact_path``) to ``run_id``."""
    c = client(root)
    for key, value in metrics.items():
        c.log_metric(run_id, key, float(value))
    for path in files:
        c.log_artifact(run_id, str(path), artifact_path)
