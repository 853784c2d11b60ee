"""One ``vesselseg tune`` session: add ``tune.n_trials`` trials to the study, then report.

The study is a parent MLflow run (its id is kept in the study's user attributes, so a resumed
study logs to the same run); each trial is a nested child run (:mod:`.objective`). The session
runs its trials in this process (``tune.jobs`` 1) or in worker processes (:mod:`.workers`) under
one progress bar, then writes ``params.tuned.yaml`` and returns a :class:`TuneSummary`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.config import Params
from vesselseg.errors import VesselsegError
from vesselseg.progress import progress_bar
from vesselseg.tuning.output import dvc_command, write_tuned_params, yaml_scalar
from vesselseg.tuning.space import check_search_space, values_from_trial
from vesselseg.tuning.storage import describe_storage, is_rdb, resolve_storage
from vesselseg.tuning.study import FINISHED_STATES, open_study
from vesselseg.tuning.workers import run_processes, run_worker, split_trials

PARENT_RUN_ATTR = "mlflow_parent_run_id"


@dataclass
class TuneSummary:
    """What a ``vesselseg tune`` session did and found."""

    study: str
    storage: str
    monitor: str
    n_trials: int
    new_trials: int
    states: dict[str, int]
    parent_run_id: str | None
    tracking_uri: str
    best_trial: int | None = None
    best_value: float | None = None
    best_values: dict[str, Any] = field(default_factory=dict)
    tuned_path: Path | None = None
    dvc_command: str | None = None

    def lines(self) -> list[str]:
        """The console summary, one line per fact."""
        states = ", ".join(f"{n} {s.lower()}" for s, n in self.states.items() if n) or "none"
        out = [
            f"study {self.study!r} ({describe_storage(self.storage)}): {self.n_trials} trials "
            f"({states}), {self.new_trials} new",
        ]
        if self.best_trial is not None and self.best_value is not None:
            shown = " ".join(f"{k}={yaml_scalar(v)}" for k, v in self.best_values.items())
            out.append(
                f"best {self.monitor} {self.best_value:.4f} (trial {self.best_trial}): {shown}"
            )
            out.append(f"wrote {self.tuned_path}; apply with: {self.dvc_command}")
        if self.parent_run_id:
            where = (
                f"on {self.tracking_uri}"
                if self.tracking_uri.startswith(("http:", "https:", "databricks"))
                else f"(mlflow ui --backend-store-uri {self.tracking_uri})"
            )
            out.append(f"MLflow: parent run {self.parent_run_id} {where}")
        # no password on the console
        target = (
            describe_storage(self.storage) if is_rdb(self.storage) else shlex.quote(self.storage)
        )
        out.append(f"dashboard: optuna-dashboard {target}")
        return out


def run_study(
    params: Params,
    tuned_path: str | Path = "params.tuned.yaml",
    mlflow_root: str | Path | None = None,
) -> TuneSummary:
    """Add ``tune.n_trials`` trials to ``tune.study`` with ``tune.jobs`` workers; write results.

    Raises :class:`VesselsegError` when the study has no complete trial at the end.
    """
    from vesselseg import tracking
    from vesselseg.io.dataset import discover_dataset

    cfg = params.tune
    check_search_space(params)
    spec = resolve_storage(cfg)
    for folder in (params.data.train_dir, params.data.val_dir):
        # a missing dataset or a bad --spacing fails before the study
        discover_dataset(folder, True, params.data.spacing, params.data.unit)
    if mlflow_root is not None:
        mlflow_root = Path(mlflow_root).resolve()
    study = open_study(params, spec)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"}
    seed = cfg.seed + 7919 * len(seen)  # a resumed session does not replay earlier random samples
    parent = _start_parent_run(study, params, spec, mlflow_root)
    status = "FAILED"
    try:
        _run_with_progress(params, spec, parent, mlflow_root, seed, study, seen)
        summary = _summarize(study, params, spec, seen, parent, mlflow_root)
        if summary.best_trial is None:
            counts = ", ".join(f"{n} {s.lower()}" for s, n in summary.states.items() if n)
            raise VesselsegError(
                f"study {cfg.study!r}: no trial completed ({counts}); "
                f"{_first_error(study, seen)}see the trials' MLflow runs"
            )
        summary.tuned_path = write_tuned_params(params, summary.best_values, tuned_path)
        summary.dvc_command = dvc_command(summary.best_values)
        _finish_parent(summary, mlflow_root)
        status = "FINISHED"
        return summary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent:
            tracking.end_run(parent, status, mlflow_root)


def _run_with_progress(
    params: Params,
    spec: str,
    parent: str | None,
    mlflow_root: str | Path | None,
    seed: int,
    study: Any,
    seen: set[int],
) -> None:
    """Run the session's trials under one progress bar over ``tune.n_trials`` (the trials'
    own training bars are turned off while it shows)."""
    cfg = params.tune
    shares = split_trials(cfg.n_trials, cfg.jobs)
    with progress_bar(f"tune {cfg.study}", total=cfg.n_trials, unit="trials") as advance:
        saved = os.environ.get("VESSELSEG_PROGRESS")
        os.environ["VESSELSEG_PROGRESS"] = "0"
        try:
            if len(shares) == 1:
                timeout = cfg.timeout or None
                run_worker(
                    params, spec, shares[0], timeout, parent, mlflow_root, seed, None, advance
                )
            else:
                done = [0]

                def poll() -> None:
                    finished = _finished_trials(study, seen)
                    if finished > done[0]:
                        advance(finished - done[0])
                        done[0] = finished

                run_processes(params, spec, shares, parent, mlflow_root, seed, poll)
                poll()
        finally:
            if saved is None:
                os.environ.pop("VESSELSEG_PROGRESS", None)
            else:
                os.environ["VESSELSEG_PROGRESS"] = saved


def _finished_trials(study: Any, seen: set[int]) -> int:
    """Trials of this session that are no longer running or waiting."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number not in seen and t.state.name not in ("RUNNING", "WAITING")
    )


def _start_parent_run(
    study: Any, params: Params, spec: str, mlflow_root: str | Path | None
) -> str | None:
    """The study's parent MLflow run: reopened when the study has one in this store."""
    from vesselseg import tracking
    from vesselseg.config import flatten

    cfg = params.tune
    previous = study.user_attrs.get(PARENT_RUN_ATTR)
    tags = {
        "optuna.study": cfg.study,
        "optuna.storage": describe_storage(spec),
        "vesselseg.kind": "tuning",
    }
    run_id = tracking.start_run(params.train.experiment, cfg.study, tags, mlflow_root, previous)
    if run_id != previous:
        study.set_user_attr(PARENT_RUN_ATTR, run_id)
        keys = {
            k: v
            for k, v in flatten(params).items()
            if k.startswith("tune.") and k != "tune.n_trials"
        }
        keys["tune.storage"] = describe_storage(spec)
        tracking.log_params(run_id, keys, mlflow_root)
    return run_id


def _summarize(
    study: Any,
    params: Params,
    spec: str,
    seen: set[int],
    parent: str | None,
    mlflow_root: str | Path | None,
) -> TuneSummary:
    """The study's trial counts by state and its best trial so far."""
    from vesselseg import tracking

    trials = study.get_trials(deepcopy=False)
    states = {s: 0 for s in FINISHED_STATES}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    summary = TuneSummary(
        study=params.tune.study,
        storage=spec,
        monitor=params.train.monitor,
        n_trials=len(trials),
        new_trials=sum(t.number not in seen and t.state.name != "WAITING" for t in trials),
        states=states,
        parent_run_id=parent,
        tracking_uri=tracking.tracking_uri(mlflow_root),
    )
    if states["COMPLETE"]:
        best = study.best_trial
        summary.best_trial = best.number
        summary.best_value = float(best.value)
        summary.best_values = values_from_trial(best.params)
    return summary


def _first_error(study: Any, seen: set[int]) -> str:
    for t in study.get_trials(deepcopy=False):
        reason = t.user_attrs.get("error")
        if reason and t.number not in seen:
            return f"first error: {reason[:200]}; "
    return ""


def _finish_parent(summary: TuneSummary, mlflow_root: str | Path | None) -> None:
    """Log the best value, ``best.*`` tags, counts and ``params.tuned.yaml`` to the parent."""
    from vesselseg import tracking

    if not summary.parent_run_id:
        return
    run_id = summary.parent_run_id
    best = {f"best_{summary.monitor}": summary.best_value or 0.0}
    tracking.log_metrics(run_id, best, summary.n_trials, mlflow_root)
    tags = {f"best.{k}": yaml_scalar(v) for k, v in summary.best_values.items()}
    tags.update(
        {
            "best.trial": summary.best_trial,
            "optuna.trials": summary.n_trials,
            **{f"optuna.{s.lower()}": n for s, n in summary.states.items()},
            "dvc_command": summary.dvc_command,
        }
    )
    tracking.set_tags(run_id, tags, mlflow_root)
    if summary.tuned_path is not None:
        tracking.log_artifact(run_id, summary.tuned_path, None, mlflow_root)
