"""Pictures of where a model is right and wrong: true positives, false positives, false
negatives of one volume, as a projection and as three orthogonal slices (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.io.dataset import Sample
from vesselseg.io.slabs import iter_slabs
from vesselseg.plots import pyplot, save_figure

COLOURS = {"tp": (1.0, 0.85, 0.2), "fp": (0.95, 0.2, 0.2), "fn": (0.2, 0.5, 1.0)}


def outcome_mips(prob: Any, truth: Any, sparse: bool, threshold: float) -> dict[str, np.ndarray]:
    """Maximum projections along z of TP, FP and FN voxels, streamed slab by slab."""
    mips = {k: np.zeros(truth.shape[1:], dtype=bool) for k in COLOURS}
    for z0, t in iter_slabs(truth):
        p = np.asarray(prob[z0 : z0 + t.shape[0]]) >= threshold
        vessel = t == 1
        background = (t == 2) if sparse else (t == 0)
        for key, hit in (("tp", p & vessel), ("fp", p & background), ("fn", ~p & vessel)):
            mips[key] |= hit.any(axis=0)
    return mips


def colourise(layers: dict[str, np.ndarray], base: np.ndarray | None = None) -> np.ndarray:
    """RGB picture: ``base`` grey image (or black), FN then FP then TP painted on top."""
    shape = next(iter(layers.values())).shape
    if base is None:
        rgb = np.zeros((*shape, 3))
    else:
        lo, hi = np.percentile(base, [1, 99])
        grey = np.clip((base - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=-1) * 0.8
    for key in ("fn", "fp", "tp"):
        rgb[layers[key]] = COLOURS[key]
    return rgb


def write_pictures(
    sample: Sample, prob: Any, truth: Any, sparse: bool, threshold: float, plots_dir: Path
) -> list[Path]:
    """``<id>.mip.png`` and ``<id>.slices.png`` for one volume."""
    from matplotlib.patches import Patch

    plt = pyplot()
    legend = [Patch(color=COLOURS[k], label=k.upper()) for k in ("tp", "fp", "fn")]
    mip_path = plots_dir / f"{sample.id}.mip.png"
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    ax.imshow(colourise(outcome_mips(prob, truth, sparse, threshold)))
    ax.set_title(f"{sample.id}: max projection along z")
    ax.legend(handles=legend, loc="lower right", fontsize=8)
    ax.axis("off")
    save_figure(fig, mip_path)

    image = sample.open_image()
    centre = [s // 2 for s in image.shape]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), layout="constrained")
    for axis, ax in enumerate(axes):
        index = [slice(None)] * 3
        index[axis] = slice(centre[axis], centre[axis] + 1)
        key = tuple(index)
        img = np.squeeze(np.asarray(image[key]).astype(np.float32), axis=axis)
        t = np.squeeze(np.asarray(truth[key]), axis=axis)
        p = np.squeeze(np.asarray(prob[key]), axis=axis) >= threshold
        background = (t == 2) if sparse else (t == 0)
        layers = {"tp": p & (t == 1), "fp": p & background, "fn": ~p & (t == 1)}
        ax.imshow(colourise(layers, img))
        ax.set_title(f"{'zyx'[axis]} = {centre[axis]}")
        ax.axis("off")
    axes[-1].legend(handles=legend, loc="lower right", fontsize=8)
    fig.suptitle(f"{sample.id}: central slices (threshold {threshold:.2f})")
    slices_path = plots_dir / f"{sample.id}.slices.png"
    save_figure(fig, slices_path)
    return [mip_path, slices_path]
