"""The thin LightningModule: a network, the masked loss, optimiser and LR schedule."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from vesselseg.config import TrainConfig
from vesselseg.losses import masked_dice_bce_loss


class VesselSegModule(pl.LightningModule):
    """Wraps ``net`` (logits ``[B, 1, z, y, x]``); batches are ``(image, label)``.

    The label has the logits' shape: the whole crop for 3D networks, the centre slice of a
    ``context``-slice stack for 2.5D slice networks.

    ``hparams`` holds only plain data (``bundle``: the saved-model settings; ``train``: the
    training config) so checkpoints load with ``weights_only=True``.
    """

    def __init__(self, net: nn.Module, train_cfg: TrainConfig, bundle: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.cfg = train_cfg
        self.save_hyperparameters({"bundle": bundle, "train": vars(train_cfg).copy()}, logger=False)
        self._val_counts = torch.zeros(3, dtype=torch.float64)
        self.preview: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return masked_dice_bce_loss(
            logits.float(), label, dice_weight=self.cfg.dice_weight, bce_weight=self.cfg.bce_weight
        )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        image, label = batch
        loss = self._loss(self(image), label)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=image.shape[0],
            sync_dist=True,
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros(3, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        image, label = batch
        logits = self(image)
        if batch_idx == 0:  # image, annotation and probability of one crop, for the overlay PNG
            start = (image.shape[2] - logits.shape[2]) // 2  # 2.5D: the centre slice
            self.preview = (
                image[0, 0, start : start + logits.shape[2]].cpu(),
                label[0, 0].cpu(),
                torch.sigmoid(logits[0, 0].float()).cpu(),
            )
        self.log(
            "val_loss",
            self._loss(logits, label),
            on_epoch=True,
            prog_bar=True,
            batch_size=image.shape[0],
            sync_dist=True,
        )
        pred = logits.float() > 0
        vessel, background = label == 1, label == 2
        self._val_counts += torch.tensor(
            [
                float((pred & vessel).sum()),  # true positives
                float((pred & background).sum()),  # false positives
                float((~pred & vessel).sum()),  # false negatives
            ],
            dtype=torch.float64,
        )

    def on_validation_epoch_end(self) -> None:
        counts = self._val_counts.to(self.device)
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        tp, fp, fn = counts.tolist()
        dice = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        # the counts are already summed over ranks: every rank logs the same values
        self.log("val_dice", dice, prog_bar=True, sync_dist=True)
        self.log("val_precision", tp / (tp + fp) if tp + fp else 1.0, sync_dist=True)
        self.log("val_recall", tp / (tp + fn) if tp + fn else 1.0, sync_dist=True)

    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_cls(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=cfg.lr_reduce_factor,
                patience=cfg.lr_patience,
                min_lr=cfg.min_lr,
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "monitor": "val_loss",
                    "interval": "epoch",
                },
            }
        lr_lambda = cosine_with_warmup(cfg.warmup_epochs, cfg.max_epochs, cfg.min_lr / cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def cosine_with_warmup(warmup: int, total: int, floor: float) -> Any:
    """LR factor per epoch: linear warm-up to 1 over ``warmup`` epochs, then cosine to ``floor``."""

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        span = max(total - warmup, 1)
        progress = min((epoch - warmup) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
