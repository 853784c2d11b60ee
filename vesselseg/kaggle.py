"""Kaggle SenNet + HOA submission format: run-length encoded 2D slices.

Each z-slice of a predicted mask becomes one row ``id,rle`` with ``id = <kidney>_<slice:04d>``.
The RLE is the competition's: the slice flattened in row-major (C) order, runs of 1s written
as ``start length`` pairs with 1-based starts, separated by spaces; an empty slice is ``1 0``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.io.atomic import atomic_open

EMPTY = "1 0"


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a 2D (or any) mask in row-major order; empty → ``"1 0"``."""
    flat = np.asarray(mask).ravel() > 0
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-based run boundaries
    if changes.size == 0:
        return EMPTY
    starts, ends = changes[0::2], changes[1::2]
    pairs = np.column_stack([starts, ends - starts]).ravel()
    return " ".join(map(str, pairs.tolist()))


def rle_decode(rle: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`rle_encode`: a uint8 mask of ``shape``."""
    flat = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    numbers = np.asarray(rle.split(), dtype=np.int64)
    if numbers.size % 2:
        raise ValueError(f"RLE has an odd number of values: {rle[:40]!r}")
    for start, length in numbers.reshape(-1, 2):
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape(shape)


def submission_rows(name: str, mask: Any, threshold: float = 0.5) -> Iterable[tuple[str, str]]:
    """``(id, rle)`` for every z-slice of a lazily read mask or probability volume."""
    for z in range(mask.shape[0]):
        plane = np.asarray(mask[z])
        binary = plane >= threshold if np.issubdtype(plane.dtype, np.floating) else plane > 0
        yield f"{name}_{z:04d}", rle_encode(binary)


def write_submission(
    volumes: dict[str, Any],
    out: str | Path,
    threshold: float = 0.5,
    on_slice: Callable[[int], None] | None = None,
) -> Path:
    """Write ``submission.csv`` (``id,rle``) for ``{kidney_name: mask volume}``, atomically."""
    out = Path(out)
    with atomic_open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "rle"])
        for name, volume in volumes.items():
            for row in submission_rows(name, volume, threshold):
                writer.writerow(row)
                if on_slice:
                    on_slice(1)
    return out


def find_masks(pred_dir: Path) -> dict[str, Path]:
    """``{case: mask file}`` of the predicted masks in ``pred_dir`` (``X.MODEL.mask.EXT``; the
    case is the name before its first dot); one-line errors for a missing or empty folder."""
    from vesselseg.errors import DatasetError, MissingPathError

    if not pred_dir.is_dir():
        raise MissingPathError(f"{pred_dir}: no such folder")
    masks = sorted(
        p
        for p in pred_dir.iterdir()
        if ".mask." in p.name and not p.name.endswith((".part", ".json"))
    )
    if not masks:
        raise DatasetError(f"{pred_dir}: no predicted masks (*.mask.npy, *.mask.tif, *.mask.zarr)")
    return {p.name.split(".")[0]: p for p in masks}
