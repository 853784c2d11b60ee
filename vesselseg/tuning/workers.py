"""Worker processes of one ``vesselseg tune`` session, and what happens when one dies.

Each worker runs ``study.optimize`` on an exact share of ``tune.n_trials`` (Optuna's own
``n_trials`` counts its finished trials: COMPLETE, PRUNED and FAIL, as exceptions are caught).
Optuna's ``MaxTrialsCallback`` is not used: it counts the whole study's trials, while
``--n-trials N`` adds N trials per session and sessions on several machines add up in one study;
and workers checking it after each trial could start one trial too many together.

A worker process that dies (killed, out of host memory) leaves its running trial RUNNING. The
journal storage has no heartbeat in Optuna 5.0, and an RDB's heartbeat notices only after its
grace period, so the session fails that trial itself (:func:`fail_orphaned_trials`, by the
``host:pid`` each trial records) and reruns the rest of the worker's share in a new process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vesselseg.config import Params
from vesselseg.errors import VesselsegError
from vesselseg.tuning.objective import WORKER_ATTR, Objective, worker_id
from vesselseg.tuning.storage import open_storage
from vesselseg.tuning.study import open_study

log = logging.getLogger(__name__)

Workers = list[tuple[Any, int]]  # (process, its share of trials)


def run_worker(
    params: Params,
    spec: str,
    n_trials: int,
    timeout: float | None,
    parent_run_id: str | None,
    mlflow_root: str | Path | None,
    seed: int,
    threads: int | None = None,
    on_trial: Callable[[int], None] | None = None,
) -> None:
    """One worker: ``study.optimize`` for ``n_trials``; exceptions in a trial mark it FAIL.
    ``on_trial(1)`` is called after every finished trial (the session's progress bar).

    ``threads`` is set in worker processes (before torch is imported): no progress bars and at
    most ``threads`` CPU threads each (unless ``OMP_NUM_THREADS`` is set), so parallel workers
    share the cores instead of oversubscribing them.
    """
    if threads is not None:
        os.environ["VESSELSEG_PROGRESS"] = "0"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        logging.basicConfig(level=logging.INFO, format="%(processName)s: %(message)s")
    from vesselseg.training.fit import quiet_lightning

    quiet_lightning()
    study = open_study(params, spec, seed=seed)
    study.optimize(
        Objective(params, parent_run_id, mlflow_root),
        n_trials=n_trials,
        timeout=timeout,
        catch=(Exception,),
        gc_after_trial=True,
        callbacks=[lambda _study, _trial: on_trial(1)] if on_trial is not None else None,
    )


def split_trials(n_trials: int, jobs: int) -> list[int]:
    """Shares of ``n_trials`` for ``jobs`` workers, summing to exactly ``n_trials``."""
    jobs = max(1, min(jobs, n_trials))
    return [n_trials // jobs + (i < n_trials % jobs) for i in range(jobs)]


def fail_orphaned_trials(spec: str, study_name: str, workers: set[str]) -> list[int]:
    """Mark RUNNING trials of dead ``workers`` (``host:pid``) FAIL; return their numbers."""
    from optuna.trial import TrialState

    storage = open_storage(spec)
    study_id = storage.get_study_id_from_name(study_name)
    failed = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) in workers:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "error", "worker process died")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(trial.number)
    if failed:
        log.warning("marked trials %s of crashed workers as FAIL", failed)
    return failed


def thread_budget(jobs: int) -> int:
    """CPU threads per worker: this process's cores shared by ``jobs`` workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


def run_processes(
    params: Params,
    spec: str,
    shares: list[int],
    parent_run_id: str | None,
    mlflow_root: str | Path | None,
    seed: int,
    on_progress: Callable[[], None] | None = None,
) -> None:
    """Run workers in ``spawn``-ed processes; a crashed worker's remaining share is rerun.
    ``on_progress()`` is called every second while they run (the parent polls the study)."""
    ctx = multiprocessing.get_context("spawn")
    timeout = params.tune.timeout or None
    threads = thread_budget(len(shares))
    started = time.monotonic()
    pending, index = list(shares), 0
    while pending:
        procs: Workers = []
        for share in pending:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            args = (params, spec, share, left, parent_run_id, mlflow_root, seed + index, threads)
            proc = ctx.Process(target=run_worker, args=args, name=f"tune-worker-{index}")
            proc.start()
            procs.append((proc, share))
            index += 1
        try:
            for proc, _ in procs:
                while proc.is_alive():
                    proc.join(timeout=1.0)
                    if on_progress is not None:
                        on_progress()
        except BaseException:  # Ctrl-C: give workers time to record their trials, then stop
            _stop_workers(procs, spec, params.tune.study)
            raise
        pending = _fail_dead(params, spec, procs)


def _stop_workers(procs: Workers, spec: str, study_name: str, wait_s: float = 30) -> None:
    """Wait up to ``wait_s`` for each worker, terminate the rest, fail their running trials."""
    for proc, _ in procs:
        proc.join(timeout=wait_s)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    fail_orphaned_trials(spec, study_name, {worker_id(p.pid) for p, _ in procs})


def _fail_dead(params: Params, spec: str, procs: Workers) -> list[int]:
    """Mark trials of workers that died FAIL; return the shares still to run."""
    dead = [(p, share) for p, share in procs if p.exitcode not in (0, None)]
    if not dead:
        return []
    fail_orphaned_trials(spec, params.tune.study, {worker_id(p.pid) for p, _ in dead})
    trials = open_study(params, spec).get_trials(deepcopy=False)
    rerun = []
    for proc, share in dead:
        done = sum(1 for t in trials if t.user_attrs.get(WORKER_ATTR) == worker_id(proc.pid))
        log.warning("tuning worker %s exited with code %s", proc.name, proc.exitcode)
        if done == 0:
            raise VesselsegError(
                f"tuning worker {proc.name} exited with code {proc.exitcode} before any trial"
            )
        if share > done:
            rerun.append(share - done)
    return rerun
