"""Lightning callbacks: overlay PNGs to MLflow, progress bar choice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class OverlayCallback(pl.Callback):
    """Every ``every`` epochs (and at the last), log a PNG overlay of a validation crop."""

    def __init__(self, every: int, mlflow_root: str | Path | None = None) -> None:
        self.every = every
        self.mlflow_root = mlflow_root

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: Any) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0)
        if not self.every or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if module.preview is None or not ((epoch + 1) % self.every == 0 or last):
            return
        import matplotlib.pyplot as plt

        from vesselseg import tracking
        from vesselseg.training.overlay import overlay_figure

        image, label, prob = (t.numpy() for t in module.preview)
        fig = overlay_figure(image, label, prob, title=f"epoch {epoch}")
        tracking.log_figure(
            trainer.logger.run_id, fig, f"overlays/epoch_{epoch:03d}.png", self.mlflow_root
        )
        plt.close(fig)


def progress_callbacks() -> list[pl.Callback]:
    """A rich progress bar when enabled (``VESSELSEG_PROGRESS=0`` turns bars off)."""
    if os.environ.get("VESSELSEG_PROGRESS", "1") == "0":
        return []
    return [pl.callbacks.RichProgressBar(leave=True)]
