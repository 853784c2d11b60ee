"""Prediction outputs: file names, atomic writers for probabilities + mask, resumable progress.

Naming (``naming``):

* ``default``: ``<SAVE>/<X>.<MODEL>.prob<ext>`` and ``<SAVE>/<X>.<MODEL>.mask<ext>`` where ``X``
  is the input's name without its volume suffix (``data_001`` for ``data_001.npy``; the case
  id for a Kaggle ``kidney_*/images`` folder) and ``MODEL`` the model file's stem.
* ``seed`` (seed 000): ``<SAVE>/<CKPT>.<X.npy>.pred<ext>`` and ``<SAVE>/<CKPT>.<X.npy>.mask<ext>``
  with ``CKPT`` the model file's name and ``X.npy`` the input's file name.

``<ext>`` is ``.npy``, ``.zarr``, ``.ome.zarr``, ``.tif`` or ``.nii.gz``; every output carries
the input's voxel size where its format keeps one (``<file>.json`` sidecar of ``.npy``, zarr
attributes, NGFF metadata, TIFF tags, NIfTI header). Probabilities are float32 in [0, 1],
float16, or uint8 ``round(255 p)``; the mask is uint8 ``p >= threshold`` (computed from float32
``p``).

Both files are written to ``<name>.part`` (:class:`~vesselseg.io.VolumeWriter`) and renamed only
when the whole volume is done. After every flushed band a small ``<prob name>.progress.json``
(written atomically and fsynced after the flush, :mod:`vesselseg.io.atomic`) records how many
windows are done and a key of everything the result depends on; ``--resume`` continues from it
only when the key still matches. :func:`open_probabilities` reads a probability file back as
float32 ``p`` whatever its stored dtype.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.io import VolumeWriter, partial_path
from vesselseg.io.atomic import commit, write_json
from vesselseg.io.formats.pyramid import build_pyramid
from vesselseg.io.spacing import VoxelSize

log = logging.getLogger(__name__)

PROGRESS_FORMAT = "vesselseg-progress/1"
EXTENSIONS = {
    "npy": ".npy",
    "zarr": ".zarr",
    "ome-zarr": ".ome.zarr",
    "tiff": ".tif",
    "nifti": ".nii.gz",
}
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".json")  # .json: an ensemble file
_SUFFIXES = ".npy .raw .tiff .tif .zarr .ome.zarr .nii .nii.gz .mha .mhd .nrrd .nhdr .jp2"
VOLUME_SUFFIXES = tuple(sorted(_SUFFIXES.split(), key=len, reverse=True))  # X.ome.zarr: X
PYRAMID = {"prob": "mean", "mask": "max"}  # how OME-Zarr outputs are downsampled
GRID_SUFFIX = ".model-grid.npy"  # model-grid probabilities of a resampled run (temporary)
OUTPUT_NAME = re.compile(
    r"(\.(prob|pred|mask)\.(npy|tif|zarr|ome\.zarr|nii\.gz)(\.blocks)?|\.model-grid\.npy)(\.part)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class OutputPaths:
    """Final paths of one input's outputs, and its progress file."""

    prob: Path
    mask: Path

    @property
    def progress(self) -> Path:
        return self.prob.with_name(self.prob.name + ".progress.json")

    @property
    def grid(self) -> Path:
        """Where a resampled run keeps its model-grid probabilities until the outputs exist."""
        return self.prob.with_name(self.prob.name + GRID_SUFFIX)

    def complete(self) -> bool:
        return self.prob.exists() and self.mask.exists() and not self.progress.exists()


def volume_stem(name: str) -> str:
    """``data_001.npy`` → ``data_001`` (a name without a volume suffix is kept)."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def looks_like_output(path: Path) -> bool:
    """True for files this module writes (so a folder of inputs + outputs is not re-predicted)."""
    return bool(OUTPUT_NAME.search(path.name)) or path.name.endswith(".progress.json")


def output_paths(
    save_dir: Path, input_name: str, model: Path, fmt: str = "npy", naming: str = "default"
) -> OutputPaths:
    """Where the outputs of input ``input_name`` (a file or case name) predicted by ``model`` go."""
    ext = EXTENSIONS[fmt]
    if naming == "seed":
        base = f"{model.name}.{input_name}"
        return OutputPaths(save_dir / f"{base}.pred{ext}", save_dir / f"{base}.mask{ext}")
    if naming != "default":
        raise ValueError(f"naming must be 'default' or 'seed', got {naming!r}")
    model_stem = model.stem if model.suffix.lower() in MODEL_SUFFIXES else model.name
    base = f"{volume_stem(input_name)}.{model_stem}"
    return OutputPaths(save_dir / f"{base}.prob{ext}", save_dir / f"{base}.mask{ext}")


def output_chunks(shape: tuple[int, int, int], chunk_size: int | list[int]) -> tuple[int, int, int]:
    """Chunks of a zarr / OME-Zarr output of ``shape``: ``infer.chunk_size``, at most the shape."""
    sizes = [chunk_size] * 3 if isinstance(chunk_size, int) else list(chunk_size)
    return (min(sizes[0], shape[0]), min(sizes[1], shape[1]), min(sizes[2], shape[2]))


def encode_prob(prob: np.ndarray, dtype: str) -> np.ndarray:
    """float32 probabilities → stored dtype (``uint8`` is ``round(255 p)``)."""
    if dtype == "float32":
        return prob.astype(np.float32, copy=False)
    if dtype == "float16":
        return prob.astype(np.float16)
    if dtype == "uint8":
        return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"prob dtype must be float32, float16 or uint8, got {dtype!r}")


def scaled_probabilities(stored: np.ndarray) -> np.ndarray:
    """uint8 probabilities ``round(255 p)`` read back as float32 ``p``."""
    return stored.astype(np.float32) / 255.0


def open_probabilities(path: Path) -> Any:
    """A written probability volume, lazily, as float32 ``p`` (uint8 files are rescaled)."""
    from vesselseg.io.readers import MappedVolume, open_volume

    volume = open_volume(path)
    if volume.dtype == np.uint8:
        return MappedVolume(volume, scaled_probabilities, np.float32)
    return volume


def progress_of(progress: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The progress record at ``progress`` when it was written with the same ``key``."""
    try:
        data = json.loads(progress.read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != PROGRESS_FORMAT or data.get("key") != key:
        log.warning(
            "%s: settings or inputs changed since the interrupted run; starting over", progress
        )
        return None
    return data


def write_progress(progress: Path, key: dict[str, Any], next_tile: int, n_tiles: int) -> None:
    """Record atomically (fsynced) that windows ``< next_tile`` of ``n_tiles`` are written."""
    record = {
        "format": PROGRESS_FORMAT,
        "key": key,
        "next_tile": int(next_tile),
        "n_tiles": int(n_tiles),
    }
    write_json(progress, record, indent=None)


def read_progress(paths: OutputPaths, key: dict[str, Any]) -> int:
    """Windows done by an interrupted run with the same ``key`` (0 when nothing to resume)."""
    data = progress_of(paths.progress, key)
    if data is None:
        return 0
    next_tile = int(data.get("next_tile", 0))
    done_and_renamed = [p for p in (paths.prob, paths.mask) if not partial_path(p).exists()]
    if next_tile < int(data.get("n_tiles", -1)) and done_and_renamed:
        log.warning("%s: partial output missing; starting over", done_and_renamed[0])
        return 0
    return next_tile


class PredictionWriter:
    """Sink for :class:`~vesselseg.inference.predictor.StreamingPredictor` writing
    probabilities + mask of one ``(z, y, x)`` volume atomically and resumably.

    ``resume_from`` (windows already done, from the progress file) is 0 for a fresh run.
    """

    def __init__(
        self,
        paths: OutputPaths,
        shape: tuple[int, int, int],
        fmt: str,
        prob_dtype: str,
        threshold: float,
        key: dict[str, Any],
        n_tiles: int,
        resume: bool,
        voxel_size: VoxelSize | None = None,
        chunks: tuple[int, int, int] | None = None,
    ) -> None:
        self.paths, self.fmt = paths, fmt
        self.voxel_size = voxel_size
        self.prob_dtype, self.threshold = prob_dtype, threshold
        self.key, self.n_tiles = key, n_tiles
        self.resume_from = read_progress(paths, key) if resume else 0
        if self.resume_from >= n_tiles:  # killed between the last flush and the renames
            self.prob = self.mask = None
            return
        again = self.resume_from > 0
        if not again:
            paths.progress.unlink(missing_ok=True)
        self.prob = VolumeWriter(
            paths.prob,
            shape,
            np.dtype(prob_dtype),
            fmt=fmt,
            resume=again,
            keep_partial_on_error=True,
            voxel_size=voxel_size,
            chunks=chunks,
            pyramid=PYRAMID["prob"],
        )
        self.mask = VolumeWriter(
            paths.mask,
            shape,
            np.uint8,
            fmt=fmt,
            resume=again,
            keep_partial_on_error=True,
            voxel_size=voxel_size,
            chunks=chunks,
            pyramid=PYRAMID["mask"],
        )

    def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None:
        """Store float32 probabilities ``values`` for the box ``[z, y, x]``."""
        assert self.prob is not None and self.mask is not None
        self.prob[z, y, x] = encode_prob(values, self.prob_dtype)
        self.mask[z, y, x] = (values >= self.threshold).astype(np.uint8)

    def checkpoint(self, next_tile: int) -> None:
        """Flush both outputs, then record that windows ``< next_tile`` are done."""
        assert self.prob is not None and self.mask is not None
        for writer in (self.prob, self.mask):
            writer.flush()
        write_progress(self.paths.progress, self.key, next_tile, self.n_tiles)

    def commit(self) -> OutputPaths:
        """Rename both outputs to their final names and drop the progress file."""
        if self.prob is None or self.mask is None:
            for final, kind in ((self.paths.mask, "mask"), (self.paths.prob, "prob")):
                if partial_path(final).exists():
                    if self.fmt == "ome-zarr":
                        build_pyramid(
                            partial_path(final), PYRAMID[kind], self.voxel_size, final.name
                        )
                    commit(partial_path(final), final)
        else:
            self.mask.commit()
            self.prob.commit()
        self.paths.progress.unlink(missing_ok=True)
        return self.paths

    def close_partial(self) -> None:
        """Leave the ``.part`` outputs and progress file for ``--resume`` (after an error)."""
        for writer in (self.prob, self.mask):
            if writer is not None:
                try:
                    writer.flush()
                except Exception:  # noqa: BLE001 - best effort on the error path
                    log.debug("flush failed while keeping partial output", exc_info=True)
