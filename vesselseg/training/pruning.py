"""Report the validation metric to a tuning trial every epoch and stop trials that lag behind.

Our own ten-line equivalent of optuna-integration's Lightning callback (which imports the
``lightning`` package, not ``pytorch_lightning``). It needs only an object with
``report(value, step)`` and ``should_prune()`` (an Optuna trial); the exception to raise is
passed in (``optuna.TrialPruned`` from :mod:`vesselseg.tuning.objective`), so this module does
not import optuna.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class TrialPrunedError(Exception):
    """Raised when the trial says to prune and no other exception class was given."""


class PruningCallback(pl.Callback):
    """After each validation epoch: ``trial.report(monitor, epoch)``; raise if it should prune.

    ``run_id`` is the MLflow run of the training (read when fitting starts), so the caller can
    mark the run as pruned after the exception.
    """

    def __init__(
        self,
        trial: Any,
        monitor: str = "val_dice",
        pruned_error: type[BaseException] = TrialPrunedError,
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_error = pruned_error
        self.run_id: str | None = None
        self.reported: list[float] = []

    def on_fit_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.run_id = getattr(trainer.logger, "run_id", None)

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            log.warning("pruning: metric %r was not logged; nothing reported", self.monitor)
            return
        epoch = trainer.current_epoch
        score = float(value)
        self.reported.append(score)
        self.trial.report(score, step=epoch)
        if self.trial.should_prune():
            shown = f"{score:.4f}" if math.isfinite(score) else str(score)
            raise self.pruned_error(f"pruned at epoch {epoch} with {self.monitor} {shown}")
