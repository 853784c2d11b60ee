"""``vesselseg tune``: an Optuna study over crop size, learning rate, LR schedule and batch size.

The search space is declared in ``params.yaml`` (``tune:``) and read here; every trial trains
with :func:`vesselseg.training.fit.train_model` for ``tune.max_epochs`` epochs and its objective
is the best validation Dice (``train.monitor``). The only module that imports optuna.

* **Pruning**: :class:`~vesselseg.training.pruning.PruningCallback` reports the metric every
  epoch; ``tune.pruner`` is ``median`` (after ``tune.startup_trials`` complete trials and
  ``tune.pruner_warmup_epochs`` epochs), ``hyperband`` or ``none``.
* **Tracking**: the study is a parent MLflow run (its id is kept in the study's user attributes,
  so a resumed study logs to the same run); each trial is a nested child run (tag
  ``mlflow.parentRunId``) with the resolved params, the per-epoch curves and the tag
  ``optuna.state`` = COMPLETE, PRUNED or FAIL.
* **Storage**: by default Optuna's journal file ``tune.out_dir/optuna.journal``: an append-only
  log guarded by a lock file, safe for several processes (and NFS) where Optuna itself advises
  against SQLite for parallel optimisation. ``tune.storage`` may name another journal file or an
  RDB URL (``postgresql://…``) that workers on many machines share.
* **Workers**: ``tune.jobs`` processes (multiprocessing ``spawn``, so a script calling
  :func:`run_study` needs an ``if __name__ == "__main__"`` guard) each run ``study.optimize`` on
  an exact share of ``tune.n_trials`` with cores/jobs torch threads; an exception in a trial marks
  it FAIL and the study goes on; a worker that dies has its running trial marked FAIL and the rest
  of its share rerun. A study with an existing name continues (resume). Trial models go to
  ``tune.out_dir/<study>/trial_NNNN/``; their Lightning checkpoints are deleted after the trial
  (the best one is an artifact of the child run).
* **Result**: ``params.tuned.yaml``: the full params with the best trial's values, written
  atomically, and the ``dvc exp run -S …`` command that applies them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.config import Params, TuneConfig, params_to_dict, with_values
from vesselseg.errors import ConfigError, VesselsegError
from vesselseg.models.shapes import size_divisor
from vesselseg.progress import progress_bar

log = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
PARENT_RUN_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "worker"
MIN_LR_RATIO = "train.min_lr_ratio"  # a trial param that is not a params.yaml key
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


# --------------------------------------------------------------------------- search space


def check_search_space(params: Params) -> None:
    """Raise :class:`ConfigError` for a search space that cannot be sampled or trained."""
    cfg = params.tune
    for name in ("crop_sizes", "schedules", "batch_sizes", "min_lr_ratios"):
        if not getattr(cfg, name):
            raise ConfigError(f"tune.{name} must list at least one choice")
    if "plateau" in cfg.schedules and not cfg.plateau_patiences:
        raise ConfigError("tune.plateau_patiences must list at least one choice")
    if "cosine" in cfg.schedules and not cfg.warmup_epochs:
        raise ConfigError("tune.warmup_epochs must list at least one choice")
    if cfg.plateau_factor_min > cfg.plateau_factor_max:
        raise ConfigError("tune.plateau_factor_min must be <= tune.plateau_factor_max")
    factor = size_divisor(params.model.depth)
    bad = [c for c in cfg.crop_sizes if c % factor]
    if bad:
        raise ConfigError(
            f"tune.crop_sizes: {bad[0]} is not a multiple of {factor} "
            f"({params.model.name} with depth {params.model.depth})"
        )


def suggest(trial: Any, cfg: TuneConfig) -> dict[str, Any]:
    """Sample one point of the search space; returns the trial's params (dotted names)."""
    trial.suggest_categorical("data.crop_size", list(cfg.crop_sizes))
    trial.suggest_float("train.lr", cfg.lr_min, cfg.lr_max, log=True)
    trial.suggest_categorical("train.batch_size", list(cfg.batch_sizes))
    trial.suggest_categorical(MIN_LR_RATIO, list(cfg.min_lr_ratios))
    schedule = trial.suggest_categorical("train.lr_schedule", list(cfg.schedules))
    if schedule == "plateau":
        trial.suggest_float(
            "train.lr_reduce_factor", cfg.plateau_factor_min, cfg.plateau_factor_max
        )
        trial.suggest_categorical("train.lr_patience", list(cfg.plateau_patiences))
    else:
        trial.suggest_categorical("train.warmup_epochs", list(cfg.warmup_epochs))
    return dict(trial.params)


def values_from_trial(trial_params: dict[str, Any]) -> dict[str, Any]:
    """Trial params → ``{"section.key": value}`` for :func:`vesselseg.config.with_values`."""
    values = {k: v for k, v in trial_params.items() if k != MIN_LR_RATIO}
    if MIN_LR_RATIO in trial_params and "train.lr" in trial_params:
        values["train.min_lr"] = trial_params["train.lr"] * trial_params[MIN_LR_RATIO]
    return values


def trial_params(params: Params, values: dict[str, Any], run_name: str) -> Params:
    """The params one trial trains with: sampled values and ``tune.max_epochs`` epochs."""
    return with_values(
        params, {**values, "train.max_epochs": params.tune.max_epochs, "train.run_name": run_name}
    )


# --------------------------------------------------------------------------- storage


def resolve_storage(cfg: TuneConfig) -> str:
    """``tune.storage`` as a storage spec: an RDB URL, or an absolute journal file path."""
    text = cfg.storage.strip()
    if not text:
        return str((Path(cfg.out_dir) / JOURNAL_NAME).resolve())
    if "://" in text:
        scheme = text.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in RDB_SCHEMES:
            raise ConfigError(
                f"tune.storage: unsupported URL scheme {scheme!r} "
                f"(use an RDB URL such as postgresql://… or a journal file path)"
            )
        return text
    return str(Path(text).expanduser().resolve())


def describe_storage(spec: str) -> str:
    """The storage for people: RDB URLs with the password hidden, or the journal file."""
    if "://" in spec:
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", spec)
    return f"journal file {spec}"


def open_storage(spec: str) -> Any:
    """An Optuna storage for ``spec`` (RDB with heartbeats, else a journal file)."""
    import optuna

    if "://" in spec:
        # heartbeats let any worker mark a trial FAIL when the machine running it died
        return optuna.storages.RDBStorage(spec, heartbeat_interval=60, grace_period=180)
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def make_pruner(cfg: TuneConfig) -> Any:
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.pruner_warmup_epochs
        )
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=cfg.max_epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def open_study(params: Params, spec: str | None = None, seed: int | None = None) -> Any:
    """Create ``tune.study`` in the storage, or load it when it exists (resume)."""
    import optuna

    _quiet_optuna()
    cfg = params.tune
    spec = spec or resolve_storage(cfg)
    return optuna.create_study(
        study_name=cfg.study,
        storage=open_storage(spec),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed if seed is None else seed),
        pruner=make_pruner(cfg),
        direction="maximize" if params.train.monitor_mode == "max" else "minimize",
        load_if_exists=True,
    )


def enqueue_trial(params: Params, trial_values: dict[str, Any]) -> None:
    """Queue a trial with fixed params (trial param names, e.g. ``{"train.lr": 0.01}``).

    Queued trials run first; params left out are sampled. Values outside the search space are
    allowed (Optuna warns), e.g. to check a known configuration or a deliberately bad one.
    """
    study = open_study(params)
    study.enqueue_trial(dict(trial_values), skip_if_exists=False)


# --------------------------------------------------------------------------- objective


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
            _remove_tree(checkpoint_dir(out))  # best.ckpt is an artifact of the child run

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


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- workers


def _quiet_optuna() -> None:
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_worker(
    params: Params,
    spec: str,
    n_trials: int,
    timeout: float | None,
    parent_run_id: str | None,
    mlflow_root: str | Path | None,
    seed: int,
    threads: int | None = None,
    on_trial: Any = None,
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


def _run_processes(
    params: Params,
    spec: str,
    shares: list[int],
    parent_run_id: str | None,
    mlflow_root: str | Path | None,
    seed: int,
    on_progress: Any = None,
) -> None:
    """Run workers in ``spawn``-ed processes; a crashed worker's remaining share is rerun.
    ``on_progress()`` is called every second while they run (the parent polls the study)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    timeout = params.tune.timeout or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // len(shares))
    started = time.monotonic()
    pending = list(shares)
    index = 0
    while pending:
        procs = []
        for share in pending:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            proc = ctx.Process(
                target=run_worker,
                args=(params, spec, share, left, parent_run_id, mlflow_root, seed + index, threads),
                name=f"tune-worker-{index}",
            )
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
            for proc, _ in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
            pids = {f"{socket.gethostname()}:{p.pid}" for p, _ in procs}
            fail_orphaned_trials(spec, params.tune.study, pids)
            raise
        pending = _fail_dead(params, spec, procs)


def _fail_dead(params: Params, spec: str, procs: list[tuple[Any, int]]) -> list[int]:
    """Mark trials of workers that died FAIL; return the shares still to run."""
    dead = [(p, share) for p, share in procs if p.exitcode not in (0, None)]
    if not dead:
        return []
    host = socket.gethostname()
    fail_orphaned_trials(spec, params.tune.study, {f"{host}:{p.pid}" for p, _ in dead})
    trials = open_study(params, spec).get_trials(deepcopy=False)
    rerun = []
    for proc, share in dead:
        done = sum(1 for t in trials if t.user_attrs.get(WORKER_ATTR) == f"{host}:{proc.pid}")
        log.warning("tuning worker %s exited with code %s", proc.name, proc.exitcode)
        if done == 0:
            raise VesselsegError(
                f"tuning worker {proc.name} exited with code {proc.exitcode} before any trial"
            )
        if share > done:
            rerun.append(share - done)
    return rerun


# --------------------------------------------------------------------------- the study


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
        states = ", ".join(f"{n} {s.lower()}" for s, n in self.states.items() if n) or "none"
        out = [
            f"study {self.study!r} ({describe_storage(self.storage)}): {self.n_trials} trials "
            f"({states}), {self.new_trials} new",
        ]
        if self.best_trial is not None and self.best_value is not None:
            shown = " ".join(f"{k}={_yaml_scalar(v)}" for k, v in self.best_values.items())
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
        if "://" in self.storage:
            target = describe_storage(self.storage)  # no password on the console
        else:
            target = shlex.quote(self.storage)
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
        discover_dataset(folder, require_masks=True)  # a missing dataset fails before the study
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
                run_worker(
                    params,
                    spec,
                    shares[0],
                    cfg.timeout or None,
                    parent,
                    mlflow_root,
                    seed,
                    on_trial=advance,
                )
            else:
                done = [0]

                def poll() -> None:
                    finished = _finished_trials(study, seen)
                    if finished > done[0]:
                        advance(finished - done[0])
                        done[0] = finished

                _run_processes(params, spec, shares, parent, mlflow_root, seed, poll)
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
        keys = {k: v for k, v in _flat_tune(params).items() if k != "tune.n_trials"}
        keys["tune.storage"] = describe_storage(spec)
        tracking.log_params(run_id, keys, mlflow_root)
    return run_id


def _flat_tune(params: Params) -> dict[str, Any]:
    from vesselseg.config import flatten

    return {k: v for k, v in flatten(params).items() if k.startswith("tune.")}


def _summarize(
    study: Any,
    params: Params,
    spec: str,
    seen: set[int],
    parent: str | None,
    mlflow_root: str | Path | None,
) -> TuneSummary:
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
    from vesselseg import tracking

    if not summary.parent_run_id:
        return
    run_id = summary.parent_run_id
    best = {f"best_{summary.monitor}": summary.best_value or 0.0}
    tracking.log_metrics(run_id, best, summary.n_trials, mlflow_root)
    tags = {f"best.{k}": _yaml_scalar(v) for k, v in summary.best_values.items()}
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


# --------------------------------------------------------------------------- results


def _yaml_scalar(value: Any) -> str:
    """A value as YAML flow text that reads back as the same type (``1.0e-05``, ``[1, 2]``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def write_tuned_params(params: Params, values: dict[str, Any], path: str | Path) -> Path:
    """Write the full params with ``values`` applied to ``path`` atomically (``.part`` + rename)."""
    import yaml

    path = Path(path)
    tuned = params_to_dict(with_values(params, values))
    header = (
        "# params.yaml with the best values of the Optuna study "
        f"{params.tune.study!r} applied (vesselseg tune):\n"
        + "".join(f"#   {k}: {_yaml_scalar(v)}\n" for k, v in values.items())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(header + yaml.safe_dump(tuned, sort_keys=False, default_flow_style=None))
    os.replace(part, path)
    return path


def dvc_command(values: dict[str, Any]) -> str:
    """``dvc exp run -S key=value …`` applying ``values`` to params.yaml."""
    sets = " ".join(f"-S {shlex.quote(f'{k}={_yaml_scalar(v)}')}" for k, v in values.items())
    return f"dvc exp run {sets}"
