"""The ``vesselseg`` command line: one thin command per pipeline stage.

Commands parse options, load ``params.yaml`` (strictly; CLI options and ``--set
section.key=value`` override it) and call one function of the package. Heavy libraries (torch,
mlflow, lightning, optuna, dvc, numpy) are imported inside commands so ``--help`` stays instant.
Every :class:`~vesselseg.errors.VesselsegError` is printed as one line and exits with code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vesselseg.errors import ConfigError, NotBuiltError, VesselsegError

log = logging.getLogger("vesselseg")


class GuardedGroup(TyperGroup):
    """Turn user errors into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VesselsegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


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
    return config.with_values(loaded, values or {})


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


# --------------------------------------------------------------------------- planned stages


def _not_built(command: str, issue: str) -> None:
    raise NotBuiltError(f"'vesselseg {command}' is not built yet ({issue})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def prepare() -> None:
    """Compute intensity statistics, annotation indexes and multiview metadata (planned)."""
    _not_built("prepare", "DVC pipeline issue")


NORMALIZATION = {"b": "batch", "g": "group", "batch": "batch", "group": "group"}


@app.command()
def train(
    out: Annotated[Path | None, typer.Option(help="Saved model (default train.out_dir/model.pt).")] = None,
    model: Annotated[str | None, typer.Option(help="vnet or unet.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with train/ and val/ (seed 000).")] = None,
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Crops per batch.")] = None,
    crop_size: Annotated[str | None, typer.Option(help="Crop size: N or Z,Y,X.")] = None,
    samples_per_volume: Annotated[int | None, typer.Option(help="Crops per volume per epoch.")] = None,
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
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Train a 3D network on random crops that always contain annotated vessel; tracked in MLflow.

    Example: [bold]vesselseg train --model unet --max-epochs 20 --out models/stage1.pt[/bold]
    """
    _setup_logging()
    if normalization is not None and normalization not in NORMALIZATION:
        raise ConfigError(f"--normalization must be b, g, batch or group, got {normalization!r}")
    if data_dir is not None:
        train_dir, val_dir = train_dir or data_dir / "train", val_dir or data_dir / "val"
    p = load_params(params, overrides, {
        "model.name": model, "data.train_dir": str(train_dir) if train_dir else None,
        "data.val_dir": str(val_dir) if val_dir else None, "train.lr": lr,
        "train.batch_size": batch_size, "data.crop_size": parse_size(crop_size, "--crop-size"),
        "data.samples_per_volume": samples_per_volume, "data.num_loader_workers": num_loader_workers,
        "train.min_lr": min_lr, "train.lr_reduce_factor": lr_reduce_factor,
        "train.lr_schedule": lr_schedule, "model.norm": NORMALIZATION.get(normalization or ""),
        "train.max_epochs": max_epochs, "train.precision": precision,
        "train.accelerator": accelerator, "train.devices": devices, "train.seed": seed,
        "train.experiment": experiment, "train.run_name": run_name,
    })
    from vesselseg.training.fit import train_model

    result = train_model(p, out or Path(p.train.out_dir) / "model.pt", resume=resume)
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    typer.echo(f"trained {result.epochs} epochs; best {p.train.monitor} {score}; model "
               f"{result.model_path}; checkpoints {result.checkpoint_dir}; MLflow run {result.run_id}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def predict() -> None:
    """Streamed sliding-window inference on volumes larger than memory (planned)."""
    _not_built("predict", "inference issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate() -> None:
    """Dice, clDice and surface Dice of predictions against truth (planned)."""
    _not_built("evaluate", "metrics issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pseudo() -> None:
    """Pseudo labels for unlabelled volumes from confident predictions (planned)."""
    _not_built("pseudo", "multiview/pseudo-label issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def register() -> None:
    """Register a trained model in the MLflow Model Registry (planned)."""
    _not_built("register", "model registry issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def models() -> None:
    """List registered model versions, aliases and metrics (planned)."""
    _not_built("models", "model registry issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tune() -> None:
    """Optuna search over crop size and LR schedule (planned)."""
    _not_built("tune", "tuning issue")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit() -> None:
    """Write a Kaggle SenNet submission.csv with run-length encoded masks (planned)."""
    _not_built("submit", "multiview/pseudo-label issue")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
