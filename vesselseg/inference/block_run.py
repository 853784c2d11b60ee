"""Predicting z-blocks of volumes into shared stores: ``predict --shard i/n`` when the volumes
are fewer than the shards, and ``predict --finalize``.

:func:`block_shares` cuts every volume into z-blocks one output chunk deep
(:func:`~vesselseg.inference.blocks.z_blocks`) and gives shard ``i`` its contiguous run of them
(:func:`~vesselseg.inference.blocks.assign_blocks`); :func:`predict_blocks` predicts a shard's
blocks of one volume into the volume's :class:`~vesselseg.inference.shared_store.SharedStore`,
each run of consecutive blocks in one pass of the predictor limited to the cells of those
blocks. The worker that completes the last block finalizes the store; :func:`finalize_volume`
does it on request. Every voxel equals, bit for bit, what one process predicting the whole
volume writes (same windows, batches, blending order: :mod:`~vesselseg.inference.blocks`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from vesselseg.errors import ConfigError
from vesselseg.inference.blocks import assign_blocks, cells_in_z, runs_of, z_blocks
from vesselseg.inference.options import PredictOptions, PreparedModel
from vesselseg.inference.outputs import output_chunks, output_paths
from vesselseg.inference.shared_store import (
    CHUNKED_FORMATS,
    BlockLayout,
    SharedStore,
    blocks_folder,
    read_layout,
)
from vesselseg.inference.volume_run import VolumeResult, _predictor, open_input
from vesselseg.inference.voxels import scale_decision

log = logging.getLogger(__name__)

Share = tuple[str, Path, list[int]]  # (input name, input path, block indices)


def block_shares(
    inputs: list[tuple[str, Path]], shard: tuple[int, int], opts: PredictOptions
) -> list[Share]:
    """The z-blocks shard ``(i, n)`` predicts, per volume (inputs sorted by name, as
    :func:`~vesselseg.inference.inputs.select_shard` sorts them)."""
    fmt = opts.cfg.out_format
    if fmt not in CHUNKED_FORMATS:
        raise ConfigError(
            f"--shard {shard[0]}/{shard[1]} over {len(inputs)} volume(s): fewer volumes than "
            "shards splits each volume into z-blocks of one shared store, which needs "
            "--out-format zarr or ome-zarr"
        )
    ordered = sorted(inputs, key=lambda item: (item[0], str(item[1])))
    counts = []
    for _, path in ordered:
        shape = tuple(int(s) for s in open_input(path, opts).shape)
        counts.append(len(z_blocks(shape[0], output_chunks(shape, opts.cfg.chunk_size)[0])))
    mine: dict[int, list[int]] = {}
    for volume, block in assign_blocks(counts, shard):
        mine.setdefault(volume, []).append(block)
    return [(ordered[v][0], ordered[v][1], blocks) for v, blocks in sorted(mine.items())]


def predict_blocks(
    name: str, path: Path, model: PreparedModel, opts: PredictOptions, blocks: list[int]
) -> VolumeResult:
    """Predict z-blocks ``blocks`` of one volume into its shared store (``--resume``: those
    marked done are skipped); finalize the store if that completed it."""
    cfg = opts.cfg
    volume = open_input(path, opts)
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    paths = output_paths(opts.save_dir, name, model.path, cfg.out_format, cfg.naming)
    result = VolumeResult(path, paths, shape, block_voxels=0)
    if paths.complete():
        log.info(
            "%s: already predicted (%s), skipped; remove it to predict again", path, paths.prob
        )
        shutil.rmtree(blocks_folder(paths), ignore_errors=True)  # left by a finalize killed late
        result.skipped = True
        return result
    if scale_decision(str(path), shape, volume.voxel_size, model.voxel_size, cfg.resample):
        raise ConfigError(
            f"{path}: its voxel size differs from the model's; sharding one volume does not "
            "resample yet: predict it with --no-resample, or resample it first"
        )
    predictor, key = _predictor(path, volume, volume, model, opts)
    chunks = output_chunks(shape, cfg.chunk_size)
    layout = BlockLayout(
        key, shape, chunks, z_blocks(shape[0], chunks[0]), cfg.out_format, cfg.prob_dtype,
        model.mask_threshold(cfg), volume.voxel_size,
    )  # fmt: skip
    store = SharedStore.open(paths, layout)
    todo = [b for b in blocks if not (opts.resume and store.done(b))]
    if len(todo) < len(blocks):
        log.info("%s: %d of %d z-blocks already done", path, len(blocks) - len(todo), len(blocks))
    _run_blocks(predictor, volume, store, todo, result, name, opts)
    result.blocks = (len(todo), len(layout.blocks))
    if not store.missing() and store.finalize():
        result.finalized = True
        log.info("%s: every z-block done; wrote %s and %s", path, paths.prob, paths.mask)
    return result


def _run_blocks(predictor, volume, store: SharedStore, todo, result, name, opts) -> None:
    """One predictor pass per run of consecutive blocks of ``todo``."""
    from vesselseg.progress import progress_bar

    runs = [
        (run, set().union(*(cells_in_z(predictor.plan, *store.layout.blocks[b]) for b in run)))
        for run in runs_of(todo)
    ]
    plane = store.layout.shape[1] * store.layout.shape[2]

    def predict(advance: Callable[[int], None] | None) -> None:
        for run, cells in runs:
            if store.finalizing():  # finished by others meanwhile (a run without --resume)
                break
            sink = store.sink(run)
            stats = predictor.run(volume, sink, on_tiles=advance, cells=cells)
            if not sink.complete:  # pragma: no cover - the cells of a block cover it
                raise RuntimeError(f"{result.input}: z-blocks {run} were not fully written")
            result.tiles += stats.tiles
            result.seconds += stats.seconds
            result.forward_seconds += stats.forward_seconds
            result.peak_buffer_bytes = max(result.peak_buffer_bytes, stats.peak_buffer_bytes)
            result.block_voxels = (result.block_voxels or 0) + sum(
                (store.layout.blocks[b][1] - store.layout.blocks[b][0]) * plane for b in run
            )

    if not opts.show_progress:
        predict(None)
        return
    total = sum(len(batch) for _, cells in runs for batch in predictor.batches_for(cells))
    with progress_bar(f"predict {name} z-blocks", total=total, unit="tiles") as advance:
        predict(advance)


def finalize_volume(name: str, path: Path, model: Path, opts: PredictOptions) -> VolumeResult:
    """``predict --finalize``: finish the shared store of one volume whose blocks are all done
    (one-line error if some are not); a volume already complete is skipped."""
    cfg = opts.cfg
    paths = output_paths(opts.save_dir, name, model, cfg.out_format, cfg.naming)
    folder = blocks_folder(paths)
    record = read_layout(folder)
    shape = tuple(record["shape"]) if record else (0, 0, 0)
    result = VolumeResult(path, paths, shape, block_voxels=0)  # type: ignore[arg-type]
    if record is None:
        if paths.complete():
            result.skipped = True
            return result
        raise ConfigError(f"{paths.prob}: no sharded prediction to finalize ({folder} is missing)")
    SharedStore(paths, BlockLayout.from_record(record)).finalize(force=True)
    result.finalized = True
    return result
