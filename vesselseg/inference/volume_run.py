"""Predicting one volume (:func:`predict_volume`): open it, choose its grid, stream, write.

The volume is opened lazily (with ``infer.spacing`` overriding its voxel size when given), its
intensity percentiles estimated (the model's ``meta.percentiles``, via
:mod:`vesselseg.data.normalize`; a model trained with dataset normalisation applies its own
``meta.intensity`` instead), and it is streamed through
:class:`~vesselseg.inference.predictor.StreamingPredictor` into a
:class:`~vesselseg.inference.outputs.PredictionWriter` whose outputs are renamed when complete.
An input at another voxel size than the model's (:func:`~vesselseg.inference.voxels.
scale_decision`) is predicted on the model's grid and written back at its own
(:mod:`~vesselseg.inference.model_grid`).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.config import InferConfig
from vesselseg.errors import NonFiniteError
from vesselseg.inference.model_grid import GridWriter, remove_grid, write_back
from vesselseg.inference.options import (
    MIB,
    PredictOptions,
    PreparedModel,
    check_memory,
    fingerprint_of,
    torch_threads,
)
from vesselseg.inference.outputs import (
    OutputPaths,
    PredictionWriter,
    output_chunks,
    output_paths,
)
from vesselseg.inference.predictor import RunStats, StreamingPredictor
from vesselseg.inference.resample import ResampledVolume
from vesselseg.inference.tiling import make_grid
from vesselseg.inference.tissue import tissue_for
from vesselseg.inference.voxels import ScaleDecision, scale_decision
from vesselseg.io.file_array import release_pages
from vesselseg.io.slabs import SLAB_BYTES
from vesselseg.io.spacing import VoxelSize

log = logging.getLogger(__name__)


@dataclass
class VolumeResult:
    """Outcome for one input volume."""

    input: Path
    outputs: OutputPaths
    shape: tuple[int, int, int]
    tiles: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    resumed_from: int = 0
    skipped: bool = False
    peak_buffer_bytes: int = 0
    grid: tuple[int, int, int] | None = None  # the model grid it was predicted on, if resampled
    resample_seconds: float = 0.0  # interpolating, both ways (part of ``seconds``)
    write_back_seconds: float = 0.0  # pass 2: model grid -> input grid outputs (ditto)
    resample_peak_bytes: int = 0  # largest working set of one resampling read
    blocks: tuple[int, int] | None = None  # sharded: (z-blocks predicted here, of the volume's)
    block_voxels: int | None = None  # sharded: the voxels of those blocks
    finalized: bool = False  # sharded: this process wrote the final outputs
    empty_windows: int = 0  # windows without tissue, not run through the network

    @property
    def voxels(self) -> int:
        if self.block_voxels is not None:
            return self.block_voxels
        return int(np.prod(self.shape))


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_input(path: Path, opts: PredictOptions) -> Any:
    """The input volume, opened lazily with the reading options and ``infer.spacing``; a
    memory-mapped file is read by ``pread`` instead (:meth:`~vesselseg.io.Volume.unmapped`:
    the pages a streamed run reads never count in its resident memory)."""
    from vesselseg.io import Volume, open_volume

    cfg, reading = opts.cfg, opts.reading
    volume = open_volume(
        path, reading.file_type, reading.shape, reading.dtype, spacing=cfg.spacing, unit=cfg.unit
    )
    return volume.unmapped() if isinstance(volume, Volume) else volume


def predict_volume(
    name: str, path: Path, model: PreparedModel, opts: PredictOptions
) -> VolumeResult:
    """Predict one volume into its two outputs (see :func:`predict_path`); an input at another
    voxel size than the model's is predicted on the model's grid
    (:mod:`~vesselseg.inference.model_grid`)."""
    cfg = opts.cfg
    volume = open_input(path, opts)
    vshape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    paths = output_paths(opts.save_dir, name, model.path, cfg.out_format, cfg.naming)
    result = VolumeResult(path, paths, vshape)
    if opts.resume and paths.complete():
        log.info("%s: already predicted (%s), skipped", path, paths.prob)
        remove_grid(paths.grid)
        result.skipped = True
        return result
    scale = scale_decision(str(path), vshape, volume.voxel_size, model.voxel_size, cfg.resample)
    source = volume if scale is None else ResampledVolume(volume, scale.grid)
    predictor, key = _predictor(path, volume, source, model, opts, name)
    if scale is None:
        writer = PredictionWriter(
            paths, vshape, cfg.out_format, cfg.prob_dtype, model.mask_threshold(cfg), key,
            predictor.plan.n_tiles, opts.resume, voxel_size=volume.voxel_size,
            chunks=output_chunks(vshape, cfg.chunk_size),
        )  # fmt: skip
        _predict_into(predictor, volume, writer, result, name, opts)
        writer.commit()
        remove_grid(paths.grid)  # left by an earlier, resampled run
    else:
        key["resample"] = scale.key()
        _predict_resampled(predictor, source, key, scale, volume.voxel_size, result, name, opts)
    _log_done(result)
    return result


def _predictor(
    path: Path, volume: Any, source: Any, model: PreparedModel, opts: PredictOptions,
    name: str = "",
) -> tuple[StreamingPredictor, dict[str, Any]]:  # fmt: skip
    """The predictor over ``source`` (``volume`` itself or its view on the model grid) and the
    resume key of its output; intensities are normalised with ``volume``'s percentiles, or
    with the training set's statistics when the model carries them (``name``: the input's, for
    a folder of tissue masks)."""
    from vesselseg.data.normalize import DatasetIntensity, load_or_compute_stats

    cfg = opts.cfg
    grid = make_grid(source.shape, model.tile, cfg.overlap, cfg.blend, cfg.border)
    check_memory(grid, model.batch_size, opts.max_buffer_bytes)
    if model.intensity is not None:  # the training set's statistics, not this volume's
        dataset = DatasetIntensity.from_list(model.intensity)
        stats, intensity = None, tuple(dataset.as_list())
    else:
        view = source if finer_than(volume, source) else None  # see load_or_compute_stats
        dataset, stats = None, load_or_compute_stats(volume, model.percentiles, view=view)
        release_pages(getattr(volume, "_array", None))  # pages read for the percentiles
        intensity = (stats.lo, stats.hi)
    predictor = StreamingPredictor(
        model.predict_fn,
        grid,
        batch_size=model.batch_size,
        preprocess=_normaliser(path, stats, dataset),
        max_buffer_bytes=opts.max_buffer_bytes,
        release_input=lambda: release_pages(getattr(volume, "_array", None)),
        device=model.device,
        tissue=tissue_for(cfg, name or path.name, volume, source),
    )
    return predictor, resume_key(path, model, cfg, predictor, intensity)


def _predict_into(
    predictor: StreamingPredictor,
    source: Any,
    writer: PredictionWriter | GridWriter,
    result: VolumeResult,
    name: str,
    opts: PredictOptions,
) -> None:
    """Stream ``source`` into ``writer`` from its resume point; record what was done."""
    n_tiles = predictor.plan.n_tiles
    result.resumed_from = writer.resume_from
    if writer.resume_from:
        log.info("%s: resuming after %d of %d windows", result.input, writer.resume_from, n_tiles)
    if writer.resume_from < n_tiles:
        run = _stream(predictor, source, writer, f"predict {name}", opts.show_progress)
        result.tiles, result.seconds = run.tiles, run.seconds
        result.forward_seconds = run.forward_seconds
        result.peak_buffer_bytes = run.peak_buffer_bytes
        result.empty_windows = run.skipped


def _predict_resampled(
    predictor: StreamingPredictor,
    view: ResampledVolume,
    key: dict[str, Any],
    scale: ScaleDecision,
    voxel_size: VoxelSize,
    result: VolumeResult,
    name: str,
    opts: PredictOptions,
) -> None:
    """Predict ``view`` (the input on the model grid) into the model-grid file, resample the
    probabilities back to the input's grid into the outputs, rename them, drop the file."""
    cfg, paths, shape = opts.cfg, result.outputs, result.shape
    n_tiles = predictor.plan.n_tiles
    store = GridWriter(paths.grid, scale.grid, key, n_tiles, opts.resume)
    _predict_into(predictor, view, store, result, name, opts)
    # the mask threshold resolved for this run (``--threshold`` or the model's) is in the key
    writer = PredictionWriter(
        paths, shape, cfg.out_format, cfg.prob_dtype, key["threshold"], key, n_tiles, False,
        voxel_size=voxel_size, chunks=output_chunks(shape, cfg.chunk_size),
    )  # fmt: skip
    planes = -(-predictor.grid.tile[0] * shape[0] // scale.grid[0])  # a tile's depth, input grid
    budget = min(opts.max_buffer_bytes, SLAB_BYTES)
    back = write_back(store.probabilities(), shape, writer, budget, planes)
    writer.commit()
    store.remove()
    result.grid = scale.grid
    result.seconds += back["seconds"]
    result.write_back_seconds = back["seconds"]
    result.resample_seconds = view.seconds + back["resample_seconds"]
    result.resample_peak_bytes = int(max(view.peak_bytes, back["peak_bytes"]))


def finer_than(volume: Any, view: Any) -> bool:
    """Whether ``view`` is ``volume`` averaged down to fewer voxels (a finer input on the
    model's grid). Its own percentiles then normalise it: averaging is what a scan at the
    model's voxel size measures, so its intensity spread is the one the model was trained on,
    while the raw input's is wider (more noise per voxel). An upsampled view is only
    interpolated: its spread is narrower than any real scan's, so the input's own
    percentiles are kept."""
    return int(np.prod(view.shape)) < int(np.prod(volume.shape))


def _normaliser(path: Path, stats: Any, dataset: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Raw input → normalised float32 network input (the volume's percentiles ``stats``, or
    the model's ``dataset`` statistics); NaN or infinite values are an error."""
    from vesselseg.data.normalize import normaliser

    transform = normaliser(stats, dataset)[0]

    def preprocess(raw: np.ndarray) -> np.ndarray:
        data = transform(raw)
        if not np.isfinite(data).all():
            raise NonFiniteError(f"{path}: NaN or infinite intensities")
        return data

    return preprocess


def resume_key(
    path: Path,
    model: PreparedModel,
    cfg: InferConfig,
    predictor: StreamingPredictor,
    intensity: tuple[float, ...],
) -> dict[str, Any]:
    """Everything the output of ``path`` depends on: ``--resume`` continues only on a match."""
    return {
        "input": fingerprint_of(path),
        "model": model.key,
        "shape": list(predictor.grid.shape),
        "tile": list(model.tile),
        "overlap": cfg.overlap,
        "border": cfg.border,
        "blend": cfg.blend,
        "batch_size": predictor.batch_size,
        "tta": cfg.tta,
        "precision": cfg.precision,
        "compile": cfg.compile,
        "skip_empty": predictor.tissue.key if predictor.tissue is not None else None,
        "threshold": model.mask_threshold(cfg),
        "prob_dtype": cfg.prob_dtype,
        "block": list(predictor.block) if predictor.block else None,
        "device": model.device,
        "threads": torch_threads(),  # float sums differ with the thread count
        "intensity": list(intensity),
    }


def _stream(
    predictor: StreamingPredictor,
    volume: Any,
    writer: PredictionWriter | GridWriter,
    label: str,
    show_progress: bool,
) -> RunStats:
    """Run ``predictor`` from the writer's resume point; on any error keep the partial
    outputs for ``--resume``."""
    from vesselseg.progress import progress_bar

    plan, batch = predictor.plan, predictor.batch_size
    todo = plan.n_tiles - (plan.restart_tile(writer.resume_from) // batch) * batch
    try:
        if show_progress:
            with progress_bar(label, total=todo, unit="tiles") as advance:
                return predictor.run(volume, writer, writer.resume_from, on_tiles=advance)
        return predictor.run(volume, writer, writer.resume_from)
    except BaseException:
        writer.close_partial()
        raise


def _log_done(result: VolumeResult) -> None:
    rate = result.voxels / result.seconds if result.seconds else 0.0
    log.info(
        "%s → %s: %d windows in %.1f s (%.2f Mvoxels/s, network %.0f%% of the time), "
        "buffers %.1f MiB, peak memory %.0f MiB",
        result.input,
        result.outputs.prob,
        result.tiles,
        result.seconds,
        rate / 1e6,
        100 * result.forward_seconds / result.seconds if result.seconds else 0.0,
        result.peak_buffer_bytes / MIB,
        peak_rss_mib(),
    )
    if result.empty_windows:
        log.info("%s: %d windows without tissue skipped", result.input, result.empty_windows)
    if result.grid is not None:
        log.info(
            "%s: predicted on the %s model grid; resampling took %.1f s (%.0f%% of the time), "
            "%.1f MiB at most",
            result.input,
            "x".join(map(str, result.grid)),
            result.resample_seconds,
            100 * result.resample_seconds / result.seconds if result.seconds else 0.0,
            result.resample_peak_bytes / MIB,
        )
