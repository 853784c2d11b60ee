"""Offline charts: per-epoch series from a Lightning-logged history, PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselseg.plots import per_epoch, read_pr_csv, write_pr_curve, write_training_curves

PNG = b"\x89PNG\r\n\x1a\n"

# what Lightning's MLFlowLogger logged in a real 3-epoch run with 2 steps an epoch: epoch-end
# metrics at the epoch's last step beside "epoch", the learning rate at its first step
HISTORY = {
    "epoch": [(1, 0.0), (1, 0.0), (3, 1.0), (3, 1.0), (5, 2.0), (5, 2.0)],
    "lr-AdamW": [(0, 0.002), (2, 0.001), (4, 0.0005)],
    "train_loss": [(1, 1.19), (3, 1.13), (5, 1.18)],
    "val_dice": [(1, 0.0), (3, 0.0062), (5, 0.0545)],
    "val_loss": [(1, 1.12), (3, 1.11), (5, 1.10)],
}


def test_per_epoch_maps_steps_to_epochs() -> None:
    assert per_epoch(HISTORY, "val_dice") == [(0, 0.0), (1, 0.0062), (2, 0.0545)]
    assert per_epoch(HISTORY, "lr-AdamW") == [(0, 0.002), (1, 0.001), (2, 0.0005)]
    assert per_epoch(HISTORY, "missing") == []
    # a resumed run logs an epoch twice: the last value counts
    resumed = {**HISTORY, "val_dice": [*HISTORY["val_dice"], (5, 0.06)]}
    assert per_epoch(resumed, "val_dice")[-1] == (2, 0.06)
    # without "epoch" the values are numbered in order
    assert per_epoch({"val_dice": [(7, 0.1), (9, 0.2)]}, "val_dice") == [(0, 0.1), (1, 0.2)]


def test_training_curves_png(tmp_path: Path) -> None:
    path = write_training_curves(HISTORY, tmp_path / "m.curves.png", "m: training")
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000 and b"Software" not in data
    assert not list(tmp_path.glob("*.part"))
    only_loss = write_training_curves({"train_loss": [(0, 1.0)]}, tmp_path / "one.png", "one")
    assert only_loss.read_bytes().startswith(PNG)  # panels without data say so, no error


def test_pr_curve_png(tmp_path: Path) -> None:
    csv = tmp_path / "pr.csv"
    rows = ["threshold,precision,recall,dice"]
    for t in np.linspace(0, 1, 11):
        rows.append(f"{t:.4f},{0.5 + t / 2:.6f},{1 - t:.6f},{0.6:.6f}")
    csv.write_text("\n".join(rows) + "\n")
    curve = read_pr_csv(csv)
    assert len(curve["recall"]) == 11 and curve["precision"][-1] == 1.0
    png = write_pr_curve(csv, tmp_path / "pr.png", "model on data/raw/test", threshold=0.5)
    assert png.read_bytes().startswith(PNG)
    again = write_pr_curve(csv, tmp_path / "again.png", "model on data/raw/test", threshold=0.5)
    assert again.read_bytes() == png.read_bytes()  # deterministic (DVC outputs, crash tests)
