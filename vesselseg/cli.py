"""The ``vesselseg`` command line: one thin command per pipeline stage.

Commands parse options, load ``params.yaml`` (strictly; CLI options and ``--set
section.key=value`` override it) and call one function of the package. Heavy libraries (torch,
mlflow, lightning, optuna, dvc, numpy) are imported inside commands so ``--help`` stays instant.
Every :class:`~vesselseg.errors.VesselsegError` is printed as one line and exits with code 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vesselseg.errors import (
    ConfigError,
    DatasetError,
    MissingPathError,
    VesselsegError,
)

log = logging.getLogger("vesselseg")


class GuardedGroup(TyperGroup):
    """Turn user errors into one line on stderr and exit code 2 (no traceback).

    Besides :class:`~vesselseg.errors.VesselsegError`, an ``OSError`` that the machine rather
    than the code causes (disk full, quota exceeded, read-only file system, permission denied)
    becomes ``error: <path>: no space left on device`` (and so on). Writers leave only
    ``NAME.part`` files behind, so nothing half-written looks finished.
    """

    @staticmethod
    def disk_error(exc: OSError) -> str | None:
        """``<path>: no space left on device`` for ENOSPC, EDQUOT, EROFS, EACCES; else None."""
        import errno

        reasons = {
            errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
        }
        if exc.errno not in reasons:
            return None
        where = f"{exc.filename}: " if exc.filename else ""
        return " ".join(f"{where}{reasons[exc.errno]}".split())

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VesselsegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            message = self.disk_error(exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(VesselsegError.exit_code) from None


app = typer.Typer(
    cls=GuardedGroup,
    help="Segment blood vessels in very large 3D CT volumes from sparse annotations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params.yaml to read (defaults if absent).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a parameter: section.key=value (repeatable)."),
]
DEFAULT_PARAMS = Path("params.yaml")
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # set by DDP launchers


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, rich_tracebacks=False)],
        force=True,
    )


def load_params(params: Path, overrides: list[str] | None, values: dict[str, Any] | None = None):
    """params.yaml (or the built-in defaults when the default file is absent) + overrides."""
    from vesselseg import config

    if params.is_file():
        loaded = config.load_params(params, overrides or [])
    elif params == DEFAULT_PARAMS:
        loaded = config.apply_overrides(config.Params(), overrides or [])
    else:
        raise ConfigError(f"{params}: params file not found")
    resolved = config.with_values(loaded, values or {})
    if resolved.data.cache_dir:  # index/statistics caches: never written beside the data
        import os

        os.environ["VESSELSEG_CACHE_DIR"] = str(Path(resolved.data.cache_dir).resolve())
    return resolved


def best_threshold_from(metrics: Path) -> float:
    """``overall.best_threshold_val`` of a metrics.json written by ``evaluate --val-dir``."""
    import json

    if not metrics.is_file():
        raise MissingPathError(f"{metrics}: no such metrics file")
    try:
        value = json.loads(metrics.read_text())["overall"]["best_threshold_val"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{metrics}: no overall.best_threshold_val (run evaluate --val-dir)"
        ) from None
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{metrics}: best_threshold_val {value!r} is not in (0, 1)")
    return float(value)


def parse_size(text: str | None, name: str = "--size") -> list[int] | None:
    """``"96"`` or ``"64,96,128"`` (also ``64x96x128``) → ``[z, y, x]``."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{name}: expected N or Z,Y,X integers, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(f"{name}: expected N or Z,Y,X positive integers, got {text!r}")
    return values


# --------------------------------------------------------------------------- synth


@app.command()
def synth(
    out: Annotated[
        Path | None, typer.Argument(help="Output folder (default synth.out_dir).")
    ] = None,
    n_train: Annotated[int | None, typer.Option(help="Training volumes.")] = None,
    n_val: Annotated[int | None, typer.Option(help="Validation volumes.")] = None,
    n_test: Annotated[
        int | None, typer.Option(help="Test volumes (dense truth for evaluation).")
    ] = None,
    n_unlabelled: Annotated[
        int | None, typer.Option(help="Unlabelled volumes for pseudo labels.")
    ] = None,
    size: Annotated[str | None, typer.Option(help="Volume size: N or Z,Y,X.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (deterministic output).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="npy, tiff or zarr.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Make synthetic vessel volumes with dense truth and sparse, human-like annotations.

    Writes OUT/{train,val,test}/data_X, mask_X (0 unannotated, 1 vessel, 2 background) and
    truth_X (dense 0/1), and OUT/unlabelled/data_X (+ truth_X).

    Example: [bold]vesselseg synth data/raw --n-train 2 --size 96 --seed 0[/bold]
    """
    _setup_logging()
    p = load_params(
        params,
        overrides,
        {
            "synth.n_train": n_train,
            "synth.n_val": n_val,
            "synth.n_test": n_test,
            "synth.n_unlabelled": n_unlabelled,
            "synth.shape": parse_size(size),
            "synth.seed": seed,
            "synth.format": fmt,
        },
    )
    from vesselseg.config import as_triple
    from vesselseg.progress import progress_bar
    from vesselseg.synth import synthesize_dataset

    cfg = p.synth
    out_dir = out or Path(cfg.out_dir)
    n_volumes = cfg.n_train + cfg.n_val + cfg.n_test + cfg.n_unlabelled
    planes = n_volumes * as_triple(cfg.shape)[0]
    with progress_bar("synth", total=planes, unit="planes") as advance:
        ids = synthesize_dataset(cfg, out_dir, on_slab=advance)
    counts = ", ".join(f"{len(v)} {k}" for k, v in ids.items() if v)
    typer.echo(f"wrote {n_volumes} volumes ({counts}) of shape {as_triple(cfg.shape)} to {out_dir}")


# --------------------------------------------------------------------------- info


@app.command()
def info(
    path: Annotated[
        Path,
        typer.Argument(help="A volume (npy, raw, tif, slice folder, zarr) or a dataset folder."),
    ],
    file_type: Annotated[
        str | None, typer.Option(help="npy, raw, tiff or zarr (default: from the name).")
    ] = None,
    shape: Annotated[str | None, typer.Option(help="Raw files: Z,Y,X.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Raw files: numpy dtype, e.g. uint16.")] = None,
) -> None:
    """Print shape, dtype, chunking, value range and label counts of a volume or dataset.

    Example: [bold]vesselseg info data/raw/train[/bold]
    """
    from vesselseg.inspect import describe_path

    for line in describe_path(path, file_type, parse_size(shape, "--shape"), dtype):
        typer.echo(line)


# --------------------------------------------------------------------------- pipeline stages


@app.command()
def prepare(
    out: Annotated[Path, typer.Option(help="Summary JSON to write.")] = Path("data/prepared.json"),
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Validate the training data and build its annotation indexes and intensity statistics.

    Caches go to data.cache_dir; the summary (label counts, percentiles) to OUT.

    Example: [bold]vesselseg prepare --out data/prepared.json[/bold]
    """
    _setup_logging()
    p = load_params(
        params,
        overrides,
        {
            "data.train_dir": str(train_dir) if train_dir else None,
            "data.val_dir": str(val_dir) if val_dir else None,
        },
    )
    from vesselseg.prepare import prepare_data

    summary = prepare_data(p.data, out)
    counts = {k: len(v) for k, v in summary["splits"].items()}
    typer.echo(f"prepared {counts['train']} train and {counts['val']} val volumes; summary {out}")


NORMALIZATION = {"b": "batch", "g": "group", "batch": "batch", "group": "group"}


@app.command()
def train(
    out: Annotated[
        Path | None, typer.Option(help="Saved model (default train.out_dir/model.pt).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="vnet, unet (3D) or unet2d (2D/2.5D slices).")
    ] = None,
    multiview: Annotated[
        bool,
        typer.Option(help="Train the 2D multiview U-Net with the params' multiview section."),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with train/ and val/ (seed 000).")
    ] = None,
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Crops per batch.")] = None,
    crop_size: Annotated[str | None, typer.Option(help="Crop size: N or Z,Y,X.")] = None,
    samples_per_volume: Annotated[
        int | None, typer.Option(help="Crops per volume per epoch.")
    ] = None,
    num_loader_workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    min_lr: Annotated[float | None, typer.Option(help="LR floor of the schedule.")] = None,
    lr_reduce_factor: Annotated[float | None, typer.Option(help="Plateau LR factor.")] = None,
    lr_schedule: Annotated[str | None, typer.Option(help="plateau or cosine.")] = None,
    normalization: Annotated[str | None, typer.Option(help="b|batch or g|group.")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    precision: Annotated[str | None, typer.Option(help="32 or bf16.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu or cuda.")] = None,
    devices: Annotated[int | None, typer.Option(help="Devices (processes) to train on.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (deterministic run).")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment.")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    pseudo: Annotated[
        Path | None, typer.Option(help="Pseudo labels from `vesselseg pseudo` (stage 2).")
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="Start from this saved model's weights (fine-tuning).")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Train a network on random crops that always contain annotated vessel; tracked in MLflow.

    3D networks see 3D crops; unet2d sees stacks of model.context slices along model.views
    (multiview) whose centre slice holds annotated vessel.

    Example: [bold]vesselseg train --model unet --max-epochs 20 --out models/stage1.pt[/bold]

    Example: [bold]vesselseg train --multiview --out models/unet2d.pt[/bold]

    Example: [bold]vesselseg train --pseudo data/pseudo --init models/stage1.pt
    --out models/stage2.pt[/bold]
    """
    _setup_logging()
    if normalization is not None and normalization not in NORMALIZATION:
        raise ConfigError(f"--normalization must be b, g, batch or group, got {normalization!r}")
    if data_dir is not None:
        train_dir, val_dir = train_dir or data_dir / "train", val_dir or data_dir / "val"
    values = {
            "model.name": model,
            "data.train_dir": str(train_dir) if train_dir else None,
            "data.val_dir": str(val_dir) if val_dir else None,
            "train.lr": lr,
            "train.batch_size": batch_size,
            "data.crop_size": parse_size(crop_size, "--crop-size"),
            "data.samples_per_volume": samples_per_volume,
            "data.num_loader_workers": num_loader_workers,
            "train.min_lr": min_lr,
            "train.lr_reduce_factor": lr_reduce_factor,
            "train.lr_schedule": lr_schedule,
            "model.norm": NORMALIZATION.get(normalization or ""),
            "train.max_epochs": max_epochs,
            "train.precision": precision,
            "train.accelerator": accelerator,
            "train.devices": devices,
            "train.seed": seed,
            "train.experiment": experiment,
            "train.run_name": run_name,
    }
    if multiview and model not in (None, "unet2d"):
        raise ConfigError(f"--multiview trains unet2d; drop --model {model}")
    from vesselseg.config import multiview_params, with_values

    p = load_params(params, overrides)
    if multiview:  # the multiview section first, then the options given here
        p = multiview_params(p)
    p = with_values(p, values)
    from vesselseg.training.fit import train_model

    result = train_model(
        p,
        out or Path(p.train.out_dir) / "model.pt",
        resume=resume,
        pseudo_dir=pseudo,
        init=init,
    )
    if any(os.environ.get(k, "0") != "0" for k in RANK_VARIABLES):
        return  # DDP: rank 0 reports
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    typer.echo(
        f"trained {result.epochs} epochs; best {p.train.monitor} {score}; model "
        f"{result.model_path}; checkpoints {result.checkpoint_dir}; MLflow run {result.run_id}"
    )


@app.command()
def predict(
    input_path: Annotated[
        Path | None, typer.Argument(metavar="INPUT", help="A volume or a folder of volumes.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", "--data_dir", help="Same as INPUT (seed 000).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model file NAME.pt (+ NAME.json), .ckpt, ensemble .json or URI."
        ),
    ] = None,
    ensemble: Annotated[
        list[str] | None,
        typer.Option(
            help="Average models instead of --model: MODEL[:WEIGHT], repeat (2D and 3D mix)."
        ),
    ] = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir", "--save-dir", "--save_dir", help="Output folder (infer.out_dir)."
        ),
    ] = None,
    tile_size: Annotated[
        str | None,
        typer.Option("--tile-size", "--crop-size", "--crop_size", help="Window: N or Z,Y,X."),
    ] = None,
    overlap: Annotated[float | None, typer.Option(help="Window overlap fraction [0, 1).")] = None,
    border: Annotated[
        int | None, typer.Option(help="Keep only each window's interior (seed 000); 0 = off.")
    ] = None,
    blend: Annotated[str | None, typer.Option(help="gaussian or constant.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per network call.")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average 8 flips.")] = None,
    precision: Annotated[str | None, typer.Option(help="32 or bf16 (autocast).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Mask = probability >= this.")] = None,
    threshold_from: Annotated[
        Path | None, typer.Option(help="metrics.json of `evaluate --val-dir`: its best threshold.")
    ] = None,
    prob_dtype: Annotated[str | None, typer.Option(help="float32, float16 or uint8.")] = None,
    out_format: Annotated[str | None, typer.Option(help="npy, zarr or tiff.")] = None,
    naming: Annotated[
        str | None, typer.Option(help="default (X.MODEL.prob.npy) or seed (CKPT.X.npy.pred.npy).")
    ] = None,
    file_type: Annotated[
        str | None, typer.Option("--file-type", "--file_type", help="npy, raw, tiff or zarr.")
    ] = None,
    shape: Annotated[str | None, typer.Option(help="Raw input: Z,Y,X.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Raw input: numpy dtype.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue interrupted outputs; skip finished ones.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_buffer_mib: Annotated[
        float, typer.Option(help="Memory for blending buffers; larger planes are cut.")
    ] = 1024.0,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Predict only shard i/n (0-based, 0 <= i < n) of the sorted inputs, or "
            "'slurm' for $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT."
        ),
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Streamed sliding-window inference on volumes of any size (bounded memory, resumable).

    Writes X.MODEL.prob.npy (probabilities) and X.MODEL.mask.npy (thresholded) per input.
    With --ensemble the models' probabilities are averaged (weights normalised to sum 1) and
    the ensemble is saved as SAVE_DIR/ensemble.json (outputs X.ensemble.prob.npy).

    Example: [bold]vesselseg predict data/raw/test --model models/best.pt --tta[/bold]

    Example: [bold]vesselseg predict data/raw/test --ensemble models/stage2.pt:0.5
    --ensemble models/unet2d.pt:0.5[/bold]
    """
    _setup_logging()
    if model is None and input_path is not None and data_dir is not None and not ensemble:
        model, input_path = str(input_path), None  # seed 000: CHECKPOINT --data-dir DIR
    source = input_path or data_dir
    if source is None:
        raise ConfigError("predict: give an INPUT volume or folder (or --data-dir)")
    if model is not None and ensemble:
        raise ConfigError("give --model or --ensemble, not both")
    if model is None and not ensemble:
        raise ConfigError("--model: give a saved model file (NAME.pt with NAME.json, or .ckpt)")
    if threshold_from is not None:
        if threshold is not None:
            raise ConfigError("give --threshold or --threshold-from, not both")
        threshold = best_threshold_from(threshold_from)
    if model in ("vnet", "unet", "unet2d") and not Path(model).exists():
        raise ConfigError(f"--model {model}: give the model file; its architecture is read from it")
    p = load_params(
        params,
        overrides,
        {
            "infer.tile_size": parse_size(tile_size, "--tile-size"),
            "infer.overlap": overlap,
            "infer.border": border,
            "infer.blend": blend,
            "infer.batch_size": batch_size,
            "infer.tta": tta,
            "infer.precision": precision,
            "infer.threshold": threshold,
            "infer.prob_dtype": prob_dtype,
            "infer.out_format": out_format,
            "infer.naming": naming,
        },
    )
    from vesselseg.inference.inputs import parse_shard
    from vesselseg.inference.run import predict_path
    from vesselseg.registry import resolve_model

    shard_of = parse_shard(shard)  # a bad --shard fails before anything is written
    if ensemble:
        from vesselseg.inference.ensemble import parse_member, write_ensemble

        folder = save_dir if save_dir is not None else Path(p.infer.out_dir)
        members = [parse_member(text) for text in ensemble]
        model = str(write_ensemble(members, folder / "ensemble.json", resolve_model))
    assert model is not None
    summary = predict_path(
        source,
        resolve_model(model),
        save_dir,
        p.infer,
        file_type=file_type,
        shape=tuple(parse_size(shape, "--shape")) if shape else None,
        dtype=dtype,
        resume=resume,
        device=device,
        max_buffer_mib=max_buffer_mib,
        shard=shard_of,
        resolve=resolve_model,
    )
    typer.echo(summary.line())


@app.command()
def evaluate(
    model: Annotated[
        Path, typer.Option(help="Saved model (.pt) or ensemble (.json) to score.")
    ],
    data_dir: Annotated[
        Path, typer.Option(help="Volumes with truth_X (dense) or mask_X (sparse).")
    ] = Path("data/raw/test"),
    pred_dir: Annotated[
        Path | None, typer.Option(help="Predictions (missing ones are made).")
    ] = None,
    val_dir: Annotated[
        Path | None, typer.Option(help="Validation volumes for the best threshold.")
    ] = None,
    metrics: Annotated[Path, typer.Option(help="metrics.json to write.")] = Path("metrics.json"),
    plots: Annotated[Path, typer.Option(help="Folder for pr.csv and PNGs.")] = Path("plots"),
    threshold: Annotated[float | None, typer.Option(help="Mask threshold.")] = None,
    tolerance: Annotated[float, typer.Option(help="Surface Dice tolerance in voxels.")] = 0.0,
    thresholds: Annotated[int, typer.Option(help="Thresholds in the PR curve.")] = 21,
    mlflow: Annotated[bool, typer.Option(help="Log to MLflow.")] = True,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Dice, IoU, precision/recall, clDice, surface Dice and components against truth.

    Writes metrics.json, plots/pr.csv and PNGs (TP/FP/FN projections and slices) and logs
    them to the model's MLflow run.

    Example: [bold]vesselseg evaluate --model models/stage1.pt --val-dir data/raw/val[/bold]
    """
    _setup_logging()
    if thresholds < 3:
        raise ConfigError(f"--thresholds must be >= 3, got {thresholds}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0, got {tolerance}")
    p = load_params(params, overrides, {"infer.threshold": threshold})
    from vesselseg.evaluation import evaluate_dataset
    from vesselseg.registry import resolve_model

    s = evaluate_dataset(
        data_dir,
        resolve_model(str(model)),
        pred_dir or Path(p.infer.out_dir),
        p.infer,
        metrics,
        plots,
        val_dir,
        tolerance,
        thresholds,
        mlflow,
        resolve=resolve_model,
    )
    o = s.overall
    best = (
        "" if s.best_threshold_val is None else f"; best val threshold {s.best_threshold_val:.2f}"
    )
    cl = "n/a" if o.get("cldice") is None else f"{o['cldice']:.4f}"
    sd = "n/a" if o.get("surface_dice") is None else f"{o['surface_dice']:.4f}"
    typer.echo(
        f"{o['volumes']} volumes: dice {o['dice']:.4f}, clDice {cl}, surface Dice {sd}"
        f"{best}; wrote {s.metrics_path} and {plots}/"
        + (f"; MLflow run {s.run_id}" if s.run_id else "")
    )


@app.command()
def pseudo(
    model: Annotated[
        str, typer.Option(help="Saved model (.pt), ensemble (.json) or models:/NAME@ALIAS.")
    ],
    in_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", "--in-dir", help="Unlabelled volumes (default pseudo.in_dir)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Output folder (default pseudo.out_dir).")
    ] = None,
    hi: Annotated[float | None, typer.Option(help="Vessel where p >= hi.")] = None,
    lo: Annotated[float | None, typer.Option(help="Background where p <= lo.")] = None,
    min_component_voxels: Annotated[
        int | None, typer.Option(help="Drop smaller vessel components.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume interrupted predictions.")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Pseudo labels for unlabelled volumes: 1 where p >= hi, 2 where p <= lo, 0 elsewhere.

    Writes OUT/mask_X.npy and OUT/pseudo.json (model, thresholds, date, source images);
    train on them with `vesselseg train --pseudo OUT`.

    Example: [bold]vesselseg pseudo --model models/stage1.pt --out-dir data/pseudo[/bold]
    """
    _setup_logging()
    p = load_params(
        params,
        overrides,
        {"pseudo.hi": hi, "pseudo.lo": lo, "pseudo.min_component_voxels": min_component_voxels},
    )
    from vesselseg.pseudo import pseudo_label_dataset
    from vesselseg.registry import resolve_model

    model_path = resolve_model(model)
    s = pseudo_label_dataset(
        in_dir or Path(p.pseudo.in_dir),
        model_path,
        out_dir or Path(p.pseudo.out_dir),
        p.pseudo,
        p.infer,
        resume,
        resolve=resolve_model,
    )
    vessel = sum(c.vessel for c in s.volumes.values())
    typer.echo(
        f"pseudo-labelled {len(s.volumes)} volumes ({vessel:,} vessel voxels) into "
        f"{s.out_dir}; provenance {s.out_dir / 'pseudo.json'}"
    )


@app.command()
def register(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Saved model NAME.pt (+ NAME.json) or .ckpt.")
    ],
    metrics: Annotated[
        Path | None, typer.Option(help="metrics.json of evaluate (else training best_score).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registered model (register.name).")] = None,
    alias: Annotated[str | None, typer.Option(help="New version's alias (register.alias).")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric to compare, higher is better (register.metric).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote to champion whatever the metric.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option(help="Extra version tag KEY=VALUE (repeatable).")
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="Write what happened as JSON (a DVC stage output).")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Log a model as an MLflow pyfunc, register a new version, alias it challenger and promote
    it to champion when its metric beats the champion's (or --force).

    Example: [bold]vesselseg register --model models/model.pt --metrics metrics.json[/bold]
    """
    _setup_logging()
    p = load_params(
        params,
        overrides,
        {"register.name": name, "register.alias": alias, "register.metric": metric},
    )
    bad = [t for t in tag or [] if "=" not in t]
    if bad:
        raise ConfigError(f"--tag {bad[0]!r}: expected KEY=VALUE")
    tags = dict(t.split("=", 1) for t in tag or [])
    from vesselseg.registry import register_model

    r = p.register
    result = register_model(
        model,
        metrics,
        r.name,
        r.alias,
        r.champion_alias,
        r.metric,
        force,
        tags,
        params=p,
        experiment=p.train.experiment,
    )
    for line in result.lines():
        typer.echo(line)
    if record is not None:
        import dataclasses

        from vesselseg.evaluation import write_json

        write_json(record, dataclasses.asdict(result))


@app.command()
def ensemble(
    members: Annotated[
        list[str],
        typer.Argument(metavar="MODEL[:WEIGHT]...", help="Two or more saved models or URIs."),
    ],
    out: Annotated[Path, typer.Option(help="Ensemble file to write (.json).")] = Path(
        "models/ensemble.json"
    ),
) -> None:
    """Average saved models (2D multiview and 3D) into one: an ensemble file usable wherever a
    model is (predict, evaluate, pseudo). Probabilities are averaged with the weights
    (default 1 each; normalised to sum 1); members must share their intensity percentiles.

    Example: [bold]vesselseg ensemble models/stage2.pt models/unet2d.pt:0.5 --out
    models/ensemble.json[/bold]
    """
    _setup_logging()
    if out.suffix != ".json":
        raise ConfigError(f"--out {out}: an ensemble file ends in .json")
    from vesselseg.inference.ensemble import parse_member, write_ensemble
    from vesselseg.registry import resolve_model

    parsed = [parse_member(text) for text in members]
    path = write_ensemble(parsed, out, resolve_model)
    total = sum(w for _, w in parsed)
    shares = ", ".join(f"{m} {w / total:.2f}" for m, w in parsed)
    typer.echo(f"ensemble of {len(parsed)} models ({shares}) written to {path}")


@app.command()
def models(
    name: Annotated[str | None, typer.Option(help="Registered model (register.name).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """List registered model versions, their aliases and metrics.

    Example: [bold]vesselseg models --name vesselseg[/bold]
    """
    p = load_params(params, overrides, {"register.name": name})
    from vesselseg.registry import format_models, list_models

    for line in format_models(p.register.name, list_models(p.register.name)):
        typer.echo(line)


@app.command()
def tune(
    n_trials: Annotated[int | None, typer.Option(help="Trials to add to the study.")] = None,
    timeout: Annotated[
        int | None, typer.Option(help="Start no trial after this many seconds (0: no limit).")
    ] = None,
    jobs: Annotated[int | None, typer.Option(help="Worker processes on this machine.")] = None,
    storage: Annotated[
        str | None, typer.Option(help="RDB URL (postgresql://...) or journal file path.")
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name; an existing one resumes.")] = None,
    pruner: Annotated[str | None, typer.Option(help="median, hyperband or none.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Best params file (default params.tuned.yaml).")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Optuna search over crop size, learning rate, LR schedule and batch size (tune: section).

    Example: [bold]vesselseg tune --n-trials 20 --jobs 2[/bold]
    """
    _setup_logging()
    p = load_params(
        params,
        overrides,
        {
            "tune.n_trials": n_trials,
            "tune.timeout": timeout,
            "tune.jobs": jobs,
            "tune.storage": storage,
            "tune.study": study,
            "tune.pruner": pruner,
        },
    )
    from vesselseg.tuning import run_study

    summary = run_study(p, out or params.with_name("params.tuned.yaml"))
    for line in summary.lines():
        typer.echo(line)


@app.command()
def submit(
    pred_dir: Annotated[
        Path, typer.Argument(help="Folder of predicted masks (*.mask.npy/.tif/.zarr).")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("submission.csv"),
    threshold: Annotated[float, typer.Option(help="Threshold when given probabilities.")] = 0.5,
) -> None:
    """Write a Kaggle SenNet submission.csv (id,rle) from predicted masks.

    Rows are `<case>_<slice:04d>` with the run-length encoding of each z-slice (row-major,
    1-based starts, `1 0` for an empty slice); `<case>` is the mask file name before its first
    dot (`kidney_5.model.mask.npy` → `kidney_5`).

    Example: [bold]vesselseg submit predictions --out submission.csv[/bold]
    """
    from vesselseg.io import open_volume
    from vesselseg.kaggle import write_submission
    from vesselseg.progress import progress_bar

    if not pred_dir.is_dir():
        raise MissingPathError(f"{pred_dir}: no such folder")
    masks = sorted(
        p
        for p in pred_dir.iterdir()
        if ".mask." in p.name and not p.name.endswith((".part", ".json"))
    )
    if not masks:
        raise DatasetError(f"{pred_dir}: no predicted masks (*.mask.npy, *.mask.tif, *.mask.zarr)")
    volumes = {p.name.split(".")[0]: open_volume(p) for p in masks}
    with progress_bar(
        "submit", total=sum(v.shape[0] for v in volumes.values()), unit="slices"
    ) as advance:
        path = write_submission(volumes, out, threshold, on_slice=advance)
    typer.echo(f"wrote {path} ({len(volumes)} volumes)")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
