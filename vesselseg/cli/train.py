"""``vesselseg train``: one network on vessel-guaranteed crops, tracked in MLflow.

Accepts seed 000's spellings too (``train unet --data_dir D --batch_size 12 …``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vesselseg.cli.app import app
from vesselseg.cli.common import (
    DEFAULT_PARAMS,
    DataSpacingOpt,
    ParamsOpt,
    SetOpt,
    UnitOpt,
    is_worker_rank,
    load_params,
    option_values,
    parse_size,
    setup_logging,
    spacing_values,
)
from vesselseg.errors import ConfigError

NORMALIZATION = {"b": "batch", "g": "group", "batch": "batch", "group": "group"}
ARCHITECTURES = ("vnet", "unet", "unet2d")
TRAIN_KEYS = {
    "model": "model.name",
    "train_dir": "data.train_dir",
    "val_dir": "data.val_dir",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "samples_per_volume": "data.samples_per_volume",
    "num_loader_workers": "data.num_loader_workers",
    "min_lr": "train.min_lr",
    "lr_reduce_factor": "train.lr_reduce_factor",
    "lr_schedule": "train.lr_schedule",
    "max_epochs": "train.max_epochs",
    "precision": "train.precision",
    "accelerator": "train.accelerator",
    "devices": "train.devices",
    "seed": "train.seed",
    "experiment": "train.experiment",
    "run_name": "train.run_name",
}


def architecture(positional: str | None, option: str | None) -> str | None:
    """The network name from seed 000's positional ``{vnet,unet}`` and/or ``--model``."""
    for name in (positional, option):
        if name is not None and name not in ARCHITECTURES:
            raise ConfigError(f"model {name!r}: expected one of {', '.join(ARCHITECTURES)}")
    if positional and option and positional != option:
        raise ConfigError(f"give the network once: {positional} (positional) or --model {option}")
    return positional or option


def normalisation(text: str | None) -> str | None:
    """Seed 000's ``b``/``g`` (or batch/group) → ``model.norm``."""
    if text is not None and text not in NORMALIZATION:
        raise ConfigError(f"--normalization must be b, g, batch or group, got {text!r}")
    return NORMALIZATION.get(text or "")


@app.command()
def train(
    arch: Annotated[
        str | None,
        typer.Argument(metavar="[vnet|unet]", help="Network (seed 000 style; same as --model)."),
    ] = None,
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
        Path | None,
        typer.Option("--data-dir", "--data_dir", help="Folder with train/ and val/ (seed 000)."),
    ] = None,
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "--batch_size", help="Crops per batch.")
    ] = None,
    crop_size: Annotated[
        str | None, typer.Option("--crop-size", "--crop_size", help="Crop size: N or Z,Y,X.")
    ] = None,
    samples_per_volume: Annotated[
        int | None,
        typer.Option(
            "--samples-per-volume", "--samples_per_volume", help="Crops per volume per epoch."
        ),
    ] = None,
    num_loader_workers: Annotated[
        int | None,
        typer.Option("--num-loader-workers", "--num_loader_workers", help="DataLoader workers."),
    ] = None,
    min_lr: Annotated[
        float | None, typer.Option("--min-lr", "--min_lr", help="LR floor of the schedule.")
    ] = None,
    lr_reduce_factor: Annotated[
        float | None,
        typer.Option("--lr-reduce-factor", "--lr_reduce_factor", help="Plateau LR factor."),
    ] = None,
    lr_schedule: Annotated[str | None, typer.Option(help="plateau or cosine.")] = None,
    normalization: Annotated[str | None, typer.Option(help="b|batch or g|group.")] = None,
    max_epochs: Annotated[
        int | None, typer.Option("--max-epochs", "--max_epochs", help="Epochs.")
    ] = None,
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
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="plans.json from prepare/plan (default: plan the data now)."),
    ] = None,
    spacing: DataSpacingOpt = None,
    unit: UnitOpt = None,
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
    setup_logging()
    model = architecture(arch, model)
    if multiview and model not in (None, "unet2d"):
        raise ConfigError(f"--multiview trains unet2d; drop --model {model}")
    if data_dir is not None:
        train_dir, val_dir = train_dir or data_dir / "train", val_dir or data_dir / "val"
    values = option_values(locals(), TRAIN_KEYS)
    values["data.crop_size"] = parse_size(crop_size, "--crop-size")
    values["model.norm"] = normalisation(normalization)
    values.update(spacing_values(spacing, unit, "data"))
    from vesselseg.config import explicit_keys, multiview_params, with_values
    from vesselseg.evaluation.calibrate import calibrate_model
    from vesselseg.plan import plan_for_training, summary_line
    from vesselseg.registry import resolve_model
    from vesselseg.training.fit import train_model

    p = load_params(params, overrides, values)
    p, plan = plan_for_training(p, explicit_keys(p, overrides or [], values), plan_file)
    p = with_values(multiview_params(p) if multiview else p, values)  # options win
    out = out or Path(p.train.out_dir) / "model.pt"
    local_init = resolve_model(init) if init and not resume else None  # a URI is downloaded
    tags = {"plan": summary_line(plan)} if plan.values else {}
    tags.update({"init_from": init} if init else {})
    result = train_model(p, out, resume, tags, pseudo_dir=pseudo, init=local_init)
    if is_worker_rank():
        return  # DDP: rank 0 reports
    calibration = calibrate_model(p, result.model_path, result.run_id)
    typer.echo(trained_line(result, p.train.monitor, calibration))


def trained_line(result: Any, monitor: str, calibration: Any) -> str:
    """The line ``vesselseg train`` ends with."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    saved = f"{monitor} {shown(result.score)} (saved: {result.model_from}"
    saved += "" if result.model_from == "best" else f"; best {shown(result.best_score)}"
    threshold = "" if calibration is None else f"; {calibration.line()}"
    return (
        f"trained {result.epochs} epochs; {saved}){threshold}; model "
        f"{result.model_path}; checkpoints {result.checkpoint_dir}; MLflow run {result.run_id}"
    )
