"""Where a study's trials live: Optuna's journal file (default) or an RDB shared by machines.

* **Journal file** (``tune.out_dir/optuna.journal``): an append-only operation log guarded by a
  lock file, safe for several processes and on NFS (Optuna advises against SQLite for parallel
  optimisation). Optuna 5.0's ``JournalStorage`` has no heartbeat (it is not a
  ``BaseHeartbeat``), so the trials of a dead local worker are failed by
  :func:`vesselseg.tuning.workers.fail_orphaned_trials`.
* **RDB URL** (``postgresql://…``): Optuna's heartbeats. Every running trial records one every
  :data:`HEARTBEAT_INTERVAL_S`; a worker starting its next trial marks trials silent for
  :data:`GRACE_PERIOD_S` FAIL (their machine died) and Optuna's
  ``RetryHeartbeatStaleTrialCallback`` queues each one again, at most :data:`STALE_RETRIES` times.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vesselseg.config import TuneConfig
from vesselseg.errors import ConfigError

JOURNAL_NAME = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
STALE_RETRIES = 1  # a configuration that kills its machine (host OOM) is not tried forever


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


def is_rdb(spec: str) -> bool:
    """Whether ``spec`` (from :func:`resolve_storage`) is an RDB URL, not a journal file."""
    return "://" in spec


def describe_storage(spec: str) -> str:
    """The storage for people: RDB URLs with the password hidden, or the journal file."""
    if is_rdb(spec):
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", spec)
    return f"journal file {spec}"


def quiet_optuna() -> None:
    """Silence Optuna's ExperimentalWarning (heartbeats and the retry callback are marked so)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(spec: str) -> Any:
    """An Optuna storage for ``spec``: RDB with heartbeats and one retry, else a journal file."""
    import optuna

    quiet_optuna()
    if is_rdb(spec):
        return optuna.storages.RDBStorage(
            spec,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=STALE_RETRIES
            ),
        )
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(spec))
