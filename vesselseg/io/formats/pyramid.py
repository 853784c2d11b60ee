"""OME-Zarr images with a multiscale pyramid, built streaming; the NGFF metadata through
ome-zarr-models (its pydantic models of NGFF 0.5 build and validate the ``multiscales``).

Layout of ``NAME.ome.zarr`` (a zarr v3 group, NGFF 0.5)::

    zarr.json      group; attributes["ome"]: version 0.5, one multiscale: axes z, y, x
                   (type space, the input's unit), one dataset per level
    0/             level 0: the full-resolution (z, y, x) array
    1/, 2/, ...    level k: level k-1 halved along every axis still larger than one chunk

Level ``k``'s voxel size is level 0's times its cumulative factor ``F`` (``scale``), and its
first voxel's centre sits at ``(F - 1) / 2`` level-0 voxels (``translation``), so every level
overlays level 0 in napari and neuroglancer. Levels stop when the whole image fits one chunk.

Level ``k`` is made from level ``k-1`` piece by piece (a few chunks at a time, within a byte
budget), never from the whole array: ``mean`` (probabilities; integers rounded half to even)
or ``max`` (masks: a one-voxel vessel stays visible). A 2 x 2 x 2 block cut by the image's
edge reduces over the voxels it has. Rebuilding the levels from the same level 0 gives the
same bytes, so a rebuild after a crash is harmless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.io.spacing import VoxelSize

NGFF_UNITS = {"um": "micrometer", "mm": "millimeter"}
METHODS = ("mean", "max")
MAX_LEVELS = 12
PIECE_BYTES = 64 << 20  # input of one downsampling step, at most (a piece is >= one chunk)
Triple = tuple[int, int, int]


def level_factors(shape: Triple, chunks: Triple) -> list[Triple]:
    """The step factor of each level after 0 (from the previous level): 2 along every axis
    still larger than one chunk, 1 along the others; none once the image fits one chunk."""
    factors: list[Triple] = []
    size = tuple(shape)
    while len(factors) < MAX_LEVELS:
        step = tuple(2 if size[a] > chunks[a] else 1 for a in range(3))
        if step == (1, 1, 1):
            break
        factors.append(step)  # type: ignore[arg-type]
        size = tuple(-(-size[a] // step[a]) for a in range(3))
    return factors


def level_shapes(shape: Triple, chunks: Triple) -> list[Triple]:
    """Shapes of every level, level 0 first."""
    shapes = [tuple(shape)]
    for step in level_factors(shape, chunks):
        shapes.append(tuple(-(-shapes[-1][a] // step[a]) for a in range(3)))
    return shapes  # type: ignore[return-value]


def downsample(block: np.ndarray, step: Triple, method: str) -> np.ndarray:
    """``block`` reduced by ``step`` along each axis (``mean`` or ``max``); a last partial
    block reduces over the voxels it has (edge voxels are repeated up to a whole block, which
    leaves a mean or a maximum unchanged)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pad = [(0, -n % f) for n, f in zip(block.shape, step)]
    if any(after for _, after in pad):
        block = np.pad(block, pad, mode="edge")
    (z, y, x), (fz, fy, fx) = block.shape, step
    if method == "max":
        return block.reshape(z // fz, fz, y // fy, fy, x // fx, fx).max(axis=(1, 3, 5))
    total = np.zeros((z // fz, y // fy, x // fx), np.float32)
    for dz, dy, dx in np.ndindex(fz, fy, fx):  # one fixed order: the same bits for any piece
        total += block[dz::fz, dy::fy, dx::fx]
    mean = total / np.float32(fz * fy * fx)
    if np.issubdtype(block.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def pieces(shape: Triple, chunks: Triple, step: Triple, itemsize: int) -> list[tuple[slice, ...]]:
    """Chunk-aligned boxes of a level of ``shape`` whose source (``step`` times larger, in the
    level before) fits :data:`PIECE_BYTES`: one chunk deep, as many chunks along x, then y,
    as fit."""
    cz, cy, cx = chunks
    one = math.prod(step) * cz * cy * cx * itemsize  # the source of one chunk
    nx = max(1, min(-(-shape[2] // cx), PIECE_BYTES // one))
    ny = max(1, min(-(-shape[1] // cy), PIECE_BYTES // (one * nx)))
    boxes = []
    for z0 in range(0, shape[0], cz):
        for y0 in range(0, shape[1], cy * ny):
            for x0 in range(0, shape[2], cx * nx):
                boxes.append((slice(z0, z0 + cz), slice(y0, y0 + cy * ny), slice(x0, x0 + cx * nx)))
    return boxes


def build_level(source: Any, target: Any, step: Triple, method: str) -> None:
    """Write ``target`` (zarr array) = ``source`` reduced by ``step``, piece by piece."""
    for box in pieces(target.shape, target.chunks, step, np.dtype(source.dtype).itemsize):
        src = tuple(
            slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box, step, source.shape)
        )
        target[box] = downsample(np.asarray(source[src]), step, method)


def multiscale_attributes(
    name: str,
    arrays: list[Any],
    voxel_size: VoxelSize | None,
    method: str | None = None,
) -> dict[str, Any]:
    """NGFF 0.5 group attributes (``{"ome": ...}``) of the levels ``arrays`` (zarr arrays, level
    0 first), built and validated by ome-zarr-models. Unknown voxel size: unit scale, no unit."""
    from ome_zarr_models.v05.axes import Axis
    from ome_zarr_models.v05.image import Image
    from pydantic_zarr.v3 import ArraySpec

    known = voxel_size is not None and voxel_size.known
    spacing = list(voxel_size.spacing) if known and voxel_size else [1.0, 1.0, 1.0]
    unit = NGFF_UNITS[voxel_size.unit] if known and voxel_size else None
    axes = [Axis(name=n, type="space", unit=unit) for n in "zyx"]
    shape0 = arrays[0].shape
    scales, translations = [], []
    for array in arrays:
        factor = cumulative_factor(shape0, array.shape)
        scales.append([s * f for s, f in zip(spacing, factor)])
        moved = [(f - 1) / 2 * s for s, f in zip(spacing, factor)]
        translations.append(moved if any(moved) else None)
    image = Image.new(
        array_specs=[ArraySpec.from_zarr(a) for a in arrays],
        paths=[str(k) for k in range(len(arrays))],
        axes=axes,
        scales=scales,
        translations=translations,
        name=name,
        multiscale_type=method if len(arrays) > 1 else None,
    )
    return image.attributes.model_dump(mode="json", exclude_none=True)


def cumulative_factor(shape0: tuple[int, ...], shape: tuple[int, ...]) -> list[int]:
    """The factor (a power of two) from level 0 to a level of ``shape``: how many halvings
    (with ceil) bring each axis down to it."""
    factors = []
    for n0, n in zip(shape0, shape):
        f, size = 1, n0
        while size > n:
            size, f = -(-size // 2), f * 2
        factors.append(f)
    return factors


def build_pyramid(
    path: str | Path, method: str, voxel_size: VoxelSize | None, name: str, show: bool = False
) -> list[Triple]:
    """Add levels 1.. to the OME-Zarr image at ``path`` from its level ``0`` and write its
    multiscale metadata; returns every level's shape. Existing levels are rebuilt."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    level0 = group["0"]
    chunks = tuple(int(c) for c in level0.chunks)
    shapes = level_shapes(tuple(int(s) for s in level0.shape), chunks)  # type: ignore[arg-type]
    arrays = [level0]
    for k, (shape, step) in enumerate(zip(shapes[1:], level_factors(shapes[0], chunks)), 1):
        target = group.create_array(
            str(k),
            shape=shape,
            dtype=level0.dtype,
            chunks=tuple(min(c, s) for c, s in zip(chunks, shape)),
            dimension_names=["z", "y", "x"],
            overwrite=True,
        )
        build_level(arrays[-1], target, step, method)
        arrays.append(target)
    group.attrs.update(multiscale_attributes(name, arrays, voxel_size, method))
    return shapes
