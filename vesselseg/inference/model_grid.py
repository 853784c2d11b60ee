"""Predicting an input at the model's voxel size: two streamed passes through a model grid.

1. The input, viewed lazily on the model's grid (:class:`~vesselseg.inference.resample.
   ResampledVolume`: each strip the reader asks for is resampled from the input box it needs),
   goes through the ordinary streamed predictor into a :class:`GridWriter`: float32
   probabilities on the model grid in ``<prob>.model-grid.npy.part``, with a progress file,
   resumable exactly like the outputs of an unresampled run.
2. :func:`write_back` resamples those probabilities back to the input's grid, slab by slab
   (the same trilinear view, the other way), into the ordinary
   :class:`~vesselseg.inference.outputs.PredictionWriter`: the mask is thresholded from the
   resampled probabilities. Then the outputs are renamed and the model-grid file removed.

Why two passes rather than a sink that resamples cells as they are finished: the predictor
finishes cells region by region (a plane too big for the memory budget is cut into regions,
each walked through the whole depth), and an output voxel near a region border interpolates
between two regions, so a one-pass sink would have to keep border columns for the whole
depth, and, to resume, save its band of pending planes at every checkpoint. Through a file
both come for free: memory stays O(tile x plane) in pass 1 and O(slab x plane) in pass 2, a
resumed pass 1 is byte-identical by the predictor's own guarantee, and pass 2 is a pure
function of its file (redone whole after an interruption: it costs one read and one write).
The price is disk: the model grid in float32, ``(s_input / s_model)^3`` times the input's
voxels (1/8 of them for an input at half the model's spacing).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.inference.outputs import PredictionWriter, progress_of, write_progress
from vesselseg.inference.resample import ResampledVolume
from vesselseg.io import VolumeWriter, partial_path
from vesselseg.io.file_array import release_pages
from vesselseg.io.slabs import slab_ranges
from vesselseg.io.writers import remove_path

BACK_BYTES_PER_VOXEL = 16  # pass 2: output float32 + probability + mask + temporaries


class GridWriter:
    """Sink of the model-grid probabilities (float32 ``.npy``, kept as ``.part``) + progress.

    Same contract as :class:`~vesselseg.inference.outputs.PredictionWriter`: ``resume_from``
    windows were done by an interrupted run with the same ``key`` (0 for a fresh run).
    """

    def __init__(
        self, path: Path, shape: tuple[int, int, int], key: dict[str, Any], n_tiles: int,
        resume: bool,
    ) -> None:  # fmt: skip
        self.path, self.key, self.n_tiles = path, key, n_tiles
        self.progress = path.with_name(path.name + ".progress.json")
        self.resume_from = self._done() if resume else 0
        if not self.resume_from:
            self.progress.unlink(missing_ok=True)
        self.store = VolumeWriter(
            path, shape, np.float32, fmt="npy", resume=self.resume_from > 0,
            keep_partial_on_error=True,
        )  # fmt: skip

    def _done(self) -> int:
        data = progress_of(self.progress, self.key)
        if data is None or not partial_path(self.path).exists():
            return 0
        return int(data.get("next_tile", 0))

    def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None:
        self.store[z, y, x] = values

    def checkpoint(self, next_tile: int) -> None:
        """Flush, then record that windows ``< next_tile`` are done."""
        self.store.flush()
        write_progress(self.progress, self.key, next_tile, self.n_tiles)

    def close_partial(self) -> None:
        """Keep the ``.part`` file and the progress for ``--resume`` (after an error)."""
        self.store.flush()

    def probabilities(self) -> np.ndarray:
        """The finished model-grid probabilities, memory-mapped read-only."""
        self.store.flush()
        return np.load(partial_path(self.path), mmap_mode="r")

    def remove(self) -> None:
        """Delete the model-grid file and its progress (the outputs are written)."""
        self.store.abort()
        remove_grid(self.path)


def remove_grid(path: Path) -> None:
    """Remove a model-grid file left by a resampled run, and its progress file."""
    remove_path(partial_path(path))
    path.with_name(path.name + ".progress.json").unlink(missing_ok=True)


def write_back(
    grid: np.ndarray,
    shape: tuple[int, int, int],
    writer: PredictionWriter,
    budget: int,
    max_planes: int,
) -> dict[str, float]:
    """Resample model-grid probabilities ``grid`` to the input's ``shape`` into ``writer``,
    z-slab by z-slab: at most ``max_planes`` planes (the run passes a tile's depth, so memory is
    O(tile x plane) as in pass 1) and ``budget`` working bytes (at least one plane).

    Returns ``{"seconds", "resample_seconds", "peak_bytes"}``."""
    start = time.perf_counter()
    view = ResampledVolume(grid, shape)
    per_voxel = BACK_BYTES_PER_VOXEL + 8 * grid.size / max(1, int(np.prod(shape)))
    plane = shape[1] * shape[2]
    for z0, z1 in slab_ranges(shape[0], plane, per_voxel, budget):
        for a in range(z0, z1, max(1, max_planes)):
            b = min(z1, a + max(1, max_planes))
            writer.write(slice(a, b), slice(0, shape[1]), slice(0, shape[2]), view[a:b])
            release_pages(grid)
    return {
        "seconds": time.perf_counter() - start,
        "resample_seconds": view.seconds,
        "peak_bytes": float(view.peak_bytes),
    }
