"""``vesselseg tune``: an Optuna study over crop size, learning rate, LR schedule and batch size.

The only part of the package that imports optuna. One module per job:

* :mod:`.space`: the search space declared in ``params.yaml`` (``tune:``): check, sample, apply.
* :mod:`.storage`: where trials live: Optuna's journal file ``tune.out_dir/optuna.journal``
  (default; safe for several processes and on NFS) or an RDB URL shared by many machines, with
  Optuna's heartbeats and stale-trial retry.
* :mod:`.study`: open ``tune.study`` (create or resume), the pruner (``median``, ``hyperband``
  or ``none``), queue fixed trials.
* :mod:`.objective`: one trial = a ``tune.max_epochs``-epoch training run whose objective is the
  best ``train.monitor``, recorded as a nested MLflow child run tagged ``optuna.state``.
* :mod:`.workers`: ``tune.jobs`` ``spawn``-ed worker processes (a script calling
  :func:`run_study` needs an ``if __name__ == "__main__"`` guard) on exact shares of
  ``tune.n_trials``; a dead worker's running trial is failed and the rest of its share rerun.
* :mod:`.session`: :func:`run_study`: one session under one progress bar, the study's parent
  MLflow run and the :class:`TuneSummary`.
* :mod:`.output`: ``params.tuned.yaml`` (the full params with the best values, written
  atomically) and the ``dvc exp run -S …`` command that applies them.
"""

from __future__ import annotations

from vesselseg.tuning.objective import RUN_STATUS, WORKER_ATTR, Objective, worker_id
from vesselseg.tuning.output import dvc_command, write_tuned_params
from vesselseg.tuning.session import PARENT_RUN_ATTR, TuneSummary, run_study
from vesselseg.tuning.space import check_search_space, suggest, trial_params, values_from_trial
from vesselseg.tuning.storage import describe_storage, open_storage, resolve_storage
from vesselseg.tuning.study import enqueue_trial, make_pruner, open_study
from vesselseg.tuning.workers import fail_orphaned_trials, run_worker, split_trials

__all__ = [
    "PARENT_RUN_ATTR",
    "RUN_STATUS",
    "WORKER_ATTR",
    "Objective",
    "TuneSummary",
    "check_search_space",
    "describe_storage",
    "dvc_command",
    "enqueue_trial",
    "fail_orphaned_trials",
    "make_pruner",
    "open_storage",
    "open_study",
    "resolve_storage",
    "run_study",
    "run_worker",
    "split_trials",
    "suggest",
    "trial_params",
    "values_from_trial",
    "worker_id",
    "write_tuned_params",
]
