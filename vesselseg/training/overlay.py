"""PNG overlays of a validation crop: image, annotation and prediction, one slice per axis."""

from __future__ import annotations

from typing import Any

import numpy as np

AXES = ("z", "y", "x")


def overlay_figure(image: np.ndarray, label: np.ndarray, prob: np.ndarray, title: str = "") -> Any:
    """A 3×3 matplotlib figure: rows are the most annotated slice along z, y, x; columns are
    image, annotation (vessel red, background blue) and predicted probability with the 0.5
    contour. A single-slice crop (2D models) gets one row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [a for a in range(3) if min(s for i, s in enumerate(image.shape) if i != a) > 1]
    fig, axes = plt.subplots(len(views), 3, figsize=(9, 3 * len(views)), squeeze=False)
    for row, view in enumerate(views):
        axis = AXES[view]
        index = annotated_slice(label, view)
        take = [slice(None)] * 3
        take[view] = index
        img, lab, pr = image[tuple(take)], label[tuple(take)], prob[tuple(take)]
        colour = np.zeros((*lab.shape, 4))
        colour[lab == 1] = (1, 0, 0, 0.6)
        colour[lab == 2] = (0, 0.4, 1, 0.35)
        axes[row, 0].imshow(img, cmap="gray")
        axes[row, 1].imshow(img, cmap="gray")
        axes[row, 1].imshow(colour)
        axes[row, 2].imshow(pr, cmap="magma", vmin=0, vmax=1)
        if pr.max() > 0.5 > pr.min():
            axes[row, 2].contour(pr, levels=[0.5], colors="cyan", linewidths=0.8)
        axes[row, 0].set_ylabel(f"{axis} = {index}")
    for col, name in enumerate(("image", "annotation", "prediction")):
        axes[0, col].set_title(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def annotated_slice(label: np.ndarray, axis: int) -> int:
    """The slice along ``axis`` with the most annotated vessel (centre if none)."""
    other = tuple(a for a in range(3) if a != axis)
    counts = (label == 1).sum(axis=other)
    return int(np.argmax(counts)) if counts.max() > 0 else label.shape[axis] // 2
