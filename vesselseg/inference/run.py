"""``vesselseg predict``: predict one volume or a folder of volumes with a saved model.

:func:`predict_path` loads the model once (:func:`prepare_model`), then for every input volume
(:func:`predict_volume`): opens it lazily, estimates its intensity percentiles (the model's
``meta.percentiles``, via :mod:`vesselseg.data.normalize`), streams it through
:class:`~vesselseg.inference.predictor.StreamingPredictor` into a
:class:`~vesselseg.inference.outputs.PredictionWriter`, and renames the outputs when complete.
:func:`ensure_predictions` does the same for the samples of a dataset that lack a prediction
(``evaluate``, ``pseudo``).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.bundle import Resolver
from vesselseg.config import InferConfig, as_triple
from vesselseg.errors import ConfigError, NonFiniteError
from vesselseg.inference.inputs import find_inputs, select_shard
from vesselseg.inference.outputs import OutputPaths, PredictionWriter, output_paths, release_pages
from vesselseg.inference.plan import estimate_buffer_bytes
from vesselseg.inference.predictor import PredictFn, RunStats, StreamingPredictor
from vesselseg.inference.tiling import TileGrid, make_grid
from vesselseg.io.dataset import Sample

log = logging.getLogger(__name__)

MIB = 1 << 20


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

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class PredictSummary:
    """What :func:`predict_path` did, for the CLI's summary line."""

    results: list[VolumeResult] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    save_dir: Path = Path(".")

    @property
    def voxels(self) -> int:
        return sum(r.voxels for r in self.results if not r.skipped)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return peak_rss_mib()

    def line(self) -> str:
        done = [r for r in self.results if not r.skipped]
        skipped = len(self.results) - len(done)
        extra = f", {skipped} already complete" if skipped else ""
        return (
            f"predicted {len(done)} volume(s){extra} into {self.save_dir} on {self.device}: "
            f"{self.voxels / 1e6:,.1f} Mvoxels in {self.seconds:.1f} s "
            f"({self.voxels_per_second / 1e6:,.2f} Mvoxels/s), peak memory "
            f"{self.peak_rss_mib:,.0f} MiB"
        )


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_threads() -> int:
    """CPU threads torch computes with (results differ in the last bits between counts)."""
    import torch

    return int(torch.get_num_threads())


def check_tiling(cfg: InferConfig, meta_model: dict[str, Any]) -> tuple[int, int, int]:
    """The tile size, after checking it suits the network (per-axis divisors, for anisotropic
    strides) and the border."""
    from vesselseg.models.shapes import model_divisors

    tile = as_triple(cfg.tile_size)
    divs = model_divisors(meta_model)
    div = divs[0] if len(set(divs)) == 1 else list(divs)
    if any(t % d for t, d in zip(tile, divs, strict=True)):
        raise ConfigError(
            f"tile size {list(tile)}: every side must be a multiple of {div} for this "
            f"{meta_model.get('name', 'model')} of depth {meta_model.get('depth')} "
            "(--tile-size)"
        )
    if cfg.border and 2 * cfg.border >= min(tile):
        raise ConfigError(
            f"--border {cfg.border}: must be less than half the smallest tile side {min(tile)}"
        )
    return tile


def check_memory(grid: TileGrid, batch_size: int, max_buffer_bytes: int) -> None:
    """Refuse a tile whose smallest possible working set exceeds the buffer budget."""
    tz, ty, tx = grid.tile
    need = estimate_buffer_bytes(grid, ty, tx) + 2 * 4 * batch_size * tz * ty * tx
    if need > max_buffer_bytes:
        raise ConfigError(
            f"tile size {list(grid.tile)} with batch {batch_size} needs about "
            f"{need / MIB:,.0f} MiB of buffers, more than the {max_buffer_bytes / MIB:,.0f} MiB "
            "allowed (--max-buffer-mib); use a smaller --tile-size"
        )


def _fingerprint(path: Path) -> dict[str, Any]:
    from vesselseg.data.cache import fingerprint

    return fingerprint(path)


@dataclass(frozen=True)
class InputFormat:
    """How to read the input volumes: ``file_type`` (None: detected), and the ``shape`` and
    ``dtype`` of headerless ``.raw`` files."""

    file_type: str | None = None
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class PredictOptions:
    """How every volume of one :func:`predict_path` call is predicted and written."""

    cfg: InferConfig
    save_dir: Path
    reading: InputFormat = InputFormat()
    resume: bool = False
    max_buffer_bytes: int = 1024 * MIB
    show_progress: bool = True


@dataclass(frozen=True)
class PreparedModel:
    """A loaded network ready to predict with, and what identifies it in names and resume keys."""

    path: Path
    key: dict[str, Any]
    predict_fn: PredictFn
    percentiles: list[float]
    tile: tuple[int, int, int]
    device: str


NetHook = Callable[[PredictFn], PredictFn]


def prepare_model(
    model: str | Path,
    cfg: InferConfig,
    device: str = "auto",
    resolve: Resolver | None = None,
    net_hook: NetHook | None = None,
) -> PreparedModel:
    """Load ``model`` (file, ensemble, or registry URI via ``resolve``), check the tiling fits
    it, and make its predict function on ``device`` (wrapped by ``net_hook`` if given)."""
    from vesselseg.inference.loader import load_model
    from vesselseg.inference.network import make_predict_fn, prepare_network, resolve_device

    net, meta = load_model(model, resolve)
    tile = check_tiling(cfg, meta.model)
    dev = resolve_device(device)
    net = prepare_network(net, dev)
    predict_fn = make_predict_fn(net, dev, precision=cfg.precision, tta=cfg.tta)
    if net_hook is not None:
        predict_fn = net_hook(predict_fn)
    path = Path(str(model))
    key = {"weights": _fingerprint(path)}
    return PreparedModel(path, key, predict_fn, list(meta.percentiles), tile, str(dev))


def predict_path(
    input_path: str | Path,
    model: str | Path,
    save_dir: str | Path | None = None,
    cfg: InferConfig | None = None,
    file_type: str | None = None,
    shape: tuple[int, int, int] | None = None,
    dtype: str | None = None,
    resume: bool = False,
    device: str = "auto",
    max_buffer_mib: float = 1024,
    show_progress: bool = True,
    net_hook: NetHook | None = None,
    shard: tuple[int, int] | None = None,
    resolve: Resolver | None = None,
) -> PredictSummary:
    """Predict every volume under ``input_path`` with ``model``; outputs go to ``save_dir``
    (default ``cfg.out_dir``). ``net_hook(predict_fn) -> predict_fn`` may wrap the network
    (tests, benchmarks). ``shard=(i, n)`` predicts only the inputs at positions ``p`` with
    ``p % n == i`` of the sorted input list (see :func:`select_shard`). ``resolve`` turns
    registry URIs (ensemble members) into files (the CLI passes ``registry.resolve_model``).

    The public entry point keeps its flat keyword arguments; they are grouped into
    :class:`PredictOptions` for :func:`predict_volume`."""
    cfg = cfg or InferConfig()
    opts = PredictOptions(
        cfg=cfg,
        save_dir=Path(save_dir if save_dir is not None else cfg.out_dir),
        reading=InputFormat(file_type, shape, dtype),
        resume=resume,
        max_buffer_bytes=int(max_buffer_mib * MIB),
        show_progress=show_progress,
    )
    all_inputs = find_inputs(Path(input_path), file_type)
    inputs = select_shard(all_inputs, shard)
    if shard is not None:
        log.info("shard %d/%d: %d of %d input(s)", shard[0], shard[1], len(inputs), len(all_inputs))
    prepared = prepare_model(model, cfg, device, resolve, net_hook)
    summary = PredictSummary(device=prepared.device, save_dir=opts.save_dir)
    start = time.perf_counter()
    for name, path in inputs:
        summary.results.append(predict_volume(name, path, prepared, opts))
    summary.seconds = time.perf_counter() - start
    return summary


def predict_volume(
    name: str, path: Path, model: PreparedModel, opts: PredictOptions
) -> VolumeResult:
    """Predict one volume into its two outputs (see :func:`predict_path`)."""
    from vesselseg.data.normalize import load_or_compute_stats
    from vesselseg.io import open_volume

    cfg, reading = opts.cfg, opts.reading
    volume = open_volume(path, reading.file_type, reading.shape, reading.dtype)
    vshape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    paths = output_paths(opts.save_dir, name, model.path, cfg.out_format, cfg.naming)
    result = VolumeResult(path, paths, vshape)
    if opts.resume and paths.complete():
        log.info("%s: already predicted (%s), skipped", path, paths.prob)
        result.skipped = True
        return result
    grid = make_grid(vshape, model.tile, cfg.overlap, cfg.blend, cfg.border)
    check_memory(grid, cfg.batch_size, opts.max_buffer_bytes)
    stats = load_or_compute_stats(volume, model.percentiles)
    release_pages(getattr(volume, "_array", None))  # pages read for the percentiles
    predictor = StreamingPredictor(
        model.predict_fn,
        grid,
        batch_size=cfg.batch_size,
        preprocess=_normaliser(path, stats.lo, stats.hi),
        max_buffer_bytes=opts.max_buffer_bytes,
        release_input=lambda: release_pages(getattr(volume, "_array", None)),
    )
    key = resume_key(path, model, cfg, predictor, (stats.lo, stats.hi))
    n_tiles = predictor.plan.n_tiles
    writer = PredictionWriter(
        paths, vshape, cfg.out_format, cfg.prob_dtype, cfg.threshold, key, n_tiles, opts.resume
    )
    result.resumed_from = writer.resume_from
    if writer.resume_from:
        log.info("%s: resuming after %d of %d windows", path, writer.resume_from, n_tiles)
    if writer.resume_from < n_tiles:
        run = _stream(predictor, volume, writer, f"predict {name}", opts.show_progress)
        result.tiles, result.seconds = run.tiles, run.seconds
        result.forward_seconds = run.forward_seconds
        result.peak_buffer_bytes = run.peak_buffer_bytes
    writer.commit()
    _log_done(result)
    return result


def _normaliser(path: Path, lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    """Raw input → normalised float32 network input; NaN or infinite values are an error."""
    from vesselseg.data.normalize import normalize

    def preprocess(raw: np.ndarray) -> np.ndarray:
        data = normalize(raw, lo, hi)
        if not np.isfinite(data).all():
            raise NonFiniteError(f"{path}: NaN or infinite intensities")
        return data

    return preprocess


def resume_key(
    path: Path,
    model: PreparedModel,
    cfg: InferConfig,
    predictor: StreamingPredictor,
    intensity: tuple[float, float],
) -> dict[str, Any]:
    """Everything the output of ``path`` depends on: ``--resume`` continues only on a match."""
    return {
        "input": _fingerprint(path),
        "model": model.key,
        "shape": list(predictor.grid.shape),
        "tile": list(model.tile),
        "overlap": cfg.overlap,
        "border": cfg.border,
        "blend": cfg.blend,
        "batch_size": cfg.batch_size,
        "tta": cfg.tta,
        "precision": cfg.precision,
        "threshold": cfg.threshold,
        "prob_dtype": cfg.prob_dtype,
        "block": list(predictor.block) if predictor.block else None,
        "device": model.device,
        "threads": torch_threads(),  # float sums differ with the thread count
        "intensity": list(intensity),
    }


def _stream(
    predictor: StreamingPredictor,
    volume: Any,
    writer: PredictionWriter,
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


# --------------------------------------------------------------------------- datasets


def sample_name(sample: Sample) -> str:
    """The name ``vesselseg predict`` uses for the sample's outputs."""
    return sample.id if sample.layout == "kaggle" else sample.image.name


def ensure_predictions(
    samples: list[Sample],
    model: Path,
    pred_dir: Path,
    cfg: InferConfig,
    resume: bool = False,
    resolve: Resolver | None = None,
) -> dict[str, Path]:
    """Probability file per sample id, predicting the volumes that lack one."""
    found = {}
    for sample in samples:
        paths = output_paths(pred_dir, sample_name(sample), model, cfg.out_format, cfg.naming)
        if not paths.complete():
            log.info("no prediction for %s yet: predicting it", sample.id)
            source = sample.image.parent if sample.layout == "kaggle" else sample.image
            predict_path(source, model, pred_dir, cfg, resume=resume, resolve=resolve)
        found[sample.id] = paths.prob
    return found
