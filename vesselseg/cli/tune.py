"""``vesselseg tune``: an Optuna study over crop size, learning rate and LR schedule."""

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

TUNE_KEYS = {
    "n_trials": "tune.n_trials",
    "timeout": "tune.timeout",
    "jobs": "tune.jobs",
    "storage": "tune.storage",
    "study": "tune.study",
    "pruner": "tune.pruner",
    "train_dir": "data.train_dir",
    "val_dir": "data.val_dir",
}


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
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", "--data_dir", help="Folder with train/ and val/."),
    ] = None,
    train_dir: Annotated[Path | None, typer.Option(help="Training volumes.")] = None,
    val_dir: Annotated[Path | None, typer.Option(help="Validation volumes.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Best params file (default params.tuned.yaml).")
    ] = None,
    spacing: DataSpacingOpt = None,
    unit: UnitOpt = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Optuna search over crop size, learning rate, LR schedule and batch size (tune: section).

    Example: [bold]vesselseg tune --n-trials 20 --jobs 2 --data-dir data/raw[/bold]
    """
    setup_logging()
    if data_dir is not None:
        train_dir, val_dir = train_dir or data_dir / "train", val_dir or data_dir / "val"
    values = {**option_values(locals(), TUNE_KEYS), **spacing_values(spacing, unit, "data")}
    p = load_params(params, overrides, values)
    from vesselseg.tuning import run_study

    summary = run_study(p, out or params.with_name("params.tuned.yaml"))
    for line in summary.lines():
        typer.echo(line)
