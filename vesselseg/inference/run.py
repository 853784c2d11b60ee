"""``vesselseg predict``: predict one volume or a folder of volumes with a saved model.

:func:`predict_path` loads the model once, then for every input volume: opens it lazily,
estimates its intensity percentiles (the model's ``meta.percentiles``, via
:mod:`vesselseg.data.normalize`), streams it through
:class:`~vesselseg.inference.predictor.StreamingPredictor` into a
:class:`~vesselseg.inference.outputs.PredictionWriter`, and renames the outputs when complete.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.config import InferConfig, as_triple
from vesselseg.errors import ConfigError, DatasetError, MissingPathError, NonFiniteError
from vesselseg.inference.outputs import (
    OutputPaths,
    PredictionWriter,
    looks_like_output,
    output_paths,
    release_pages,
)
from vesselseg.inference.predictor import StreamingPredictor, estimate_buffer_bytes
from vesselseg.inference.tiling import TileGrid, make_grid

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


def find_inputs(path: Path, file_type: str | None = None) -> list[tuple[str, Path]]:
    """``(name, path)`` of the volumes to predict: ``path`` itself, or the images of a folder
    (``data_<X>`` of seed 000 pairs, ``kidney_*/images`` of Kaggle, or any volume files).

    ``name`` is the input's file name (the case id for Kaggle, also when ``path`` is one
    ``kidney_*`` case folder). Files this package wrote
    (``*.prob.npy``, ``*.mask.npy``...) are skipped; ``file_type`` keeps only that type.
    """
    from vesselseg.io import detect_file_type, discover_dataset

    if not path.exists():
        raise MissingPathError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "images").is_dir():  # one Kaggle case: kidney_X/images
        return [(path.name, path / "images")]
    samples = discover_dataset(path)
    found = []
    for sample in samples:
        if looks_like_output(sample.image):
            continue
        if file_type is not None and path.is_dir() and sample.layout != "kaggle":
            try:
                if detect_file_type(sample.image) != file_type:
                    continue
            except Exception:  # noqa: BLE001 - undetectable: let --file-type decide
                pass
        name = sample.id if sample.layout == "kaggle" else sample.image.name
        found.append((name, sample.image))
    if not found:
        raise DatasetError(f"{path}: no volumes to predict")
    return found


SLURM_ARRAY_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based: ``0 <= i < n``) → ``(i, n)``; ``"slurm"`` reads the array task.

    ``slurm`` takes ``i = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``
    and ``n = SLURM_ARRAY_TASK_COUNT``, so ``sbatch --array=0-3`` (or ``1-4``, ``0-6:2``) gives
    shards 0/4 .. 3/4.
    """
    import os

    if text is None:
        return None
    text = text.strip()
    if text.lower() == "slurm":
        env = os.environ if env is None else env
        missing = [k for k in SLURM_ARRAY_VARS if not env.get(k)]
        if missing:
            raise ConfigError(f"--shard slurm: ${missing[0]} is not set (not a SLURM array job?)")
        try:
            task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
            step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
        except ValueError:
            raise ConfigError("--shard slurm: SLURM_ARRAY_TASK_* are not integers") from None
        if step < 1 or (task - first) % step:
            raise ConfigError(f"--shard slurm: task {task} is not on the array's grid")
        index = (task - first) // step
        if not 0 <= index < count:
            raise ConfigError(
                f"--shard slurm: task {task} is not one of the {count} tasks "
                "(use a plain range such as --array=0-3)"
            )
        return index, count
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index = count = None
    if index is None or count is None:
        raise ConfigError(f"--shard: expected i/n (e.g. 0/4) or slurm, got {text!r}")
    check_shard((index, count))
    return index, count


def check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: need n >= 1 and 0 <= i < n (0-based)")


def select_shard(
    inputs: list[tuple[str, Path]], shard: tuple[int, int] | None
) -> list[tuple[str, Path]]:
    """The inputs of shard ``(i, n)``: position ``% n == i`` in the list sorted by name (and
    path), so ``n`` processes with ``i = 0 .. n-1`` cover every input exactly once."""
    if shard is None:
        return inputs
    check_shard(shard)
    index, count = shard
    ordered = sorted(inputs, key=lambda item: (item[0], str(item[1])))
    return [item for position, item in enumerate(ordered) if position % count == index]


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
    net_hook: Any = None,
    shard: tuple[int, int] | None = None,
) -> PredictSummary:
    """Predict every volume under ``input_path`` with ``model``; outputs go to ``save_dir``
    (default ``cfg.out_dir``). ``net_hook(predict_fn) -> predict_fn`` may wrap the network
    (tests, benchmarks). ``shard=(i, n)`` predicts only the inputs at positions ``p`` with
    ``p % n == i`` of the sorted input list (see :func:`select_shard`)."""
    from vesselseg.inference.network import (
        load_model,
        make_predict_fn,
        prepare_network,
        resolve_device,
    )

    cfg = cfg or InferConfig()
    input_path = Path(input_path)
    save_dir = Path(save_dir if save_dir is not None else cfg.out_dir)
    all_inputs = find_inputs(input_path, file_type)
    inputs = select_shard(all_inputs, shard)
    if shard is not None:
        log.info("shard %d/%d: %d of %d input(s)", shard[0], shard[1], len(inputs), len(all_inputs))
    net, meta = load_model(model)
    tile = check_tiling(cfg, meta.model)
    dev = resolve_device(device)
    net = prepare_network(net, dev)
    predict_fn = make_predict_fn(net, dev, precision=cfg.precision, tta=cfg.tta)
    if net_hook is not None:
        predict_fn = net_hook(predict_fn)
    model_path = Path(str(model))
    model_key = {"weights": _fingerprint(model_path)}
    summary = PredictSummary(device=str(dev), save_dir=save_dir)
    start = time.perf_counter()
    for name, path in inputs:
        result = predict_volume(
            name,
            path,
            model_path,
            model_key,
            predict_fn,
            meta.percentiles,
            tile,
            cfg,
            save_dir,
            file_type,
            shape,
            dtype,
            resume,
            int(max_buffer_mib * MIB),
            str(dev),
            show_progress,
        )
        summary.results.append(result)
    summary.seconds = time.perf_counter() - start
    return summary


def predict_volume(
    name: str,
    path: Path,
    model_path: Path,
    model_key: dict[str, Any],
    predict_fn: Any,
    percentiles: list[float],
    tile: tuple[int, int, int],
    cfg: InferConfig,
    save_dir: Path,
    file_type: str | None,
    shape: tuple[int, int, int] | None,
    dtype: str | None,
    resume: bool,
    max_buffer_bytes: int,
    device: str,
    show_progress: bool,
) -> VolumeResult:
    """Predict one volume into its two outputs (see :func:`predict_path`)."""
    from vesselseg.data.normalize import load_or_compute_stats, normalize
    from vesselseg.io import open_volume
    from vesselseg.progress import progress_bar

    volume = open_volume(path, file_type, shape, dtype)
    vshape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    paths = output_paths(save_dir, name, model_path, cfg.out_format, cfg.naming)
    result = VolumeResult(path, paths, vshape)
    if resume and paths.complete():
        log.info("%s: already predicted (%s), skipped", path, paths.prob)
        result.skipped = True
        return result
    grid = make_grid(vshape, tile, cfg.overlap, cfg.blend, cfg.border)
    check_memory(grid, cfg.batch_size, max_buffer_bytes)
    stats = load_or_compute_stats(volume, percentiles)
    release_pages(getattr(volume, "_array", None))  # pages read for the percentiles

    def preprocess(raw: np.ndarray) -> np.ndarray:
        data = normalize(raw, stats.lo, stats.hi)
        if not np.isfinite(data).all():
            raise NonFiniteError(f"{path}: NaN or infinite intensities")
        return data

    predictor = StreamingPredictor(
        predict_fn,
        grid,
        batch_size=cfg.batch_size,
        preprocess=preprocess,
        max_buffer_bytes=max_buffer_bytes,
        release_input=lambda: release_pages(getattr(volume, "_array", None)),
    )
    key = {
        "input": _fingerprint(path),
        "model": model_key,
        "shape": list(vshape),
        "tile": list(tile),
        "overlap": cfg.overlap,
        "border": cfg.border,
        "blend": cfg.blend,
        "batch_size": cfg.batch_size,
        "tta": cfg.tta,
        "precision": cfg.precision,
        "threshold": cfg.threshold,
        "prob_dtype": cfg.prob_dtype,
        "block": list(predictor.block) if predictor.block else None,
        "device": device,
        "threads": torch_threads(),  # float sums differ with the thread count
        "intensity": [stats.lo, stats.hi],
    }
    writer = PredictionWriter(
        paths,
        vshape,
        cfg.out_format,
        cfg.prob_dtype,
        cfg.threshold,
        key,
        predictor.plan.n_tiles,
        resume,
    )
    result.resumed_from = writer.resume_from
    if writer.resume_from:
        log.info(
            "%s: resuming after %d of %d windows", path, writer.resume_from, predictor.plan.n_tiles
        )
    if writer.resume_from < predictor.plan.n_tiles:
        restart = predictor.plan.restart_tile(writer.resume_from)
        todo = predictor.plan.n_tiles - (restart // cfg.batch_size) * cfg.batch_size
        label = f"predict {name}"
        try:
            if show_progress:
                with progress_bar(label, total=todo, unit="tiles") as advance:
                    run = predictor.run(volume, writer, writer.resume_from, on_tiles=advance)
            else:
                run = predictor.run(volume, writer, writer.resume_from)
        except BaseException:
            writer.close_partial()
            raise
        result.tiles, result.seconds = run.tiles, run.seconds
        result.forward_seconds = run.forward_seconds
        result.peak_buffer_bytes = run.peak_buffer_bytes
    writer.commit()
    rate = result.voxels / result.seconds if result.seconds else 0.0
    log.info(
        "%s → %s: %d windows in %.1f s (%.2f Mvoxels/s, network %.0f%% of the time), "
        "buffers %.1f MiB, peak memory %.0f MiB",
        path,
        paths.prob,
        result.tiles,
        result.seconds,
        rate / 1e6,
        100 * result.forward_seconds / result.seconds if result.seconds else 0.0,
        result.peak_buffer_bytes / MIB,
        peak_rss_mib(),
    )
    return result
