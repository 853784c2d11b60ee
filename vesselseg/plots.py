"""Charts as PNG files, drawn offline with matplotlib (Agg): no browser, no CDN.

``dvc plots show`` writes HTML that loads vega from the internet, so on a cluster without it
the PR curve is a blank page. These PNGs are DVC *image* plots (shown as they are), MLflow
artifacts and plain files anyone can open:

* :func:`write_pr_curve` — precision over recall (and Dice over threshold) from ``pr.csv``;
* :func:`write_training_curves` — loss, validation Dice and learning rate per epoch from a
  run's metric history (:func:`vesselseg.tracking.metric_history`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vesselseg.io.atomic import commit, partial_path

Series = list[tuple[int, float]]  # (epoch, value)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Save ``fig`` to ``path`` atomically (``NAME.part`` renamed when complete; a failed save
    leaves only the ``.part``), with a margin around everything drawn (titles are never cut),
    and close it."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    fmt = path.suffix.lstrip(".") or "png"
    # no "Software" line in a PNG: the same bytes from any matplotlib version
    metadata = {"Software": None} if fmt == "png" else None
    try:
        fig.savefig(
            tmp, dpi=dpi, format=fmt, bbox_inches="tight", pad_inches=0.15, metadata=metadata
        )
    finally:
        plt.close(fig)
    commit(tmp, path)
    return path


# --------------------------------------------------------------------------- PR curve


def read_pr_csv(path: Path) -> dict[str, list[float]]:
    """The columns of ``pr.csv`` (threshold, precision, recall, dice) as floats."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: [float(r[key]) for r in rows] for key in ("threshold", "precision", "recall", "dice")
    }


def pr_figure(curve: dict[str, list[float]], title: str, threshold: float | None = None) -> Any:
    """Precision over recall (left) and precision, recall, Dice over threshold (right); the
    mask threshold ``threshold`` marked on both."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    left.plot(curve["recall"], curve["precision"], marker=".", color="tab:blue")
    left.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    left.set_title("precision-recall")
    for key, colour in (("precision", "tab:blue"), ("recall", "tab:orange"), ("dice", "tab:green")):
        right.plot(curve["threshold"], curve[key], marker=".", label=key, color=colour)
    right.set(xlabel="threshold", ylim=(0, 1.02), xlim=(0, 1))
    right.set_title("over thresholds")
    if threshold is not None and curve["threshold"]:
        nearest = min(
            range(len(curve["threshold"])), key=lambda i: abs(curve["threshold"][i] - threshold)
        )
        left.plot(
            curve["recall"][nearest],
            curve["precision"][nearest],
            "o",
            color="black",
            label=f"threshold {curve['threshold'][nearest]:.2f}",
        )
        left.legend(loc="lower left", fontsize=8)
        right.axvline(threshold, color="black", linewidth=0.8, linestyle="--")
    right.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def write_pr_curve(pr_csv: Path, path: Path, title: str, threshold: float | None = None) -> Path:
    """``path`` (PNG) drawn from ``pr_csv`` (``vesselseg evaluate``'s ``pr.csv``)."""
    return save_figure(pr_figure(read_pr_csv(pr_csv), title, threshold), path)


# --------------------------------------------------------------------------- training curves


def per_epoch(history: dict[str, Series], key: str) -> Series:
    """``[(epoch, value), ...]`` of metric ``key`` from a run's ``(step, value)`` history.

    Lightning logs at global steps and logs ``epoch`` beside every epoch-end metric; a value
    logged at step ``s`` belongs to the epoch logged at the first step ``>= s`` (the learning
    rate is logged at an epoch's first step, before that epoch's metrics). Without ``epoch``
    the values are numbered in order. A repeated epoch (a resumed run) keeps its last value.
    """
    epochs = sorted(history.get("epoch", []))
    by_epoch: dict[int, float] = {}
    for i, (step, value) in enumerate(history.get(key, [])):
        later = [e for s, e in epochs if s >= step]
        epoch = int(later[0]) if later else (int(epochs[-1][1]) + 1 if epochs else i)
        by_epoch[epoch] = value
    return sorted(by_epoch.items())


def training_figure(history: dict[str, Series], title: str) -> Any:
    """Three panels per epoch: train/val loss, validation Dice (precision, recall), learning
    rate (log scale)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    panels = (
        ("loss", ["train_loss", "val_loss"]),
        ("validation Dice", ["val_dice", "val_precision", "val_recall"]),
        ("learning rate", sorted(k for k in history if k.startswith("lr"))),
    )
    for ax, (name, keys) in zip(axes, panels, strict=True):
        drawn = False
        for key in keys:
            series = per_epoch(history, key)
            if series:
                label = f"{key} ({series[-1][1]:.3g})"  # the last value, readable on log axes
                ax.plot([e for e, _ in series], [v for _, v in series], marker=".", label=label)
                drawn = True
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        if name == "learning rate" and drawn:
            ax.set_yscale("log")
        if name == "validation Dice":
            ax.set_ylim(0, 1.02)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def write_training_curves(history: dict[str, Series], path: Path, title: str) -> Path:
    """``path`` (PNG): :func:`training_figure` of ``history``."""
    return save_figure(training_figure(history, title), path)
