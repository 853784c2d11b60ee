"""``vesselseg predict``: predict one volume or a folder of volumes with a saved model.

:func:`predict_path` loads the model once (:func:`prepare_model`), then predicts every input
volume with :func:`~vesselseg.inference.volume_run.predict_volume` (streamed, resumable, on the
model's voxel grid when the input's differs). :func:`ensure_predictions` does the same for the
samples of a dataset that lack a prediction (``evaluate``, ``pseudo``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.bundle import Resolver
from vesselseg.config import InferConfig
from vesselseg.inference.block_run import block_shares, finalize_volume, predict_blocks
from vesselseg.inference.inputs import find_inputs, select_shard
from vesselseg.inference.options import (
    MIB,
    InputFormat,
    NetHook,
    PredictOptions,
    PreparedModel,
    check_memory,
    check_tiling,
    fingerprint_of,
    torch_threads,
)
from vesselseg.inference.outputs import output_paths
from vesselseg.inference.volume_run import VolumeResult, peak_rss_mib, predict_volume, resume_key
from vesselseg.inference.voxels import model_voxel_size
from vesselseg.io.dataset import Sample

__all__ = [
    "InputFormat",
    "NetHook",
    "PredictOptions",
    "PredictSummary",
    "PreparedModel",
    "VolumeResult",
    "check_memory",
    "check_tiling",
    "ensure_predictions",
    "peak_rss_mib",
    "predict_path",
    "predict_volume",
    "prepare_model",
    "resume_key",
    "sample_name",
    "torch_threads",
]

log = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    """What :func:`predict_path` did, for the CLI's summary line."""

    results: list[VolumeResult] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    save_dir: Path = Path(".")
    finalize_only: bool = False

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
        finalized = sum(r.finalized for r in self.results)
        if self.finalize_only:
            return f"finalized {finalized} volume(s){extra} in {self.save_dir}"
        what = f"{len(done)} volume(s)"
        blocks = [r.blocks for r in done if r.blocks is not None]
        if blocks:
            what = f"{sum(b[0] for b in blocks)} of {sum(b[1] for b in blocks)} z-blocks of {what}"
            extra += f", finalized {finalized}" if finalized else ", none finalized yet"
        return (
            f"predicted {what}{extra} into {self.save_dir} on {self.device}: "
            f"{self.voxels / 1e6:,.1f} Mvoxels in {self.seconds:.1f} s "
            f"({self.voxels_per_second / 1e6:,.2f} Mvoxels/s), peak memory "
            f"{self.peak_rss_mib:,.0f} MiB"
        )


def prepare_model(
    model: str | Path,
    cfg: InferConfig,
    device: str = "auto",
    resolve: Resolver | None = None,
    net_hook: NetHook | None = None,
    reserve_bytes: int = 1024 * MIB,
) -> PreparedModel:
    """Load ``model`` (file, ensemble, or registry URI via ``resolve``), check the tiling fits
    it, and make its predict function on ``device`` (wrapped by ``net_hook`` if given):
    ``infer.batch_size: auto`` is resolved here (``reserve_bytes`` kept for the blending
    buffers on CUDA), then the network compiled when ``infer.compile``."""
    from vesselseg.inference.loader import load_model
    from vesselseg.inference.network import (
        compile_network,
        make_predict_fn,
        prepare_network,
        resolve_device,
    )

    net, meta = load_model(model, resolve)
    tile = check_tiling(cfg, meta.model)
    dev = resolve_device(device)
    net = prepare_network(net, dev)
    predict_fn = make_predict_fn(net, dev, precision=cfg.precision, tta=cfg.tta)
    batch = _batch_size(cfg, net, predict_fn, tile, dev, reserve_bytes)
    if cfg.compile:
        net = compile_network(net)
        predict_fn = make_predict_fn(net, dev, cfg.precision, cfg.tta, pad_to=batch)
    if net_hook is not None:
        predict_fn = net_hook(predict_fn)
    path = Path(str(model))
    key = {"weights": fingerprint_of(path)}
    size = model_voxel_size(meta)
    return PreparedModel(
        path, key, predict_fn, list(meta.percentiles), tile, str(dev), size, batch,
        threshold=float(meta.threshold), intensity=meta.intensity,
    )  # fmt: skip


def _batch_size(
    cfg: InferConfig, net: Any, predict_fn: Any, tile: Any, dev: Any, reserve_bytes: int
) -> int:
    """``infer.batch_size``, with ``auto`` measured on the device
    (:mod:`~vesselseg.inference.batching`)."""
    if cfg.batch_size != "auto":
        return int(cfg.batch_size)
    from vesselseg.inference.batching import cpu_batch_size, cuda_batch_size

    if dev.type == "cuda":
        return cuda_batch_size(predict_fn, tile, dev, reserve_bytes)
    return cpu_batch_size(net, tile, copies=8 if cfg.tta else 1)


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
    finalize: bool = False,
) -> PredictSummary:
    """Predict every volume under ``input_path`` with ``model``; outputs go to ``save_dir``
    (default ``cfg.out_dir``). ``net_hook(predict_fn) -> predict_fn`` may wrap the network
    (tests, benchmarks). ``shard=(i, n)`` predicts only the inputs at positions ``p`` with
    ``p % n == i`` of the sorted input list (see :func:`select_shard`); with fewer inputs than
    shards, every input is cut into z-blocks and shard ``i`` predicts its share of them into
    each volume's shared store (:mod:`~vesselseg.inference.block_run`). ``finalize`` predicts
    nothing: it finishes the shared stores whose blocks are all done. ``resolve`` turns
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
    start = time.perf_counter()
    if finalize:
        summary = PredictSummary(save_dir=opts.save_dir, finalize_only=True)
        for name, path in all_inputs:
            summary.results.append(finalize_volume(name, path, Path(str(model)), opts))
        summary.seconds = time.perf_counter() - start
        return summary
    if shard is not None and len(all_inputs) < shard[1]:
        shares = block_shares(all_inputs, shard, opts)
        log.info("shard %d/%d: z-blocks of %d volume(s)", shard[0], shard[1], len(shares))
    else:
        inputs = select_shard(all_inputs, shard)
        shares = [(name, path, None) for name, path in inputs]
        if shard is not None:
            log.info("shard %d/%d: %d of %d input(s)", *shard, len(inputs), len(all_inputs))
    prepared = prepare_model(model, cfg, device, resolve, net_hook, opts.max_buffer_bytes)
    summary = PredictSummary(device=prepared.device, save_dir=opts.save_dir)
    for name, path, blocks in shares:
        if blocks is None:
            summary.results.append(predict_volume(name, path, prepared, opts))
        else:
            summary.results.append(predict_blocks(name, path, prepared, opts, blocks))
    summary.seconds = time.perf_counter() - start
    return summary


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
