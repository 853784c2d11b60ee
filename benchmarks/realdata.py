"""The real volumes of ../shared/realdata and their folds in the project's data layout.

Each ``NAME.npz`` holds ``data`` (uint8 ``(z, y, x)``) and ``truth`` (dense 0/1); ``NAME.txt``
states the voxel size (``voxel size: 0.994 x 0.994 um (xy), 5.0 um z step``). The folder is
found from ``$VESSELSEG_REALDATA`` or ``../shared/realdata`` beside the repository; nothing is
copied into the repository. :func:`write_fold` writes one leave-one-volume-out fold as
``train/``, ``val/`` and ``test/`` folders of ``data_X.npy`` + ``mask_X.npy`` (+ ``truth_X``)
pairs with a voxel-size sidecar (``X.npy.json``), as ``vesselseg train``/``evaluate`` read them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselseg.synth.boxes import Box, boxes_mask, dense_mask, draw_boxes

ROOT = Path(__file__).resolve().parents[1]
ENV = "VESSELSEG_REALDATA"
TRAIN_FRACTION = 0.01  # of a volume's voxels inside training boxes (rounded up to whole boxes)
VAL_BOXES = 1  # extra boxes per training volume, on other slices, for validation
BOX_SIDE = 128


def realdata_dir(given: str | Path | None = None) -> Path | None:
    """``given``, else ``$VESSELSEG_REALDATA``, else ``../shared/realdata`` beside the
    repository; None when the folder holds no ``.npz``."""
    for candidate in (given, os.environ.get(ENV), ROOT.parent / "shared" / "realdata"):
        if candidate and any(Path(candidate).glob("*.npz")):
            return Path(candidate)
    return None


def voxel_size_from_text(text: str) -> tuple[float, float, float]:
    """``(z, y, x)`` in µm from the ``voxel size:`` line of a realdata ``.txt``."""
    line = next((s for s in text.splitlines() if s.lower().startswith("voxel size")), None)
    if line is None:
        raise ValueError("no 'voxel size:' line")
    xy = re.search(r"([\d.]+)\s*(?:x\s*[\d.]+\s*)?um\s*(?:\(xy\)|xy)", line)
    z = re.search(r"([\d.]+)\s*um\s*z", line)
    if xy is None or z is None:
        raise ValueError(f"cannot read the voxel size from {line!r}")
    return float(z.group(1)), float(xy.group(1)), float(xy.group(1))


@dataclass
class RealVolume:
    """One real stack: short id, image, dense truth, voxel size ``(z, y, x)`` µm."""

    id: str
    data: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]


def load_volumes(folder: Path, crop: Sequence[int] | None = None) -> list[RealVolume]:
    """Every volume of ``folder``, sorted by name (optionally the central ``crop`` (y, x))."""
    volumes = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            data, truth = z["data"], (z["truth"] > 0).astype(np.uint8)
        if crop is not None:
            region = (slice(None),) + tuple(
                slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(data.shape[1:], crop)
            )
            data, truth = data[region], truth[region]
        spacing = voxel_size_from_text(path.with_suffix(".txt").read_text())
        volumes.append(RealVolume(path.stem.split("_")[-1], data, truth, spacing))
    return volumes


def save(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    np.save(path, array)
    Path(f"{path}.json").write_text(json.dumps({"spacing": list(spacing), "unit": "um"}))


def sparse_boxes(volume: RealVolume, seed: int) -> tuple[list[Box], list[Box]]:
    """``(training boxes, validation boxes)`` of a person-like annotation of ``volume``."""
    train = draw_boxes(volume.truth, TRAIN_FRACTION, BOX_SIDE, seed)
    val = draw_boxes(
        volume.truth, side=BOX_SIDE, seed=seed + 1000, n_boxes=VAL_BOXES, exclude=train
    )
    return train, val


def write_fold(
    volumes: Sequence[RealVolume], held: int, folder: Path, seed: int = 0
) -> dict[str, float]:
    """Fold ``held`` under ``folder``: ``test/`` (the held-out image + dense truth),
    ``val/`` (the others with their validation boxes), ``sparse/`` (the others with their
    training boxes) and ``dense/`` (the others labelled 1/2 everywhere). Returns the
    annotated fraction of the sparse training labels."""
    for name in ("test", "val", "sparse", "dense"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    annotated = total = 0
    for i, v in enumerate(volumes):
        if i == held:
            save(folder / "test" / f"data_{v.id}.npy", v.data, v.spacing)
            save(folder / "test" / f"truth_{v.id}.npy", v.truth, v.spacing)
            continue
        train_boxes, val_boxes = sparse_boxes(v, seed + 10 * i)
        sparse = boxes_mask(v.truth, train_boxes)
        annotated, total = annotated + int(np.count_nonzero(sparse)), total + sparse.size
        for name, mask in (
            ("sparse", sparse),
            ("dense", dense_mask(v.truth)),
            ("val", boxes_mask(v.truth, val_boxes)),
        ):
            save(folder / name / f"data_{v.id}.npy", v.data, v.spacing)
            save(folder / name / f"mask_{v.id}.npy", mask, v.spacing)
    return {"annotated_fraction": annotated / max(total, 1)}
