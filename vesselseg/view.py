"""Looking at a prediction (``vesselseg view``): napari when it is there, else a PNG.

:func:`view` opens napari (the optional ``[viewer]`` extra) with the input image, the
probabilities and the mask as layers at the volume's voxel size (every level of an OME-Zarr
pyramid, so huge volumes stay fluid). Without napari, without a display (no ``$DISPLAY`` or
``$WAYLAND_DISPLAY``) or with ``png`` given, it writes a PNG instead (:func:`write_overview`):
the three central orthogonal slices (image in grey, probability in colour, the mask's outline)
over the maximum projections of the probability along z, y and x, drawn at the voxel size's
aspect ratio. A volume too big to hold is read at a coarser level: the finest pyramid level
under :data:`VIEW_VOXELS` voxels, or every ``s``-th voxel of a volume without a pyramid.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import ShapeMismatchError
from vesselseg.io.spacing import VoxelSize
from vesselseg.plots import pyplot, save_figure

VIEW_VOXELS = 16 << 20  # what a PNG overview reads of one volume, at most
MASK_NAME = re.compile(r"\.(prob|pred)(\.[a-z.]+)$", re.IGNORECASE)


@dataclass
class Layers:
    """A prediction and what goes with it: each a list of levels (level 0 first)."""

    prob: list[Any]
    mask: list[Any] | None
    image: Any | None
    voxel_size: VoxelSize
    name: str


def mask_beside(prob: Path) -> Path | None:
    """``X.MODEL.prob.npy`` → ``X.MODEL.mask.npy`` (``.pred`` of seed naming too), if it exists."""
    match = MASK_NAME.search(prob.name)
    if match is None:
        return None
    mask = prob.with_name(prob.name[: match.start()] + ".mask" + match.group(2))
    return mask if mask.exists() else None


def levels_of(path: Path) -> tuple[list[Any], VoxelSize]:
    """Every level of a volume (one, unless an OME-Zarr pyramid) and its voxel size."""
    from vesselseg.io import open_volume

    volume = open_volume(path)
    levels: list[Any] = [volume]
    if path.is_dir() and volume.kind in ("zarr", "ome-zarr"):
        from vesselseg.io.formats.zarr_store import ngff_levels

        levels = [volume, *ngff_levels(path)[1:]]
    return levels, volume.voxel_size


def open_layers(pred: Path, image: Path | None = None, mask: Path | None = None) -> Layers:
    """The prediction ``pred``, its mask (``mask``, or the one beside it) and ``image``; one-line
    errors for missing files and for shapes that differ."""
    from vesselseg.io import open_volume

    prob, voxel_size = levels_of(pred)
    mask = mask or mask_beside(pred)
    masks = levels_of(mask)[0] if mask is not None else None
    picture = open_volume(image) if image is not None else None
    shape = tuple(prob[0].shape)
    for other, what in ((masks[0] if masks else None, mask), (picture, image)):
        if other is not None and tuple(other.shape) != shape:
            raise ShapeMismatchError(
                f"{what}: shape {tuple(other.shape)} differs from the prediction's {shape}"
            )
    if not voxel_size.known and picture is not None:
        voxel_size = picture.voxel_size
    return Layers(prob, masks, picture, voxel_size, pred.name)


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def napari_available() -> bool:
    return importlib.util.find_spec("napari") is not None


def view(
    pred: Path, image: Path | None = None, mask: Path | None = None, png: Path | None = None
) -> tuple[str, Path | None]:
    """Open napari, or write the PNG overview (``png``, default ``<pred>.png`` beside it);
    ``("napari", None)`` or ``("png", path)``."""
    layers = open_layers(pred, image, mask)
    if png is None and display_available() and napari_available():
        open_napari(layers)
        return "napari", None
    out = png or pred.with_name(pred.name + ".png")
    return "png", write_overview(layers, out)


def open_napari(layers: Layers) -> Any:
    """A napari viewer with image, probability and mask at the voxel size; runs its loop."""
    import napari

    scale = tuple(layers.voxel_size.spacing)
    viewer = napari.Viewer(title=f"vesselseg: {layers.name}")
    if layers.image is not None:
        viewer.add_image(layers.image, name="image", colormap="gray", scale=scale)
    prob = layers.prob
    top = 255.0 if np.dtype(prob[0].dtype) == np.uint8 else 1.0
    viewer.add_image(
        prob if len(prob) > 1 else prob[0], multiscale=len(prob) > 1, name="probability",
        colormap="magma", blending="additive", opacity=0.7, contrast_limits=(0.0, top),
        scale=scale,
    )  # fmt: skip
    if layers.mask is not None:
        mask = layers.mask
        many = len(mask) > 1
        viewer.add_labels(
            mask if many else mask[0], multiscale=many, name="mask", opacity=0.4, scale=scale
        )
    napari.run()
    return viewer


def coarse(levels: list[Any], budget: int = VIEW_VOXELS) -> tuple[int, int, tuple[int, ...]]:
    """``(level, stride, factor)``: read ``levels[level][::stride, ::stride, ::stride]``, the
    finest level under ``budget`` voxels (else the coarsest, every ``stride``-th voxel);
    ``factor`` times ``stride`` is its step in level-0 voxels along each axis."""
    from vesselseg.io.formats.pyramid import cumulative_factor

    index = next(
        (i for i, level in enumerate(levels) if int(np.prod(level.shape)) <= budget),
        len(levels) - 1,
    )
    shape = tuple(levels[index].shape)
    stride = 1
    while int(np.prod([-(-n // stride) for n in shape])) > budget:
        stride += 1
    return index, stride, tuple(cumulative_factor(tuple(levels[0].shape), shape))


def read_coarse(volume: Any, stride: tuple[int, ...]) -> np.ndarray:
    """``volume[::sz, ::sy, ::sx]`` as float32, read slab by slab along z."""
    sz, sy, sx = stride
    depth = max(1, 64 // sz) * sz
    slabs = [
        np.asarray(volume[z0 : z0 + depth, ::sy, ::sx])[::sz].astype(np.float32)
        for z0 in range(0, volume.shape[0], depth)
    ]
    return np.concatenate(slabs)


def write_overview(layers: Layers, out: Path) -> Path:
    """The PNG: central slices (top) and maximum projections of the probability (bottom)."""
    index, every, factor = coarse(layers.prob)
    prob = read_coarse(layers.prob[index], (every,) * 3)
    if np.dtype(layers.prob[0].dtype) == np.uint8:
        prob /= 255.0
    mask = None
    if layers.mask is not None:
        level = layers.mask[index] if index < len(layers.mask) else None
        step = (every,) * 3 if level is not None else tuple(f * every for f in factor)
        mask = read_coarse(level if level is not None else layers.mask[0], step)
    stride = tuple(f * every for f in factor)
    image = read_coarse(layers.image, stride) if layers.image is not None else None
    spacing = np.asarray(layers.voxel_size.spacing) * np.asarray(stride)
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5), layout="constrained")
    centre = [n // 2 for n in prob.shape]
    shown = None
    for axis in range(3):
        rows, cols = [a for a in range(3) if a != axis]
        aspect = spacing[rows] / spacing[cols]
        cut = [slice(None)] * 3
        cut[axis] = centre[axis]  # type: ignore[call-overload]
        ax = axes[0][axis]
        if image is not None:
            ax.imshow(_grey(image[tuple(cut)]), cmap="gray", aspect=aspect)
        p = prob[tuple(cut)]
        ax.imshow(p, cmap="magma", vmin=0, vmax=1, alpha=0.6 if image is not None else 1.0,
                  aspect=aspect)  # fmt: skip
        if mask is not None and mask[tuple(cut)].any():
            ax.contour(mask[tuple(cut)], levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"slice {'zyx'[axis]} = {centre[axis] * stride[axis]}")
        ax.axis("off")
        shown = axes[1][axis].imshow(prob.max(axis=axis), cmap="magma", vmin=0, vmax=1,
                                     aspect=aspect)  # fmt: skip
        axes[1][axis].set_title(f"max projection along {'zyx'[axis]}")
        axes[1][axis].axis("off")
    fig.colorbar(shown, ax=axes[1].tolist(), shrink=0.8, label="probability")
    every = "" if stride == (1, 1, 1) else f", every {'x'.join(map(str, stride))} voxels"
    size = layers.voxel_size.describe()
    fig.suptitle(f"{layers.name}: {'x'.join(map(str, layers.prob[0].shape))} ({size}{every})")
    return save_figure(fig, out)


def _grey(plane: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(plane, [1, 99])
    return np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
