"""Training: the thin LightningModule, callbacks and the fit() wiring."""
