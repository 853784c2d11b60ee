"""Data commands: ``synth`` (demo volumes), ``info`` (describe a volume), ``prepare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vesselseg.cli.app import app
from vesselseg.cli.common import (
    DEFAULT_PARAMS,
    DataSpacingOpt,
    ParamsOpt,
    SetOpt,
    SpacingOpt,
    UnitOpt,
    load_params,
    option_values,
    parse_size,
    parse_voxel_size,
    setup_logging,
    spacing_values,
)


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
    spacing: Annotated[
        str | None, typer.Option(help="Voxel size in um: S or Z,Y,X (same seed: same vessels).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (deterministic output).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="npy, tiff or zarr.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Make synthetic vessel volumes with dense truth and sparse, human-like annotations.

    Writes OUT/{train,val,test}/data_X, mask_X (0 unannotated, 1 vessel, 2 background) and
    truth_X (dense 0/1), and OUT/unlabelled/data_X (+ truth_X).

    Example: [bold]vesselseg synth data/raw --n-train 2 --size 96 --seed 0[/bold]

    Example: [bold]vesselseg synth data/coarse --size 48 --spacing 2[/bold] (the same vessels
    as --size 96 at 1 um, on a 2 um grid)
    """
    setup_logging()
    keys = {"n_train": "synth.n_train", "n_val": "synth.n_val", "n_test": "synth.n_test"}
    keys.update({"n_unlabelled": "synth.n_unlabelled", "seed": "synth.seed"})
    values = option_values(locals(), {**keys, "fmt": "synth.format"})
    values.update({"synth.shape": parse_size(size), "synth.spacing": parse_voxel_size(spacing)})
    p = load_params(params, overrides, values)
    from vesselseg.synth import synthesize_with_progress

    line = synthesize_with_progress(p.synth, out or Path(p.synth.out_dir))
    typer.echo(line)


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
    spacing: SpacingOpt = None,
    unit: UnitOpt = None,
) -> None:
    """Print shape, dtype, voxel size, chunking, value range and label counts of a volume or
    dataset.

    Example: [bold]vesselseg info data/raw/train --spacing 5,0.994,0.994[/bold]
    """
    from vesselseg.inspect import describe_path

    size = spacing_values(spacing, unit)
    raw = parse_size(shape, "--shape")
    lines = describe_path(
        path, file_type, raw, dtype, size.get("infer.spacing"), size.get("infer.unit")
    )
    for line in lines:
        typer.echo(line)


@app.command()
def prepare(
    out: Annotated[Path, typer.Option(help="Summary JSON to write.")] = Path("data/prepared.json"),
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    plan_out: Annotated[
        Path | None, typer.Option("--plan-out", help="Also plan the data: plans.json to write.")
    ] = None,
    spacing: DataSpacingOpt = None,
    unit: UnitOpt = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Validate the training data and build its annotation indexes and intensity statistics;
    with --plan-out also fingerprint it and write the plan that `train --plan` applies.

    Caches go to data.cache_dir; the summary (label counts, percentiles) to OUT.

    Example: [bold]vesselseg prepare --out data/prepared.json --plan-out plans.json[/bold]
    """
    setup_logging()
    values = option_values(locals(), {"train_dir": "data.train_dir", "val_dir": "data.val_dir"})
    values.update(spacing_values(spacing, unit, "data"))
    p = load_params(params, overrides, values)
    from vesselseg.config import explicit_keys
    from vesselseg.plan import summary_line
    from vesselseg.prepare import prepare_and_plan

    summary, plan = prepare_and_plan(p, out, plan_out, explicit_keys(p, overrides or [], values))
    counts = {k: len(v) for k, v in summary["splits"].items()}
    typer.echo(f"prepared {counts['train']} train and {counts['val']} val volumes; summary {out}")
    if plan is not None:
        typer.echo(f"{summary_line(plan)}; plan {plan_out}")
