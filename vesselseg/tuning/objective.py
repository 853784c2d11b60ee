"""One trial: a short real training run, recorded as a nested MLflow child run of the study.

The objective is the best ``train.monitor`` of :func:`vesselseg.training.fit.train_model`;
:class:`~vesselseg.training.pruning.PruningCallback` reports it every epoch so the pruner can
stop the trial. The child run gets the tag ``optuna.state`` (COMPLETE, PRUNED or FAIL) and the
run status of :data:`RUN_STATUS`, whatever the trial's outcome.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from vesselseg.config import Params, with_values
from vesselseg.errors import VesselsegError
from vesselseg.tuning.space import suggest, trial_params, values_from_trial

log = logging.getLogger(__name__)

WORKER_ATTR = "worker"  # trial user attribute: the ``host:pid`` that ran it
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of ``pid`` on this host)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


class Objective:
    """Train one trial; its MLflow child run records params, curves and the final state."""

    def __init__(
        self, params: Params, parent_run_id: str | None, mlflow_root: str | Path | None
    ) -> None:
        self.params = params
        self.parent_run_id = parent_run_id
        self.mlflow_root = mlflow_root

    def __call__(self, trial: Any) -> float:
        import optuna

        from vesselseg.training.fit import checkpoint_dir, train_model
        from vesselseg.training.pruning import PruningCallback

        cfg = self.params.tune
        trial.set_user_attr(WORKER_ATTR, worker_id())
        out = Path(cfg.out_dir) / cfg.study / f"trial_{trial.number:04d}" / "model.pt"
        callback = PruningCallback(trial, self.params.train.monitor, optuna.TrialPruned)
        tags = {"optuna.study": cfg.study, "optuna.trial": str(trial.number)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        state, error, value = "FAIL", "", None
        params = with_values(self.params, {"train.run_name": f"{cfg.study}-trial-{trial.number}"})
        try:
            values = values_from_trial(suggest(trial, cfg))
            params = trial_params(self.params, values, params.train.run_name)
            result = train_model(
                params, out, tags=tags, mlflow_root=self.mlflow_root, extra_callbacks=[callback]
            )
            value = result.best_score
            if value is None or not math.isfinite(value):
                raise VesselsegError(f"trial {trial.number}: no finite {params.train.monitor}")
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            trial.set_user_attr("error", error)
            raise
        finally:
            self._record(trial.number, callback.run_id, params, tags, state, error, value)
            # best.ckpt is an artifact of the child run
            shutil.rmtree(checkpoint_dir(out), ignore_errors=True)

    def _record(
        self,
        number: int,
        run_id: str | None,
        params: Params,
        tags: dict[str, str],
        state: str,
        error: str,
        value: float | None,
    ) -> None:
        """Tag the child run with the trial state (creating the run if training never did)."""
        from vesselseg import tracking
        from vesselseg.config import flatten

        root = self.mlflow_root
        try:
            if run_id is None:
                run_id = tracking.start_run(
                    params.train.experiment, params.train.run_name, tags, root
                )
                tracking.log_params(run_id, flatten(params), root)
            extra = {"optuna.state": state}
            if error:
                extra["optuna.error"] = error
            tracking.set_tags(run_id, extra, root)
            tracking.end_run(run_id, RUN_STATUS[state], root)
            if self.parent_run_id and value is not None and state == "COMPLETE":
                tracking.log_metrics(self.parent_run_id, {"trial_value": value}, number, root)
        except Exception as exc:  # tracking must never hide the trial's own outcome
            log.warning("trial %d: could not record its MLflow run: %s", number, exc)
