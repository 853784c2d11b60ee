"""``vesselseg plan``: fingerprint the training volumes and write the plan (``plans.json``)."""

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
    UnitOpt,
    load_params,
    option_values,
    setup_logging,
    spacing_values,
)
from vesselseg.errors import ConfigError


@app.command()
def plan(
    data_dir: Annotated[
        Path | None, typer.Option(help="Volumes to fingerprint (default: data.train_dir).")
    ] = None,
    train_dir: Annotated[
        Path | None, typer.Option(help="Training volumes (sets data.train_dir).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Plan JSON to write.")] = Path("plans.json"),
    show: Annotated[
        bool, typer.Option("--show", help="Print each planned key, its value and its source.")
    ] = False,
    spacing: DataSpacingOpt = None,
    unit: UnitOpt = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Derive crop and tile size, network depth and per-axis pooling, batch size and 2D views
    from the data (shapes, voxel sizes, annotation); params.yaml values that differ from the
    defaults, --set overrides and plan.keep win key by key.

    Example: [bold]vesselseg plan --train-dir data/raw/train --show[/bold]
    """
    setup_logging()
    if data_dir is not None and train_dir is not None:
        raise ConfigError("--data-dir and --train-dir: give one of them")
    values = option_values(locals(), {"train_dir": "data.train_dir"})
    values.update(spacing_values(spacing, unit, "data"))
    p = load_params(params, overrides, values)
    from vesselseg.config import explicit_keys
    from vesselseg.plan import describe, plan_dataset, summary_line, write_plan

    result = plan_dataset(data_dir or p.data.train_dir, p, explicit_keys(p, overrides or []))
    write_plan(result, out)
    for line in describe(result) if show else []:
        typer.echo(line)
    typer.echo(f"{summary_line(result)}; plan {out}")
