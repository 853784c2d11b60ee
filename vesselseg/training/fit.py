"""``vesselseg train``: wire data, network, Lightning trainer, checkpoints and MLflow together.

Outputs for ``--out models/model.pt``:

* ``models/model.pt`` + ``models/model.json`` — the best weights and their settings (what
  ``vesselseg predict`` loads), written atomically at the end;
* ``models/model_ckpt/best.ckpt`` and ``last.ckpt`` — Lightning checkpoints (``--resume``
  continues from ``last.ckpt``), plus ``run.json`` with the MLflow run id;
* ``models/model.curves.png`` — loss, validation Dice and learning rate per epoch (a DVC
  image plot);
* an MLflow run: the resolved config as params, per-epoch metrics, the training and
  validation folders as dataset inputs (name, DVC md5, path), overlays, the training curves,
  the best checkpoint and the saved model as artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesselseg.config import Params, as_triple, flatten, params_to_dict
from vesselseg.errors import ConfigError, VesselsegError
from vesselseg.lineage import pipeline_tags
from vesselseg.models.shapes import model_divisors
from vesselseg.provenance import git_commit

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    model_path: Path
    checkpoint_dir: Path
    run_id: str
    best_score: float | None
    epochs: int
    score: float | None  # the monitored value of the saved weights' epoch
    model_from: str  # which epoch's weights were saved: last | best


def checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.stem + "_ckpt")


def check_sizes(params: Params) -> None:
    """Crop and tile sides must be multiples of the network's total down-sampling per axis
    (:func:`~vesselseg.models.shapes.model_divisors`: the same ``2**(depth-1)`` on every axis
    for an isotropic network)."""
    factors = model_divisors(params.model)
    for key, size in (
        ("data.crop_size", params.data.crop_size),
        ("infer.tile_size", params.infer.tile_size),
    ):
        if any(s % f for s, f in zip(as_triple(size), factors, strict=True)):
            factor = factors[0] if len(set(factors)) == 1 else list(factors)
            raise ConfigError(
                f"{key} {as_triple(size)} must be a multiple of {factor} for "
                f"{params.model.name} with depth {params.model.depth}"
            )


def load_initial_weights(net: Any, source: str | Path, model_cfg: Any) -> None:
    """Load the weights of the saved model file ``source`` into ``net`` (same architecture).

    ``source`` is a local file: a registry URI is resolved by the caller
    (:func:`vesselseg.registry.resolve_model`, the CLI's ``train --init``)."""
    from vesselseg.bundle import ModelFileError, load_bundle, load_weights

    state, meta = load_bundle(source)
    if meta.model.get("name") != model_cfg.name:
        raise ModelFileError(
            f"--init {source}: a {meta.model.get('name')} model cannot start a {model_cfg.name}"
        )
    load_weights(net, state, f"--init {source}: weights do not fit model settings")


def quiet_lightning() -> None:
    """Drop Lightning's tips and known-harmless warnings from the console."""
    import warnings

    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
        "lightning_fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def training_datasets(params: Params, pseudo_dir: str | Path | None) -> list[tuple[Any, str]]:
    """``[(DatasetRef, context), ...]``: the training and validation folders (and the pseudo
    labels) as MLflow dataset inputs."""
    from vesselseg.lineage import dataset_ref

    found = [(dataset_ref(params.data.train_dir), "training")]
    if pseudo_dir is not None:
        found.append((dataset_ref(pseudo_dir), "training"))
    found.append((dataset_ref(params.data.val_dir), "validation"))
    return found


def log_training_curves(run_id: str, out: Path, title: str, mlflow_root: Any) -> Path:
    """``<out>.curves.png`` (loss, validation Dice, learning rate per epoch, from the run's
    metric history), also logged to the run under ``plots/``."""
    from vesselseg import tracking
    from vesselseg.plots import write_training_curves

    path = out.with_suffix(".curves.png")
    write_training_curves(tracking.metric_history(run_id, root=mlflow_root), path, title)
    tracking.log_artifact(run_id, path, "plots", mlflow_root)
    return path


def trained_spacing(spacing: Any) -> dict[str, Any]:
    """``ModelMeta``'s ``spacing``/``unit`` from the datamodule's resolved target
    (:class:`~vesselseg.io.spacing.VoxelSize`): None for both when no training volume had a
    known spacing (even where an explicit ``data.target_spacing`` resampled their voxels)."""
    if spacing is None or not spacing.known:
        return {"spacing": None, "unit": None}
    return {"spacing": [float(v) for v in spacing.spacing], "unit": spacing.unit}


def trained_intensity(data_cfg: Any) -> list[float] | None:
    """``ModelMeta.intensity``: the dataset statistics of ``data.normalization: dataset``
    (checked by the datamodule), None for per-volume percentiles."""
    from vesselseg.data.datamodule import dataset_intensity

    stats = dataset_intensity(data_cfg)
    return None if stats is None else stats.as_list()


def spacing_params(meta: Any) -> dict[str, Any]:
    """The resolved ``data.target_spacing`` (and its unit) as logged MLflow params."""
    return {"data.target_spacing": meta.spacing, "data.target_unit": meta.unit}


def train_model(
    params: Params,
    out: str | Path,
    resume: bool = False,
    tags: dict[str, str] | None = None,
    mlflow_root: str | Path | None = None,
    extra_callbacks: list | None = None,
    pseudo_dir: str | Path | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train ``params.model`` on ``params.data``; return where the model and run are.

    ``extra_callbacks`` are added to the trainer's (e.g. the tuning pruning callback);
    ``pseudo_dir`` (from ``vesselseg pseudo``) adds pseudo-labelled volumes, drawn
    ``pseudo.mix_ratio`` of the time (stage-2 training); ``init`` (a local saved model file of
    the same architecture; resolve a ``models:/`` URI first with
    :func:`vesselseg.registry.resolve_model`) gives the starting weights, e.g. fine-tuning
    stage 1 into stage 2; it is recorded as the run's ``init_from`` tag unless ``tags`` names
    the source already. MLflow's process-wide tracking URI is left as it was.
    """
    from vesselseg import tracking

    with tracking.keep_global_tracking_uri():
        return _train(params, out, resume, tags, mlflow_root, extra_callbacks, pseudo_dir, init)


def _train(
    params: Params,
    out: str | Path,
    resume: bool,
    tags: dict[str, str] | None,
    mlflow_root: str | Path | None,
    extra_callbacks: list | None,
    pseudo_dir: str | Path | None,
    init: str | Path | None,
) -> TrainResult:
    import pytorch_lightning as pl
    import torch

    from vesselseg import tracking
    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.data.datamodule import VesselDataModule
    from vesselseg.models import build_model, is_slice_model
    from vesselseg.models.unet2d import axis_indices
    from vesselseg.training.callbacks import OverlayCallback, progress_callbacks
    from vesselseg.training.logger import lightning_logger
    from vesselseg.training.module import VesselSegModule

    out = Path(out)
    cfg = params.train
    check_sizes(params)
    quiet_lightning()
    ckpt_dir = checkpoint_dir(out)
    last = ckpt_dir / "last.ckpt"
    run_file = ckpt_dir / "run.json"
    if resume and not last.is_file():
        raise VesselsegError(f"{last}: nothing to resume (no last checkpoint)")
    if not resume and last.exists():
        for stale in ckpt_dir.glob("*.ckpt"):
            stale.unlink(missing_ok=True)  # DDP ranks started together may race here

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    slices = is_slice_model(params.model)
    datamodule = VesselDataModule(
        params.data,
        cfg.batch_size,
        seed=cfg.seed,
        pseudo_dir=pseudo_dir,
        pseudo_ratio=params.pseudo.mix_ratio,
        views=axis_indices(params.model.views) if slices else None,
        context=params.model.context,
        oblique_max_deg=params.model.oblique_max_deg if slices and params.model.oblique else 0.0,
    )
    datamodule.setup("fit")  # validates the data before anything is written

    meta = ModelMeta(
        model=params_to_dict(params.model),
        percentiles=list(params.data.percentiles),
        tile_size=list(as_triple(params.infer.tile_size)),
        overlap=params.infer.overlap,
        threshold=params.infer.threshold or 0.5,  # calibrated after training (the CLI)
        **trained_spacing(datamodule.spacing),
        intensity=trained_intensity(params.data),
    )
    net = build_model(params.model)
    if init is not None and not resume:
        load_initial_weights(net, init, params.model)
    module = VesselSegModule(net, cfg, dataclasses.asdict(meta))

    run_id = json.loads(run_file.read_text())["run_id"] if resume and run_file.is_file() else None
    all_tags = {"git_commit": git_commit() or "unknown", **(tags or {})}
    if pseudo_dir is not None:
        all_tags["pseudo_dir"] = str(pseudo_dir)
    if init is not None:
        all_tags.setdefault("init_from", str(init))  # the CLI passes the URI it resolved
    all_tags.update(pipeline_tags())
    logger = lightning_logger(
        cfg.experiment, cfg.run_name or out.stem, run_id, all_tags, mlflow_root
    )
    if run_id is None:
        logger.log_hyperparams({**flatten(params), **spacing_params(meta)})
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if logger.run_id is not None:  # only the rank that owns the MLflow run (DDP rank 0)
        run_file.write_text(json.dumps({"run_id": logger.run_id}))
        tracking.log_datasets(logger.run_id, training_datasets(params, pseudo_dir), mlflow_root)

    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=cfg.monitor,
        mode=cfg.monitor_mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    # every epoch (Lightning's save_last follows the monitored checkpoint, which skips epochs
    # that do not improve): what --resume continues from
    latest = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=False,  # after validation, with the epoch's scheduler step
        enable_version_counter=False,
    )
    callbacks = [
        checkpoint,
        latest,
        pl.callbacks.LearningRateMonitor(logging_interval="epoch"),
        OverlayCallback(cfg.overlay_every_n_epochs, mlflow_root),
        *progress_callbacks(),
        *(extra_callbacks or []),
    ]
    if cfg.ema_decay > 0:
        callbacks.append(pl.callbacks.EMAWeightAveraging(decay=cfg.ema_decay))
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator="gpu" if cfg.accelerator == "cuda" else cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=os.environ.get("VESSELSEG_PROGRESS", "1") != "0",
        default_root_dir=str(ckpt_dir),
    )
    torch.set_float32_matmul_precision("high")
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=str(last) if resume else None, weights_only=True
    )
    run_id = trainer.strategy.broadcast(logger.run_id)  # DDP: rank 0's MLflow run on every rank

    best = checkpoint.best_model_score
    best = float(best) if best is not None else None
    # best without a best checkpoint (the monitor never logged) falls back to the last epoch
    model_from = "best" if cfg.model_from == "best" and checkpoint.best_model_path else "last"
    if model_from == "best":
        saved_path, score = Path(checkpoint.best_model_path), best
    else:
        saved_path, score = last, final_score(trainer, cfg.monitor)
    if trainer.is_global_zero:
        state = torch.load(saved_path, map_location="cpu", weights_only=True)["state_dict"]
        weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        meta.info = {
            "run_id": logger.run_id,
            "monitor": cfg.monitor,
            "model_from": model_from,
            "score": score,
            "best_score": best,
            "epochs": trainer.current_epoch,
            **all_tags,
        }
        save_bundle(out, weights, meta)
        for path, folder in (
            (out, "model"),
            (out.with_suffix(".json"), "model"),
            (saved_path, "checkpoints"),
        ):
            tracking.log_artifact(logger.run_id, path, folder, mlflow_root)
        log_training_curves(
            logger.run_id, out, f"{cfg.run_name or out.stem}: training", mlflow_root
        )
    return TrainResult(out, ckpt_dir, run_id, best, trainer.current_epoch, score, model_from)


def final_score(trainer: Any, monitor: str) -> float | None:
    """The last validation's ``monitor`` value (None when it was not logged or not finite)."""
    value = trainer.callback_metrics.get(monitor)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
